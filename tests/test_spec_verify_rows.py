"""Verify steps as decode rows (worker/spec_decode/verify_rows.py): one single-token row per query token gives the
attention of the packed multi-token queries exactly, the runner takes that path for verify steps, and greedy output
stays the output without speculation."""
from __future__ import annotations

import numpy as np
import torch

from llmfleet import LLM, SamplingParams
from llmfleet.model.layers.attention import AttentionMetadata, TorchAttentionBackend
from llmfleet.protocol.config import EngineConfig
from llmfleet.worker.inputs import StepInputs
from llmfleet.worker.spec_decode import verify_rows
from llmfleet.worker.spec_decode.verify_rows import as_decode_rows, fits_decode_rows, max_decode_rows
from tests.checkpoints import checkpoint
from tests.test_spec_decode import NGRAM, prompts

BLOCK = 4


def _inputs() -> StepInputs:
    """Two sequences: 6 cached tokens + a query of 3, 9 cached + a query of 5 (a known token and 4 drafts)."""
    starts, lens = [6, 9], [3, 5]
    tables = np.array([[0, 1, 2, 0], [3, 4, 5, 6]], dtype=np.int32)
    positions = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, lens)])
    seq_of = np.repeat([0, 1], lens)
    slots = tables[seq_of, positions // BLOCK].astype(np.int64) * BLOCK + positions % BLOCK
    total = sum(lens)
    return StepInputs(
        input_ids=np.arange(total, dtype=np.int64), positions=positions, slot_mapping=slots,
        query_start_loc=np.array([0, 3, 8], dtype=np.int32), seq_lens=np.array([9, 14], dtype=np.int32),
        block_tables=tables, logits_indices=np.arange(total), sample_rows=[0, 1], num_decodes=0, max_query_len=5,
        max_seq_len=14, spec_counts=[2, 4])


def _meta(inputs: StepInputs) -> AttentionMetadata:
    return AttentionMetadata(
        num_seqs=len(inputs.seq_lens), num_decodes=inputs.num_decodes, max_query_len=inputs.max_query_len,
        max_seq_len=inputs.max_seq_len, query_start_loc=torch.from_numpy(inputs.query_start_loc),
        seq_lens=torch.from_numpy(inputs.seq_lens), block_tables=torch.from_numpy(inputs.block_tables),
        slot_mapping=torch.from_numpy(inputs.slot_mapping))


def test_decode_rows_give_the_packed_queries_attention():
    inputs = _inputs()
    rows = as_decode_rows(inputs)
    assert fits_decode_rows(inputs) and not fits_decode_rows(rows)
    assert rows.query_start_loc.tolist() == list(range(9))
    assert rows.seq_lens.tolist() == [7, 8, 9, 10, 11, 12, 13, 14]
    assert rows.block_tables.tolist() == [[0, 1, 2, 0]] * 3 + [[3, 4, 5, 6]] * 5
    assert rows.max_query_len == 1 and rows.num_decodes == 8 and rows.sample_rows == list(range(8))
    gen = torch.Generator().manual_seed(0)
    q = torch.randn(8, 4, 8, generator=gen)
    k, v = torch.randn(8, 2, 8, generator=gen), torch.randn(8, 2, 8, generator=gen)
    outs = []
    for step in (inputs, rows):
        cache = torch.randn(2, 8, BLOCK, 2, 8, generator=torch.Generator().manual_seed(1))
        outs.append(TorchAttentionBackend().forward(q, k, v, cache, _meta(step), 0.35))
    torch.testing.assert_close(outs[1], outs[0], rtol=0, atol=1e-6)


def test_graph_rows_cover_speculating_batches():
    spec = dict(NGRAM, disable_by_batch_size=8)
    assert max_decode_rows(EngineConfig(model="x", max_num_seqs=1, speculative_config=NGRAM)) == 5
    assert max_decode_rows(EngineConfig(model="x", max_num_seqs=16, speculative_config=spec)) == 40
    assert max_decode_rows(EngineConfig(model="x", max_num_seqs=256, speculative_config=NGRAM)) == 256
    assert max_decode_rows(EngineConfig(model="x", max_num_seqs=3)) == 3


def test_verify_steps_run_as_decode_rows_with_greedy_identity(monkeypatch):
    params = SamplingParams(temperature=0, max_tokens=24, ignore_eos=True)
    plain = LLM(str(checkpoint("llama")), device="cpu", dtype="float32").generate(prompts(), params, use_tqdm=False)
    seen = []
    original = verify_rows.as_decode_rows

    def recording(inputs):
        seen.append(len(inputs.input_ids))
        return original(inputs)

    import llmfleet.worker.runner as runner_module
    monkeypatch.setattr(runner_module, "as_decode_rows", recording)
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=NGRAM)
    fast = llm.generate(prompts(), params, use_tqdm=False)
    assert [o.outputs[0].token_ids for o in fast] == [o.outputs[0].token_ids for o in plain]
    assert llm.engine.stats().spec_num_accepted_tokens > 0
    assert seen and max(seen) > len(prompts())   # verify steps of several tokens per sequence took the rows path
