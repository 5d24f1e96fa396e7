"""EAGLE draft heads: one decoder layer over the target's own features, read out by the target's lm_head.

EAGLE (Li et al., 2024) drafts in the target's feature space. At draft position q the head takes the target's final
hidden state f_q (after its last norm) and the embedding of the token that f_q produced, x_{q+1}:

    x = fc([embed(x_{q+1}); f_q])            [T, 2H] -> [T, H]
    g = decoder_layer(x)                     attention over the head's own paged KV (positions 0..q), then MLP
    logits = target.lm_head(g)               g estimates f_{q+1}: its argmax drafts x_{q+2}

A chained draft feeds g back as the next position's feature. Checkpoint layouts:
  - EAGLE (`fc.weight`, `fc.bias`, `layers.0.*`; layer 0 has no input norm): `EagleHead`, loaded as is;
  - EAGLE-3 (`midlayer.*`, `fc` over three target layers' states, its own `norm`, `lm_head` over a draft vocabulary
    with `d2t` / `t2d` maps): recognised by `eagle_layout`, refused with a clear error (not supported yet).
The embedding is the target's (a checkpoint's own `embed_tokens` copy is skipped). The head's config is its folder's
config.json where there is one (a Llama config of one layer), else the target's with one layer.
"""
from __future__ import annotations

import copy

import torch
from torch import nn

from llmfleet.model.layers.attention import Attention, AttentionMetadata
from llmfleet.model.layers.rotary import RotaryEmbedding, rope_parameters_from_config
from llmfleet.model.models.llama import ArchTraits, LlamaDecoderLayer, LlamaForCausalLM, LlamaMLP, head_dim_of


def eagle_layout(names: list[str]) -> str:
    """"eagle" or "eagle3" from a checkpoint's tensor names; ValueError for anything else."""
    if any(n.startswith("midlayer.") for n in names):
        return "eagle3"
    if "fc.weight" in names and any(n.startswith("layers.0.") for n in names):
        return "eagle"
    raise ValueError("speculative_config.model: not an EAGLE head (expected fc.weight and layers.0.*, or "
                     "midlayer.* for EAGLE-3)")


def head_config(target_config, own_config=None):
    """The head's layer shape: its own config (one layer), else the target's with one layer."""
    config = copy.deepcopy(own_config if own_config is not None else target_config)
    config.num_hidden_layers = 1
    return config


class EagleHead(nn.Module):
    """The EAGLE layout. forward(embeds [T, H], features [T, H], positions [T], meta) -> g [T, H]."""

    packed_modules_mapping = LlamaForCausalLM.packed_modules_mapping
    ignored_checkpoint_prefixes = ("embed_tokens.", "lm_head.")

    def __init__(self, config, fc_bias: bool = True):
        super().__init__()
        hidden = config.hidden_size
        bias = bool(getattr(config, "attention_bias", False))
        self.fc = nn.Linear(2 * hidden, hidden, bias=fc_bias)
        traits = ArchTraits(qkv_bias=bias, o_bias=bias)
        self.layers = nn.ModuleList([LlamaDecoderLayer(config, traits, LlamaMLP(config, traits))])
        del self.layers[0].input_layernorm         # EAGLE's layer 0 reads fc's output unnormalised
        params = rope_parameters_from_config(config)
        head_dim = head_dim_of(config)
        self.rotary_emb = RotaryEmbedding(head_dim, config.max_position_embeddings, params,
                                          int(head_dim * params.get("partial_rotary_factor", 1.0)))

    def forward(self, embeds: torch.Tensor, features: torch.Tensor, positions: torch.Tensor,
                meta: AttentionMetadata) -> torch.Tensor:
        layer = self.layers[0]
        x = self.fc(torch.cat([embeds, features.to(embeds.dtype)], dim=-1))    # [T, H]
        cos_sin = self.rotary_emb.lookup(positions)
        attn = layer.self_attn(x, cos_sin, meta)
        hidden, residual = layer.post_attention_layernorm(attn, x)             # norm(attn + x), attn + x
        return layer.mlp(hidden) + residual

    def attention_layers(self) -> list[Attention]:
        return [self.layers[0].self_attn.attn]
