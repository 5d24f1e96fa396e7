"""Rotary position embedding (neox style, as Hugging Face Llama/Qwen apply it) over a precomputed cos/sin cache.

The cache holds [cos | sin] of every position up to max_positions in float32; a forward looks its rows up by the
tokens' positions (one index_select, no host sync) and rotates q and k in float32, returning them in their dtype.
On CUDA the rotation is one Triton kernel (llmfleet.kernels.rotary), in place.
"""
from __future__ import annotations

import math

import torch
from torch import nn

SUPPORTED_ROPE_TYPES = ("default", "linear", "llama3")


def rope_parameters_from_config(hf_config) -> dict:
    """The rope settings of a HF config as one dict with `rope_type` and `rope_theta`.

    Reads transformers 5's `rope_parameters` (theta inside the dict) and 4.x's `rope_theta` + `rope_scaling`
    (where the type may be spelled `type`).
    """
    params = getattr(hf_config, "rope_parameters", None)
    if not params:
        params = dict(getattr(hf_config, "rope_scaling", None) or {})
    params = dict(params)
    if "rope_theta" not in params:
        params["rope_theta"] = getattr(hf_config, "rope_theta", 10000.0)
    rope_type = params.pop("type", None)
    params["rope_type"] = params.get("rope_type") or rope_type or "default"
    return params


def compute_inv_freq(rotary_dim: int, params: dict) -> torch.Tensor:
    """Inverse frequencies [rotary_dim // 2] in float32 for the rope type in `params`."""
    rope_type = params["rope_type"]
    if rope_type not in SUPPORTED_ROPE_TYPES:
        raise ValueError(f"rope_type: unsupported value {rope_type!r}; supported: {', '.join(SUPPORTED_ROPE_TYPES)}")
    exponents = torch.arange(0, rotary_dim, 2, dtype=torch.float32) / rotary_dim
    inv_freq = 1.0 / (float(params["rope_theta"]) ** exponents)
    if rope_type == "linear":
        return inv_freq / float(params["factor"])
    if rope_type == "llama3":
        return _llama3_inv_freq(inv_freq, params)
    return inv_freq


def _llama3_inv_freq(inv_freq: torch.Tensor, params: dict) -> torch.Tensor:
    """Llama 3.1 scaling: long wavelengths slowed by `factor`, short ones kept, the band between interpolated."""
    factor, low, high = float(params["factor"]), float(params["low_freq_factor"]), float(params["high_freq_factor"])
    old_len = float(params["original_max_position_embeddings"])
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > old_len / low, inv_freq / factor, inv_freq)
    smooth = (old_len / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    in_band = (wavelen >= old_len / high) & (wavelen <= old_len / low)
    return torch.where(in_band, smoothed, scaled)


class RotaryEmbedding(nn.Module):
    """Rotates the first `rotary_dim` channels of every head of q and k by the token's position."""

    def __init__(self, head_dim: int, max_positions: int, params: dict, rotary_dim: int | None = None):
        super().__init__()
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim or head_dim
        inv_freq = compute_inv_freq(self.rotary_dim, params)
        freqs = torch.arange(max_positions, dtype=torch.float32)[:, None] * inv_freq[None, :]  # [P, R/2]
        # Not persistent: rebuilt from the config, never read from a checkpoint.
        self.register_buffer("cos_sin_cache", torch.cat([freqs.cos(), freqs.sin()], dim=-1), persistent=False)

    def lookup(self, positions: torch.Tensor) -> torch.Tensor:
        """positions: [T] -> cos_sin [T, rotary_dim] (cos in the first half, sin in the second)."""
        return self.cos_sin_cache.index_select(0, positions)

    def forward(self, positions: torch.Tensor, q: torch.Tensor, k: torch.Tensor):
        """q: [T, Hq*D], k: [T, Hkv*D] -> rotated (q, k), same shapes and dtypes."""
        return apply_rotary(q, k, self.lookup(positions), self.head_dim)


def apply_rotary(q: torch.Tensor, k: torch.Tensor, cos_sin: torch.Tensor, head_dim: int):
    """Rotate q [T, Hq*D] and k [T, Hkv*D] with cos_sin [T, R] from `RotaryEmbedding.lookup` (R <= D).
    On CUDA one Triton kernel rotates both in place (row i of cos_sin belongs to token i)."""
    if q.is_cuda:
        from llmfleet.kernels.rotary import apply_rotary_triton
        return apply_rotary_triton(_token_rows(q.shape[0], q.device), q, k, cos_sin, head_dim)
    return _rotate_qk(q, k, cos_sin, head_dim)


_ROWS: dict[torch.device, torch.Tensor] = {}


def _token_rows(tokens: int, device: torch.device) -> torch.Tensor:
    """0..tokens-1 on the device, sliced from one cached arange (no kernel per call)."""
    rows = _ROWS.get(device)
    if rows is None or rows.numel() < tokens:
        rows = _ROWS[device] = torch.arange(max(tokens, 1 << 16), device=device)
    return rows[:tokens]


def _rotate_qk(q, k, cos_sin, head_dim: int):
    return _rotate(q, cos_sin, head_dim), _rotate(k, cos_sin, head_dim)



def _rotate(x: torch.Tensor, cos_sin: torch.Tensor, head_dim: int) -> torch.Tensor:
    tokens, rotary_dim = cos_sin.shape
    x = x.view(tokens, -1, head_dim)                           # [T, H, D]
    cos, sin = cos_sin[:, None, :].chunk(2, dim=-1)            # [T, 1, R/2] each
    rot = x[..., :rotary_dim].float()
    x1, x2 = rot.chunk(2, dim=-1)                              # neox: first half pairs with second half
    rotated = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
    if rotary_dim < head_dim:
        rotated = torch.cat([rotated, x[..., rotary_dim:]], dim=-1)
    return rotated.reshape(tokens, -1)
