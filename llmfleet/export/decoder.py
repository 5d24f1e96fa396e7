"""An export-friendly decoder over llmfleet's loaded weights: dense [B, S] batches with explicit past keys/values.

llmfleet's own forward runs flat batches over a paged KV cache, which no ONNX runtime has. This module reads the
same parameters (the packed qkv / gate_up projections, norms, embedding, lm_head and rotary table of a loaded
`LlamaForCausalLM`) and computes the same math in plain torch ops that trace into ONNX:

    inputs : input_ids [B, S] int64, attention_mask [B, P+S] int64, position_ids [B, S] int64,
             past_key_values.N.key / .value [B, Hkv, P, D] float32 for every layer N
    outputs: logits [B, S, V] float32, present.N.key / .value [B, Hkv, P+S, D]

the layout onnxruntime-genai and transformers.js use. The first step passes P = 0 (empty past tensors).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.norm import rms_norm
from llmfleet.model.layers.rotary import apply_rotary
from llmfleet.model.models.llama import LlamaForCausalLM


def io_names(num_layers: int) -> tuple[list[str], list[str]]:
    """(input names, output names) of the exported graph, in argument order."""
    past = [f"past_key_values.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    present = [f"present.{i}.{kv}" for i in range(num_layers) for kv in ("key", "value")]
    return ["input_ids", "attention_mask", "position_ids", *past], ["logits", *present]


class KVCacheDecoder(nn.Module):
    """forward(input_ids, attention_mask, position_ids, *past) -> (logits, *present); see the module docstring."""

    def __init__(self, model: LlamaForCausalLM):
        super().__init__()
        if not isinstance(model, LlamaForCausalLM):
            raise ValueError(f"model: only the Llama family exports to ONNX, got {type(model).__name__}")
        self.model = model
        first = model.model.layers[0].self_attn
        self.head_dim = first.head_dim
        self.num_heads = first.q_size // self.head_dim
        self.num_kv_heads = first.kv_size // self.head_dim
        self.num_layers = len(model.model.layers)

    def forward(self, input_ids, attention_mask, position_ids, *past):
        inner = self.model.model
        hidden = F.embedding(input_ids, inner.embed_tokens.weight)                # [B, S, H]
        cos_sin = inner.rotary_emb.cos_sin_cache[position_ids]                    # [B, S, R]
        mask = self._additive_mask(attention_mask, input_ids.shape[1])            # [B, 1, S, P+S]
        presents = []
        for i, layer in enumerate(inner.layers):
            normed = _rms(hidden, layer.input_layernorm)
            attn, key, value = self._attention(layer.self_attn, normed, cos_sin, mask, past[2 * i], past[2 * i + 1])
            hidden = hidden + attn
            hidden = hidden + self._mlp(layer.mlp, _rms(hidden, layer.post_attention_layernorm))
            presents += [key, value]
        # A 2-D F.linear with a bias exports as Gemm(transB=1) on the [V, H] weight itself, so a tied embedding
        # stays one initializer (a 3-D matmul would fold in a transposed copy: +V*H floats in the file).
        normed = _rms(hidden, inner.norm)
        weight = self.model.lm_head.weight
        logits = F.linear(normed.flatten(0, 1), weight, weight.new_zeros(weight.shape[0]))  # [B*S, V]
        return (logits.unflatten(0, normed.shape[:2]), *presents)                 # [B, S, V]

    @staticmethod
    def _additive_mask(attention_mask, seq_len: int):
        """0 where query i (at cache position P+i) may see key j (j <= P+i and not padding), else float32 min."""
        total = attention_mask.shape[1]
        key_pos = torch.arange(total, device=attention_mask.device)[None, :]                  # [1, P+S]
        query_pos = torch.arange(seq_len, device=attention_mask.device)[:, None] + (total - seq_len)  # [S, 1]
        allowed = (key_pos <= query_pos)[None] & (attention_mask[:, None, :] > 0)             # [B, S, P+S]
        zero = torch.zeros((), dtype=torch.float32)
        return torch.where(allowed, zero, torch.finfo(torch.float32).min)[:, None]            # [B, 1, S, P+S]

    def _attention(self, attn, hidden, cos_sin, mask, past_key, past_value):
        batch, seq, _ = hidden.shape
        d = self.head_dim
        qkv = F.linear(hidden, attn.qkv_proj.weight, attn.qkv_proj.bias)      # [B, S, (Hq + 2 Hkv) D]
        q, k, v = qkv.split([attn.q_size, attn.kv_size, attn.kv_size], dim=-1)
        if attn.q_norm is not None:                                            # per head, before rotary (Qwen3)
            q = _rms(q.unflatten(-1, (-1, d)), attn.q_norm).flatten(-2)
            k = _rms(k.unflatten(-1, (-1, d)), attn.k_norm).flatten(-2)
        # llmfleet's rotary over the flat token axis: [B*S, H*D] with cos_sin [B*S, R]
        q, k = apply_rotary(q.flatten(0, 1), k.flatten(0, 1), cos_sin.flatten(0, 1), d)
        q, k, v = q.reshape(batch, seq, -1, d), k.reshape(batch, seq, -1, d), v.reshape(batch, seq, -1, d)
        key = torch.cat([past_key, k.transpose(1, 2)], dim=2)                  # [B, Hkv, P+S, D]
        value = torch.cat([past_value, v.transpose(1, 2)], dim=2)
        group = self.num_heads // self.num_kv_heads
        total = key.shape[2]
        k_all = key[:, :, None].expand(batch, self.num_kv_heads, group, total, d).reshape(batch, -1, total, d)
        v_all = value[:, :, None].expand(batch, self.num_kv_heads, group, total, d).reshape(batch, -1, total, d)
        scores = q.transpose(1, 2) @ k_all.transpose(2, 3) * (d ** -0.5) + mask  # [B, Hq, S, P+S]
        out = scores.softmax(dim=-1) @ v_all                                   # [B, Hq, S, D]
        out = out.transpose(1, 2).reshape(batch, seq, -1)                      # [B, S, Hq D]
        return F.linear(out, attn.o_proj.weight, attn.o_proj.bias), key, value

    @staticmethod
    def _mlp(mlp, x):
        gate, up = F.linear(x, mlp.gate_up_proj.weight, mlp.gate_up_proj.bias).chunk(2, dim=-1)  # [B, S, I] each
        return F.linear(F.silu(gate) * up, mlp.down_proj.weight, mlp.down_proj.bias)


def _rms(x, norm):
    """llmfleet's RMSNorm (the unfused form; the residual adds are explicit in forward)."""
    return rms_norm(x, norm.weight, norm.eps)
