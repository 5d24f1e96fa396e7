"""`llmfleet serve`: flags to an EngineConfig and a ServerConfig, then run the server.

Import-light on purpose (the top-level CLI imports every command's module to build its parser): torch, FastAPI and
the engine are imported only in `run`. Engine flags default to None, meaning "EngineConfig's own default".
"""
from __future__ import annotations

import argparse
import os
import sys

from llmfleet.apps.retrieval.flags import add_retrieval_arguments, retrieval_config
from llmfleet.protocol.lora import parse_lora_modules, read_adapter
from llmfleet.protocol.tls import add_tls_arguments, tls_config
from llmfleet.console.flags import add_console_arguments, console_settings
from llmfleet.apps.flags import add_apps_arguments, apps_config
from llmfleet.tenancy.flags import add_tenancy_arguments, tenancy_config

# flag -> EngineConfig field; only flags the user set are passed on
ENGINE_FLAGS = ("device", "dtype", "tokenizer", "block_size", "num_kv_blocks", "max_num_seqs",
                "max_num_batched_tokens", "max_model_len", "enable_prefix_caching", "gpu_memory_utilization",
                "load_format", "enforce_eager", "cuda_graph_max_tokens", "attention_backend", "kv_events_endpoint",
                "pooling", "quantization", "kv_cache_dtype", "speculative_config", "enable_lora", "max_loras",
                "max_lora_rank", "max_cpu_loras", "tensor_parallel_size", "pipeline_parallel_size",
                "data_parallel_size", "distributed_executor_backend")


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet serve` and its flags."""
    parser = subparsers.add_parser(name, help="OpenAI-compatible HTTP server",
                                   description="Serve a model over an OpenAI-compatible HTTP API.")
    parser.add_argument("--model", default=None,
                        help="model folder, demo model name or benchmark shape (default: the built-in demo model)")
    add_server_arguments(parser)
    add_tls_arguments(parser)
    add_tenancy_arguments(parser)
    add_console_arguments(parser)
    add_apps_arguments(parser)
    add_retrieval_arguments(parser)
    add_engine_arguments(parser)
    return parser


def add_server_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("server")
    group.add_argument("--host", default="127.0.0.1", help="address to bind (0.0.0.0 for all interfaces)")
    group.add_argument("--port", type=int, default=8000)
    group.add_argument("--served-model-name", nargs="+", default=None,
                       help="names clients use for the model (default: the model's own name)")
    group.add_argument("--max-waiting-requests", type=int, default=1024,
                       help="sequences (prompts x n) waiting for their first token beyond which new requests "
                            "get 429; also the most one request may ask for")
    group.add_argument("--max-body-bytes", type=int, default=8 << 20, help="larger request bodies get 413")
    group.add_argument("--drain-timeout", type=float, default=30.0,
                       help="seconds in-flight requests get to finish after SIGTERM")
    group.add_argument("--preemption-notice-url", default=None,
                       help="spot instances: poll this metadata URL and drain on a preemption notice, e.g. "
                            "http://169.254.169.254/latest/meta-data/spot/instance-action (AWS) or http://"
                            "metadata.google.internal/computeMetadata/v1/instance/preempted (GCE)")
    group.add_argument("--preemption-poll-s", type=float, default=5.0, help="how often to poll it")
    group.add_argument("--api-key", default=None,
                       help="require this bearer token on everything but /health and /ready, docs and /metrics "
                            "included (default: $LLMFLEET_API_KEY, else none)")
    group.add_argument("--metrics-public", action="store_true",
                       help="with --api-key: serve /metrics without the key (for a scraper that has none)")
    group.add_argument("--batch-dir", default=None,
                       help="folder for /v1/files and /v1/batches (uploads, results, a SQLite index); batches "
                            "left unfinished resume when the server restarts with the same folder (default: a "
                            "temporary folder, removed at exit)")
    group.add_argument("--batch-concurrency", type=int, default=32, help="requests of one batch in flight at once")
    group.add_argument("--max-stored-responses", type=int, default=1024,
                       help="/v1/responses answers kept in memory for previous_response_id and GET (least recently "
                            "used dropped first)")
    group.add_argument("--lenient-requests", action="store_true",
                       help="ignore unknown request fields (logged at debug level) instead of answering 400")
    group.add_argument("--allowed-origins", nargs="+", default=[],
                       help="CORS: origins browsers may call the API from, e.g. https://app.example.com or *")
    group.add_argument("--allowed-methods", nargs="+", default=["*"], help="CORS: allowed methods (default: all)")
    group.add_argument("--allowed-headers", nargs="+", default=["*"], help="CORS: allowed headers (default: all)")
    group.add_argument("--allow-credentials", action="store_true", help="CORS: allow cookies and Authorization")
    group.add_argument("--log-level", default="info",
                       choices=["critical", "error", "warning", "info", "debug", "trace"])
    group.add_argument("--tool-call-parser", default=None, choices=["hermes", "qwen", "llama3_json", "mistral"],
                       help="how tool calls are read out of the model's text (tool_choice \"auto\"; without it, "
                            "only \"required\" and named tool choices work)")


def add_engine_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (defaults: EngineConfig's)")
    group.add_argument("--device", default=None, help="auto | cpu | cuda[:N]")
    group.add_argument("--dtype", default=None, help="auto | float32 | bfloat16 | float16")
    group.add_argument("--tokenizer", default=None, help="tokenizer folder (default: the model folder)")
    group.add_argument("--block-size", type=int, default=None)
    group.add_argument("--num-kv-blocks", type=int, default=None, help="default: sized from free memory")
    group.add_argument("--max-num-seqs", type=int, default=None)
    group.add_argument("--max-num-batched-tokens", type=int, default=None)
    group.add_argument("--max-model-len", type=int, default=None)
    group.add_argument("--enable-prefix-caching", action=argparse.BooleanOptionalAction, default=None)
    group.add_argument("--gpu-memory-utilization", type=float, default=None)
    group.add_argument("--load-format", default=None, choices=["auto", "dummy"])
    group.add_argument("--enforce-eager", action="store_true", default=None, help="disable CUDA graphs")
    group.add_argument("--cuda-graph-max-tokens", type=int, default=None,
                       help="steps of up to this many tokens (prefill chunks beside decodes) replay piecewise CUDA "
                            "graphs, attention running eagerly between the pieces; 0: such steps run eagerly")
    group.add_argument("--attention-backend", default=None, choices=["auto", "torch", "triton"])
    add_quantization_arguments(group)
    add_parallel_arguments(group)
    group.add_argument("--kv-events-endpoint", default=None,
                       help="publish prefix-cache events for the gateway on this ZeroMQ endpoint, e.g. "
                            "tcp://127.0.0.1:5557 (replays on the next port)")
    group.add_argument("--pooling", default=None, choices=["mean", "last", "cls"],
                       help="how embeddings pool a sequence (default: the model folder's sentence-transformers "
                            "config; else mean for encoders, the last token for decoders)")
    add_lora_arguments(group)


def add_lora_arguments(group) -> None:
    """Multi-LoRA serving (docs/lora.md)."""
    group.add_argument("--enable-lora", action="store_true", default=None,
                       help="serve LoRA adapters (implied by --lora-modules)")
    group.add_argument("--lora-modules", nargs="+", default=[], metavar="NAME=PATH",
                       help="PEFT LoRA folders served under these model names from the start")
    group.add_argument("--max-loras", type=int, default=None, help="adapters in one step (device slots; default 8)")
    group.add_argument("--max-lora-rank", type=int, default=None, help="largest adapter rank: 8, 16, 32 or 64")
    group.add_argument("--max-cpu-loras", type=int, default=None,
                       help="adapters kept in host memory (default: every one seen)")


def add_parallel_arguments(group) -> None:
    """Tensor / pipeline / data parallelism (docs/parallelism.md), spelled as vLLM spells them."""
    group.add_argument("--tensor-parallel-size", "-tp", type=int, default=None,
                       help="GPUs one model spans, one worker process each (default 1)")
    group.add_argument("--pipeline-parallel-size", "-pp", type=int, default=None,
                       help="pipeline stages (not available yet: only 1)")
    group.add_argument("--data-parallel-size", "-dp", type=int, default=None,
                       help="engine cores behind this server, each with its own KV cache and GPUs (default 1)")
    group.add_argument("--distributed-executor-backend", default=None, choices=["auto", "uni", "mp"],
                       help="mp: the model runs in worker processes; uni: in the engine core (auto: mp from TP 2)")


def add_quantization_arguments(group) -> None:
    """--quantization and --kv-cache-dtype (shared by serve, generate and bench offline)."""
    group.add_argument("--quantization", default=None, choices=["int8", "int4", "fp8"],
                       help="quantize the linear layers: int8 (W8A16), int4 (W4A16, groups of 128; also reads "
                            "GPTQ/AWQ), fp8 (W8A8; also reads fp8 checkpoints). Default: as the checkpoint says")
    group.add_argument("--kv-cache-dtype", default=None, choices=["auto", "fp8"],
                       help="fp8: float8 e4m3 KV cache, twice the blocks (default auto: the model dtype)")
    group.add_argument("--speculative-config", default=None,
                       help='speculative decoding as JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": 4, '
                            '"prompt_lookup_max": 4, "prompt_lookup_min": 2}\' or \'{"method": "draft", "model": '
                            '"demo-draft"}\' (docs/speculative_decoding.md)')


def build_configs(args: argparse.Namespace):
    """(ServerConfig, EngineConfig) from parsed flags; ValueError names the bad field."""
    from llmfleet.console.config import ConsoleConfig
    from llmfleet.protocol.config import EngineConfig
    from llmfleet.server.config import ServerConfig
    from llmfleet.entrypoints.default_model import resolve_served_model

    model, served_name = resolve_served_model(args.model)
    lora_modules = parse_lora_modules(args.lora_modules)
    if lora_modules:
        args.enable_lora = True
    engine = EngineConfig(model=model, **{f: getattr(args, f) for f in ENGINE_FLAGS if getattr(args, f) is not None})
    for _, path in lora_modules:
        read_adapter(path, engine.max_lora_rank)   # a bad folder stops the start with its reason
    names = tuple(args.served_model_name or ([served_name] if served_name else []))
    tenancy, tls = tenancy_config(args), tls_config(args)
    own_url = f"{'https' if tls else 'http'}://{_loopback(args.host)}:{args.port}"
    internal_key = tenancy.master_key if tenancy else (args.api_key or os.environ.get("LLMFLEET_API_KEY"))
    retrieval = retrieval_config(args, own_url, args.tokenizer or engine.model, internal_key)
    server = ServerConfig(host=args.host, port=args.port, served_model_names=names,
                          max_waiting_requests=args.max_waiting_requests, max_body_bytes=args.max_body_bytes,
                          drain_timeout=args.drain_timeout, preemption_notice_url=args.preemption_notice_url,
                          preemption_poll_s=args.preemption_poll_s,
                          api_key=args.api_key or os.environ.get("LLMFLEET_API_KEY") or None,
                          metrics_public=args.metrics_public,
                          log_level=args.log_level, tenancy=tenancy,
                          lenient_requests=args.lenient_requests, allowed_origins=tuple(args.allowed_origins),
                          allowed_methods=tuple(args.allowed_methods), allowed_headers=tuple(args.allowed_headers),
                          allow_credentials=args.allow_credentials, tls=tls, batch_dir=args.batch_dir,
                          batch_concurrency=args.batch_concurrency, tool_call_parser=args.tool_call_parser,
                          max_stored_responses=args.max_stored_responses,
                          console=ConsoleConfig(**console_settings(args)), apps=apps_config(args),
                          retrieval=retrieval,
                          retrieval_own_model=retrieval is not None and not args.retrieval_embeddings_url,
                          lora_modules=lora_modules)
    return server, engine


def _loopback(host: str) -> str:
    """The address this process reaches itself at (a wildcard bind is reachable on loopback)."""
    return {"0.0.0.0": "127.0.0.1", "::": "[::1]", "": "127.0.0.1"}.get(host, host)


def run(args: argparse.Namespace) -> int:
    """Serve until drained; 2 for invalid flags (the message names the field)."""
    import logging

    logging.basicConfig(level=args.log_level.upper() if args.log_level != "trace" else "DEBUG",
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        server_config, engine_config = build_configs(args)
    except ValueError as exc:
        print(f"llmfleet serve: error: {exc}", file=sys.stderr)
        return 2
    from llmfleet.server.runner import serve

    return serve(server_config, engine_config)
