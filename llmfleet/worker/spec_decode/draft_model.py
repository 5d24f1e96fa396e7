"""A draft model proposer: a smaller model with the target's tokenizer proposes k tokens per sequence.

Its KV lives in a cache of its own with the same geometry as the target's (same number of blocks, same block size)
and is indexed by the target's block tables: block b of a sequence holds the target's KV in the target's cache
and the draft's KV in the draft's cache. The scheduler's block accounting therefore covers both, prefix-cache hits
and preemption included, and memory sizing counts a block as both caches' bytes. The scheduler reserves
num_speculative_tokens lookahead slots after each sampling sequence, where the draft writes its drafts' KV.

Per sequence, `draft_num_computed` catches up with the known tokens, like the target's `num_computed_tokens`:
after each target step, one draft forward runs over every sequence's tokens not yet seen by the draft (the new
prompt chunk or the tokens accepted since, plus the token just sampled), then k - 1 single-token forwards propose
the rest. Rejected drafts' KV is overwritten by the next catch-up. A prefix-cache hit trusts the draft KV of the
hit's blocks, written by the sequence that computed them; where speculation was off then (a large batch), those
blocks hold stale draft KV: proposals get worse, outputs stay exact (the target verifies every token).
Runs eagerly (no CUDA graphs): the draft is small and its steps are a fraction of the target's.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llmfleet.model.layers.sampler import draw, probabilities
from llmfleet.model.loader import load_model
from llmfleet.model.source import resolve_model
from llmfleet.protocol.speculative import SpeculativeConfig
from llmfleet.worker.inputs import prepare_inputs
from llmfleet.worker.seq_state import SeqState
from llmfleet.worker.transfer import to_device


@dataclass(slots=True)
class _Query:
    """What prepare_inputs reads of a sequence: the draft's own view of it."""
    seq_id: int
    token_ids: list[int]
    block_ids: list[int]
    num_computed_tokens: int
    pooling: None = None

    @property
    def num_tokens(self) -> int:
        return len(self.token_ids)


class DraftModelProposer:
    def __init__(self, runner, config: SpeculativeConfig):
        self.runner = runner
        source = resolve_model(config.model, skip_tokenizer_init=True)
        self.model, _, self.info = load_model(source.path, runner.dtype, runner.device, hf_config=source.hf_config)
        if self.info.vocab_size != runner.info.vocab_size:
            raise ValueError(f"speculative_config.model: the draft's vocabulary has {self.info.vocab_size} tokens, "
                             f"the target's {runner.info.vocab_size}; they must share the tokenizer")
        if self.info.max_position_embeddings < runner.max_model_len:
            raise ValueError(f"speculative_config.model: the draft's context ({self.info.max_position_embeddings}) "
                             f"is shorter than max_model_len ({runner.max_model_len})")
        self.layers = self.model.attention_layers()
        for layer in self.layers:
            layer.backend = runner.backend

    @property
    def bytes_per_block(self) -> int:
        heads = self.layers[0].num_kv_heads
        r = self.runner
        return 2 * len(self.layers) * r.block_size * heads * self.info.head_dim * r.kv_dtype.itemsize

    def allocate_cache(self, num_blocks: int) -> None:
        heads, r = self.layers[0].num_kv_heads, self.runner
        for layer in self.layers:
            layer.kv_cache = torch.zeros((2, num_blocks, r.block_size, heads, self.info.head_dim),
                                         dtype=r.kv_dtype, device=r.device)

    @torch.inference_mode()
    def propose(self, states: list[SeqState], lengths: dict[int, int], step=None) -> dict[int, list[int]]:
        """Up to lengths[seq_id] draft tokens per sequence, after its known tokens; keeps q for rejection (`step`,
        the target's launched step, is not needed)."""
        states = [s for s in states if lengths.get(s.seq_id, 0) > 0]
        if not states:
            return {}
        # single-token queries lead the batch, as attention metadata expects (num_decodes first)
        states.sort(key=lambda s: len(s.token_ids) - s.draft_num_computed != 1)
        queries = [_Query(s.seq_id, s.token_ids, s.block_ids, s.draft_num_computed) for s in states]
        tokens, probs = self._step(queries, states)
        drafts = {s.seq_id: [t] for s, t in zip(states, tokens)}
        steps = {s.seq_id: [p] for s, p in zip(states, probs)}
        for s in states:
            s.draft_num_computed = len(s.token_ids)
        for j in range(1, max(lengths[s.seq_id] for s in states)):
            more = [s for s in states if lengths[s.seq_id] > j]
            queries = [_Query(s.seq_id, s.token_ids + drafts[s.seq_id], s.block_ids, len(s.token_ids) + j - 1)
                       for s in more]
            tokens, probs = self._step(queries, more)
            for s, t, p in zip(more, tokens, probs):
                drafts[s.seq_id].append(t)
                steps[s.seq_id].append(p)
        for s in states:
            rows = steps[s.seq_id]
            s.draft_probs = torch.stack(rows) if rows[0] is not None else None
        return drafts

    def _step(self, queries: list[_Query], states: list[SeqState]):
        """One draft forward over `queries`; (the token each proposes, its q row or None for greedy)."""
        r = self.runner
        n = [q.num_tokens - q.num_computed_tokens for q in queries]
        inputs = prepare_inputs(queries, n, r.block_size)
        meta = r._metadata(inputs)
        hidden = self.model.forward(to_device(inputs.input_ids, r.device), to_device(inputs.positions, r.device),
                                    meta)
        logits = self.model.compute_logits(hidden[to_device(inputs.logits_indices, r.device)]).float()
        params = [s.params for s in states]
        if all(p.greedy for p in params):
            return logits.argmax(dim=-1).tolist(), [None] * len(states)
        q = probabilities(logits, params)
        drawn = draw(q, [s.generator for s in states])
        greedy = torch.tensor([p.greedy for p in params], device=logits.device)
        tokens = torch.where(greedy, logits.argmax(dim=-1), drawn).tolist()
        return tokens, [None if p.greedy else q[i] for i, p in enumerate(params)]
