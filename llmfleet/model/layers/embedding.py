"""Token embedding and LM head sharded over the vocabulary for tensor parallelism.

Rank r holds rows [r*V_local, (r+1)*V_local) of the [V, H] table, with V padded up to a multiple of the group size
(padding rows are zero and their logits are cut off). An embedding lookup zeroes the rows other ranks own and sums
over the group; the LM head gathers every rank's logits.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from llmfleet.model.parallel_state import get_tp_rank, get_tp_size, tp_all_gather, tp_all_reduce


class VocabParallelEmbedding(nn.Module):
    """input_ids [T] -> embeddings [T, H]."""

    def __init__(self, num_embeddings: int, embedding_dim: int):
        super().__init__()
        self.tp_rank, self.tp_size = get_tp_rank(), get_tp_size()
        self.num_embeddings = num_embeddings
        self.rows_per_rank = -(-num_embeddings // self.tp_size)
        self.vocab_start = self.tp_rank * self.rows_per_rank
        self.weight = nn.Parameter(torch.empty(self.rows_per_rank, embedding_dim), requires_grad=False)
        self.weight.weight_loader = self.weight_loader

    def weight_loader(self, param: torch.Tensor, loaded: torch.Tensor, shard_id=None) -> None:
        if shard_id is not None:
            raise ValueError(f"shard_id: this parameter is not packed, got {shard_id!r}")
        if tuple(loaded.shape) != (self.num_embeddings, param.shape[1]):
            raise ValueError(f"weight shape mismatch: expected ({self.num_embeddings}, {param.shape[1]}), "
                             f"checkpoint {tuple(loaded.shape)}")
        rows = min(self.rows_per_rank, self.num_embeddings - self.vocab_start)
        param[:rows].copy_(loaded.narrow(0, self.vocab_start, rows))
        param[rows:].zero_()

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        if self.tp_size == 1:
            return F.embedding(input_ids, self.weight)
        local = input_ids - self.vocab_start
        outside = (local < 0) | (local >= self.rows_per_rank)
        out = F.embedding(local.masked_fill(outside, 0), self.weight)  # [T, H]
        out.masked_fill_(outside[:, None], 0)
        return tp_all_reduce(out)


class ParallelLMHead(VocabParallelEmbedding):
    """hidden [N, H] -> logits [N, V]. Tied models pass their embedding to share its weight."""

    def __init__(self, num_embeddings: int, embedding_dim: int, tied_to: VocabParallelEmbedding | None = None):
        super().__init__(num_embeddings, embedding_dim)
        if tied_to is not None:
            self.weight = tied_to.weight

    def compute_logits(self, hidden: torch.Tensor) -> torch.Tensor:
        logits = F.linear(hidden, self.weight)        # [N, V_local]
        logits = tp_all_gather(logits)                # [N, V_local * tp]
        return logits[:, : self.num_embeddings]

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.compute_logits(hidden)
