"""TritonAttentionBackend: the paged-attention contract of llmfleet.model.layers.attention, on Triton kernels.

forward = write this step's k/v at slot_mapping (one kernel), then decode attention for the first `num_decodes`
sequences (split-KV, GQA-packed; two kernels) and prefill-with-prefix attention for the rest (one kernel). Only host
ints of the metadata shape the launches; device tensors are never read back, so a step can be captured in a CUDA
graph. Every paged block size works (1, 4, 16, 32, 64, ... : a key's slot is computed per token); head_dim may be
any size (tiles pad it to a power of two, at least 16); fp16, bf16 and fp32 are supported, with the cache in q's dtype
or in float8_e4m3fn (kv_cache_dtype="fp8": written as k / k_scale, v / v_scale; read back and rescaled in-kernel).
"""
from __future__ import annotations

import torch

from llmfleet.kernels._triton import check_device
from llmfleet.kernels.decode_attention import _decode_split_kernel, choose_num_splits, decode_attention
from llmfleet.kernels.kv_write import write_kv
from llmfleet.kernels.prefill_attention import prefill_attention
from llmfleet.model.layers.attention import AttentionMetadata

_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


class TritonAttentionBackend:
    """Paged attention on Triton. Shapes: q [T, Hq, D], k/v [T, Hkv, D], kv_cache [2, N, S, Hkv, D].

    num_splits: fixes the decode partition count (None: chosen from the batch shape and the device's SM count).
    decode_block_n: keys per decode tile (None: 64 for bf16/fp16 on CUDA, else 16).
    prefill_config: tile options for the prefill kernel (None: prefill_attention.prefill_config).
    """

    def __init__(self, num_splits: int | None = None, decode_block_n: int | None = None,
                 prefill_config: dict | None = None):
        if num_splits is not None and num_splits < 1:
            raise ValueError(f"num_splits: must be >= 1 or None, got {num_splits}")
        if decode_block_n is not None and (decode_block_n < 16 or decode_block_n & (decode_block_n - 1)):
            raise ValueError(f"decode_block_n: must be a power of two >= 16, got {decode_block_n}")
        self.num_splits = num_splits
        self.decode_block_n = decode_block_n
        self.prefill_config = prefill_config
        self._num_sms: dict[torch.device, int] = {}

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, *, out: torch.Tensor | None = None,
                kv_scales: tuple[torch.Tensor, torch.Tensor] | None = None) -> torch.Tensor:
        """The AttentionBackend contract. `out` ([T, Hq, D], q's dtype) may be given to receive the result (a
        CUDA graph's static buffer); every row of a token that belongs to a sequence is written."""
        validate_inputs(q, k, v, kv_cache, meta)
        check_device(_decode_split_kernel, q, "q")
        if out is None:
            out = torch.empty(q.shape, dtype=q.dtype, device=q.device)
        elif out.shape != q.shape or out.dtype != q.dtype or out.device != q.device or out.stride(-1) != 1:
            raise ValueError(f"out: expected {tuple(q.shape)} {q.dtype} on {q.device}, last dim contiguous")
        write_kv(kv_cache, k, v, meta.slot_mapping, kv_scales)
        if meta.num_decodes > 0:
            block_n = self.decode_block_n or _decode_block_n(q)
            decode_attention(q, kv_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, out,
                             num_decodes=meta.num_decodes, num_splits=self._splits(q, kv_cache, meta, block_n),
                             scale=scale, block_n=block_n, kv_scales=kv_scales)
        if meta.num_seqs > meta.num_decodes:
            prefill_attention(q, kv_cache, meta.block_tables, meta.seq_lens, meta.query_start_loc, out,
                              first_seq=meta.num_decodes, num_seqs=meta.num_seqs,
                              max_query_len=meta.max_query_len, scale=scale, config=self.prefill_config,
                              kv_scales=kv_scales)
        return out

    def _splits(self, q: torch.Tensor, kv_cache: torch.Tensor, meta: AttentionMetadata, block_n: int) -> int:
        if self.num_splits is not None:
            return self.num_splits
        return choose_num_splits(meta.num_decodes, kv_cache.shape[3], meta.max_seq_len, self._sms(q.device), block_n)

    def _sms(self, device: torch.device) -> int:
        if device not in self._num_sms:
            cuda = device.type == "cuda"
            self._num_sms[device] = torch.cuda.get_device_properties(device).multi_processor_count if cuda else 4
        return self._num_sms[device]


def _decode_block_n(q: torch.Tensor) -> int:
    """Keys per decode tile: 64 for 16-bit on CUDA (measured best with 3 stages); 16 for exact fp32 dots (no
    register spills) and under the interpreter (fast on CPU)."""
    return 64 if q.is_cuda and q.dtype != torch.float32 else 16


def validate_inputs(q, k, v, kv_cache, meta: AttentionMetadata) -> None:
    """Host-side shape, dtype and device checks (no device reads); each error names the offending field."""
    if q.dim() != 3 or k.dim() != 3 or v.shape != k.shape:
        raise ValueError(f"q/k/v: expected q [T, Hq, D] and k, v [T, Hkv, D], got {tuple(q.shape)}, "
                         f"{tuple(k.shape)}, {tuple(v.shape)}")
    tokens, num_heads, head_dim = q.shape
    if k.shape[0] != tokens or k.shape[2] != head_dim:
        raise ValueError(f"k: shape {tuple(k.shape)} does not match q's {tuple(q.shape)}")
    if num_heads % k.shape[1]:
        raise ValueError(f"q: {num_heads} heads is not a multiple of the {k.shape[1]} KV heads")
    if q.dtype not in _DTYPES:
        raise ValueError(f"q: dtype {q.dtype} is not supported; use float16, bfloat16 or float32")
    if kv_cache.dtype not in (q.dtype, torch.float8_e4m3fn):
        raise ValueError(f"kv_cache: dtype {kv_cache.dtype} is neither q's {q.dtype} nor float8_e4m3fn")
    if q.stride(-1) != 1:
        raise ValueError("q: last dimension must be contiguous")
    if not 0 <= meta.num_decodes <= meta.num_seqs:
        raise ValueError(f"num_decodes: {meta.num_decodes} is outside [0, num_seqs={meta.num_seqs}]")
    _check_meta_tensor(meta.query_start_loc, "query_start_loc", (meta.num_seqs + 1,), q.device)
    _check_meta_tensor(meta.seq_lens, "seq_lens", (meta.num_seqs,), q.device)
    _check_meta_tensor(meta.slot_mapping, "slot_mapping", (tokens,), q.device)
    bt = meta.block_tables
    if bt.dim() != 2 or bt.shape[0] < meta.num_seqs or bt.stride(1) != 1 or bt.device != q.device:
        raise ValueError(f"block_tables: expected a row-major [>= {meta.num_seqs}, M] tensor on {q.device}, "
                         f"got {tuple(bt.shape)} on {bt.device}")
    if meta.max_query_len < 0 or meta.max_seq_len < 0:
        raise ValueError("max_query_len/max_seq_len: must be >= 0")


def _check_meta_tensor(t: torch.Tensor, name: str, shape: tuple, device: torch.device) -> None:
    if tuple(t.shape) != shape:
        raise ValueError(f"{name}: shape {tuple(t.shape)}, expected {shape}")
    if t.device != device:
        raise ValueError(f"{name}: on {t.device}, expected {device}")
    if t.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"{name}: dtype {t.dtype}, expected int32 or int64")
