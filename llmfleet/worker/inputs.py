"""Packs one scheduled step into flat host arrays: token ids, positions, slot mapping, block tables.

Vectorised with numpy over all tokens of the step; the only per-sequence Python work is slicing token ids and
copying a block table row. Device transfer happens in the runner.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from llmfleet.engine.scheduler import SchedulerOutput


@dataclass(slots=True)
class StepInputs:
    input_ids: np.ndarray        # int64 [T]
    positions: np.ndarray        # int64 [T]
    slot_mapping: np.ndarray     # int64 [T]
    query_start_loc: np.ndarray  # int32 [B + 1]
    seq_lens: np.ndarray         # int32 [B]
    block_tables: np.ndarray     # int32 [B, max_blocks]
    logits_indices: np.ndarray   # int64 [S]: the last token of each sequence that samples this step
    sample_rows: list[int]       # which of the B sequences sample (aligned with logits_indices)
    num_decodes: int
    max_query_len: int
    max_seq_len: int


def prepare_inputs(out: SchedulerOutput, block_size: int) -> StepInputs:
    num_seqs = len(out.seqs)
    query_lens = np.asarray(out.num_tokens, dtype=np.int64)
    starts = np.fromiter((s.num_computed_tokens for s in out.seqs), dtype=np.int64, count=num_seqs)
    seq_lens = starts + query_lens
    cu = np.zeros(num_seqs + 1, dtype=np.int64)
    np.cumsum(query_lens, out=cu[1:])
    total = int(cu[-1])

    input_ids = np.empty(total, dtype=np.int64)
    for i, seq in enumerate(out.seqs):
        start = int(starts[i])
        input_ids[cu[i]:cu[i + 1]] = seq.all_token_ids[start:start + out.num_tokens[i]]

    block_tables = _block_table_array(out.block_ids)
    seq_of_token = np.repeat(np.arange(num_seqs), query_lens)
    positions = starts[seq_of_token] + (np.arange(total) - cu[:-1][seq_of_token])
    slot_mapping = block_tables[seq_of_token, positions // block_size].astype(np.int64) * block_size \
        + positions % block_size

    sample_rows = [i for i, seq in enumerate(out.seqs) if seq_lens[i] == seq.num_tokens]
    return StepInputs(
        input_ids=input_ids, positions=positions, slot_mapping=slot_mapping,
        query_start_loc=cu.astype(np.int32), seq_lens=seq_lens.astype(np.int32), block_tables=block_tables,
        logits_indices=cu[1:][sample_rows] - 1, sample_rows=sample_rows, num_decodes=out.num_decodes,
        max_query_len=int(query_lens.max(initial=0)), max_seq_len=int(seq_lens.max(initial=0)))


def _block_table_array(block_ids: list[list[int]]) -> np.ndarray:
    width = max((len(b) for b in block_ids), default=1)
    table = np.zeros((len(block_ids), max(width, 1)), dtype=np.int32)
    for row, ids in enumerate(block_ids):
        table[row, :len(ids)] = ids
    return table
