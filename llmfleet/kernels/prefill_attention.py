"""Prefill attention over packed variable-length queries that read K/V from the paged cache.

A prefill sequence's queries are the last `query_len` positions of its `seq_len` tokens, so chunked prefill and
prefix-cache hits are the same case: query row i (absolute position `seq_len - query_len + i`) attends to every
cached key at or before its position. Tiled flash attention with an online softmax: low-precision dot products,
float32 accumulation. Key tiles wholly before a query tile's first position need no mask; only the tiles on the
diagonal (and the context's end) pay for one. An fp8 cache's tiles are widened to q's dtype as they load; its
k_scale folds into the softmax scale and v_scale into the output.
"""
import torch

from llmfleet.kernels._triton import next_pow2, tl, triton
from llmfleet.kernels.kv_write import kv_scale_args

_LOG2E = 1.4426950408889634


@triton.jit
def _attend_tile(q, acc, m, l, kv_base, stride_c_kv, stride_c_block, stride_c_off, bt_row, n0, q_pos, seq_len,
                 scale_log2, d, d_mask, BLOCK_SIZE: tl.constexpr, BLOCK_N: tl.constexpr,
                 MASKED: tl.constexpr, EVEN_D: tl.constexpr, FP32_DOT: tl.constexpr, KV_FP8: tl.constexpr):
    """One key tile of the online softmax. q: [M, D]; acc: [M, D]; m, l: [M]; q_pos: [M] absolute positions."""
    n = n0 + tl.arange(0, BLOCK_N)
    if MASKED:
        n_mask = n < seq_len
        block = tl.load(bt_row + n // BLOCK_SIZE, mask=n_mask, other=0).to(tl.int64)
    else:
        block = tl.load(bt_row + n // BLOCK_SIZE).to(tl.int64)
    k_ptrs = kv_base + (block * stride_c_block + (n % BLOCK_SIZE) * stride_c_off)[:, None] + d[None, :]
    if MASKED:
        kv_mask = n_mask[:, None] & d_mask[None, :]
        k = tl.load(k_ptrs, mask=kv_mask, other=0.0)                                      # [BLOCK_N, BLOCK_D]
        v = tl.load(k_ptrs + stride_c_kv, mask=kv_mask, other=0.0)
    elif EVEN_D:  # whole tile inside the context and head_dim a power of two: no mask, widest loads
        k = tl.load(k_ptrs)
        v = tl.load(k_ptrs + stride_c_kv)
    else:
        k = tl.load(k_ptrs, mask=d_mask[None, :], other=0.0)
        v = tl.load(k_ptrs + stride_c_kv, mask=d_mask[None, :], other=0.0)
    if KV_FP8:
        k = k.to(q.dtype)
        v = v.to(q.dtype)
    if FP32_DOT:
        s = tl.dot(q, tl.trans(k), input_precision="ieee") * scale_log2                  # [M, BLOCK_N]
    else:
        s = tl.dot(q, tl.trans(k)) * scale_log2
    if MASKED:
        visible = (n[None, :] <= q_pos[:, None]) & n_mask[None, :]
        s = tl.where(visible, s, float("-inf"))
    m_new = tl.maximum(m, tl.max(s, 1))
    if MASKED:  # a row that has seen no key yet keeps m == -inf; shift by 0 so that exp2 gives 0, not NaN
        m_new = tl.where(m_new == float("-inf"), 0.0, m_new)
    p = tl.exp2(s - m_new[:, None])
    alpha = tl.exp2(m - m_new)
    l = l * alpha + tl.sum(p, 1)
    if FP32_DOT:
        acc = acc * alpha[:, None] + tl.dot(p, v, input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return acc, m_new, l


@triton.jit(do_not_specialize=["first_seq"])
def _prefill_kernel(
    q_ptr, cache_ptr, block_tables_ptr, seq_lens_ptr, qsl_ptr, out_ptr,
    k_scale_ptr, v_scale_ptr, scale_log2, first_seq,
    stride_q_tok, stride_q_head, stride_c_kv, stride_c_block, stride_c_off, stride_c_head,
    stride_bt, stride_o_tok, stride_o_head,
    GROUP: tl.constexpr, HEAD_DIM: tl.constexpr, BLOCK_SIZE: tl.constexpr,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_D: tl.constexpr, EVEN_D: tl.constexpr,
    FP32_DOT: tl.constexpr, KV_FP8: tl.constexpr,
):
    v_scale = 1.0
    if KV_FP8:
        scale_log2 = scale_log2 * tl.load(k_scale_ptr)
        v_scale = tl.load(v_scale_ptr)
    # Longest (last) query tiles first: they have the most keys, so the grid's tail is short work.
    m_tile = tl.num_programs(0) - 1 - tl.program_id(0)
    head = tl.program_id(1)
    seq = first_seq + tl.program_id(2)
    q_start = tl.load(qsl_ptr + seq)
    q_len = tl.load(qsl_ptr + seq + 1) - q_start
    seq_len = tl.load(seq_lens_ptr + seq)
    m0 = m_tile * BLOCK_M
    if m0 < q_len:
        ctx = seq_len - q_len                      # cached tokens before this step's queries
        rows = m0 + tl.arange(0, BLOCK_M)
        d = tl.arange(0, BLOCK_D)
        d_mask = d < HEAD_DIM
        io_mask = (rows < q_len)[:, None] & d_mask[None, :]
        q = tl.load(q_ptr + (q_start + rows)[:, None] * stride_q_tok + head * stride_q_head + d[None, :],
                    mask=io_mask, other=0.0)                                              # [BLOCK_M, BLOCK_D]
        q_pos = ctx + rows
        m = tl.full([BLOCK_M], float("-inf"), tl.float32)
        l = tl.zeros([BLOCK_M], tl.float32)
        acc = tl.zeros([BLOCK_M, BLOCK_D], tl.float32)
        bt_row = block_tables_ptr + seq * stride_bt
        kv_base = cache_ptr + (head // GROUP) * stride_c_head
        # Keys before position ctx + m0 + 1 are visible to every row of the tile (an empty range if seq_len is 0).
        full_end = tl.maximum(ctx + m0 + 1, 0) // BLOCK_N * BLOCK_N
        kv_end = tl.minimum(seq_len, ctx + m0 + BLOCK_M)
        for n0 in range(0, full_end, BLOCK_N):
            acc, m, l = _attend_tile(q, acc, m, l, kv_base, stride_c_kv, stride_c_block, stride_c_off, bt_row, n0,
                                     q_pos, seq_len, scale_log2, d, d_mask, BLOCK_SIZE, BLOCK_N,
                                     False, EVEN_D, FP32_DOT, KV_FP8)
        for n0 in range(full_end, kv_end, BLOCK_N):
            acc, m, l = _attend_tile(q, acc, m, l, kv_base, stride_c_kv, stride_c_block, stride_c_off, bt_row, n0,
                                     q_pos, seq_len, scale_log2, d, d_mask, BLOCK_SIZE, BLOCK_N,
                                     True, EVEN_D, FP32_DOT, KV_FP8)
        out = tl.where((l > 0)[:, None], acc * v_scale / tl.where(l > 0, l, 1.0)[:, None], 0.0)
        tl.store(out_ptr + (q_start + rows)[:, None] * stride_o_tok + head * stride_o_head + d[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=io_mask)


def prefill_config(head_dim: int, dtype: torch.dtype, device: torch.device) -> dict:
    """Tile shapes and launch options. Small tiles on CPU (interpreter), tuned ones on the GPU."""
    if device.type != "cuda":
        return dict(block_m=16, block_n=16, num_warps=4, num_stages=1)
    if dtype == torch.float32:  # exact (ieee) fp32 dots: small tiles keep register spills small
        return dict(block_m=32, block_n=32, num_warps=8, num_stages=1)
    if head_dim <= 64:  # not measured; a 64-dim tile is half the registers of the measured 128-dim one
        return dict(block_m=128, block_n=64, num_warps=4, num_stages=3)
    return dict(block_m=64, block_n=64, num_warps=4, num_stages=3)  # best of 8 variants on H100, head_dim 128


def prefill_attention(q, kv_cache, block_tables, seq_lens, query_start_loc, out, *, first_seq: int, num_seqs: int,
                      max_query_len: int, scale: float, config: dict | None = None, kv_scales=None):
    """Causal attention with cached prefix for sequences [first_seq, num_seqs), written into `out`.

    q, out: [T, Hq, D]; kv_cache: [2, N, S, Hkv, D]; the metadata tensors as in AttentionMetadata, on the device.
    The grid comes from host ints alone (max_query_len, the sequence and head counts). kv_cache may be
    float8_e4m3fn, with kv_scales (k_scale, v_scale) float32 scalars on the device (None: 1.0).
    """
    _, num_heads, head_dim = q.shape
    cfg = config or prefill_config(head_dim, q.dtype, q.device)
    grid = (triton.cdiv(max_query_len, cfg["block_m"]), num_heads, num_seqs - first_seq)
    fp8, (k_scale, v_scale) = kv_scale_args(kv_cache, kv_scales, seq_lens)
    _prefill_kernel[grid](
        q, kv_cache, block_tables, seq_lens, query_start_loc, out,
        k_scale, v_scale, scale * _LOG2E, first_seq,
        q.stride(0), q.stride(1), kv_cache.stride(0), kv_cache.stride(1), kv_cache.stride(2), kv_cache.stride(3),
        block_tables.stride(0), out.stride(0), out.stride(1),
        GROUP=num_heads // kv_cache.shape[3], HEAD_DIM=head_dim, BLOCK_SIZE=kv_cache.shape[2],
        BLOCK_M=cfg["block_m"], BLOCK_N=cfg["block_n"], BLOCK_D=next_pow2(head_dim, 16),
        EVEN_D=next_pow2(head_dim, 16) == head_dim, FP32_DOT=q.dtype == torch.float32, KV_FP8=fp8,
        num_warps=cfg["num_warps"], num_stages=cfg["num_stages"],
    )
