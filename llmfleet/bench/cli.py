"""`llmfleet bench offline | serve | gateway | fleet | perplexity | embed | grammar | semantic-cache |
conversation-memory | onnx`: the project's own benchmarks
(workloads in BENCHMARKS.md).

Each subcommand's module defines `add_arguments(parser)` and `run(args) -> int`; a module that is not installed
simply has no subcommand.
"""
from __future__ import annotations

import argparse
import importlib

SUBCOMMANDS = {
    "offline": ("llmfleet.bench.offline", "offline throughput of the engine (W0, W1, W2, W4, W6, W7)"),
    "serve": ("llmfleet.bench.serve", "streaming HTTP load against a running server (W3, W4, W5)"),
    "gateway": ("llmfleet.bench.gateway", "latency the gateway adds over a fixed-answer backend, and its req/s"),
    "embed": ("llmfleet.bench.embed", "sentences/s of an embedding model through the engine"),
    "fleet": ("llmfleet.bench.fleet", "a workload through the gateway over N llmfleet serve replicas, per policy"),
    "perplexity": ("llmfleet.bench.perplexity", "perplexity of a model on a text file (and transformers' on it)"),
    "retrieval": ("llmfleet.bench.retrieval", "vector index recall@10 and latency, unfiltered and per tenant"),
    "grammar": ("llmfleet.bench.structured", "structured outputs: compile time of a wide JSON schema"),
    "sparse24": ("llmfleet.bench.sparse24", "2:4 semi-structured sparse vs dense prefill matmul time (CUDA)"),
    "verify-step": ("llmfleet.bench.verify_step", "speculative decoding: verify-step time per k and batch, and the "
                    "speedup it predicts"),
    "moe-kernel": ("llmfleet.bench.moe_kernel", "fused MoE layer time and bandwidth at decode batch sizes"),
    "semantic-cache": ("llmfleet.bench.semantic_cache", "the semantic cache's hit and false-hit rates on its "
                                                         "paraphrase set, and its lookup time"),
    "allreduce": ("llmfleet.bench.allreduce", "all-reduce latency per message size: NCCL against the custom "
                                               "one-shot / two-shot kernels (one process per GPU)"),
    "conversation-memory": ("llmfleet.bench.conversation_memory", "a 50-turn conversation with a planted fact "
                                                                   "through conversation memory"),
    "onnx": ("llmfleet.bench.onnx", "first-token and per-token latency of an ONNX export: onnxruntime CPU, "
             "the browser (onnxruntime-web), llmfleet CPU"),
}


def add_parser(subparsers, name: str) -> argparse.ArgumentParser:
    """Register `llmfleet bench` with one subcommand per installed bench module."""
    parser = subparsers.add_parser(name, help="benchmarks: offline throughput, or an HTTP load against a server")
    sub = parser.add_subparsers(dest="bench_command", required=True)
    for sub_name, (module_name, help_text) in SUBCOMMANDS.items():
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name != module_name:
                raise  # a broken import inside the module must not hide the subcommand silently
            continue
        module.add_arguments(sub.add_parser(sub_name, help=help_text))
    return parser


def run(args: argparse.Namespace) -> int:
    """Hand the parsed flags to the chosen subcommand's module."""
    return importlib.import_module(SUBCOMMANDS[args.bench_command][0]).run(args)
