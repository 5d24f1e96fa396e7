"""Packs one scheduled step into flat host arrays: token ids, positions, slot mapping, block tables.

Vectorised with numpy over all tokens of the step; the only per-sequence Python work is slicing token ids and
copying a block table row. Device transfer happens in the runner. Placeholder tokens (sampled by the previous step,
ids still on the device) end their sequence's query; they are packed as id 0 and overwritten on the device.
Draft tokens (speculative decoding) end their sequence's query after its known tokens; a sequence with k of them
has its logits taken at its last 1 + k positions (`spec_counts`), one row per position to verify.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from llmfleet.worker.seq_state import SeqState


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
    pool_rows: list[int] = field(default_factory=list)  # which of the B sequences are pooled (whole this step)
    spec_counts: list[int] | None = None  # per sampling sequence, its draft tokens (None: no drafts this step);
    #                                       logits_indices then has 1 + k rows per sampling sequence


def prepare_inputs(seqs: list[SeqState], num_scheduled_tokens: list[int], block_size: int,
                   drafts: dict[int, list[int]] | None = None) -> StepInputs:
    """`seqs` in batch order (single-token queries first), each computing `num_scheduled_tokens[i]` tokens from
    its num_computed_tokens on; the last len(drafts[seq_id]) of them are draft tokens to verify."""
    num_seqs = len(seqs)
    query_lens = np.asarray(num_scheduled_tokens, dtype=np.int64)
    starts = np.fromiter((s.num_computed_tokens for s in seqs), dtype=np.int64, count=num_seqs)
    seq_lens = starts + query_lens
    cu = np.zeros(num_seqs + 1, dtype=np.int64)
    np.cumsum(query_lens, out=cu[1:])
    total = int(cu[-1])

    input_ids = np.zeros(total, dtype=np.int64)
    for i, seq in enumerate(seqs):
        start = int(starts[i])
        known = seq.token_ids[start:start + num_scheduled_tokens[i]]   # shorter by placeholders and drafts
        input_ids[cu[i]:cu[i] + len(known)] = known
        if drafts and seq.seq_id in drafts:
            spec = drafts[seq.seq_id]
            input_ids[cu[i + 1] - len(spec):cu[i + 1]] = spec

    block_tables = _block_table_array([s.block_ids for s in seqs])
    seq_of_token = np.repeat(np.arange(num_seqs), query_lens)
    positions = starts[seq_of_token] + (np.arange(total) - cu[:-1][seq_of_token])
    slot_mapping = block_tables[seq_of_token, positions // block_size].astype(np.int64) * block_size \
        + positions % block_size

    # A sequence whose query reaches its end samples, unless it is a pooling request (pooled instead).
    pool_rows = [i for i, seq in enumerate(seqs) if seq.pooling is not None]
    if drafts:
        sample_rows, spec_counts, logits_indices = _spec_rows(seqs, seq_lens, cu, drafts)
    else:
        sample_rows = [i for i, seq in enumerate(seqs) if seq_lens[i] == seq.num_tokens and seq.pooling is None]
        spec_counts, logits_indices = None, cu[1:][sample_rows] - 1
    return StepInputs(
        input_ids=input_ids, positions=positions, slot_mapping=slot_mapping,
        query_start_loc=cu.astype(np.int32), seq_lens=seq_lens.astype(np.int32), block_tables=block_tables,
        logits_indices=logits_indices, sample_rows=sample_rows, num_decodes=int((query_lens == 1).sum()),
        max_query_len=int(query_lens.max(initial=0)), max_seq_len=int(seq_lens.max(initial=0)), pool_rows=pool_rows,
        spec_counts=spec_counts)


def _spec_rows(seqs: list[SeqState], seq_lens: np.ndarray, cu: np.ndarray, drafts: dict[int, list[int]]):
    """(sample rows, drafts per sample row, logits indices: the last 1 + k positions of each sample row)."""
    sample_rows, counts, indices = [], [], []
    for i, seq in enumerate(seqs):
        k = len(drafts.get(seq.seq_id, ()))
        if seq.pooling is None and seq_lens[i] == seq.num_tokens + k:
            sample_rows.append(i)
            counts.append(k)
            indices.extend(range(int(cu[i + 1]) - 1 - k, int(cu[i + 1])))
    return sample_rows, counts, np.asarray(indices, dtype=np.int64)


def _block_table_array(block_ids: list[list[int]]) -> np.ndarray:
    width = max((len(b) for b in block_ids), default=1)
    table = np.zeros((len(block_ids), max(width, 1)), dtype=np.int32)
    for row, ids in enumerate(block_ids):
        table[row, :len(ids)] = ids
    return table
