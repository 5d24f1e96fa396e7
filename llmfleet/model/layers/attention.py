"""Paged attention: the metadata contract between the runner and the attention backends, and the torch reference.

One step's tokens from many sequences are packed into one flat batch with no padding between sequences. The first
`num_decodes` sequences have exactly one query token each (decodes, or one-token prefill chunks); the rest carry
prefill chunks of any length, which attend to the sequence's already cached tokens and causally to themselves.

KV cache of one layer: a tensor [2, num_blocks, block_size, num_kv_heads, head_dim]; index 0 holds keys, 1 values.
Token t of sequence i lives in block `block_tables[i, t // block_size]` at offset `t % block_size`; its flat slot is
`block_id * block_size + offset`. Backends first write this step's keys and values at `slot_mapping`, then attend
over the cache, so a sequence reads its own new tokens (and tokens another sequence wrote in the same step) from it.

kv_cache_dtype="fp8": the cache is float8_e4m3fn and holds k / k_scale and v / v_scale, with one (k_scale, v_scale)
pair per layer (1.0, or the checkpoint's `self_attn.k_scale` / `v_scale`); readers multiply back.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch
from torch import nn


@dataclass(slots=True)
class AttentionMetadata:
    num_seqs: int                  # B: sequences in this step (CUDA-graph padding sequences included)
    num_decodes: int               # the first num_decodes sequences have query_len == 1
    max_query_len: int             # host ints: kernel launch shapes and the reference's loop
    max_seq_len: int
    query_start_loc: torch.Tensor  # int32 [B + 1], cumulative query lengths on the device
    seq_lens: torch.Tensor         # int32 [B], context length after this step (cached + new tokens); 0 = padding
    block_tables: torch.Tensor     # int32 [B, max_blocks_per_seq]; entries past a sequence's blocks are ignored
    slot_mapping: torch.Tensor     # int64 [T], cache slot of each token; -1 = padding token, not written
    query_start_loc_cpu: list[int] | None = None  # host copies for the torch reference (no device sync)
    seq_lens_cpu: list[int] | None = None


FP8 = torch.float8_e4m3fn
FP8_MAX = 448.0


class AttentionBackend(Protocol):
    """Writes this step's k/v into the paged cache, then attends over it. Shapes: q [T, Hq, D], k/v [T, Hkv, D].
    kv_scales: float32 scalars (k_scale, v_scale) that an fp8 cache divides by on write (None: 1.0)."""

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, kv_cache: torch.Tensor,
                meta: AttentionMetadata, scale: float, *, kv_scales=None) -> torch.Tensor: ...


def write_kv_reference(kv_cache: torch.Tensor, k: torch.Tensor, v: torch.Tensor, slot_mapping: torch.Tensor,
                       kv_scales=None) -> None:
    """kv_cache: [2, N, S, Hkv, D]; k/v: [T, Hkv, D]; tokens with slot -1 are skipped."""
    keep = slot_mapping >= 0
    slots = slot_mapping[keep]
    if kv_cache.dtype == FP8:
        k_scale, v_scale = kv_scales if kv_scales is not None else (1.0, 1.0)
        k = (k.float() / k_scale).clamp(-FP8_MAX, FP8_MAX)
        v = (v.float() / v_scale).clamp(-FP8_MAX, FP8_MAX)
    flat = kv_cache.view(2, -1, *kv_cache.shape[3:])  # [2, N*S, Hkv, D]
    flat[0, slots] = k[keep].to(kv_cache.dtype)
    flat[1, slots] = v[keep].to(kv_cache.dtype)


def dequantize_kv(keys: torch.Tensor, values: torch.Tensor, dtype: torch.dtype, kv_scales=None):
    """Keys and values read from an fp8 cache, back in `dtype` (others pass through)."""
    if keys.dtype != FP8:
        return keys, values
    k_scale, v_scale = kv_scales if kv_scales is not None else (1.0, 1.0)
    return (keys.float() * k_scale).to(dtype), (values.float() * v_scale).to(dtype)


def gather_kv(kv_cache: torch.Tensor, block_table: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The first seq_len cached tokens of one sequence: two [seq_len, Hkv, D] tensors."""
    block_size = kv_cache.shape[2]
    num_blocks = (seq_len + block_size - 1) // block_size
    blocks = kv_cache[:, block_table[:num_blocks].long()]  # [2, nb, S, Hkv, D]
    blocks = blocks.flatten(1, 2)[:, :seq_len]
    return blocks[0], blocks[1]


class TorchAttentionBackend:
    """Reference implementation: obviously correct, one sequence at a time, any device."""

    def forward(self, q, k, v, kv_cache, meta: AttentionMetadata, scale: float, *, kv_scales=None) -> torch.Tensor:
        write_kv_reference(kv_cache, k, v, meta.slot_mapping, kv_scales)
        starts = meta.query_start_loc_cpu or meta.query_start_loc.tolist()
        seq_lens = meta.seq_lens_cpu or meta.seq_lens.tolist()
        out = torch.zeros_like(q)
        for i in range(meta.num_seqs):
            q_lo, q_hi, seq_len = starts[i], starts[i + 1], seq_lens[i]
            if q_hi == q_lo or seq_len == 0:
                continue
            keys, values = dequantize_kv(*gather_kv(kv_cache, meta.block_tables[i], seq_len), q.dtype, kv_scales)
            out[q_lo:q_hi] = reference_attention(q[q_lo:q_hi], keys, values, scale)
        return out


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, scale: float) -> torch.Tensor:
    """Causal attention of the last q_len positions of a sequence. q: [Lq, Hq, D]; k/v: [Lk, Hkv, D]."""
    q_len, num_heads, _ = q.shape
    kv_len, num_kv_heads, _ = k.shape
    group = num_heads // num_kv_heads
    k = k.to(q.dtype).repeat_interleave(group, dim=1)
    v = v.to(q.dtype).repeat_interleave(group, dim=1)
    scores = torch.einsum("qhd,khd->hqk", q.float(), k.float()) * scale  # [Hq, Lq, Lk]
    q_pos = torch.arange(kv_len - q_len, kv_len, device=q.device)[:, None]
    k_pos = torch.arange(kv_len, device=q.device)[None, :]
    scores.masked_fill_(k_pos > q_pos, float("-inf"))
    probs = scores.softmax(dim=-1)
    return torch.einsum("hqk,khd->qhd", probs, v.float()).to(q.dtype)


def get_attention_backend(name: str, device: str) -> AttentionBackend:
    if name == "auto":
        name = "triton" if device.startswith("cuda") else "torch"
    if name == "torch":
        return TorchAttentionBackend()
    if name == "triton":
        from llmfleet.model.layers.triton_attention import TritonAttentionBackend
        return TritonAttentionBackend()
    raise ValueError(f"attention_backend: unknown value {name!r}")


class Attention(nn.Module):
    """Attention over the paged KV cache. The runner binds `kv_cache` and `backend` before the first forward.

    k_scale, v_scale: float32 scalars an fp8 cache is stored in units of; 1.0 unless the checkpoint has them
    (optional parameters: a checkpoint without them is complete).
    """

    def __init__(self, num_heads: int, num_kv_heads: int, head_dim: int, scale: float):
        super().__init__()
        self.num_heads, self.num_kv_heads, self.head_dim, self.scale = num_heads, num_kv_heads, head_dim, scale
        self.kv_cache: torch.Tensor | None = None
        self.backend: AttentionBackend = TorchAttentionBackend()
        for name in ("k_scale", "v_scale"):
            param = nn.Parameter(torch.ones((), dtype=torch.float32), requires_grad=False)
            param.optional = True
            param.weight_loader = _load_kv_scale
            setattr(self, name, param)

    def forward(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        # q: [T, Hq*D]; k, v: [T, Hkv*D] -> [T, Hq*D]
        tokens = q.shape[0]
        q = q.view(tokens, self.num_heads, self.head_dim)
        k = k.view(tokens, self.num_kv_heads, self.head_dim)
        v = v.view(tokens, self.num_kv_heads, self.head_dim)
        out = self.backend.forward(q, k, v, self.kv_cache, meta, self.scale, kv_scales=(self.k_scale, self.v_scale))
        return out.reshape(tokens, self.num_heads * self.head_dim)


def _load_kv_scale(param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
    """A checkpoint's per-layer KV scale (one value, or one per head: the largest is kept)."""
    if shard_id is not None:
        raise ValueError(f"shard_id: a KV scale is not packed, got {shard_id!r}")
    param.fill_(loaded.float().max().item())
