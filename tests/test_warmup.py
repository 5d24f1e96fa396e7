"""Warm-up steps: within the step budget and the cache, decodes first, every decode split variant reached, and each
one a valid step for the model (run here through the torch reference path)."""
from __future__ import annotations

import numpy as np
import torch

from llmfleet.engine.llm_engine import LLMEngine
from llmfleet.kernels.decode_attention import MAX_SPLITS
from llmfleet.protocol.config import EngineConfig
from llmfleet.worker.warmup import _split_contexts, synthetic_step, warm_up_steps


def test_steps_fit_the_budget_and_cache_and_put_decodes_first():
    steps = warm_up_steps(block_size=16, max_tokens=512, max_seqs=256, max_len=4096, num_blocks=2000)
    assert steps
    for query_lens, context_lens in steps:
        assert sum(query_lens) <= 512 and len(query_lens) <= 256 and len(query_lens) == len(context_lens)
        decodes = [q == 1 for q in query_lens]
        assert decodes == sorted(decodes, reverse=True)  # decodes first, as the scheduler orders them
    assert _split_contexts(16, 8192) == [64 * s - 1 for s in (1, 2, 4, 8, 16, 32, 64)] and MAX_SPLITS == 64
    tight = warm_up_steps(block_size=16, max_tokens=512, max_seqs=256, max_len=4096, num_blocks=40)
    assert all(sum(-(-(q + c) // 16) for q, c in zip(*s)) <= 40 for s in tight)


def test_synthetic_step_is_consistent():
    step = synthetic_step([1, 1, 5], [7, 40, 3], block_size=4)
    assert step.num_decodes == 2 and step.max_query_len == 5 and list(step.seq_lens) == [8, 41, 8]
    assert list(step.query_start_loc) == [0, 1, 2, 7] and list(step.logits_indices) == [0, 1, 6]
    assert list(step.positions) == [7, 40, 3, 4, 5, 6, 7]
    blocks = step.block_tables
    assert len(set(blocks.ravel().tolist())) == blocks.size  # no two sequences share a block
    assert np.array_equal(step.slot_mapping[:2], [blocks[0, 1] * 4 + 3, blocks[1, 10] * 4 + 0])


def test_every_step_runs_through_the_model(tiny_checkpoint):
    engine = LLMEngine(EngineConfig(model=str(tiny_checkpoint("llama")), device="cpu", dtype="float32",
                                    num_kv_blocks=512, max_model_len=512, max_num_batched_tokens=128,
                                    max_num_seqs=16))
    runner = engine.runner
    steps = warm_up_steps(runner.block_size, 128, 16, runner.max_model_len, runner.num_blocks)
    for query_lens, context_lens in steps:
        logits = runner._logits(synthetic_step(query_lens, context_lens, runner.block_size))
        assert logits.shape[0] == len(query_lens) and torch.isfinite(logits).all()
