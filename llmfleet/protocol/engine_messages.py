"""Messages between the API server process and the engine-core process (msgspec structs over ZeroMQ).

The API server owns text (tokenization, detokenization, stop strings, the n samples of one user request); the core
owns token ids and KV blocks. Everything that crosses is plain typed data, batched per step: no pickled objects, no
method names. Client -> core: `AddRequests`, `AbortRequests`, `StopStrings` (finished by a stop string), `Call`.
Core -> client: `Ready` once, then `StepOutputs` per step (token-id deltas and finishes), `CallResult`, and `Dead`
if the core fails.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Literal, Union

import msgspec

from llmfleet.protocol.sampling_params import SamplingParams


def params_to_wire(params: SamplingParams) -> dict[str, Any]:
    """The constructor fields of SamplingParams (the core re-validates them on arrival)."""
    fields = {f.name: getattr(params, f.name) for f in dataclasses.fields(params) if f.init}
    if params.structured is not None:
        fields["structured"] = params.structured.to_wire()
    return fields


def params_from_wire(fields: dict[str, Any]) -> SamplingParams:
    return SamplingParams(**fields)


class CoreRequest(msgspec.Struct, array_like=True, omit_defaults=True):
    """One sequence for the core to run (a user request with n samples is n of these)."""
    request_id: str
    prompt_token_ids: list[int]
    params: dict[str, Any]          # params_to_wire(SamplingParams), n == 1
    arrival_time: float
    priority: int = 0
    cache_salt: str = ""            # prefix-cache namespace (the n samples share their prompt's blocks in one)
    pooling: dict[str, Any] | None = None  # set: a pooling request (PoolingParams fields); `params` is ignored
    lora: dict[str, Any] | None = None     # LoRARequest.to_wire() of its adapter (None: the base model)


class AddRequests(msgspec.Struct, tag=True, array_like=True):
    requests: list[CoreRequest]


class AbortRequests(msgspec.Struct, tag=True, array_like=True):
    request_ids: list[str]


class StopStrings(msgspec.Struct, tag=True, array_like=True):
    """Sequences that the API server found a stop string in: finished as "stop", their blocks freed."""
    request_ids: list[str]


CallName = Literal["stats", "reset_prefix_cache", "check_health", "shutdown"]


class Call(msgspec.Struct, tag=True, array_like=True):
    """A request for information or a control action, answered by a CallResult with the same call_id."""
    call_id: int
    name: CallName


ClientMessage = Union[AddRequests, AbortRequests, StopStrings, Call]


class SeqOutput(msgspec.Struct, array_like=True, omit_defaults=True):
    """What one step did for one sequence: its new token ids (usually one) and, when it ended, why."""
    request_id: str
    new_token_ids: list[int]
    finish_reason: str | None = None               # "stop" | "length" | "abort" once finished
    stop_reason: int | None = None                 # the stop token id that ended it (None: EOS or not stopped)
    num_cached_tokens: int = 0                     # prompt tokens served from the prefix cache
    # Per new token: (token ids: the sampled one first, then the top-N), their logprobs, the sampled one's rank.
    logprobs: list[tuple[list[int], list[float], int]] | None = None
    # With the first token of a sequence that asked for prompt logprobs: one entry per prompt token after the first,
    # shaped like `logprobs`' (the prompt's token first, then the top-N).
    prompt_logprobs: list[tuple[list[int], list[float], int] | None] | None = None
    embedding: list[float] | None = None           # a pooling request's vector (it finishes in the same output)


class EngineStats(msgspec.Struct, array_like=True):
    num_running: int
    num_waiting: int
    num_free_blocks: int
    num_total_blocks: int
    kv_cache_usage: float
    prefix_cache_queries: int
    prefix_cache_hits: int
    num_preemptions: int
    prompt_tokens: int
    generation_tokens: int
    # Speculative decoding (zero without it): verify passes with drafts, draft tokens verified, accepted, and
    # accepted per draft position
    spec_num_drafts: int = 0
    spec_num_draft_tokens: int = 0
    spec_num_accepted_tokens: int = 0
    spec_accepted_per_pos: list[int] = msgspec.field(default_factory=list)


class Ready(msgspec.Struct, tag=True, array_like=True):
    """The core is up: what the API server needs to validate and tokenize requests itself."""
    model_name: str
    max_model_len: int
    vocab_size: int
    num_kv_blocks: int
    block_size: int
    eos_token_ids: list[int]
    tasks: list[str] = msgspec.field(default_factory=lambda: ["generate"])  # "generate" and/or "embed"
    embedding_size: int = 0         # the length of a pooled vector (the model's hidden size)


class StepOutputs(msgspec.Struct, tag=True, array_like=True):
    outputs: list[SeqOutput]
    step_start: float               # time.monotonic() in the core when the step began (same clock across
    time: float                     # processes on one host: CLOCK_MONOTONIC), and when its outputs were ready


class CallResult(msgspec.Struct, tag=True, array_like=True):
    call_id: int
    stats: EngineStats | None = None
    value: int | None = None
    error: str | None = None


class Dead(msgspec.Struct, tag=True, array_like=True):
    """The core failed and is exiting; `error` says why."""
    error: str


CoreMessage = Union[Ready, StepOutputs, CallResult, Dead]
