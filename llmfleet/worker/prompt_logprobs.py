"""Log-probabilities of the prompt's own tokens, taken from the prefill that computes them (`prompt_logprobs`).

The hidden state at prompt position p predicts the token at p + 1, so a prefill chunk covering positions [a, b)
yields the entries of prompt tokens a + 1 .. b (capped at the prompt's last token). Only sequences that ask plan
rows; a step with none takes the usual path (CUDA graphs included). Logits of the planned rows are computed in
slices, so a long prompt never holds a [prompt, vocab] tensor at once. The engine runs these sequences one step at
a time (their results are read back right away), and gives them a prefix-cache namespace of their own: a cached
prefix would be skipped by the prefill and have no logprobs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llmfleet.worker.seq_state import SeqState

_SLICE_ROWS = 512


@dataclass(slots=True)
class PromptLogprobPlan:
    """Per asking sequence of the step: its flat-batch rows and the prompt tokens they predict."""
    seq_ids: list[int]
    first_positions: list[int]      # prompt index of the first token each sequence's rows predict
    rows: list[np.ndarray]          # int64 rows of the step's flat batch
    targets: list[list[int]]        # the prompt tokens those rows predict
    top_n: list[int]


def plan_prompt_logprobs(seqs: list[SeqState], query_start_loc: np.ndarray,
                         num_scheduled: list[int]) -> PromptLogprobPlan | None:
    """The rows of this step whose logits give prompt logprobs; None when no sequence asks for any here."""
    plan = None
    for i, seq in enumerate(seqs):
        top_n = seq.params.prompt_logprobs
        start, last = seq.num_computed_tokens, len(seq.prompt_token_ids) - 1
        if top_n is None or start >= last:
            continue
        end = min(start + num_scheduled[i], last)
        plan = plan or PromptLogprobPlan([], [], [], [], [])
        plan.seq_ids.append(seq.seq_id)
        plan.first_positions.append(start + 1)
        plan.rows.append(int(query_start_loc[i]) + np.arange(end - start, dtype=np.int64))
        plan.targets.append(seq.prompt_token_ids[start + 1:end + 1])
        plan.top_n.append(top_n)
    return plan


def compute_prompt_logprobs(model, hidden: torch.Tensor, plan: PromptLogprobPlan) -> dict[int, tuple]:
    """seq id -> (first position, [(token ids: the prompt's first, then the top-N), logprobs, its rank] per
    position). hidden: [T, H], the step's flat hidden states."""
    results = {}
    for seq_id, first, rows, targets, top_n in zip(plan.seq_ids, plan.first_positions, plan.rows, plan.targets,
                                                   plan.top_n):
        entries = []
        for at in range(0, len(rows), _SLICE_ROWS):
            index = torch.from_numpy(rows[at:at + _SLICE_ROWS]).to(hidden.device)
            target = torch.tensor(targets[at:at + _SLICE_ROWS], dtype=torch.int64, device=hidden.device)
            entries += _entries(model.compute_logits(hidden[index]).log_softmax(dim=-1), target, top_n)
        results[seq_id] = (first, entries)
    return results


def _entries(logprobs: torch.Tensor, target: torch.Tensor, top_n: int) -> list[tuple[list[int], list[float], int]]:
    """logprobs: [R, V]; target: [R]."""
    chosen = logprobs.gather(-1, target[:, None])                        # [R, 1]
    ranks = ((logprobs > chosen).sum(dim=-1) + 1).tolist()
    ids, values = target[:, None], chosen
    if top_n > 0:
        top_values, top_ids = logprobs.topk(top_n, dim=-1)
        ids, values = torch.cat([ids, top_ids], dim=-1), torch.cat([values, top_values], dim=-1)
    return [(i, v, r) for i, v, r in zip(ids.tolist(), values.tolist(), ranks)]
