"""Engine warm-up: every kernel variant that serving uses is compiled before the first request, not during it.

Triton compiles a kernel once per set of constexpr values and per specialisation of its integer arguments (equal
to 1, divisible by 16, anything else), so the first step of an unseen shape pays a compile of 0.1-1 s: that was
the p99 TTFT of a fresh server. Decode steps in CUDA graphs are compiled at capture; what is left is eager steps:
prefill chunks, steps that mix decodes and chunks (their decode part picks a split count, i.e. a reduce-kernel
variant, from its batch and context), block tables of every width class, and the sampler's paths. The synthetic
steps below write KV into blocks no request owns yet (the cache is empty before serving starts).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from llmfleet.kernels.decode_attention import MAX_SPLITS
from llmfleet.model.layers.sampler import SamplingBatch, sample
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.worker.inputs import StepInputs

logger = logging.getLogger(__name__)

# The sampler's paths: greedy, the fused Gumbel kernel (plain temperature), top-k/top-p/min-p, seeded generators,
# penalties, logprobs.
_SAMPLING = (
    [SamplingParams(temperature=0)],
    [SamplingParams(temperature=0.8)],
    [SamplingParams(temperature=0.7, top_p=0.9, top_k=50, min_p=0.05)],
    [SamplingParams(temperature=0.7, seed=1)],
    [SamplingParams(temperature=0.7, repetition_penalty=1.1, presence_penalty=0.5, logprobs=5)],
)


def synthetic_step(query_lens: list[int], context_lens: list[int], block_size: int) -> StepInputs:
    """A step whose sequence i computes query_lens[i] tokens after context_lens[i] cached ones (decodes first,
    as the scheduler orders them); sequence i owns its own consecutive blocks."""
    q = np.asarray(query_lens, dtype=np.int64)
    seq_lens = q + np.asarray(context_lens, dtype=np.int64)
    cu = np.concatenate([[0], np.cumsum(q)])
    width = int(-(-seq_lens.max() // block_size))
    table = np.arange(len(q) * width, dtype=np.int32).reshape(len(q), width)
    seq_of_token = np.repeat(np.arange(len(q)), q)
    positions = (seq_lens - q)[seq_of_token] + (np.arange(int(cu[-1])) - cu[:-1][seq_of_token])
    slots = table[seq_of_token, positions // block_size].astype(np.int64) * block_size + positions % block_size
    return StepInputs(
        input_ids=np.zeros(int(cu[-1]), dtype=np.int64), positions=positions, slot_mapping=slots,
        query_start_loc=cu.astype(np.int32), seq_lens=seq_lens.astype(np.int32), block_tables=table,
        logits_indices=cu[1:] - 1, sample_rows=list(range(len(q))), num_decodes=int((q == 1).sum()),
        max_query_len=int(q.max()), max_seq_len=int(seq_lens.max()))


def warm_up_steps(block_size: int, max_tokens: int, max_seqs: int, max_len: int, num_blocks: int) -> list:
    """(query_lens, context_lens) of the synthetic steps, each within the step budget and the cache."""
    steps = []
    for chunk in (1 + block_size, 16 * block_size, max_tokens):  # prefill alone; table widths 2, 16, other
        chunk = min(chunk, max_tokens, max_len - 1)
        steps.append(([chunk], [0]))
    for context in _split_contexts(block_size, max_len):         # decodes beside a chunk: every split variant
        steps.append(([1, min(64, max_tokens - 1)], [context, 0]))
    for decodes in (8, 64, max_seqs):                            # many decodes beside a chunk, with prefixes
        decodes = min(decodes, max_seqs - 1, max_tokens - 1)
        if decodes >= 1:
            steps.append(([1] * decodes + [min(block_size + 3, max_tokens - decodes)],
                          [block_size * 3 + 1] * decodes + [block_size]))
    fits = [s for s in steps if sum(-(-(q + c) // block_size) for q, c in zip(*s)) <= num_blocks and min(s[0]) > 0]
    return fits


def _split_contexts(block_size: int, max_len: int) -> list[int]:
    """Context lengths that make one decode use 1, 2, 4, ... MAX_SPLITS key partitions (64-key tiles)."""
    lens, splits = [], 1
    while splits <= MAX_SPLITS and 64 * splits < max_len - 1:
        lens.append(64 * splits - 1)
        splits *= 2
    return lens or [block_size]


@torch.inference_mode()
def warm_up(runner) -> None:
    """Runs the synthetic steps and every sampler path once (CUDA only: the CPU has nothing to compile)."""
    if not runner.device.startswith("cuda"):
        return
    began = time.perf_counter()
    cfg = runner.config
    steps = warm_up_steps(runner.block_size, cfg.max_num_batched_tokens, cfg.max_num_seqs, runner.max_model_len,
                          runner.num_blocks)
    for query_lens, context_lens in steps:
        logits = runner._logits(synthetic_step(query_lens, context_lens, runner.block_size))
        for params in _SAMPLING:
            rows = logits.shape[0]
            batch = SamplingBatch(params=params * rows, generators=[_generator(p) for p in params * rows])
            if any(p.has_penalties for p in batch.params):
                batch.output_token_ids = [[1, 2]] * rows
                batch.prompt_token_ids = [[3]] * rows
            sample(logits, batch)
    torch.cuda.synchronize()
    logger.info("warm-up: %d synthetic steps x %d sampler paths in %.1f s", len(steps), len(_SAMPLING),
                time.perf_counter() - began)


def _generator(params: SamplingParams) -> torch.Generator | None:
    if params.seed is None:
        return None
    generator = torch.Generator()
    generator.manual_seed(params.seed)
    return generator
