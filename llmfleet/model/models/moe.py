"""Mixture-of-experts members of the Llama family: Qwen3-MoE, Qwen2-MoE (with a shared expert) and Mixtral.

Attention, norms and the decoder layer are the Llama family's (llama.py); these classes only choose each layer's
MLP (`make_mlp`): a FusedMoE block (llmfleet.model.layers.moe) on the sparse layers, the dense LlamaMLP elsewhere
(Qwen's `mlp_only_layers` and `decoder_sparse_step`). Checkpoint names map through `packed_modules_mapping`:
`mlp.experts.N.gate_proj` (Mixtral: `block_sparse_moe.experts.N.w1`) into the stacked expert weights.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.layers.linear import default_weight_loader
from llmfleet.model.layers.moe import EXPERT_PROJECTIONS, FusedMoE
from llmfleet.model.models.llama import (ArchTraits, LlamaForCausalLM, LlamaMLP, MistralForCausalLM,
                                         Qwen2ForCausalLM, Qwen3ForCausalLM)


def _expert_mapping(prefix: str, ours: str) -> dict:
    """Checkpoint `<prefix>.experts.*.<proj>` -> our `<ours>.experts.<stacked>` with shard (N, part)."""
    return {f"{prefix}.experts.*.{proj}": (f"{ours}.experts.{stacked}", part)
            for proj, (stacked, part) in EXPERT_PROJECTIONS.items()}


def is_sparse_layer(config, layer_idx: int) -> bool:
    """Qwen-MoE's rule: experts on every `decoder_sparse_step`-th layer, except those in `mlp_only_layers`."""
    step = getattr(config, "decoder_sparse_step", 1) or 1
    return (layer_idx not in (getattr(config, "mlp_only_layers", None) or []) and config.num_experts > 0
            and (layer_idx + 1) % step == 0)


def _qwen_moe(config) -> FusedMoE:
    return FusedMoE(config.hidden_size, config.moe_intermediate_size, config.num_experts,
                    config.num_experts_per_tok, renormalize=bool(config.norm_topk_prob))


class Qwen3MoeForCausalLM(Qwen3ForCausalLM):
    packed_modules_mapping = {**_expert_mapping("mlp", "mlp"), **LlamaForCausalLM.packed_modules_mapping}

    @staticmethod
    def make_mlp(config, traits: ArchTraits, layer_idx: int) -> nn.Module:
        return _qwen_moe(config) if is_sparse_layer(config, layer_idx) else LlamaMLP(config, traits)


class SharedExpertMoE(FusedMoE):
    """Qwen2-MoE's block: routed experts plus one always-on expert scaled by sigmoid(x @ shared_expert_gate.T)."""

    def __init__(self, config, traits: ArchTraits):
        super().__init__(config.hidden_size, config.moe_intermediate_size, config.num_experts,
                         config.num_experts_per_tok, renormalize=bool(config.norm_topk_prob))
        self.shared_expert = LlamaMLP(config, traits, config.shared_expert_intermediate_size)
        self.shared_expert_gate = nn.Module()
        self.shared_expert_gate.weight = nn.Parameter(torch.empty(1, config.hidden_size), requires_grad=False)
        self.shared_expert_gate.weight.weight_loader = default_weight_loader

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shared = torch.sigmoid(F.linear(x, self.shared_expert_gate.weight)) * self.shared_expert(x)  # [T, H]
        return super().forward(x) + shared


class Qwen2MoeForCausalLM(Qwen2ForCausalLM):
    packed_modules_mapping = Qwen3MoeForCausalLM.packed_modules_mapping

    @staticmethod
    def traits(config) -> ArchTraits:
        return ArchTraits(qkv_bias=bool(getattr(config, "qkv_bias", True)))

    @staticmethod
    def make_mlp(config, traits: ArchTraits, layer_idx: int) -> nn.Module:
        return SharedExpertMoE(config, traits) if is_sparse_layer(config, layer_idx) else LlamaMLP(config, traits)


class MixtralForCausalLM(MistralForCausalLM):
    packed_modules_mapping = {**_expert_mapping("block_sparse_moe", "mlp"),
                              "block_sparse_moe.gate": ("mlp.gate", None),
                              **LlamaForCausalLM.packed_modules_mapping}

    @staticmethod
    def make_mlp(config, traits: ArchTraits, layer_idx: int) -> nn.Module:
        return FusedMoE(config.hidden_size, config.intermediate_size, config.num_local_experts,
                        config.num_experts_per_tok, renormalize=True)
