"""The pooled vectors of a step's pooling sequences, from the step's final hidden states.

Each pooling sequence is whole in its step (the scheduler never chunks one), so its query is its prompt: rows
[query_start_loc[i], query_start_loc[i + 1]) of the flat batch.
"""
from __future__ import annotations

import numpy as np
import torch

from llmfleet.model.layers.pooler import PoolerConfig, pool
from llmfleet.worker.inputs import StepInputs
from llmfleet.worker.seq_state import SeqState
from llmfleet.worker.transfer import to_device


def pool_step(hidden: torch.Tensor, inputs: StepInputs, seqs: list[SeqState], pooler: PoolerConfig,
              device: str) -> torch.Tensor:
    """hidden [T, H] of the step -> [P, H] float32, one row per sequence in `inputs.pool_rows` (batch order)."""
    rows = inputs.pool_rows
    starts = inputs.query_start_loc[rows]
    lengths = inputs.query_start_loc[[r + 1 for r in rows]] - starts
    normalize = [pooler.normalize if seqs[r].pooling.normalize is None else seqs[r].pooling.normalize for r in rows]
    return pool(hidden, to_device(starts.astype(np.int64), device), to_device(lengths.astype(np.int64), device),
                pooler.method, to_device(normalize, device, torch.bool))
