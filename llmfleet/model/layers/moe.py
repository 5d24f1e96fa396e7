"""Mixture-of-experts MLP: a top-k router and the experts' stacked weights, applied by a method object.

Routing (HF's, for Qwen3-MoE, Qwen2-MoE and Mixtral): logits = x @ gate.T, probabilities = softmax in float32,
the top_k of them per token, renormalised to sum 1 when `norm_topk_prob` (Mixtral always does).

Expert parallelism: with a tensor-parallel group of size tp, rank r holds experts [r*E/tp, (r+1)*E/tp) whole; every
rank routes every token (the router is replicated and deterministic, so all agree), computes the contributions of
its own experts only, and the group sums them with one all-reduce. Whole experts rather than a slice of every
expert's intermediate dimension keep each expert's GEMM at full width (Qwen3-30B-A3B's 768 split 8 ways would be
96-wide tiles) and leave the kernel unchanged; the cost is load imbalance when routing favours one rank's experts.

Checkpoint tensors `experts.N.gate_proj / up_proj / down_proj` (Mixtral: `w1 / w3 / w2`) load into
gate_up_proj.weight [E_local, 2I, H] (gate rows, then up rows) and down_proj.weight [E_local, H, I]; a rank skips
the experts it does not hold.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.kernels.fused_moe import fused_moe
from llmfleet.model.layers.linear import default_weight_loader, divide
from llmfleet.model.parallel_state import get_tp_rank, get_tp_size, tp_all_reduce

GATE, UP, DOWN = "gate", "up", "down"
# checkpoint projection name -> (our stacked weight, part)
EXPERT_PROJECTIONS = {"gate_proj": ("gate_up_proj", GATE), "up_proj": ("gate_up_proj", UP),
                      "down_proj": ("down_proj", DOWN), "w1": ("gate_up_proj", GATE), "w3": ("gate_up_proj", UP),
                      "w2": ("down_proj", DOWN)}


class TopKRouter(nn.Module):
    """weight [E, H] (replicated on every rank). forward: x [T, H] -> (weights [T, k] float32, ids [T, k] int32)."""

    def __init__(self, hidden_size: int, num_experts: int, top_k: int, renormalize: bool):
        super().__init__()
        if not 0 < top_k <= num_experts:
            raise ValueError(f"num_experts_per_tok: must be in [1, {num_experts}], got {top_k}")
        self.top_k, self.renormalize = top_k, renormalize
        self.weight = nn.Parameter(torch.empty(num_experts, hidden_size), requires_grad=False)
        self.weight.weight_loader = default_weight_loader

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        probs = torch.softmax(F.linear(x, self.weight).float(), dim=-1)     # [T, E]
        weights, ids = torch.topk(probs, self.top_k, dim=-1)                # [T, k]
        if self.renormalize:
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return weights, ids.to(torch.int32)


class StackedExpertWeight(nn.Module):
    """One stacked weight of the local experts, [E_local, rows, cols]; loads per-expert checkpoint tensors.

    Its packed shards are (expert, part) for the local experts, so the loader reports a missing expert by name.
    """

    def __init__(self, num_experts: int, parts: tuple[str, ...], rows: int, cols: int):
        super().__init__()
        tp, rank = get_tp_size(), get_tp_rank()
        self.num_experts, self.num_local = num_experts, divide(num_experts, tp, "num_experts")
        self.first_expert = rank * self.num_local
        self.parts, self.part_rows = parts, rows
        self.weight = nn.Parameter(torch.empty(self.num_local, rows * len(parts), cols), requires_grad=False)
        self.weight.weight_loader = self.weight_loader
        self.packed_shards = tuple((self.first_expert + e, p) for e in range(self.num_local) for p in parts)

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        """shard_id (expert, part): copy the expert's [rows, cols] tensor into its place, if this rank holds it."""
        if not (isinstance(shard_id, tuple) and len(shard_id) == 2 and shard_id[1] in self.parts):
            raise ValueError(f"shard_id: expected (expert, one of {self.parts}), got {shard_id!r}")
        expert, part = shard_id
        local = expert - self.first_expert
        if not 0 <= local < self.num_local:
            return  # another rank's expert
        rows = param[local].narrow(0, self.parts.index(part) * self.part_rows, self.part_rows)
        default_weight_loader(rows, loaded)


class MoeMethod:
    """The float experts (the pattern of quantization's linear methods: a quantized variant would create other
    tensors and apply another kernel): stacked weights in the model dtype, applied by `fused_moe` (Triton on CUDA,
    the torch reference elsewhere)."""

    name = "none"

    def create_weights(self, experts: nn.Module, num_experts: int, hidden_size: int, intermediate_size: int) -> None:
        """Register on `experts` the stacked weights the checkpoint's per-expert tensors fill."""
        experts.gate_up_proj = StackedExpertWeight(num_experts, (GATE, UP), intermediate_size, hidden_size)
        experts.down_proj = StackedExpertWeight(num_experts, (DOWN,), hidden_size, intermediate_size)

    def apply(self, experts: nn.Module, x: torch.Tensor, weights: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
        """x [T, H], routing weights/ids [T, k] -> this rank's experts' share of the output [T, H]."""
        gate_up = experts.gate_up_proj
        return fused_moe(x, gate_up.weight, experts.down_proj.weight, weights, ids, gate_up.first_expert,
                         gate_up.num_experts)


class FusedMoE(nn.Module):
    """Router + experts of one layer: x [T, H] -> sum over the token's top-k experts of weight * expert(x)."""

    def __init__(self, hidden_size: int, intermediate_size: int, num_experts: int, top_k: int, renormalize: bool,
                 reduce_results: bool = True, method: MoeMethod | None = None):
        super().__init__()
        self.gate = TopKRouter(hidden_size, num_experts, top_k, renormalize)
        self.method = method or MoeMethod()
        self.experts = nn.Module()
        self.method.create_weights(self.experts, num_experts, hidden_size, intermediate_size)
        self.reduce_results = reduce_results

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weights, ids = self.gate(x)                                          # [T, k] each
        y = self.method.apply(self.experts, x, weights, ids)                 # [T, H], this rank's experts
        return tp_all_reduce(y) if self.reduce_results else y
