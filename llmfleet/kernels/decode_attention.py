"""Decode attention over the paged KV cache with split-KV (flash-decoding) and GQA packing.

Each decode sequence's context is cut into `num_splits` partitions processed by separate programs; a second kernel
merges their partial softmax results. One program covers all query heads that share one KV head, so every KV
tile is read from memory once per (sequence, KV head, partition).

CUDA graphs: the grids depend only on host ints (num_decodes, the KV head count, num_splits). The partition length
is computed on the device from each sequence's seq_len, so a graph captured once serves any context lengths up to
the `max_seq_len` it was captured with. Sequences with seq_len 0 (padding) write zeros and read no KV.

An fp8 cache (KV_FP8) holds k / k_scale and v / v_scale: tiles are widened to q's dtype as they are loaded, k_scale
folds into the softmax scale and v_scale into the partition's output (scalars read on the device, graph-safe).
"""
import torch

from llmfleet.kernels._triton import next_pow2, tl, triton
from llmfleet.kernels.kv_write import kv_scale_args

_LOG2E = 1.4426950408889634
MAX_SPLITS = 64


@triton.jit(do_not_specialize=["num_splits"])
def _decode_split_kernel(
    q_ptr, cache_ptr, block_tables_ptr, seq_lens_ptr, qsl_ptr, out_ptr, part_out_ptr, part_lse_ptr,
    k_scale_ptr, v_scale_ptr, scale_log2, num_splits,
    stride_q_tok, stride_q_head, stride_c_kv, stride_c_block, stride_c_off, stride_c_head,
    stride_bt, stride_o_tok, stride_o_head,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_G: tl.constexpr, BLOCK_D: tl.constexpr, BLOCK_N: tl.constexpr,
    EVEN_D: tl.constexpr, DIRECT: tl.constexpr, FP32_DOT: tl.constexpr, KV_FP8: tl.constexpr,
):
    seq = tl.program_id(0)
    v_scale = 1.0
    if KV_FP8:
        scale_log2 = scale_log2 * tl.load(k_scale_ptr)
        v_scale = tl.load(v_scale_ptr)
    kv_head = tl.program_id(1)
    split = tl.program_id(2)
    seq_len = tl.load(seq_lens_ptr + seq)
    tok = tl.load(qsl_ptr + seq)
    # A sequence with no query row writes nothing: it has no heads (a mask, not a branch on data).
    num_q_heads = tl.where(tl.load(qsl_ptr + seq + 1) > tok, GROUP, 0)
    # Partition length: a whole number of tiles, so that only the context's last tile needs a mask.
    per_split = tl.cdiv(tl.cdiv(seq_len, num_splits), BLOCK_N) * BLOCK_N
    start = split * per_split
    end = tl.minimum(start + per_split, seq_len)

    g = tl.arange(0, BLOCK_G)
    d = tl.arange(0, BLOCK_D)
    heads = kv_head * GROUP + g
    g_mask = g < num_q_heads
    d_mask = d < HEAD_DIM
    q = tl.load(q_ptr + tok * stride_q_tok + heads[:, None] * stride_q_head + d[None, :],
                mask=g_mask[:, None] & d_mask[None, :], other=0.0)  # [BLOCK_G, BLOCK_D]

    m = tl.full([BLOCK_G], float("-inf"), tl.float32)
    l = tl.zeros([BLOCK_G], tl.float32)
    acc = tl.zeros([BLOCK_G, BLOCK_D], tl.float32)
    bt_row = block_tables_ptr + seq * stride_bt
    k_base = cache_ptr + kv_head * stride_c_head
    for n0 in range(start, end, BLOCK_N):
        n = n0 + tl.arange(0, BLOCK_N)
        n_mask = n < end
        block = tl.load(bt_row + n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
        offs = block * stride_c_block + (n % BLOCK_SIZE) * stride_c_off                  # [BLOCK_N]
        if EVEN_D:
            kv_mask = n_mask[:, None]
        else:
            kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_base + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)          # [BLOCK_N, BLOCK_D]
        v = tl.load(k_base + stride_c_kv + offs[:, None] + d[None, :], mask=kv_mask, other=0.0)
        if KV_FP8:
            k = k.to(q_ptr.dtype.element_ty)
            v = v.to(q_ptr.dtype.element_ty)
        if FP32_DOT:
            s = tl.dot(q, tl.trans(k), input_precision="ieee")
        else:
            s = tl.dot(q.to(k.dtype), tl.trans(k))
        s = tl.where(n_mask[None, :], s * scale_log2, float("-inf"))                     # [BLOCK_G, BLOCK_N]
        m_new = tl.maximum(m, tl.max(s, 1))
        p = tl.exp2(s - m_new[:, None])
        alpha = tl.exp2(m - m_new)
        l = l * alpha + tl.sum(p, 1)
        if FP32_DOT:
            acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m = m_new

    # An empty partition (past the context, or a padding sequence) leaves l == 0: zeros and lse -inf.
    nonempty = l > 0
    out = tl.where(nonempty[:, None], acc * v_scale / tl.where(nonempty, l, 1.0)[:, None], 0.0)
    if DIRECT:
        o_ptrs = out_ptr + tok * stride_o_tok + heads[:, None] * stride_o_head + d[None, :]
        tl.store(o_ptrs, out.to(out_ptr.dtype.element_ty), mask=g_mask[:, None] & d_mask[None, :])
    else:
        row = (seq * tl.num_programs(1) * GROUP + heads) * num_splits + split                # [BLOCK_G]
        tl.store(part_out_ptr + row[:, None] * BLOCK_D + d[None, :], out, mask=g_mask[:, None])
        tl.store(part_lse_ptr + row, tl.where(nonempty, m + tl.log2(tl.where(nonempty, l, 1.0)), float("-inf")),
                 mask=g_mask)


@triton.jit(do_not_specialize=["num_splits"])
def _decode_reduce_kernel(
    part_out_ptr, part_lse_ptr, qsl_ptr, out_ptr, stride_o_tok, stride_o_head, num_splits,
    HEAD_DIM: tl.constexpr, BLOCK_S: tl.constexpr, BLOCK_D: tl.constexpr,
):
    # One program per (sequence, query head): a softmax-weighted sum of the partitions' outputs.
    seq = tl.program_id(0)
    head = tl.program_id(1)
    tok = tl.load(qsl_ptr + seq)
    head_dim = tl.where(tl.load(qsl_ptr + seq + 1) > tok, HEAD_DIM, 0)  # 0: no query row, nothing to write
    row = (seq * tl.num_programs(1) + head) * num_splits
    s = tl.arange(0, BLOCK_S)
    d = tl.arange(0, BLOCK_D)
    lse = tl.load(part_lse_ptr + row + s, mask=s < num_splits, other=float("-inf"))      # [BLOCK_S]
    top = tl.max(lse, 0)
    w = tl.where(lse > float("-inf"), tl.exp2(lse - tl.where(top > float("-inf"), top, 0.0)), 0.0)
    parts = tl.load(part_out_ptr + (row + s[:, None]) * BLOCK_D + d[None, :], mask=(s < num_splits)[:, None],
                    other=0.0)                                                           # [BLOCK_S, BLOCK_D]
    total = tl.sum(w, 0)
    out = tl.sum(parts * w[:, None], 0) / tl.where(total > 0, total, 1.0)
    tl.store(out_ptr + tok * stride_o_tok + head * stride_o_head + d, out.to(out_ptr.dtype.element_ty),
             mask=d < head_dim)


def choose_num_splits(num_decodes: int, num_kv_heads: int, max_seq_len: int, num_sms: int, block_n: int) -> int:
    """Enough partitions to give each multiprocessor a few programs, never more than the context has tiles.

    Host ints only, so a CUDA graph captured for one batch size (with max_seq_len at its largest) keeps its grid.
    """
    target = 2 * num_sms  # measured on H100: batch 64 x 8 KV heads runs fastest unsplit, batch 1 wants ~32-64
    splits = triton.cdiv(target, max(1, num_decodes * num_kv_heads))
    return max(1, min(splits, MAX_SPLITS, triton.cdiv(max(max_seq_len, 1), block_n)))


def decode_attention(q, kv_cache, block_tables, seq_lens, query_start_loc, out, *, num_decodes: int,
                     num_splits: int, scale: float, block_n: int = 64, num_warps: int = 4, num_stages: int = 3,
                     kv_scales=None):
    """Attention of the single query token of each of the first `num_decodes` sequences, written into `out`.

    q, out: [T, Hq, D]; kv_cache: [2, N, S, Hkv, D] (q's dtype, or float8_e4m3fn); block_tables: int32 [B, M];
    seq_lens: int32 [B]; query_start_loc: int32 [B + 1]; kv_scales: float32 scalars (k_scale, v_scale) of an fp8
    cache (None: 1.0). All on the device; nothing is read back to the host.
    """
    _, num_heads, head_dim = q.shape
    num_kv_heads, block_size = kv_cache.shape[3], kv_cache.shape[2]
    group = num_heads // num_kv_heads
    block_d = next_pow2(head_dim, 16)
    direct = num_splits == 1
    if direct:
        part_out = part_lse = out  # unused by the kernel when DIRECT
    else:
        part_out = torch.empty((num_decodes, num_heads, num_splits, block_d), dtype=torch.float32, device=q.device)
        part_lse = torch.empty((num_decodes, num_heads, num_splits), dtype=torch.float32, device=q.device)
    fp8, (k_scale, v_scale) = kv_scale_args(kv_cache, kv_scales, seq_lens)
    _decode_split_kernel[(num_decodes, num_kv_heads, num_splits)](
        q, kv_cache, block_tables, seq_lens, query_start_loc, out, part_out, part_lse,
        k_scale, v_scale, scale * _LOG2E, num_splits,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=group, HEAD_DIM=head_dim, BLOCK_SIZE=block_size,
        BLOCK_G=next_pow2(group, 16), BLOCK_D=block_d, BLOCK_N=block_n,
        EVEN_D=block_d == head_dim, DIRECT=direct, FP32_DOT=q.dtype == torch.float32, KV_FP8=fp8,
        num_warps=num_warps, num_stages=num_stages,
    )
    if not direct:
        _decode_reduce_kernel[(num_decodes, num_heads)](
            part_out, part_lse, query_start_loc, out, out.stride(0), out.stride(1), num_splits,
            HEAD_DIM=head_dim, BLOCK_S=next_pow2(num_splits), BLOCK_D=block_d,
            num_warps=4,
        )
