"""The worker's own state per sequence, built from `NewSeqData` and kept current by `CachedSeqData` diffs.

The worker never sees engine objects. A sequence's state lives from the step that first schedules it until the
scheduler reports it in `finished_seq_ids`. A preempted sequence keeps its state, so a seeded generator goes on
from where it was; when it resumes, its new block table replaces the old one.

Tokens are appended by the worker itself when it reads back a step it launched; the scheduler never sends them.
Until then a sampled token is pending, and the state records which step sampled it: with asynchronous scheduling
the next step is launched first and takes that token from the sampling step's device tensor.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.protocol.lora import LoRARequest
from llmfleet.protocol.scheduler_output import NewSeqData, SchedulerOutput


@dataclass(slots=True, eq=False)
class SeqState:
    seq_id: int
    prompt_token_ids: list[int]
    token_ids: list[int]                  # prompt + generated ids read back to the host
    params: SamplingParams
    block_ids: list[int]                  # the block table: append-only until a preemption replaces it
    num_computed_tokens: int              # tokens whose KV is written, as of the step being launched
    generator: torch.Generator | None     # only with a seed; its position survives preemption
    pending_steps: list[int] = field(default_factory=list)  # per sampled token not read back, oldest first:
    #                                                          the id of the step that sampled it
    pooling: PoolingParams | None = None  # a pooling request: its hidden states are pooled, nothing sampled
    # Draft model (speculative decoding): positions whose draft-model KV is written, and the draft's
    # distributions q [k, V] for its latest proposals (None: greedy, or no draft model)
    draft_num_computed: int = 0
    draft_probs: object | None = None
    lora: LoRARequest | None = None       # its adapter (None: the base model)

    @property
    def num_tokens(self) -> int:
        """Tokens of the sequence, pending ones included (they follow `token_ids`)."""
        return len(self.token_ids) + len(self.pending_steps)

    @property
    def output_token_ids(self) -> list[int]:
        return self.token_ids[len(self.prompt_token_ids):]


def _from_new(new: NewSeqData) -> SeqState:
    generator = None
    if new.params.seed is not None:
        generator = torch.Generator()
        generator.manual_seed(new.params.seed)
    return SeqState(new.seq_id, new.prompt_token_ids, new.prompt_token_ids + new.output_token_ids, new.params,
                    list(new.block_ids), new.num_computed_tokens, generator, pooling=new.pooling,
                    draft_num_computed=new.num_computed_tokens, lora=new.lora)


class SeqStates:
    """Every sequence the worker holds, by seq id."""

    def __init__(self) -> None:
        self._states: dict[int, SeqState] = {}

    def __len__(self) -> int:
        return len(self._states)

    def get(self, seq_id: int) -> SeqState | None:
        return self._states.get(seq_id)

    def apply(self, out: SchedulerOutput) -> list[SeqState]:
        """Applies one step's contract: drops finished sequences, adds new ones, applies diffs. Returns the
        scheduled sequences' states in batch order."""
        for seq_id in out.finished_seq_ids:
            self._states.pop(seq_id, None)
        for new in out.new_seqs:
            self._states[new.seq_id] = _from_new(new)
        cached = out.cached_seqs
        for seq_id, blocks, computed, resumed in zip(cached.seq_ids, cached.new_block_ids,
                                                     cached.num_computed_tokens, cached.resumed_from_preemption):
            state = self._known(seq_id)
            if resumed:
                state.block_ids = list(blocks)
                state.draft_num_computed = min(state.draft_num_computed, computed)
            else:
                state.block_ids.extend(blocks)
            state.num_computed_tokens = computed
        return [self._known(seq_id) for seq_id in out.num_scheduled_tokens]

    def sampled(self, step_id: int, states: list[SeqState]) -> None:
        """`step_id` sampled one token for each of `states`; its id is on the device only."""
        for state in states:
            state.pending_steps.append(step_id)

    def received(self, step_id: int, states: list[SeqState], tokens: list[int]) -> None:
        """Step `step_id`'s tokens reached the host. Sequences finished since it launched are gone: skipped."""
        for state, token in zip(states, tokens):
            if self._states.get(state.seq_id) is not state:
                continue
            if state.pending_steps[:1] != [step_id]:
                raise RuntimeError(f"sequence {state.seq_id}: step {step_id} read back out of order "
                                   f"(pending from steps {state.pending_steps})")
            state.pending_steps.pop(0)
            state.token_ids.append(token)

    def received_verified(self, step_id: int, states: list[SeqState], tokens: list[list[int]]) -> None:
        """A verify step's tokens reached the host: per sequence its accepted drafts and the target's token."""
        self.received(step_id, states, [t[0] for t in tokens])
        for state, extra in zip(states, tokens):
            if len(extra) > 1 and self._states.get(state.seq_id) is state:
                state.token_ids.extend(extra[1:])

    def _known(self, seq_id: int) -> SeqState:
        state = self._states.get(seq_id)
        if state is None:
            raise RuntimeError(f"sequence {seq_id}: scheduled as cached but the worker holds no state for it")
        return state
