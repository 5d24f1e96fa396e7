"""The Llama decoder family: Llama, Mistral, Qwen2 (q/k/v bias) and Qwen3 (per-head q/k RMSNorm).

One flat batch of T tokens from many sequences runs through every layer; attention reads and writes the paged KV
cache through `llmfleet.model.layers.attention.Attention` as the metadata describes. Module names follow the Hugging Face
checkpoints, except the packed projections (see `packed_modules_mapping`).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import nn

from llmfleet.model.layers.activation import SiluAndMul
from llmfleet.model.layers.attention import Attention, AttentionMetadata
from llmfleet.model.layers.embedding import ParallelLMHead, VocabParallelEmbedding
from llmfleet.model.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from llmfleet.model.layers.norm import RMSNorm
from llmfleet.model.layers.rotary import RotaryEmbedding, apply_rotary, rope_parameters_from_config

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ArchTraits:
    """What distinguishes the family's members."""
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False  # RMSNorm over each head of q and k, before rotary (Qwen3)


def head_dim_of(config) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


class LlamaAttention(nn.Module):
    def __init__(self, config, traits: ArchTraits):
        super().__init__()
        self.head_dim = head_dim_of(config)
        self.qkv_proj = QKVParallelLinear(config.hidden_size, self.head_dim, config.num_attention_heads,
                                          config.num_key_value_heads, bias=traits.qkv_bias)
        num_heads, num_kv_heads = self.qkv_proj.num_heads, self.qkv_proj.num_kv_heads
        self.q_size, self.kv_size = num_heads * self.head_dim, num_kv_heads * self.head_dim
        self.o_proj = RowParallelLinear(config.num_attention_heads * self.head_dim, config.hidden_size,
                                        bias=traits.o_bias)
        self.q_norm = self.k_norm = None
        if traits.qk_norm:
            self.q_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
            self.k_norm = RMSNorm(self.head_dim, config.rms_norm_eps)
        self.attn = Attention(num_heads, num_kv_heads, self.head_dim, self.head_dim ** -0.5)

    def forward(self, hidden: torch.Tensor, cos_sin: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        # hidden: [T, H]; cos_sin: [T, R]
        qkv = self.qkv_proj(hidden)                                          # [T, (Hq + 2 Hkv) * D]
        q, k, v = qkv.split([self.q_size, self.kv_size, self.kv_size], dim=-1)
        if self.q_norm is not None:
            q = self.q_norm(q.unflatten(-1, (-1, self.head_dim))).flatten(-2)  # per head: [T, Hq, D]
            k = self.k_norm(k.unflatten(-1, (-1, self.head_dim))).flatten(-2)
        q, k = apply_rotary(q, k, cos_sin, self.head_dim)
        return self.o_proj(self.attn(q, k, v, meta))                         # [T, H]


class LlamaMLP(nn.Module):
    def __init__(self, config, traits: ArchTraits, intermediate_size: int | None = None):
        super().__init__()
        if config.hidden_act != "silu":
            raise ValueError(f"hidden_act: only 'silu' is supported, got {config.hidden_act!r}")
        size = intermediate_size or config.intermediate_size
        self.gate_up_proj = MergedColumnParallelLinear(config.hidden_size, [size, size], bias=traits.mlp_bias)
        self.down_proj = RowParallelLinear(size, config.hidden_size, bias=traits.mlp_bias)
        self.act = SiluAndMul()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(self.act(self.gate_up_proj(x)))  # [T, H] -> [T, 2I_local] -> [T, H]


class LlamaDecoderLayer(nn.Module):
    """Attention, then `mlp`: a LlamaMLP, or any module [T, H] -> [T, H] (e.g. a mixture of experts)."""

    def __init__(self, config, traits: ArchTraits, mlp: nn.Module):
        super().__init__()
        self.self_attn = LlamaAttention(config, traits)
        self.mlp = mlp
        self.input_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(config.hidden_size, config.rms_norm_eps)

    def forward(self, hidden, residual, cos_sin, meta):
        """Pre-norm block. Returns (mlp output, residual stream); the next norm adds them (fused residual add)."""
        if residual is None:
            hidden, residual = self.input_layernorm(hidden), hidden
        else:
            hidden, residual = self.input_layernorm(hidden, residual)
        hidden = self.self_attn(hidden, cos_sin, meta)
        hidden, residual = self.post_attention_layernorm(hidden, residual)
        return self.mlp(hidden), residual


class LlamaModel(nn.Module):
    def __init__(self, config, traits: ArchTraits, make_mlp):
        super().__init__()
        self.embed_tokens = VocabParallelEmbedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(LlamaDecoderLayer(config, traits, make_mlp(config, traits, i))
                                    for i in range(config.num_hidden_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps)
        params = rope_parameters_from_config(config)
        head_dim = head_dim_of(config)
        rotary_dim = int(head_dim * params.get("partial_rotary_factor", 1.0))
        self.rotary_emb = RotaryEmbedding(head_dim, config.max_position_embeddings, params, rotary_dim)

    def forward(self, input_ids, positions, meta):
        hidden = self.embed_tokens(input_ids)          # [T, H]
        cos_sin = self.rotary_emb.lookup(positions)    # [T, R], once for all layers
        residual = None
        for layer in self.layers:
            hidden, residual = layer(hidden, residual, cos_sin, meta)
        hidden, _ = self.norm(hidden, residual)
        return hidden


class LlamaForCausalLM(nn.Module):
    """Causal LM over one flat batch of tokens (see module docstring). Subclasses differ in `traits` and, for
    mixtures of experts (models/moe.py), in `make_mlp`."""

    # checkpoint module name -> (our packed module, shard id)
    packed_modules_mapping = {
        "q_proj": ("qkv_proj", "q"), "k_proj": ("qkv_proj", "k"), "v_proj": ("qkv_proj", "v"),
        "gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1),
    }

    def __init__(self, config):
        super().__init__()
        _check_sliding_window(config)
        self.config = config
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.model = LlamaModel(config, self.traits(config), self.make_mlp)
        tied_to = self.model.embed_tokens if self.tied else None
        self.lm_head = ParallelLMHead(config.vocab_size, config.hidden_size, tied_to=tied_to)

    @staticmethod
    def traits(config) -> ArchTraits:
        bias = bool(getattr(config, "attention_bias", False))
        return ArchTraits(qkv_bias=bias, o_bias=bias, mlp_bias=bool(getattr(config, "mlp_bias", False)))

    @staticmethod
    def make_mlp(config, traits: ArchTraits, layer_idx: int) -> nn.Module:
        """The MLP of decoder layer `layer_idx`."""
        return LlamaMLP(config, traits)

    def forward(self, input_ids: torch.Tensor, positions: torch.Tensor, meta: AttentionMetadata) -> torch.Tensor:
        """input_ids, positions: LongTensor [T] -> final hidden states [T, H]."""
        return self.model(input_ids, positions, meta)

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        """hidden [N, H] -> logits [N, V] in float32."""
        return self.lm_head.compute_logits(hidden).float()

    def attention_layers(self) -> list[Attention]:
        """The attention modules in layer order; the runner binds `kv_cache` and `backend` on each."""
        return [layer.self_attn.attn for layer in self.model.layers]


class MistralForCausalLM(LlamaForCausalLM):
    @staticmethod
    def traits(config) -> ArchTraits:
        return ArchTraits()


class Qwen2ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def traits(config) -> ArchTraits:
        return ArchTraits(qkv_bias=True)


class Qwen3ForCausalLM(LlamaForCausalLM):
    @staticmethod
    def traits(config) -> ArchTraits:
        bias = bool(getattr(config, "attention_bias", False))
        return ArchTraits(qkv_bias=bias, o_bias=bias, qk_norm=True)


def _check_sliding_window(config) -> None:
    """Attention here is always full-context; say so when the checkpoint asks for a shorter window."""
    window = getattr(config, "sliding_window", None)
    if getattr(config, "use_sliding_window", True) is False or window is None:
        return
    if window < config.max_position_embeddings:
        logger.warning("sliding_window=%d is ignored: attention spans the whole context, which matches the "
                       "checkpoint only for sequences up to %d tokens", window, window)
