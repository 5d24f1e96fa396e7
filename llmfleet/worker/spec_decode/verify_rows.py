"""Verify steps as decode steps: each token of a short query becomes a one-token row of its own.

A verify step gives a sequence 1 + k query tokens (its last known token, then k drafts). Attention over the paged
cache needs, per query token, only its block table, its cache slot and how many keys it sees; a token at position p
sees keys 0..p. So a step whose queries are all short is re-described as one row per token:

    sequence b, positions c..c+k    ->    rows c..c+k, each: query length 1, seq_len = position + 1,
                                          block table = b's

Every row then has query length 1, which is the decode CUDA graphs' shape (cuda_graphs.py), so a verify step of
B sequences replays the decode graph of B * (1 + k) rows instead of running eagerly or in pieces. Causality inside
the draft falls out of the per-row seq_len: the backends write every token's k/v before attending, and row j of a
draft reads the keys of rows 0..j of it from the cache. Logits come for every row, which a verify step needs anyway
(its sampling rows are all of its tokens). The flat token order is unchanged, so placeholder fixes and logits
indices keep their meaning.
"""
from __future__ import annotations

import numpy as np

from llmfleet.protocol.config import EngineConfig
from llmfleet.worker.inputs import StepInputs

# Longest query re-described as rows: a draft's 1 + k tokens, or a short prefill chunk beside them. Longer queries
# (a prompt chunk) keep the prefill path: one row per token would re-read the context for each of them.
MAX_ROW_QUERY = 16


def fits_decode_rows(inputs: StepInputs) -> bool:
    """Whether a verify step's queries are all short enough to run as decode rows."""
    return inputs.spec_counts is not None and 1 < inputs.max_query_len <= MAX_ROW_QUERY


def as_decode_rows(inputs: StepInputs) -> StepInputs:
    """The same tokens, one single-token row each (see the module docstring); `sample_rows` become the rows of
    `logits_indices`, so `logits[r]` for r in sample_rows is the logits of the step's sampled positions."""
    total = len(inputs.input_ids)
    query_lens = np.diff(inputs.query_start_loc)
    seq_of_token = np.repeat(np.arange(len(query_lens)), query_lens)             # [T]
    return StepInputs(
        input_ids=inputs.input_ids, positions=inputs.positions, slot_mapping=inputs.slot_mapping,
        query_start_loc=np.arange(total + 1, dtype=np.int32),
        seq_lens=(inputs.positions + 1).astype(np.int32),
        block_tables=np.ascontiguousarray(inputs.block_tables[seq_of_token]),    # [T, max_blocks]
        logits_indices=inputs.logits_indices, sample_rows=inputs.logits_indices.tolist(),
        num_decodes=total, max_query_len=1 if total else 0, max_seq_len=inputs.max_seq_len,
        spec_counts=inputs.spec_counts)


def max_decode_rows(config: EngineConfig) -> int:
    """Rows the decode CUDA graphs should cover: every sequence at once, and with speculation every speculating
    batch's 1 + k rows per sequence (speculation is off above disable_by_batch_size sequences)."""
    rows = config.max_num_seqs
    spec = config.speculative_config
    if spec is not None:
        batch = min(config.max_num_seqs, spec.disable_by_batch_size or config.max_num_seqs)
        rows = max(rows, batch * (1 + spec.num_speculative_tokens))
    return min(rows, config.cuda_graph_max_batch)


def hidden_rows(inputs: StepInputs, seqs: list) -> dict[int, tuple[int, int]]:
    """Seq id -> (its first token's row in the step's flat batch, that token's position), for the sequences that
    sample in the step (`seqs` in batch order)."""
    starts = inputs.query_start_loc
    return {seqs[i].seq_id: (int(starts[i]), int(inputs.positions[starts[i]])) for i in inputs.sample_rows}
