"""What generation returns: cumulative per request (text and token ids so far), shaped like vLLM's outputs."""
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
