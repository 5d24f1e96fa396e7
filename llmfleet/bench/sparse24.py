"""`llmfleet bench sparse24`: prefill matmul time of 2:4 semi-structured sparse weights vs dense, on CUDA.

For every linear layer of a shape (qkv, o, gate_up, down of one decoder block: the weights `llmfleet prune`
sparsifies) and each prefill size T, times y = x @ W.T with W dense and with W compressed by
`torch.sparse.to_sparse_semi_structured` (W pruned 2:4 by magnitude first, so both compute the same product; the
largest difference is recorded), both in bf16, CUDA events over `--iters` runs after a warm-up. Also the per-block
total (the sum over the block's layers, each once), which is what a prefill step's linear layers cost.
"""
from __future__ import annotations

import argparse

DEFAULT_SHAPES = ("smollm2-135m", "llama3-8b")
SMOLLM2_135M = dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
                    head_dim=64)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--shape", nargs="+", default=list(DEFAULT_SHAPES),
                   help="smollm2-135m, a benchmark shape (llama3-8b, qwen3-0.6b) or a model folder")
    p.add_argument("--tokens", type=int, nargs="+", default=[512, 2048, 8192], help="prefill sizes T")
    p.add_argument("--iters", type=int, default=50)
    p.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float16"])
    p.add_argument("--results-dir", default="benchmarks/results")
    p.add_argument("--no-save", action="store_true")


def linear_shapes(shape: str) -> dict[str, tuple[int, int]]:
    """{layer: (out, in)} of one decoder block of `shape`, qkv and gate_up merged as the engine runs them."""
    if shape == "smollm2-135m":
        c = dict(SMOLLM2_135M)
    else:
        from llmfleet.model.shapes import shape_config
        config = shape_config(shape)
        c = {k: getattr(config, k) for k in SMOLLM2_135M if k != "head_dim"}
        c["head_dim"] = getattr(config, "head_dim", None) or c["hidden_size"] // c["num_attention_heads"]
    hidden, head = c["hidden_size"], c["head_dim"]
    q, kv = c["num_attention_heads"] * head, c["num_key_value_heads"] * head
    return {"qkv": (q + 2 * kv, hidden), "o": (hidden, q), "gate_up": (2 * c["intermediate_size"], hidden),
            "down": (hidden, c["intermediate_size"])}


def time_layer(out_features: int, in_features: int, tokens: int, dtype, iters: int) -> dict:
    """Dense vs semi-structured F.linear on one weight: milliseconds each, speedup, max |difference|."""
    import torch
    import torch.nn.functional as F
    from torch.sparse import to_sparse_semi_structured

    from llmfleet.model.layers.quantization.sparse24 import two_four_mask
    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(out_features, in_features, device="cuda", dtype=dtype, generator=gen)
    weight = weight * two_four_mask(weight.abs().float()).to(dtype)                   # [out, in], 2:4
    x = torch.randn(tokens, in_features, device="cuda", dtype=dtype, generator=gen)   # [T, in]
    sparse = to_sparse_semi_structured(weight)
    dense_ms = _cuda_ms(lambda: F.linear(x, weight), iters)
    sparse_ms = _cuda_ms(lambda: F.linear(x, sparse), iters)
    diff = (F.linear(x, weight).float() - F.linear(x, sparse).float()).abs().max().item()
    flops = 2 * tokens * out_features * in_features
    return {"out": out_features, "in": in_features, "tokens": tokens, "dense_ms": round(dense_ms, 4),
            "sparse_ms": round(sparse_ms, 4), "speedup": round(dense_ms / sparse_ms, 3),
            "dense_tflops": round(flops / dense_ms / 1e9, 1), "max_abs_diff": diff}


def _cuda_ms(fn, iters: int) -> float:
    import torch
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(iters):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / iters


def run(args: argparse.Namespace) -> int:
    import torch

    from llmfleet.bench.results import write_result
    if not torch.cuda.is_available():
        raise ValueError("device: bench sparse24 times CUDA semi-structured sparse kernels; no CUDA device here")
    dtype = getattr(torch, args.dtype)
    for shape in args.shape:
        rows = []
        for tokens in args.tokens:
            layers = {name: time_layer(o, i, tokens, dtype, args.iters) for name, (o, i) in linear_shapes(shape).items()}
            dense = sum(r["dense_ms"] for r in layers.values())
            sparse = sum(r["sparse_ms"] for r in layers.values())
            rows.append({"tokens": tokens, "layers": layers, "block_dense_ms": round(dense, 4),
                         "block_sparse_ms": round(sparse, 4), "block_speedup": round(dense / sparse, 3)})
            print(f"{shape} T={tokens}: block dense {dense:.3f} ms, 2:4 {sparse:.3f} ms, speedup {dense / sparse:.2f}x"
                  + "".join(f"; {n} {r['speedup']:.2f}x" for n, r in layers.items()))
        record = {"shape": shape, "workload": "prefill-matmul", "dtype": args.dtype, "iters": args.iters,
                  "rows": rows}
        if not args.no_save:
            print("wrote", write_result(record, "sparse24", args.results_dir))
    return 0
