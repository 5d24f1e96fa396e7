"""The step contract between the scheduler and the worker: plain data, no live engine objects.

The worker keeps its own state per sequence. A sequence reaches it once as `NewSeqData`; every later step it is
scheduled in brings only a diff in `CachedSeqData` (blocks appended, how many tokens are computed). Token ids the
worker sampled itself are never sent back to it; ids the worker cannot know yet (sampled by a step still running
on the device, asynchronous scheduling) are counted in `num_placeholder_tokens`, never written as sentinel ids.
`finished_seq_ids` tells the worker which states to drop.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llmfleet.protocol.lora import LoRARequest
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(slots=True)
class NewSeqData:
    """A sequence the worker has not seen: everything it needs to build that sequence's state."""
    seq_id: int                      # unique for the engine's life; keys every other field of the contract
    prompt_token_ids: list[int]      # the prompt (never changes)
    output_token_ids: list[int]      # generated ids known when the sequence is first sent (empty for a new one)
    params: SamplingParams           # sampling parameters; a seed makes the worker keep a generator for it
    block_ids: list[int]             # its whole block table (a copy: later growth arrives as CachedSeqData)
    num_computed_tokens: int         # tokens whose KV is already in those blocks (a prefix-cache hit)
    pooling: PoolingParams | None = None  # set: a pooling request, whole in this step; it samples nothing
    lora: LoRARequest | None = None       # its adapter (None: the base model)


@dataclass(slots=True)
class CachedSeqData:
    """Per-step diffs of sequences the worker already holds, as parallel lists (one entry per sequence)."""
    seq_ids: list[int] = field(default_factory=list)                   # sequences the worker holds already
    new_block_ids: list[list[int]] = field(default_factory=list)       # blocks appended to the table this step;
    #                                                                    after a preemption the whole new table
    num_computed_tokens: list[int] = field(default_factory=list)       # tokens computed before this step
    resumed_from_preemption: list[bool] = field(default_factory=list)  # True: new_block_ids replace the table

    def __len__(self) -> int:
        return len(self.seq_ids)

    def add(self, seq_id: int, new_block_ids: list[int], num_computed_tokens: int, resumed: bool) -> None:
        self.seq_ids.append(seq_id)
        self.new_block_ids.append(new_block_ids)
        self.num_computed_tokens.append(num_computed_tokens)
        self.resumed_from_preemption.append(resumed)


@dataclass(slots=True)
class SchedulerOutput:
    """One step. Every scheduled sequence is in exactly one of `new_seqs` / `cached_seqs`."""
    new_seqs: list[NewSeqData] = field(default_factory=list)           # first time on the worker
    cached_seqs: CachedSeqData = field(default_factory=CachedSeqData)  # known to the worker: diffs only
    # seq id -> tokens to compute this step (its query length). The key order is the batch order: single-token
    # queries first. A sequence computes its tokens [num_computed_tokens, num_computed_tokens + n).
    num_scheduled_tokens: dict[int, int] = field(default_factory=dict)
    # seq id -> how many of its scheduled tokens are placeholders: the last ones of its query, sampled by the
    # previous step and not yet read back. The worker takes their ids from that step's device tensor. Only
    # sequences with placeholders appear.
    num_placeholder_tokens: dict[int, int] = field(default_factory=dict)
    # Speculative decoding. seq id -> the draft token ids that end its query (counted in num_scheduled_tokens,
    # after its one known token): the worker verifies them in this step. Only sequences with drafts appear.
    scheduled_spec_decode_tokens: dict[int, list[int]] = field(default_factory=dict)
    # seq id -> how many draft tokens a worker-side proposer (a draft model) proposes after this step, for the
    # sequence's next one (it samples in this step). Empty: nothing to propose.
    spec_num_proposals: dict[int, int] = field(default_factory=dict)
    # sequences that ended (finished or aborted) since the last step that reached the worker: drop their state
    finished_seq_ids: list[int] = field(default_factory=list)
    # sequences preempted while scheduling this step: their blocks are freed; the worker keeps their state and
    # gets a new table when they resume (`resumed_from_preemption`)
    preempted_seq_ids: list[int] = field(default_factory=list)
    # Structured outputs: the sequences that sample under a grammar this step, and their allowed tokens as an
    # int32 host array [len(grammar_seq_ids), ceil(vocab / 32)] (bit j of word w allows token 32 * w + j), row i
    # for grammar_seq_ids[i]. Empty / None when no scheduled sequence is constrained: nothing else pays.
    grammar_seq_ids: list[int] = field(default_factory=list)
    grammar_bitmask: object | None = None

    @property
    def total_num_scheduled_tokens(self) -> int:
        return sum(self.num_scheduled_tokens.values())

    @property
    def num_decodes(self) -> int:
        """Sequences with a single-token query (they lead the batch)."""
        return sum(1 for n in self.num_scheduled_tokens.values() if n == 1)
