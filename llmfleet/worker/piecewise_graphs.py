"""CUDA graphs for steps of any shape: the model is captured in pieces cut at each attention call.

Decode-only steps replay whole-model graphs (cuda_graphs.py). Every other step up to `max_tokens` tokens (prefill
chunks beside decodes, short prompts) replays the graph pieces of the smallest captured token count T >= its tokens:
piece 0 runs from the embedding to layer 0's attention inputs, piece i from layer i-1's attention output to layer i's
attention inputs, the last piece to the final norm. Attention runs eagerly between the pieces with the step's real
metadata (any mix of decodes and chunks, any context lengths), on static buffers:

    piece i:   ... -> qkv -> rotary -> copy q, k, v into q_buf, k_buf, v_buf [T, H, D]
    eager:     backend.forward(q_buf, k_buf, v_buf, kv_cache_i, meta, kv_scales_i, out=out_buf)
    piece i+1: out_buf -> o_proj -> ... -> copy into q_buf, k_buf, v_buf

One set of buffers serves every layer and every T: a piece reads out_buf before the next attention rewrites it (one
stream orders them). Rows past the step's tokens are padding: slot -1 (no KV write), no sequence owns them, their
hidden states are computed and ignored. This removes the per-kernel launch cost of eager steps, which dominates
small models (a mixed step of a 0.6B model is ~1 ms of GPU work and several ms of Python launches).
"""
from __future__ import annotations

import gc
import logging
import time
from dataclasses import dataclass, field

import torch

from llmfleet.model.layers.attention import AttentionMetadata
from llmfleet.worker.inputs import StepInputs
from llmfleet.worker.transfer import to_device

logger = logging.getLogger(__name__)


def token_buckets(max_tokens: int) -> list[int]:
    """16, 32, 48, 64, then every 32 to 256, every 64 to 512, every 128 beyond: padding stays under ~25%."""
    sizes = list(range(16, 65, 16)) + list(range(96, 257, 32)) + list(range(320, 513, 64))
    sizes += list(range(640, max_tokens + 1, 128))
    sizes = [s for s in sizes if s <= max_tokens]
    if not sizes or sizes[-1] != max_tokens:
        sizes.append(max_tokens)
    return sorted(set(sizes))


@dataclass(slots=True)
class _Pieces:
    """The captured pieces of one token count: len(graphs) == len(layers) + 1."""
    graphs: list[torch.cuda.CUDAGraph] = field(default_factory=list)
    hidden: torch.Tensor | None = None      # the last piece's output [T, H]: final hidden states


class _Cut:
    """Stands in for the attention backend while capturing: copies q, k, v into the static buffers, closes the
    current graph, opens the next one, and hands back the static output buffer."""

    def __init__(self, owner: "PiecewiseGraphs"):
        self.owner = owner
        self.capturing: _Pieces | None = None   # None: a warm-up run (nothing captured)

    def forward(self, q, k, v, kv_cache, meta, scale, *, kv_scales=None):
        bufs = self.owner.buffers(q.shape[0])
        bufs[0].copy_(q)
        bufs[1].copy_(k)
        bufs[2].copy_(v)
        if self.capturing is not None:
            self.owner.end_piece(self.capturing)
            self.owner.begin_piece(self.capturing)
        return bufs[3]


class PiecewiseGraphs:
    def __init__(self, model, layers, backend, device: str, dtype: torch.dtype, max_tokens: int):
        self.model, self.layers, self.backend, self.device = model, layers, backend, device
        self.sizes = token_buckets(max_tokens)
        first = layers[0]
        i64 = dict(dtype=torch.int64, device=device)
        self.input_ids = torch.zeros(max_tokens, **i64)
        self.positions = torch.zeros(max_tokens, **i64)
        self.slot_mapping = torch.full((max_tokens,), -1, **i64)
        heads, kv_heads, head_dim = first.num_heads, first.num_kv_heads, first.head_dim
        self._q = torch.zeros(max_tokens, heads, head_dim, dtype=dtype, device=device)
        self._k = torch.zeros(max_tokens, kv_heads, head_dim, dtype=dtype, device=device)
        self._v = torch.zeros(max_tokens, kv_heads, head_dim, dtype=dtype, device=device)
        self._out = torch.zeros(max_tokens, heads, head_dim, dtype=dtype, device=device)
        self.pieces: dict[int, _Pieces] = {}
        self._pool = None
        self._cut = _Cut(self)

    def buffers(self, tokens: int) -> tuple[torch.Tensor, ...]:
        return self._q[:tokens], self._k[:tokens], self._v[:tokens], self._out[:tokens]

    def begin_piece(self, pieces: _Pieces) -> None:
        graph = torch.cuda.CUDAGraph()
        graph.capture_begin(pool=self._pool)
        pieces.graphs.append(graph)

    def end_piece(self, pieces: _Pieces) -> None:
        pieces.graphs[-1].capture_end()

    @torch.inference_mode()
    def capture(self) -> None:
        began = time.perf_counter()
        self._pool = torch.cuda.graph_pool_handle()
        stream = torch.cuda.Stream()
        for layer in self.layers:
            layer.backend = self._cut
        try:
            for tokens in reversed(self.sizes):   # largest first: smaller ones reuse its pool memory
                self._capture_one(tokens, stream)
        finally:
            for layer in self.layers:
                layer.backend = self.backend
        torch.cuda.synchronize()
        logger.info("captured piecewise CUDA graphs for %d token counts (%d..%d, %d pieces each) in %.1f s",
                    len(self.sizes), self.sizes[0], self.sizes[-1], len(self.layers) + 1,
                    time.perf_counter() - began)

    def _capture_one(self, tokens: int, stream: torch.cuda.Stream) -> None:
        meta = None  # the pieces never read it: attention, its only reader, is cut out
        self._cut.capturing = None
        self.model.forward(self.input_ids[:tokens], self.positions[:tokens], meta)  # warm-up: compiles, autotunes
        torch.cuda.synchronize()
        gc.collect()
        pieces = _Pieces()
        self._cut.capturing = pieces
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            self.begin_piece(pieces)
            pieces.hidden = self.model.forward(self.input_ids[:tokens], self.positions[:tokens], meta)
            self.end_piece(pieces)
        torch.cuda.current_stream().wait_stream(stream)
        self._cut.capturing = None
        self.pieces[tokens] = pieces

    def can_run(self, inputs: StepInputs) -> bool:
        return len(inputs.input_ids) <= self.sizes[-1]

    def run(self, inputs: StepInputs, meta: AttentionMetadata, fix=None) -> torch.Tensor:
        """Runs the step's pieces with eager attention between them; returns the hidden states [num_tokens, H].
        `meta` is the step's metadata (its slot_mapping is replaced by the padded static one); `fix` = (positions,
        token ids on the device) overwrites input ids that were not known on the host."""
        n = len(inputs.input_ids)
        tokens = next(t for t in self.sizes if t >= n)
        self.input_ids[:n].copy_(to_device(inputs.input_ids, self.device), non_blocking=True)
        self.input_ids[n:tokens].zero_()
        self.positions[:n].copy_(to_device(inputs.positions, self.device), non_blocking=True)
        self.positions[n:tokens].zero_()
        self.slot_mapping[:n].copy_(meta.slot_mapping, non_blocking=True)
        self.slot_mapping[n:tokens].fill_(-1)
        if fix is not None:
            self.input_ids.index_copy_(0, *fix)
        meta.slot_mapping = self.slot_mapping[:tokens]
        q, k, v, out = self.buffers(tokens)
        pieces = self.pieces[tokens]
        for graph, layer in zip(pieces.graphs, self.layers):
            graph.replay()
            self.backend.forward(q, k, v, layer.kv_cache, meta, layer.scale, out=out,
                                 kv_scales=(layer.k_scale, layer.v_scale))
        pieces.graphs[-1].replay()
        return pieces.hidden[:n]
