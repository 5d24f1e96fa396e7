"""Times the Triton paged-attention kernels on a GPU: decode (split-KV) and prefill (with cached prefix).

    python scripts/bench_kernels.py [--sweep] [--json PATH]

Decode: batch 1/64/256 x context 512/2048/8192 for the qwen3-0.6b (16 q heads) and llama3-8b (32 q heads) shapes
(8 KV heads, head_dim 128, bf16, block_size 16, shuffled block tables), reported as achieved GB/s of KV read
against the copy ceiling. Prefill: causal attention over packed sequences, reported in TFLOP/s beside torch's
SDPA (flash, contiguous K/V, no paging) and the torch reference backend. Times are triton.testing.do_bench
medians (it clears the L2 cache before every run). --sweep also times tile/warp/stage/split variants.
"""
import argparse
import json
import os
import subprocess
import sys
import time

import torch
import triton
import triton.testing

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from llmfleet.kernels import decode_attention as dec  # noqa: E402
from llmfleet.kernels import prefill_attention as pre  # noqa: E402
from llmfleet.model.layers.triton_attention import TritonAttentionBackend  # noqa: E402
from llmfleet.model.layers.attention import AttentionMetadata, TorchAttentionBackend  # noqa: E402

MODELS = {"qwen3-0.6b": 16, "llama3-8b": 32}  # q heads; both have 8 KV heads of 128 dims
KV_HEADS, HEAD_DIM, BLOCK = 8, 128, 16
COPY_CEILING_GBS = 3013.0  # BENCHMARKS.md, device-to-device copy on the lent H100
BF16 = torch.bfloat16


def bench(fn) -> float:
    return triton.testing.do_bench(fn, warmup=25, rep=100, return_mode="median")


def warm_up(seconds: float = 2.0) -> None:
    """Matrix products until the clocks have left idle (the first small timings ran 2-4x slow without this)."""
    a = torch.randn(8192, 8192, device="cuda", dtype=BF16)
    start = time.time()
    while time.time() - start < seconds:
        a @ a
        torch.cuda.synchronize()


def measured_copy_gbs() -> float:
    src = torch.empty(1 << 30, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = bench(lambda: dst.copy_(src))
    return 2 * src.numel() / ms / 1e6


class Pool:
    """One random KV cache big enough for the largest case; block tables are shuffled slices of it."""

    def __init__(self, num_tokens: int):
        self.num_blocks = triton.cdiv(num_tokens, BLOCK) + 64
        self.cache = torch.randn(2, self.num_blocks, BLOCK, KV_HEADS, HEAD_DIM, device="cuda", dtype=BF16)
        self.gen = torch.Generator(device="cuda").manual_seed(0)

    def meta(self, seqs, num_decodes):
        """seqs: (cached, query_len) pairs. A step whose new tokens are already in the cache (slots set, too)."""
        seq_lens = [c + n for c, n in seqs]
        width = max(triton.cdiv(s, BLOCK) for s in seq_lens)
        perm = torch.randperm(self.num_blocks, device="cuda", generator=self.gen)[: width * len(seqs)]
        tables = perm.view(len(seqs), width).to(torch.int32)
        starts = [0]
        for _, n in seqs:
            starts.append(starts[-1] + n)
        slots = torch.cat([self._slots(tables[i], c, n) for i, (c, n) in enumerate(seqs)])
        dev = lambda xs: torch.tensor(xs, dtype=torch.int32, device="cuda")  # noqa: E731
        return AttentionMetadata(len(seqs), num_decodes, max(n for _, n in seqs), max(seq_lens), dev(starts),
                                 dev(seq_lens), tables, slots, starts, seq_lens)

    @staticmethod
    def _slots(table, cached, q_len):
        pos = torch.arange(cached, cached + q_len, device="cuda")
        return table[pos // BLOCK].long() * BLOCK + pos % BLOCK


def qkv(tokens, num_heads, seed=1):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(tokens, num_heads, HEAD_DIM, device="cuda", dtype=BF16, generator=g)
    k = torch.randn(tokens, KV_HEADS, HEAD_DIM, device="cuda", dtype=BF16, generator=g)
    return q, k, torch.randn_like(k)


def decode_case(pool, num_heads, batch, ctx, variant):
    meta = pool.meta([(ctx - 1, 1)] * batch, batch)
    q, k, v = qkv(batch, num_heads)
    out = torch.empty_like(q)
    block_n = variant.get("block_n", 64)
    splits = variant.get("splits") or dec.choose_num_splits(batch, KV_HEADS, ctx, _sms(), block_n)
    kernel = lambda: dec.decode_attention(  # noqa: E731
        q, pool.cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, out, num_decodes=batch,
        num_splits=splits, scale=HEAD_DIM ** -0.5, block_n=block_n, num_warps=variant.get("num_warps", 4),
        num_stages=variant.get("num_stages", 2))
    kv_bytes = batch * ctx * KV_HEADS * HEAD_DIM * 2 * 2
    ms = bench(kernel)
    backend = TritonAttentionBackend(num_splits=splits, decode_block_n=block_n)
    fwd_ms = bench(lambda: backend.forward(q, k, v, pool.cache, meta, HEAD_DIM ** -0.5)) if not variant else None
    return dict(batch=batch, ctx=ctx, splits=splits, ms=ms, forward_ms=fwd_ms, gbs=kv_bytes / ms / 1e6)


def prefill_case(pool, num_heads, seqs, variant, with_torch):
    meta = pool.meta(seqs, 0)
    q, k, v = qkv(sum(n for _, n in seqs), num_heads)
    out = torch.empty_like(q)
    kernel = lambda: pre.prefill_attention(  # noqa: E731
        q, pool.cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, out, first_seq=0,
        num_seqs=len(seqs), max_query_len=meta.max_query_len, scale=HEAD_DIM ** -0.5, config=variant or None)
    flops = sum(4 * HEAD_DIM * num_heads * (n * c + n * (n + 1) // 2) for c, n in seqs)
    row = dict(seqs=_label(seqs), ms=bench(kernel))
    row["tflops"] = flops / row["ms"] / 1e9
    if with_torch and all(c == 0 for c, _ in seqs) and len({n for _, n in seqs}) == 1:
        row["sdpa_ms"] = bench(_sdpa(q, k, v, len(seqs), num_heads))
        row["sdpa_tflops"] = flops / row["sdpa_ms"] / 1e9
    if with_torch and sum(n for _, n in seqs) <= 8192:
        ref = TorchAttentionBackend()
        row["torch_ref_ms"] = bench(lambda: ref.forward(q, k, v, pool.cache, meta, HEAD_DIM ** -0.5))
    return row


def _sdpa(q, k, v, batch, num_heads):
    """torch's fused causal attention on contiguous [B, H, L, D] tensors (K/V expanded to all heads)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    shape = lambda t: t.view(batch, -1, t.shape[1], HEAD_DIM).transpose(1, 2)  # noqa: E731
    group = num_heads // KV_HEADS
    qq, kk, vv = shape(q), shape(k).repeat_interleave(group, 1), shape(v).repeat_interleave(group, 1)

    def run():
        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            return torch.nn.functional.scaled_dot_product_attention(qq, kk, vv, is_causal=True)
    return run


def _label(seqs):
    first = seqs[0]
    same = all(s == first for s in seqs)
    return f"{len(seqs)}x({first[0]}+{first[1]})" if same else str(seqs)


_SMS = []


def _sms():
    if not _SMS:
        _SMS.append(torch.cuda.get_device_properties(0).multi_processor_count)
    return _SMS[0]


PREFILL_CASES = [[(0, 2048)] * 4, [(0, 8192)], [(6144, 2048)], [(0, 512)] * 16, [(1024, 512)] * 8]
DECODE_SWEEP = [dict(block_n=b, num_warps=w, num_stages=s) for b in (32, 64, 128) for w in (4, 8) for s in (2, 3, 4)]
SPLIT_SWEEP = [dict(block_n=64, splits=s) for s in (1, 2, 4, 8, 16, 32, 64)]
PREFILL_SWEEP = [dict(block_m=m, block_n=n, num_warps=w, num_stages=s)
                 for m, n, w, s in ((128, 64, 8, 3), (128, 64, 4, 3), (128, 32, 4, 3), (64, 64, 4, 3),
                                    (128, 128, 8, 2), (64, 32, 4, 4), (128, 64, 8, 4), (64, 64, 4, 2))]


def main_tables(pool, results):
    print(f"{'model':<11} {'batch':>5} {'ctx':>5} {'splits':>6} {'us':>8} {'fwd us':>8} {'GB/s':>7} {'% ceil':>6}")
    for model, heads in MODELS.items():
        for batch in (1, 64, 256):
            for ctx in (512, 2048, 8192):
                r = decode_case(pool, heads, batch, ctx, {})
                results["decode"].append(dict(model=model, **r))
                print(f"{model:<11} {batch:>5} {ctx:>5} {r['splits']:>6} {r['ms'] * 1e3:>8.1f} "
                      f"{r['forward_ms'] * 1e3:>8.1f} {r['gbs']:>7.0f} {100 * r['gbs'] / COPY_CEILING_GBS:>6.1f}")
    print(f"\n{'model':<11} {'sequences':<16} {'ms':>7} {'TFLOP/s':>8} {'sdpa ms':>8} {'sdpa TF':>8} {'ref ms':>8}")
    for model, heads in MODELS.items():
        for seqs in PREFILL_CASES:
            r = prefill_case(pool, heads, seqs, {}, True)
            results["prefill"].append(dict(model=model, **r))
            nan = float("nan")
            print(f"{model:<11} {r['seqs']:<16} {r['ms']:>7.3f} {r['tflops']:>8.1f} {r.get('sdpa_ms', nan):>8.3f} "
                  f"{r.get('sdpa_tflops', nan):>8.1f} {r.get('torch_ref_ms', nan):>8.2f}")


def sweep(pool, results):
    for name, heads, batch, ctx in (("llama3-8b", 32, 256, 2048), ("qwen3-0.6b", 16, 64, 2048),
                                    ("llama3-8b", 32, 1, 8192), ("llama3-8b", 32, 64, 512)):
        for variant in DECODE_SWEEP + (SPLIT_SWEEP if batch <= 64 else []):
            r = decode_case(pool, heads, batch, ctx, variant)
            results["decode_sweep"].append(dict(model=name, variant=variant, **r))
            print(f"decode {name} b={batch} ctx={ctx} {variant} splits={r['splits']}: {r['ms'] * 1e3:.1f} us "
                  f"{r['gbs']:.0f} GB/s")
    for name, heads in MODELS.items():
        for seqs in ([(0, 2048)] * 4, [(6144, 2048)], [(0, 512)] * 16):
            for variant in PREFILL_SWEEP:
                r = prefill_case(pool, heads, seqs, variant, False)
                results["prefill_sweep"].append(dict(model=name, variant=variant, **r))
                print(f"prefill {name} {r['seqs']} {variant}: {r['ms']:.3f} ms {r['tflops']:.1f} TFLOP/s")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sweep", action="store_true", help="also time tile/warp/stage/split variants")
    parser.add_argument("--json", default=None, help="write all numbers here")
    args = parser.parse_args()
    torch.manual_seed(0)
    warm_up()
    pool = Pool(256 * 8192)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    results = dict(command=" ".join(sys.argv), commit=commit, device=torch.cuda.get_device_name(0),
                   date=time.strftime("%Y-%m-%d %H:%M:%S"), torch=torch.__version__, triton=triton.__version__,
                   copy_gbs=measured_copy_gbs(), decode=[], prefill=[], decode_sweep=[], prefill_sweep=[])
    print(f"{results['device']}: measured copy {results['copy_gbs']:.0f} GB/s (ceiling used: {COPY_CEILING_GBS})")
    if args.sweep:
        sweep(pool, results)
    main_tables(pool, results)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)


if __name__ == "__main__":
    main()
