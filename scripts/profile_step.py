"""Where one decode step's time goes on the GPU: graph-replay time, and a kernel table of the eager step.

    python3 scripts/profile_step.py --shape qwen3-0.6b --batch 256 --context 640

Builds the engine with random weights, fills `batch` sequences of `context` tokens, then times decode steps
(CUDA-graph replay of the model, sampling, the whole engine step) and prints torch.profiler's top kernels for one
eager decode step. Start-up phases are logged with their durations.
"""
from __future__ import annotations

import argparse
import logging
import time

import torch


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--shape", default="qwen3-0.6b")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--context", type=int, default=640)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--prefill-tokens", type=int, default=8192)
    p.add_argument("--prefill-len", type=int, default=512)
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(relativeCreated)8.0f ms %(name)s: %(message)s")

    from llmfleet.protocol.config import EngineConfig
    from llmfleet.engine.llm_engine import LLMEngine
    from llmfleet.protocol.sampling_params import SamplingParams

    t0 = time.perf_counter()
    engine = LLMEngine(EngineConfig(model=args.shape, load_format="dummy", max_model_len=4096, async_scheduling=False,
                                    max_num_seqs=args.batch))
    print(f"ready in {time.perf_counter() - t0:.1f} s")
    params = SamplingParams(max_tokens=10_000 - args.context, ignore_eos=True, detokenize=False)
    for i in range(args.batch):
        engine.add_request(f"r{i}", [(i * 7 + j) % 10_000 for j in range(args.context)], params)
    while engine.scheduler.waiting or any(s.num_computed_tokens < s.num_prompt_tokens
                                          for s in engine.scheduler.running):
        engine.step()
    for _ in range(3):
        engine.step()
    torch.cuda.synchronize()
    t = time.perf_counter()
    for _ in range(args.steps):
        engine.step()
    torch.cuda.synchronize()
    step_ms = (time.perf_counter() - t) / args.steps * 1e3

    out = engine.scheduler.schedule()          # one more decode step, taken apart
    from llmfleet.worker.inputs import prepare_inputs
    runner = engine.runner
    seqs = runner.seqs.apply(out)
    inputs = prepare_inputs(seqs, list(out.num_scheduled_tokens.values()), runner.block_size)
    graph_ms = _time(lambda: runner.graphs.run(inputs))
    logits = runner.graphs.run(inputs)
    batch = runner._sampling_batch(seqs)
    from llmfleet.model.layers.sampler import sample
    sample_ms = _time(lambda: sample(logits, batch))
    eager_ms = _time(lambda: runner.model.compute_logits(runner._forward(inputs)))
    kv_bytes = sum(int(n) for n in inputs.seq_lens) * 2 * len(runner.layers) * runner.kv_heads \
        * runner.info.head_dim * 2
    weight_bytes = sum(p.numel() * p.element_size() for p in runner.model.parameters())
    bound_ms = (kv_bytes + weight_bytes) / 3.013e12 * 1e3
    print(f"{args.shape} batch {args.batch} context ~{args.context}: engine step {step_ms:.2f} ms | graph replay "
          f"{graph_ms:.2f} ms | sampling {sample_ms:.2f} ms | eager forward {eager_ms:.2f} ms | bandwidth bound "
          f"{bound_ms:.2f} ms (KV {kv_bytes / 1e9:.1f} GB + weights {weight_bytes / 1e9:.1f} GB)")
    from torch.profiler import ProfilerActivity, profile
    _kernel_table(lambda: runner.model.compute_logits(runner._forward(inputs)))

    prefill = runner.dummy_inputs(args.prefill_tokens, args.prefill_tokens // args.prefill_len)
    prefill_ms = _time(lambda: runner._forward(prefill), reps=3)
    flops = 2 * sum(p.numel() for p in runner.model.parameters()) * args.prefill_tokens
    print(f"prefill step of {args.prefill_tokens} tokens ({args.prefill_len}-token prompts): {prefill_ms:.2f} ms, "
          f"{flops / prefill_ms / 1e9:.0f} TFLOP/s on the weights' matmuls alone")
    _kernel_table(lambda: runner._forward(prefill))


def _kernel_table(fn) -> None:
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    print(prof.key_averages().table(sort_by="cuda_time_total", row_limit=14, max_name_column_width=60))


def _time(fn, reps: int = 10) -> float:
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(reps):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / reps


if __name__ == "__main__":
    main()
