"""The benchmark workloads W0..W7 of BENCHMARKS.md, as deterministic lists of token-id requests.

Every workload draws from its own `random.Random(0)`: for each request in order, its input length, then its output
length (only where they vary; fixed lengths draw nothing), then its input ids, each in [0, 10000). W4 draws its
shared prefix first. W5 draws its conversations one after another, each turn's 200 user ids then its 200 reply ids
(the reply stands in for what the model said, so every run sends the same history).
The same name always gives the same requests, on every machine, for the offline and the online bench alike.
"""
from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

VOCAB_LIMIT = 10_000  # ids are drawn in [0, VOCAB_LIMIT): inside every benchmark shape's vocabulary


@dataclass(frozen=True, slots=True)
class BenchRequest:
    """One request of a workload: a token-id prompt and its output length."""
    prompt_token_ids: list[int]
    max_tokens: int                  # the output length (EOS is ignored, so every request produces exactly this)
    conversation: int | None = None  # W5: the conversation this turn belongs to (its turns run in order)
    turn: int = 0                    # W5: the turn's index within its conversation
    prompt: str | None = None        # W7: a text prompt (a user message) instead of token ids; stops at EOS


@dataclass(frozen=True, slots=True)
class WorkloadSpec:
    name: str
    title: str
    build: Callable[[random.Random], list[BenchRequest]]


def _ids(rng: random.Random, n: int) -> list[int]:
    return [rng.randrange(VOCAB_LIMIT) for _ in range(n)]


def _fixed(count: int, input_len: int, output_len: int) -> Callable[[random.Random], list[BenchRequest]]:
    return lambda rng: [BenchRequest(_ids(rng, input_len), output_len) for _ in range(count)]


def _mixed(count: int) -> Callable[[random.Random], list[BenchRequest]]:
    def build(rng: random.Random) -> list[BenchRequest]:
        requests = []
        for _ in range(count):
            input_len, output_len = rng.randint(100, 1024), rng.randint(100, 1024)
            requests.append(BenchRequest(_ids(rng, input_len), output_len))
        return requests
    return build


def _shared_prefix(rng: random.Random) -> list[BenchRequest]:
    prefix = _ids(rng, 2048)
    return [BenchRequest(prefix + _ids(rng, 128), 128) for _ in range(256)]


def _multi_turn(rng: random.Random, conversations: int = 64, turns: int = 8, tokens: int = 200) -> list[BenchRequest]:
    requests = []
    for conversation in range(conversations):
        history: list[int] = []
        for turn in range(turns):
            user, reply = _ids(rng, tokens), _ids(rng, tokens)
            requests.append(BenchRequest(history + user, tokens, conversation, turn))
            history = history + user + reply
    return requests


WORKLOADS: dict[str, WorkloadSpec] = {spec.name: spec for spec in (
    WorkloadSpec("W0", "single-stream: 1 request, input 128, output 512", _fixed(1, 128, 512)),
    WorkloadSpec("W1", "offline-mixed: 256 requests, input and output ~ randint(100, 1024)", _mixed(256)),
    WorkloadSpec("W2", "offline-fixed: 256 requests, input 512, output 256", _fixed(256, 512, 256)),
    WorkloadSpec("W3", "online: W1's lengths, 1000 requests, Poisson arrivals", _mixed(1000)),
    WorkloadSpec("W4", "shared-prefix: a 2048-token prefix + 128 own ids, output 128, 256 requests",
                 _shared_prefix),
    WorkloadSpec("W5", "multi-turn: 64 conversations x 8 turns of 200 user + 200 reply tokens", _multi_turn),
    WorkloadSpec("W6", "long-context: 16 requests, input 32768, output 256", _fixed(16, 32768, 256)),
    WorkloadSpec("W7", "editing: 64 source files of ~400 tokens, each to be returned with one small change "
                 "(text; real weights)", lambda rng: _editing()),
)}


def _editing() -> list[BenchRequest]:
    from llmfleet.bench.editing import OUTPUT_TOKENS, editing_prompts

    return [BenchRequest([], OUTPUT_TOKENS, prompt=text) for text in editing_prompts()]


def workload(name: str, num_requests: int | None = None) -> list[BenchRequest]:
    """The requests of workload `name` (W0..W7, any case); `num_requests` keeps only the first ones."""
    spec = WORKLOADS.get(name.upper())
    if spec is None:
        raise ValueError(f"workload: unknown {name!r}; use one of {', '.join(WORKLOADS)}")
    if num_requests is not None and num_requests < 1:
        raise ValueError(f"num_requests: must be >= 1, got {num_requests}")
    requests = spec.build(random.Random(0))
    return requests if num_requests is None else requests[:num_requests]
