"""The EAGLE head's chained drafts over static buffers, replayed as one CUDA graph per batch bucket.

After the head's catch-up has drafted each sequence's first token d_1 and feature g, drafts 2..k are k - 1 steps of
one row per sequence whose shapes never change: row b of step j sits at position e_b + j (e_b: the position of its
newest token), sees keys 0..e_b + j, and feeds its output back as the next step's feature:

    tok [B], feature [B, H]  ->  for j < k - 1:  g = head(embed(tok), feature, e + j);  tok = argmax(lm_head(g))

The runner fills the buffers (positions, slots, seq_lens, block tables; tok and feature from the catch-up) and
replays the graph of the smallest captured batch >= n; rows n..B are padding (slot -1, seq_len 0: no KV write, no
keys). On CPU, or with enforce_eager, the same `_chain` runs eagerly over the same buffers, so CPU tests cover
everything but the capture.
"""
from __future__ import annotations

import logging

import numpy as np
import torch

from llmfleet.model.layers.attention import AttentionMetadata
from llmfleet.worker.cuda_graphs import batch_buckets
from llmfleet.worker.transfer import to_device

logger = logging.getLogger(__name__)


class EagleChain:
    def __init__(self, head, embed, compute_logits, device: str, hidden_size: int, max_batch: int, steps: int,
                 max_blocks: int, max_seq_len: int, block_size: int):
        self.head, self.embed, self.compute_logits = head, embed, compute_logits
        self.device, self.steps, self.block_size, self.max_seq_len = device, steps, block_size, max_seq_len
        self.sizes = batch_buckets(max_batch)
        i32, i64 = dict(dtype=torch.int32, device=device), dict(dtype=torch.int64, device=device)
        self.token = torch.zeros(max_batch, **i64)
        self.feature = torch.zeros(max_batch, hidden_size, dtype=head.fc.weight.dtype, device=device)
        self.positions = torch.zeros(max(steps, 1), max_batch, **i64)
        self.slots = torch.full((max(steps, 1), max_batch), -1, **i64)
        self.seq_lens = torch.zeros(max(steps, 1), max_batch, **i32)
        self.query_start_loc = torch.arange(max_batch + 1, **i32)
        self.block_tables = torch.zeros(max_batch, max_blocks, **i32)
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.out: dict[int, torch.Tensor] = {}

    def _chain(self, batch: int) -> torch.Tensor:
        """Drafts 2..k of `batch` rows: [batch, steps]."""
        token, feature, picked = self.token[:batch], self.feature[:batch], []
        for j in range(self.steps):
            meta = AttentionMetadata(
                num_seqs=batch, num_decodes=batch, max_query_len=1, max_seq_len=self.max_seq_len,
                query_start_loc=self.query_start_loc[:batch + 1], seq_lens=self.seq_lens[j, :batch],
                block_tables=self.block_tables[:batch], slot_mapping=self.slots[j, :batch])
            feature = self.head(self.embed(token), feature, self.positions[j, :batch], meta)     # [B, H]
            token = self.compute_logits(feature).argmax(dim=-1)                                 # [B]
            picked.append(token)
        return torch.stack(picked, dim=1) if picked else self.token[:batch, None][:, :0]

    @torch.inference_mode()
    def capture(self) -> None:
        pool = None
        for batch in reversed(self.sizes):      # largest first: smaller graphs reuse its memory pool
            self._chain(batch)                  # warm-up: compilation, autotuning
            torch.cuda.synchronize()
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.out[batch] = self._chain(batch)
            pool = graph.pool()
            self.graphs[batch] = graph
        torch.cuda.synchronize()
        logger.info("captured %d EAGLE chain graphs (batch %d..%d, %d steps)", len(self.sizes), self.sizes[0],
                    self.sizes[-1], self.steps)

    def can_run(self, n: int, width: int) -> bool:
        return n <= self.sizes[-1] and width <= self.block_tables.shape[1]

    def run(self, token: torch.Tensor, feature: torch.Tensor, ends: list[int], tables: np.ndarray) -> torch.Tensor:
        """token [n], feature [n, H]: the catch-up's; ends: each row's newest position; tables [n, W] int32.
        Returns drafts 2..k [n, steps] on the device."""
        n = len(ends)
        batch = next(b for b in self.sizes if b >= n)
        self._fill(n, batch, ends, tables)
        self.token[:n].copy_(token)
        self.feature[:n].copy_(feature)
        if batch in self.graphs:
            self.graphs[batch].replay()
            return self.out[batch][:n]
        return self._chain(batch)[:n]

    def _fill(self, n: int, batch: int, ends: list[int], tables: np.ndarray) -> None:
        steps, size = max(self.steps, 1), self.block_size
        pos = np.zeros((steps, batch), dtype=np.int64)
        pos[:, :n] = np.asarray(ends, dtype=np.int64)[None, :] + np.arange(steps)[:, None]       # [steps, n]
        slots = np.full((steps, batch), -1, dtype=np.int64)
        rows = np.arange(n)
        blocks = tables[rows[None, :], np.minimum(pos[:, :n] // size, tables.shape[1] - 1)]
        slots[:, :n] = blocks.astype(np.int64) * size + pos[:, :n] % size
        lens = np.zeros((steps, batch), dtype=np.int32)
        lens[:, :n] = pos[:, :n] + 1
        packed = to_device(np.concatenate([pos.ravel(), slots.ravel(), lens.ravel().astype(np.int64)]), self.device)
        count = steps * batch
        self.positions[:, :batch].copy_(packed[:count].view(steps, batch))
        self.slots[:, :batch].copy_(packed[count:2 * count].view(steps, batch))
        self.seq_lens[:, :batch].copy_(packed[2 * count:].view(steps, batch))
        width = tables.shape[1]
        self.block_tables[:n, :width].copy_(to_device(tables, self.device))
