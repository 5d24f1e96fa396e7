"""`llmfleet bench moe-kernel`: time of the fused MoE layer (sort + two grouped GEMMs + sum) at decode batch sizes,
and its bandwidth over the bytes of the distinct experts the batch reads.

Expert shapes come from a benchmark shape's config (default qwen3-30b-a3b: 128 experts of 2048 x 768, top 8).
Routing is softmax-top-k of random logits, so a batch of B tokens reads about min(E, B * k) distinct experts; those
weights ([2I, H] + [H, I] each, bf16) are the bytes a decode step must move, and bytes / time is the achieved
bandwidth. Each measurement replays a CUDA graph of `--layers` calls on as many separate weight copies (so no layer
finds its experts in L2), and is checked against the torch reference. `--tune` times every candidate block
configuration at every batch and reports the best (a row for fused_moe.CONFIG_TABLE).
"""
from __future__ import annotations

import argparse
import itertools

# device-to-device copy bandwidth (bytes read + written) per device slug, BENCHMARKS.md's ceilings
COPY_GB_PER_S = {"nvidia-h200": 4275, "nvidia-h100-80gb-hbm3": 3013}
CANDIDATES = [dict(BLOCK_M=m, BLOCK_N=n, BLOCK_K=k, GROUP_M=8, num_warps=4, num_stages=s)
              for m, n, k, s in itertools.product((16, 32, 64), (32, 64, 128), (64, 128), (3, 4))]


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", default="qwen3-30b-a3b", help="a benchmark shape with experts")
    p.add_argument("--batch", type=int, nargs="+", default=[1, 16, 128], help="tokens per call")
    p.add_argument("--layers", type=int, default=8, help="weight copies per timed graph (defeats L2 reuse)")
    p.add_argument("--iters", type=int, default=20, help="graph replays timed per measurement")
    p.add_argument("--tune", action="store_true", help="time every candidate block configuration too")
    p.add_argument("--device-name", default=None, help="the record's device folder (default: the device's name)")
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def expert_dims(shape: str) -> tuple[int, int, int, int]:
    """(experts, top_k, hidden, intermediate) of a shape with experts."""
    from llmfleet.model.shapes import shape_config
    config = shape_config(shape)
    experts = getattr(config, "num_experts", None) or getattr(config, "num_local_experts", None)
    if not experts:
        raise ValueError(f"shape: {shape!r} has no experts")
    inter = getattr(config, "moe_intermediate_size", None) or config.intermediate_size
    return experts, config.num_experts_per_tok, config.hidden_size, inter


def run(args: argparse.Namespace) -> int:
    import torch

    from llmfleet.bench.results import device_name, slug, write_result
    from llmfleet.kernels.fused_moe import config_for

    if not torch.cuda.is_available():
        raise SystemExit("bench moe-kernel: needs a CUDA device")
    experts, top_k, hidden, inter = expert_dims(args.shape)
    weights = _weights(args.layers, experts, hidden, inter)
    ceiling = COPY_GB_PER_S.get(slug(device_name()))
    rows = []
    for batch in args.batch:
        routed = _routing(batch, experts, top_k, hidden)
        row = dict(batch=batch, distinct_experts=int(torch.unique(routed[2]).numel()),
                   config=config_for(batch, top_k, experts))
        row["expert_bytes"] = row["distinct_experts"] * 3 * hidden * inter * 2
        row["max_abs_error_vs_torch"] = _error(weights[0], routed)
        row["us"] = _time(weights, routed, row["config"], args.iters)
        row["gb_per_s"] = row["expert_bytes"] / row["us"] / 1e3
        row["fraction_of_copy_bandwidth"] = row["gb_per_s"] / ceiling if ceiling else None
        if args.tune:
            row["candidates"] = [dict(config=c, us=_try_time(weights, routed, c, args.iters)) for c in CANDIDATES]
            best = min((c for c in row["candidates"] if c["us"]), key=lambda c: c["us"])
            row["best"] = dict(best, gb_per_s=row["expert_bytes"] / best["us"] / 1e3)
        rows.append(row)
        best = f", best {row['best']['us']:.1f} us {row['best']['config']}" if args.tune else ""
        print(f"batch {batch}: {row['distinct_experts']} experts, {row['us']:.1f} us, {row['gb_per_s']:.0f} GB/s, "
              f"max error {row['max_abs_error_vs_torch']:.2e}{best}")
    record = dict(shape=args.shape, workload="moe-kernel", experts=experts, top_k=top_k, hidden_size=hidden,
                  moe_intermediate_size=inter, dtype="bfloat16", layers=args.layers, copy_gb_per_s=ceiling, rows=rows,
                  device=args.device_name or device_name())
    if not args.no_save:
        print("wrote", write_result(record, "moe-kernel", args.results_dir))
    return 0


def _weights(layers: int, experts: int, hidden: int, inter: int):
    import torch
    gen = torch.Generator(device="cuda").manual_seed(0)
    return [(torch.randn(experts, 2 * inter, hidden, device="cuda", generator=gen, dtype=torch.bfloat16) * 0.02,
             torch.randn(experts, hidden, inter, device="cuda", generator=gen, dtype=torch.bfloat16) * 0.02)
            for _ in range(layers)]


def _routing(batch: int, experts: int, top_k: int, hidden: int):
    import torch
    gen = torch.Generator(device="cuda").manual_seed(batch)
    x = torch.randn(batch, hidden, device="cuda", generator=gen, dtype=torch.bfloat16)
    probs = torch.softmax(torch.randn(batch, experts, device="cuda", generator=gen), dim=-1)
    w, ids = torch.topk(probs, top_k, dim=-1)
    return x, w / w.sum(-1, keepdim=True), ids.to(torch.int32)


def _error(layer_weights, routed) -> float:
    from llmfleet.kernels.fused_moe import fused_moe_torch, fused_moe_triton
    x, w, ids = routed
    got = fused_moe_triton(x, *layer_weights, w, ids)
    want = fused_moe_torch(x, *layer_weights, w, ids)
    return (got.float() - want.float()).abs().max().item()


def _try_time(weights, routed, config: dict, iters: int) -> float | None:
    """`_time`, or None for a configuration the device cannot run (e.g. more shared memory than it has)."""
    try:
        return _time(weights, routed, config, iters)
    except Exception as exc:  # noqa: BLE001 - triton raises its own OutOfResources and compile errors
        print(f"  {config}: {type(exc).__name__}")
        return None


def _time(weights, routed, config: dict, iters: int) -> float:
    """Microseconds per layer call: a graph of one call per weight copy, replayed `iters` times."""
    import torch

    from llmfleet.kernels.fused_moe import fused_moe_triton
    x, w, ids = routed

    def calls():
        for w13, w2 in weights:
            fused_moe_triton(x, w13, w2, w, ids, config=config)

    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        calls()  # compiles; warms up
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        calls()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(iters):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) * 1e3 / (iters * len(weights))
