"""One sequence's state inside the engine core. A user request with n > 1 samples becomes n of these."""
from __future__ import annotations

import enum
import itertools
from dataclasses import dataclass, field

from llmfleet.protocol.lora import LoRARequest
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams

_seq_ids = itertools.count()


class Status(enum.Enum):
    WAITING = "waiting"
    RUNNING = "running"
    PREEMPTED = "preempted"
    FINISHED_STOPPED = "stop"
    FINISHED_LENGTH = "length"
    FINISHED_ABORTED = "abort"


# `status.finished` is read for every sequence several times a step: a plain member attribute, not a property.
for _status in Status:
    _status.finished = _status in (Status.FINISHED_STOPPED, Status.FINISHED_LENGTH, Status.FINISHED_ABORTED)


@dataclass(slots=True, eq=False)
class Request:
    """Token-budget scheduling state: `num_computed_tokens` catches up with `num_tokens` (prompt + output so far).

    Prefill chunks, prefix-cache hits and decodes are all the same thing: the scheduler gives a request some of the
    tokens it has not computed yet. The token at position num_tokens - 1 produces the next token when computed.
    With asynchronous scheduling the newest `num_pending` tokens were sampled on the device and are not read back
    yet: they count in `num_tokens` but their ids are not in `all_token_ids`, which holds known ids only.
    """
    prompt_token_ids: list[int]
    params: SamplingParams
    arrival_time: float
    max_total_tokens: int                     # min(prompt + max_tokens, max_model_len)
    eos_token_ids: frozenset[int]
    priority: int = 0                         # lower value runs first; FCFS among equals
    request_id: str = ""                      # the engine core's id of this sequence (one sample of a user request)
    cache_salt: str = ""                      # prefix-cache namespace: blocks are shared only within equal salts
    pooling: PoolingParams | None = None      # set: a pooling request (whole prompt in one step, no generation)
    lora: LoRARequest | None = None           # its adapter (None: the base model)
    seq_id: int = field(default_factory=lambda: next(_seq_ids))
    all_token_ids: list[int] = field(init=False)  # prompt + generated ids known on the host
    num_computed_tokens: int = 0
    num_pending: int = 0                      # sampled tokens still on their way from the device (after those)
    num_cached_tokens: int = -1               # prefix-cache hit at first admission (-1: not admitted yet)
    num_preemptions: int = 0
    status: Status = Status.WAITING
    stop_reason: int | str | None = None
    spec_token_ids: list[int] = field(default_factory=list)  # draft tokens proposed for its next decode
    spec_draft_len: int = -1                  # adaptive draft length (-1: not speculated yet)
    prompt_logprobs: list | None = field(init=False)  # per prompt token after the first, as prefill chunks give
    #                                                   them (prompt_logprobs asked); sent with the first token

    def __post_init__(self) -> None:
        self.all_token_ids = list(self.prompt_token_ids)
        asked = self.params.prompt_logprobs is not None
        self.prompt_logprobs = [None] * (len(self.prompt_token_ids) - 1) if asked else None

    def record_prompt_logprobs(self, first_position: int, entries: list) -> None:
        """Entries of prompt tokens first_position, first_position + 1, ... (a recomputed chunk overwrites)."""
        if self.prompt_logprobs is not None:
            self.prompt_logprobs[first_position - 1:first_position - 1 + len(entries)] = entries

    @property
    def num_prompt_tokens(self) -> int:
        return len(self.prompt_token_ids)

    @property
    def num_tokens(self) -> int:
        """Tokens of the sequence, pending ones included."""
        return len(self.all_token_ids) + self.num_pending

    @property
    def num_output_tokens(self) -> int:
        return self.num_tokens - len(self.prompt_token_ids)

    @property
    def output_token_ids(self) -> list[int]:
        """Generated tokens whose ids are known (pending ones are not included)."""
        return self.all_token_ids[len(self.prompt_token_ids):]

    def append_pending(self) -> None:
        """A token was sampled on the device but not read back yet; a length limit ends the sequence now."""
        self.num_pending += 1
        if self.num_tokens >= self.max_total_tokens:
            self.status = Status.FINISHED_LENGTH

    def resolve_pending(self, token_id: int) -> None:
        """The oldest pending token's id arrived: it joins the known ids. A stop token ends the sequence (whatever
        it was doing: running, preempted, or already ended by its length) and discards the tokens sampled after
        it; pending tokens are always within the length limit, so nothing else can end it here."""
        self.all_token_ids.append(token_id)
        self.num_pending -= 1
        if self.status is not Status.FINISHED_ABORTED and self._is_stop_token(token_id):
            self.status = Status.FINISHED_STOPPED
            self.drop_pending()

    def append_verified(self, token_ids: list[int]) -> None:
        """Speculative decoding: the tokens a verify step gave after its first (accepted drafts, then the target's
        own token). Each follows a draft whose KV the step wrote, so computed tokens advance with them. A stop token
        or the length limit ends the sequence there; the tokens after it are dropped."""
        for token_id in token_ids:
            if self.status.finished:
                return
            self.all_token_ids.append(token_id)
            self.num_computed_tokens += 1
            if self._is_stop_token(token_id):
                self.status = Status.FINISHED_STOPPED
            elif self.num_tokens >= self.max_total_tokens:
                self.status = Status.FINISHED_LENGTH

    def drop_pending(self) -> None:
        """A finished sequence discards tokens sampled after its end."""
        self.num_pending = 0

    def _is_stop_token(self, token_id: int) -> bool:
        if not self.params.ignore_eos and token_id in self.eos_token_ids:
            self.stop_reason = None
            return True
        if self.params.stop_token_ids and token_id in self.params.stop_token_ids:
            self.stop_reason = token_id
            return True
        return False

    def sort_key(self) -> tuple[int, float, int]:
        return (self.priority, self.arrival_time, self.seq_id)
