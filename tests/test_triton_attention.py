"""TritonAttentionBackend against the torch reference on fresh random paged batches.

Without CUDA the kernels run under Triton's interpreter on small float32 shapes; with `-m gpu` the same checks run
compiled, in bf16, at model-sized shapes.
"""
import math
import random

import pytest
import torch

from llmfleet.kernels import decode_attention
from llmfleet.model.layers import triton_attention as attention_backend
from llmfleet.model.layers.attention import AttentionMetadata, TorchAttentionBackend

# Without CUDA, tests/conftest.py sets TRITON_INTERPRET=1 before anything imports triton, so the kernels run under
# Triton's interpreter (CPU tensors, through numpy) in this process.


TritonAttentionBackend = attention_backend.TritonAttentionBackend
choose_num_splits = decode_attention.choose_num_splits


def make_batch(decode_ctx, prefills, num_kv_heads, group, head_dim, block_size, dtype, device, seed,
               pad_decodes=0, pad_prefill_tokens=0):
    """A mixed step. decode_ctx: cached lengths of the decode sequences; prefills: (cached, query_len) pairs.

    Padding: `pad_decodes` sequences with seq_len 0 after the decodes (one token, slot -1 each), and a trailing
    sequence with seq_len 0 and `pad_prefill_tokens` tokens. Blocks come from a shuffled pool that also holds
    unused blocks; the whole cache starts random, so cached prefixes are the random contents of their blocks.
    """
    gen = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    seqs = [(c, 1, c + 1) for c in decode_ctx] + [(0, 1, 0)] * pad_decodes  # (cached, query_len, seq_len)
    seqs += [(c, n, c + n) for c, n in prefills] + ([(0, pad_prefill_tokens, 0)] if pad_prefill_tokens else [])
    seq_lens = [s for _, _, s in seqs]
    need = [math.ceil(s / block_size) for s in seq_lens]
    pool = list(range(sum(need) + 7))
    rng.shuffle(pool)
    # Entries past a sequence's blocks point at random blocks of the pool: reading them would give wrong numbers.
    tables = torch.tensor([[rng.choice(pool) for _ in range(max(need + [1]))] for _ in seqs], dtype=torch.int32)
    slots, starts, cursor = [], [0], 0
    for i, (cached, q_len, seq_len) in enumerate(seqs):
        tables[i, :need[i]] = torch.tensor(pool[cursor:cursor + need[i]], dtype=torch.int32)
        cursor += need[i]
        for pos in range(cached, cached + q_len):
            slots.append(int(tables[i, pos // block_size]) * block_size + pos % block_size if seq_len else -1)
        starts.append(starts[-1] + q_len)
    tokens, num_heads = starts[-1], num_kv_heads * group
    rand = lambda *shape: torch.randn(*shape, generator=gen).to(dtype)  # noqa: E731
    q = rand(tokens, num_heads, head_dim)
    k, v = rand(tokens, num_kv_heads, head_dim), rand(tokens, num_kv_heads, head_dim)
    kv_cache = rand(2, len(pool), block_size, num_kv_heads, head_dim)
    meta = AttentionMetadata(
        num_seqs=len(seqs), num_decodes=len(decode_ctx) + pad_decodes, max_query_len=max(n for _, n, _ in seqs),
        max_seq_len=max(seq_lens), query_start_loc=torch.tensor(starts, dtype=torch.int32, device=device),
        seq_lens=torch.tensor(seq_lens, dtype=torch.int32, device=device), block_tables=tables.to(device),
        slot_mapping=torch.tensor(slots, dtype=torch.int64, device=device))
    to = lambda t: t.to(device)  # noqa: E731
    return to(q), to(k), to(v), to(kv_cache), meta, starts, seq_lens


def reference(q, k, v, kv_cache, meta, starts, seq_lens, scale):
    """The torch backend in float64 on the CPU: (out, cache after the write)."""
    cache = kv_cache.detach().cpu().double()
    cpu_meta = AttentionMetadata(
        meta.num_seqs, meta.num_decodes, meta.max_query_len, meta.max_seq_len, meta.query_start_loc.cpu(),
        meta.seq_lens.cpu(), meta.block_tables.cpu(), meta.slot_mapping.cpu(), starts, seq_lens)
    out = TorchAttentionBackend().forward(q.cpu().double(), k.cpu().double(), v.cpu().double(), cache, cpu_meta,
                                          scale)
    return out, cache


def run_and_compare(batch, backend, scale, tol, cache_exact=True):
    q, k, v, kv_cache, meta, starts, seq_lens = batch
    ref_out, ref_cache = reference(q, k, v, kv_cache, meta, starts, seq_lens, scale)
    out = torch.full_like(q, float("nan"))  # poison: every row must be written
    backend.forward(q, k, v, kv_cache, meta, scale, out=out)
    out = out.cpu().double()
    assert not out.isnan().any(), "unwritten or NaN output rows"
    rel = ((out - ref_out).norm() / ref_out.norm()).item()
    assert rel < tol, f"relative error {rel:.3e} >= {tol}"
    assert torch.equal(kv_cache.cpu().double(), ref_cache) if cache_exact else True
    for i in range(meta.num_seqs):  # padding sequences give exact zeros
        if seq_lens[i] == 0:
            assert torch.equal(out[starts[i]:starts[i + 1]], torch.zeros_like(out[starts[i]:starts[i + 1]]))
    return rel


CPU_CASES = [  # group, block_size, head_dim, num_splits
    (1, 16, 32, 1), (2, 4, 32, 3), (4, 16, 32, 2), (2, 1, 16, 4), (4, 32, 24, None), (1, 64, 32, 2),
]


@pytest.mark.parametrize("group,block_size,head_dim,num_splits", CPU_CASES)
def test_mixed_batch_matches_reference(group, block_size, head_dim, num_splits):
    seed = hash((group, block_size, head_dim, num_splits)) % 1000
    rng = random.Random(seed)
    decode_ctx = [rng.randint(0, 70) for _ in range(3)]
    prefills = [(rng.randint(0, 40), rng.randint(1, 35)), (0, rng.randint(1, 20)), (rng.randint(17, 50), 1)]
    batch = make_batch(decode_ctx, prefills, 2, group, head_dim, block_size, torch.float32, "cpu", seed,
                       pad_decodes=1, pad_prefill_tokens=2)
    run_and_compare(batch, TritonAttentionBackend(num_splits=num_splits), head_dim ** -0.5, 1e-5)


@pytest.mark.parametrize("block_size", [16, 4])
def test_tile_boundaries(block_size):
    """Cached lengths and query lengths on every side of the 16-token tiles used under the interpreter."""
    prefills = [(c, n) for c in (0, 1, 14, 15, 16, 17) for n in (1, 15, 16, 17, 33)]
    batch = make_batch([0, 14, 15, 16, 31, 32], prefills, 1, 2, 16, block_size, torch.float32, "cpu", block_size)
    run_and_compare(batch, TritonAttentionBackend(num_splits=2), 0.25, 1e-5)


def test_decode_only_and_prefill_only_batches():
    backend = TritonAttentionBackend(num_splits=2)
    run_and_compare(make_batch([5, 33, 0], [], 2, 2, 32, 16, torch.float32, "cpu", 11, pad_decodes=2),
                    backend, 0.2, 1e-5)
    run_and_compare(make_batch([], [(20, 19), (3, 40)], 2, 2, 32, 8, torch.float32, "cpu", 12), backend, 0.2, 1e-5)


def test_bad_inputs_name_the_field():
    q, k, v, kv_cache, meta, *_ = make_batch([3], [(2, 3)], 2, 2, 16, 4, torch.float32, "cpu", 3)
    backend = TritonAttentionBackend()
    with pytest.raises(ValueError, match="kv_cache"):
        backend.forward(q, k, v, kv_cache.double(), meta, 1.0)
    with pytest.raises(ValueError, match="heads"):
        backend.forward(q[:, :3], k, v, kv_cache, meta, 1.0)
    with pytest.raises(ValueError, match="seq_lens"):
        backend.forward(q, k, v, kv_cache, AttentionMetadata(
            meta.num_seqs, meta.num_decodes, meta.max_query_len, meta.max_seq_len, meta.query_start_loc,
            meta.seq_lens[:1], meta.block_tables, meta.slot_mapping), 1.0)
    with pytest.raises(ValueError, match="num_splits"):
        TritonAttentionBackend(num_splits=0)


def test_num_splits_depends_on_host_ints_only():
    assert choose_num_splits(1, 8, 8192, 132, 64) == 33      # one long sequence: spread over many programs
    assert choose_num_splits(64, 8, 8192, 132, 64) == 1      # 512 programs already cover 132 SMs
    assert choose_num_splits(256, 8, 8192, 132, 64) == 1     # a full batch already fills the machine
    assert choose_num_splits(1, 8, 100, 132, 64) == 2        # never more partitions than tiles
    assert choose_num_splits(0, 8, 0, 132, 64) == 1


# ---- GPU: compiled kernels, bf16, model shapes -------------------------------------------------------------------

GPU_SHAPES = [(8, 2, 16), (8, 4, 16), (8, 1, 16), (8, 4, 1), (8, 2, 64), (8, 2, 32), (8, 4, 4)]


@pytest.mark.gpu
@pytest.mark.parametrize("num_kv_heads,group,block_size", GPU_SHAPES)
def test_gpu_bf16_mixed_batch(num_kv_heads, group, block_size):
    rng = random.Random(block_size * 10 + group)
    decode_ctx = [rng.randint(0, 3000) for _ in range(37)]
    prefills = [(rng.randint(0, 1500), rng.randint(1, 600)) for _ in range(5)] + [(0, 333), (700, 1)]
    batch = make_batch(decode_ctx, prefills, num_kv_heads, group, 128, block_size, torch.bfloat16, "cuda",
                       block_size + group, pad_decodes=3, pad_prefill_tokens=5)
    rel = run_and_compare(batch, TritonAttentionBackend(), 128 ** -0.5, 1e-2)
    print(f"kv_heads={num_kv_heads} group={group} block={block_size}: rel err {rel:.2e}")


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
def test_gpu_other_dtypes(dtype):
    batch = make_batch([100, 2000, 7], [(300, 200), (0, 64)], 8, 2, 128, 16, dtype, "cuda", 5, pad_decodes=1)
    run_and_compare(batch, TritonAttentionBackend(), 128 ** -0.5, 1e-2 if dtype == torch.float16 else 1e-4)


@pytest.mark.gpu
def test_gpu_decode_is_cuda_graph_capturable():
    """Capture once with a long max_seq_len, replay on new lengths, tables and queries: same as eager."""
    q2, k2, v2, cache2, meta2, starts2, lens2 = make_batch([3000, 1, 17, 900, 0, 64, 2500, 129], [], 8, 4, 128, 16,
                                                           torch.bfloat16, "cuda", 2)
    q, k, v, _, meta1, *_ = make_batch([50] * 8, [], 8, 4, 128, 16, torch.bfloat16, "cuda", 1)
    cache = cache2.clone()
    tables = torch.zeros_like(meta2.block_tables)
    tables[:, :meta1.block_tables.shape[1]] = meta1.block_tables
    meta = AttentionMetadata(8, 8, 1, 4096, meta1.query_start_loc, meta1.seq_lens, tables, meta1.slot_mapping)
    backend, out = TritonAttentionBackend(), torch.empty_like(q)
    backend.forward(q, k, v, cache, meta, 0.1, out=out)  # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        backend.forward(q, k, v, cache, meta, 0.1, out=out)
    for dst, src in ((q, q2), (k, k2), (v, v2), (cache, cache2), (meta.seq_lens, meta2.seq_lens),
                     (meta.query_start_loc, meta2.query_start_loc), (meta.slot_mapping, meta2.slot_mapping),
                     (tables, meta2.block_tables)):
        dst.copy_(src)
    out.fill_(float("nan"))
    graph.replay()
    ref_out, _ = reference(q2, k2, v2, cache2, meta2, starts2, lens2, 0.1)
    rel = ((out.cpu().double() - ref_out).norm() / ref_out.norm()).item()
    assert rel < 1e-2, rel
