"""`llmfleet bench offline`: offline throughput of one workload on one model shape (random weights by default).

Every request is submitted at once (EOS ignored, so each produces exactly its output length), the engine steps
until all finish, and one JSON record goes to benchmarks/results/<device>/ with throughput, the fraction of the
running device's bandwidth/compute bound and the peers' figures on that device where BENCHMARKS.md gives them
(bench/ceilings.py; none for a device without figures), and where the time went per step
(host: scheduling, input preparation, bookkeeping; device: the model and sampling, timed with CUDA events).
"""
from __future__ import annotations

import argparse
import json
import statistics
import time

from llmfleet.bench import lora
from llmfleet.bench.ceilings import bound_fields
from llmfleet.bench.results import slug
from llmfleet.bench.workloads import VOCAB_LIMIT, workload

def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", required=True, help="qwen3-0.6b | llama3-8b | a model folder")
    p.add_argument("--workload", required=True, choices=["W0", "W1", "W2", "W4", "W6", "W7"],
                   help="W7 (editing) is text: a model folder with a tokenizer (real weights)")
    p.add_argument("--num-requests", type=int, default=None, help="only the first N requests of the workload")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto")
    p.add_argument("--load-format", default=None, help="dummy (random weights; default for shapes) or auto")
    p.add_argument("--max-num-seqs", type=int, default=256)
    p.add_argument("--max-num-batched-tokens", type=int, default=8192)
    p.add_argument("--max-model-len", type=int, default=None)
    p.add_argument("--gpu-memory-utilization", type=float, default=0.85)
    p.add_argument("--no-prefix-caching", action="store_true")
    p.add_argument("--enforce-eager", action="store_true", help="no CUDA graphs")
    p.add_argument("--cuda-graph-max-tokens", type=int, default=None,
                   help="largest step replayed as piecewise CUDA graphs (0: none; default: EngineConfig's)")
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--quantization", default=None, choices=["int8", "int4", "fp8"],
                   help="quantize the linear layers (default: none, or the checkpoint's own)")
    p.add_argument("--kv-cache-dtype", default="auto", choices=["auto", "fp8"])
    p.add_argument("--structured", default="none", choices=["none", "json"],
                   help="json: every request decodes under a JSON schema (a benchmark shape then gets a byte-level "
                        "tokenizer of its vocabulary size); throughput counts the tokens that came out")
    p.add_argument("--speculative-config", default=None,
                   help='speculative decoding as JSON, e.g. \'{"method": "ngram", "num_speculative_tokens": 4}\'; '
                        'the record then reports acceptance (mean tokens per verify pass)')
    lora.add_arguments(p)
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="GPUs (worker processes) the model spans")
    p.add_argument("--distributed-executor-backend", default="auto", choices=["auto", "uni", "mp"],
                   help="mp: the model runs in worker processes (auto: mp when --tensor-parallel-size > 1)")
    p.add_argument("--device-name", default=None,
                   help="the record's device (its folder under results), e.g. cpu-2-core; default: the device's name")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def run(args: argparse.Namespace) -> int:
    from llmfleet.bench.results import write_result

    record = run_benchmark(args)
    _print_summary(record)
    if not args.no_save:
        print("wrote", write_result(record, "offline", args.results_dir))
    return 0


def run_benchmark(args: argparse.Namespace) -> dict:
    from llmfleet.model.shapes import SHAPES
    from llmfleet.protocol.config import EngineConfig
    from llmfleet.engine.llm_engine import LLMEngine

    requests = workload(args.workload, args.num_requests)
    longest = max(len(r.prompt_token_ids) + r.max_tokens for r in requests) + (1024 if requests[0].prompt else 0)
    load_format = args.load_format or ("dummy" if args.shape in SHAPES else "auto")
    tokenizer, spec = _structured(args, SHAPES)
    started = time.perf_counter()
    engine = LLMEngine(EngineConfig(
        model=args.shape, tokenizer=tokenizer, device=args.device, dtype=args.dtype, load_format=load_format,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        max_model_len=args.max_model_len or max(longest, 4096), gpu_memory_utilization=args.gpu_memory_utilization,
        enable_prefix_caching=not args.no_prefix_caching, enforce_eager=args.enforce_eager,
        quantization=args.quantization, kv_cache_dtype=args.kv_cache_dtype,
        speculative_config=args.speculative_config, tensor_parallel_size=args.tensor_parallel_size,
        distributed_executor_backend=args.distributed_executor_backend, **lora.engine_options(args),
        **({} if args.cuda_graph_max_tokens is None else {"cuda_graph_max_tokens": args.cuda_graph_max_tokens})))
    ready_s = time.perf_counter() - started
    try:
        return _measure(args, engine, requests, ready_s, spec)
    finally:
        engine.core.shutdown()


def _measure(args, engine, requests, ready_s: float, spec) -> dict:
    adapters = lora.make_adapters(args, engine)
    _warm_up(engine, requests, adapters)
    lora_before = lora.snapshot(engine)
    timing = _drive(engine, requests, args.temperature, spec, adapters)
    out_tokens = timing.pop("output_tokens")
    spec_stats = timing.pop("spec_stats")
    in_tokens = sum(len(r.prompt_token_ids) for r in requests)
    record = dict(
        shape=args.shape, workload=args.workload, num_requests=len(requests), input_tokens=in_tokens,
        output_tokens=out_tokens, elapsed_s=timing["elapsed_s"], output_tokens_per_s=out_tokens / timing["elapsed_s"],
        total_tokens_per_s=(in_tokens + out_tokens) / timing["elapsed_s"], ready_s=ready_s,
        num_kv_blocks=engine.runner.num_blocks, block_size=engine.config.block_size,
        cuda_graphs=engine.runner.graphs is not None, temperature=args.temperature,
        cuda_graph_max_tokens=engine.runner.piecewise.sizes[-1] if engine.runner.piecewise else 0,
        max_num_seqs=args.max_num_seqs, max_num_batched_tokens=args.max_num_batched_tokens,
        prefix_caching=not args.no_prefix_caching, quantization=args.quantization,
        kv_cache_dtype=args.kv_cache_dtype, structured=args.structured, kv_tokens=engine.runner.num_blocks * engine.config.block_size,
        seqs_of_8k_tokens=engine.runner.num_blocks // -(-8192 // engine.config.block_size),
        weight_gib=engine.runner.weight_bytes / 2**30, tensor_parallel_size=args.tensor_parallel_size,
        worker_processes=engine.config.uses_worker_processes, **{k: v for k, v in timing.items() if k != "elapsed_s"},
        **lora.record_fields(args, engine, adapters, lora_before))
    if engine.config.speculative_config is not None:
        record.update(speculative_config=json.loads(args.speculative_config), spec_decode=_acceptance(spec_stats))
    record["device"] = getattr(args, "device_name", None) or _device_name(engine.runner.device)
    record.update(bound_fields(slug(record["device"]), args.shape, args.workload, record["output_tokens_per_s"]))
    return record


def _structured(args: argparse.Namespace, shapes) -> tuple[str | None, object]:
    """(tokenizer folder or None, StructuredSpec or None) for `--structured`."""
    if args.structured == "none":
        return None, None
    import json
    import tempfile

    from llmfleet.bench.structured import DECODE_SCHEMA, byte_level_tokenizer
    from llmfleet.model.shapes import shape_config
    from llmfleet.protocol.structured import StructuredSpec

    folder = None
    if args.shape in shapes:
        folder = byte_level_tokenizer(shape_config(args.shape).vocab_size, tempfile.mkdtemp(prefix="bench-tok-"))
    return folder, StructuredSpec("json", json.dumps(DECODE_SCHEMA))


def _device_name(device: str) -> str:
    """The name of the device the engine ran on (a CUDA device's own name, else "cpu")."""
    import torch

    if not device.startswith("cuda"):
        return "cpu"
    return torch.cuda.get_device_name(torch.device(device))


def _adapter(adapters: list, i: int):
    return adapters[i % len(adapters)] if adapters else None


def _warm_up(engine, requests, adapters: list) -> None:
    """Runs a scaled-down copy of the workload first (a quarter of its requests, outputs cut to 64 tokens), so that
    kernel specialisations for its mix of prefill, mixed and decode steps are compiled before timing."""
    from llmfleet.protocol.sampling_params import SamplingParams

    for i, r in enumerate(requests[: max(1, len(requests) // 4)]):
        params = SamplingParams(max_tokens=min(r.max_tokens, 64), ignore_eos=True, detokenize=False,
                                output_kind="final_only")
        engine.add_request(f"warmup-{i}", _prompt(engine, r), params, lora_request=_adapter(adapters, i))
    while engine.has_unfinished_requests():
        engine.step()
    engine.kv.reset_prefix_cache()  # the timed run must not hit prefixes cached by the warm-up


def _fold(engine, ids: list[int]) -> list[int]:
    """A small test model's vocabulary may be smaller than the workload's id range: fold ids into it."""
    return [t % engine.vocab_size for t in ids] if engine.vocab_size < VOCAB_LIMIT else ids


def _prompt(engine, r):
    """A request's prompt: a text one (W7) as a user message through the chat template, else its ids."""
    if r.prompt is None:
        return _fold(engine, r.prompt_token_ids)
    tok = engine.tokenizer
    if getattr(tok, "chat_template", None):
        return tok.apply_chat_template([{"role": "user", "content": r.prompt}], add_generation_prompt=True,
                                       tokenize=False)
    return r.prompt


def _acceptance(delta: dict) -> dict:
    """Speculation's figures over the timed run: mean tokens per verify pass (accepted drafts + 1) and more."""
    drafts, accepted = delta["num_drafts"], delta["num_accepted_tokens"]
    return dict(delta, acceptance_rate=accepted / delta["num_draft_tokens"] if delta["num_draft_tokens"] else None,
                mean_acceptance_length=1 + accepted / drafts if drafts else None)


def _spec_delta(before, after) -> dict:
    return dict(num_drafts=after.spec_num_drafts - before.spec_num_drafts,
                num_draft_tokens=after.spec_num_draft_tokens - before.spec_num_draft_tokens,
                num_accepted_tokens=after.spec_num_accepted_tokens - before.spec_num_accepted_tokens,
                accepted_per_pos=[a - b for a, b in zip(after.spec_accepted_per_pos,
                                                        before.spec_accepted_per_pos or [0] * len(
                                                            after.spec_accepted_per_pos))])


def _drive(engine, requests, temperature: float, structured=None, adapters: list = ()) -> dict:
    import torch

    from llmfleet.protocol.sampling_params import SamplingParams

    cuda = torch.cuda.is_available() and engine.runner.device.startswith("cuda")
    engine.runner.step_timings = []
    step_s: list[float] = []
    stats0 = engine.stats()
    start, start_mono = time.perf_counter(), time.monotonic()
    for i, r in enumerate(requests):
        params = SamplingParams(temperature=temperature, top_p=1.0, max_tokens=r.max_tokens, structured=structured,
                                ignore_eos=r.prompt is None, detokenize=False, output_kind="final_only")
        engine.add_request(f"bench-{i}", _prompt(engine, r), params, lora_request=_adapter(adapters, i))
    first_token: dict[str, float] = {}
    output_tokens = 0
    while engine.has_unfinished_requests():
        t0 = time.perf_counter()
        outputs = engine.step()
        now = time.perf_counter()
        step_s.append(now - t0)
        for o in outputs:
            first_token[o.request_id] = o.metrics["first_token_time"] - start_mono
            output_tokens += sum(len(c.token_ids) for c in o.outputs)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - start
    device_ms = [s.elapsed_time(e) for _, s, e in engine.runner.step_timings] if cuda else []
    prepare_ms = [p * 1e3 for p, _, _ in engine.runner.step_timings]
    step_ms = [x * 1e3 for x in step_s]
    engine.runner.step_timings = None
    stats1 = engine.stats()
    ttft = sorted(first_token.values())
    return dict(elapsed_s=elapsed, steps=len(step_ms), output_tokens=output_tokens,
                step_wall_ms_mean=_mean(step_ms), device_ms_per_step_mean=_mean(device_ms),
                host_ms_per_step_mean=_mean(step_ms) - _mean(device_ms) if device_ms else None,
                prepare_inputs_ms_per_step_mean=_mean(prepare_ms),
                device_busy_fraction=(sum(device_ms) / 1e3 / elapsed) if device_ms else None,
                ttft_s_p50=_pct(ttft, 50), ttft_s_p90=_pct(ttft, 90),
                num_preemptions=stats1.num_preemptions - stats0.num_preemptions,
                prefix_cache_hit_tokens=stats1.prefix_cache_hits - stats0.prefix_cache_hits,
                spec_stats=_spec_delta(stats0, stats1))


def _mean(values: list[float]) -> float | None:
    return statistics.fmean(values) if values else None


def _pct(values: list[float], pct: float) -> float | None:
    if not values:
        return None
    return values[min(len(values) - 1, int(len(values) * pct / 100))]


def _print_summary(r: dict) -> None:
    frac = f" ({r['fraction_of_bound']:.0%} of {r['ceilings_device']}'s bound)" if r.get("fraction_of_bound") else ""
    print(f"{r['shape']} {r['workload']}: {r['output_tokens_per_s']:.0f} output tok/s{frac}, "
          f"{r['total_tokens_per_s']:.0f} total tok/s, {r['elapsed_s']:.2f} s, {r['steps']} steps, "
          f"ready in {r['ready_s']:.1f} s; peers {r['peers_output_tokens_per_s']}")
    if r.get("spec_decode"):
        spec = r["spec_decode"]
        print(f"  speculation: {spec['num_drafts']} verify passes, mean acceptance length "
              f"{spec['mean_acceptance_length'] or 0:.2f} tokens/pass, acceptance rate {spec['acceptance_rate'] or 0:.0%}")
    if r.get("device_ms_per_step_mean") is not None:
        print(f"  per step: wall {r['step_wall_ms_mean']:.2f} ms, device {r['device_ms_per_step_mean']:.2f} ms, "
              f"input prep {r['prepare_inputs_ms_per_step_mean']:.2f} ms, "
              f"device busy {r['device_busy_fraction']:.0%}")
