"""What the engine returns: generation cumulative per request (text and token ids so far), and pooling (one vector
per prompt), shaped like vLLM's outputs."""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Logprob:
    logprob: float
    rank: int                       # 1 = the most likely token
    decoded_token: str | None = None


@dataclass(slots=True)
class CompletionOutput:
    index: int
    text: str
    token_ids: list[int]
    finish_reason: str | None = None          # "stop" | "length" | "abort" | None while running
    stop_reason: int | str | None = None      # the stop string or stop token that ended it
    logprobs: list[dict[int, Logprob]] | None = None
    cumulative_logprob: float | None = None   # sum of the sampled tokens' logprobs (when logprobs were asked)

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None


@dataclass(slots=True)
class RequestOutput:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    outputs: list[CompletionOutput]
    finished: bool
    num_cached_tokens: int = 0                # prompt tokens served from the prefix cache
    metrics: dict = field(default_factory=dict)  # arrival_time, first_token_time, finished_time (time.monotonic)
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None  # per prompt token (None for the first), when
    #                                                                  SamplingParams.prompt_logprobs was set


@dataclass(slots=True)
class PoolingOutput:
    data: list[float]                         # the prompt's pooled hidden state (normalized when asked)


@dataclass(slots=True)
class PoolingRequestOutput:
    """The result of a pooling request: always finished (a pooling request runs in one step, no generation)."""
    request_id: str
    prompt_token_ids: list[int]
    outputs: PoolingOutput
    finished: bool = True
    finish_reason: str = "stop"               # "abort": the core refused or dropped it (no vector then)
    num_cached_tokens: int = 0
    metrics: dict = field(default_factory=dict)
