"""KV-cache sizing on CUDA: a profiling forward pass at the largest step, then the rest of the budget is KV blocks.

budget = gpu_memory_utilization x total memory - this engine's peak torch memory (weights + activations +
         sampling) - what this engine added outside torch's allocator (cuBLAS workspaces, communicators),
         and never more than what is free once activations are set aside.

The fraction is this engine's own share, as vLLM's is: memory that other processes (another replica on the same
GPU) held before it loaded does not count against it, so two replicas at 0.45 each share one GPU. What they hold
still limits it through the free-memory bound.
"""
from __future__ import annotations

import logging

import torch

from llmfleet.model.layers.sampler import SamplingBatch, sample
from llmfleet.protocol.sampling_params import SamplingParams

logger = logging.getLogger(__name__)
_MARGIN = 512 * 2**20  # left free for CUDA graphs' pool and allocator slack


def outside_torch_memory() -> int:
    """Device memory in use outside this process's torch allocator: other processes, CUDA contexts, library
    workspaces."""
    free, total = torch.cuda.mem_get_info()
    return total - free - torch.cuda.memory_reserved()


@torch.inference_mode()
def profile_kv_blocks(runner) -> int:
    cfg = runner.config
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    inputs = runner.dummy_inputs(cfg.max_num_batched_tokens, cfg.max_num_seqs)
    scratch_blocks = inputs.block_tables.size + 1
    runner._bind([runner._new_cache(scratch_blocks) for _ in runner.layers])
    hidden = runner._forward(inputs)
    logits = runner.model.compute_logits(hidden[torch.as_tensor(inputs.logits_indices, device=runner.device)])
    rows = len(inputs.sample_rows)
    params = SamplingParams(temperature=0.7, top_p=0.9, top_k=50, logprobs=5)  # the most memory-hungry path
    sample(logits, SamplingBatch(params=[params] * rows, generators=[None] * rows))
    torch.cuda.synchronize()
    # This engine's own peak: other engines of the process (allocated before its model loaded) do not count.
    peak = torch.cuda.max_memory_allocated() - scratch_blocks * runner.bytes_per_block - runner.memory_before_load
    del hidden, logits
    runner._bind([None] * len(runner.layers))
    torch.cuda.empty_cache()
    free, total = torch.cuda.mem_get_info()
    outside_torch = max(0, outside_torch_memory() - runner.outside_torch_before_load)   # this engine's own
    activations = peak - runner.weight_bytes
    budget = min(int(total * cfg.gpu_memory_utilization) - peak - outside_torch, free - activations - _MARGIN)
    blocks = max(0, budget // runner.bytes_per_block)
    gib = 2 ** 30
    logger.info("memory: total %.1f GiB, torch peak %.2f GiB (weights + activations), outside torch %.2f GiB, "
                "KV budget %.2f GiB = %d blocks", total / gib, peak / gib, outside_torch / gib, budget / gib, blocks)
    blocks_per_request = -(-runner.max_model_len // runner.block_size)
    if blocks < blocks_per_request:
        raise ValueError(
            f"KV cache too small: {blocks} blocks ({blocks * runner.block_size} tokens, {max(budget, 0) / gib:.2f} "
            f"GiB) cannot hold one request of max_model_len={runner.max_model_len} tokens "
            f"({blocks_per_request} blocks). Raise gpu_memory_utilization (now {cfg.gpu_memory_utilization}), "
            f"lower max_model_len or max_num_batched_tokens (now {cfg.max_num_batched_tokens}), or use more GPUs.")
    return blocks
