"""CUDA graphs for decode steps: one graph per bucketed batch size, replayed over static input buffers.

A decode step (every sequence has one query token) of n sequences runs the graph of the smallest captured size
B >= n. Rows n..B are padding: their slot is -1 (no KV write), their sequence has no query and seq_len 0, so
attention skips them; their logits are computed and ignored. The graph covers the model and the logits; sampling
runs eagerly afterwards (its parameters vary per step).
"""
from __future__ import annotations

import logging
import time

import numpy as np
import torch

from llmfleet.worker.inputs import StepInputs
from llmfleet.model.layers.attention import AttentionMetadata

logger = logging.getLogger(__name__)


def batch_buckets(max_batch: int) -> list[int]:
    """1, 2, 4, 8, then every 8 up to 64, then every 16: padding waste stays small at every size."""
    sizes = [b for b in (1, 2, 4) if b < max_batch] + list(range(8, min(max_batch, 64) + 1, 8))
    sizes += list(range(80, max_batch + 1, 16))
    if not sizes or sizes[-1] != max_batch:
        sizes.append(max_batch)
    return sorted(set(sizes))


class DecodeGraphs:
    def __init__(self, model, device: str, max_batch: int, max_blocks_per_seq: int, max_seq_len: int):
        self.model, self.device = model, device
        self.max_seq_len = max_seq_len
        self.sizes = batch_buckets(max_batch)
        i32, i64 = dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_batch, **i64)
        self.positions = torch.zeros(max_batch, **i64)
        self.slot_mapping = torch.full((max_batch,), -1, **i64)
        self.seq_lens = torch.zeros(max_batch, **i32)
        self.query_start_loc = torch.zeros(max_batch + 1, **i32)
        self.block_tables = torch.zeros(max_batch, max_blocks_per_seq, **i32)
        # Pinned host mirrors: the step fills them, then one asynchronous copy each. They are reused only after
        # the step's sampled tokens came back, so a copy never reads a mirror being refilled.
        self._host = {name: torch.zeros(t.shape, dtype=t.dtype, pin_memory=True)
                      for name, t in self._buffers().items() if name != "block_tables"}
        self._bt_host = torch.zeros(self.block_tables.numel(), dtype=torch.int32, pin_memory=True)
        self._bt_scratch = torch.zeros(self.block_tables.numel(), **i32)
        self._copied = torch.cuda.Event()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.hidden: dict[int, torch.Tensor] = {}     # final hidden states [B, H] (an EAGLE head reads them)
        self.last_hidden: torch.Tensor | None = None  # the last replay's [n, H], valid until the next replay

    def _buffers(self) -> dict[str, torch.Tensor]:
        return dict(input_ids=self.input_ids, positions=self.positions, slot_mapping=self.slot_mapping,
                    seq_lens=self.seq_lens, query_start_loc=self.query_start_loc, block_tables=self.block_tables)

    def _meta(self, batch: int) -> AttentionMetadata:
        return AttentionMetadata(
            num_seqs=batch, num_decodes=batch, max_query_len=1, max_seq_len=self.max_seq_len,
            query_start_loc=self.query_start_loc[:batch + 1], seq_lens=self.seq_lens[:batch],
            block_tables=self.block_tables[:batch], slot_mapping=self.slot_mapping[:batch])

    @torch.inference_mode()
    def capture(self) -> None:
        start = time.perf_counter()
        pool = None
        for batch in reversed(self.sizes):          # largest first: smaller graphs reuse its memory pool
            meta = self._meta(batch)

            def run():
                hidden = self.model.forward(self.input_ids[:batch], self.positions[:batch], meta)
                return hidden, self.model.compute_logits(hidden)

            run()                                    # warm-up: kernel compilation, autotuning, allocator
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.hidden[batch], self.logits[batch] = run()
            pool = graph.pool()
            self.graphs[batch] = graph
        torch.cuda.synchronize()
        logger.info("captured %d decode CUDA graphs (batch %d..%d) in %.1f s", len(self.sizes), self.sizes[0],
                    self.sizes[-1], time.perf_counter() - start)

    def can_run(self, inputs: StepInputs) -> bool:
        num_seqs = len(inputs.seq_lens)
        return (inputs.max_query_len == 1 and num_seqs <= self.sizes[-1]
                and inputs.block_tables.shape[1] <= self.block_tables.shape[1])

    def run(self, inputs: StepInputs, fix=None) -> torch.Tensor:
        """Replays the graph for this decode step; returns logits [n, V] of its n sequences. `fix` = (positions,
        token ids on the device) overwrites input ids that were not known on the host."""
        n = len(inputs.seq_lens)
        batch = next(b for b in self.sizes if b >= n)
        self._copied.synchronize()  # the previous step's copies have read the pinned mirrors we refill now
        host = self._host
        host["input_ids"][:n] = torch.from_numpy(inputs.input_ids)
        host["input_ids"][n:batch] = 0  # padding rows: a valid id, whatever an earlier step left there
        host["positions"][:n] = torch.from_numpy(inputs.positions)
        host["positions"][n:batch] = 0
        host["slot_mapping"][:n] = torch.from_numpy(inputs.slot_mapping)
        host["slot_mapping"][n:batch] = -1
        host["seq_lens"][:n] = torch.from_numpy(inputs.seq_lens)
        host["seq_lens"][n:batch] = 0
        host["query_start_loc"][:n + 1] = torch.from_numpy(inputs.query_start_loc)
        host["query_start_loc"][n + 1:batch + 1] = n
        for name in ("input_ids", "positions", "slot_mapping", "seq_lens", "query_start_loc"):
            rows = batch + 1 if name == "query_start_loc" else batch
            getattr(self, name)[:rows].copy_(host[name][:rows], non_blocking=True)
        self._copy_block_tables(inputs.block_tables)
        self._copied.record()
        if fix is not None:
            self.input_ids.index_copy_(0, *fix)
        self.graphs[batch].replay()
        self.last_hidden = self.hidden[batch][:n]
        return self.logits[batch][:n]

    def _copy_block_tables(self, table: np.ndarray) -> None:
        """Copies only the [n, width] part in use (the buffer is [max_batch, max_blocks_per_seq], often 100x
        larger): host -> a compact device scratch, then one strided device copy into place."""
        n, width = table.shape
        staged = self._bt_host[: n * width].view(n, width)
        staged.copy_(torch.from_numpy(table))
        scratch = self._bt_scratch[: n * width].view(n, width)
        scratch.copy_(staged, non_blocking=True)
        self.block_tables[:n, :width].copy_(scratch)
