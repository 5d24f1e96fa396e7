"""The text side of generation: user requests to core sequences, and core token deltas back to RequestOutputs.

A user request with n samples becomes n core sequences (ids `<request id>#<i>` when n > 1) that share their
prompt's blocks through the prefix cache (in a namespace of their own when prefix caching is off). With best_of > n
it becomes best_of sequences, each tracking its cumulative logprob, and only its final output is given: the n
samples of highest cumulative logprob, best first. Each sample keeps its token ids, an incremental detokenizer
holding back what may start a stop string, and its logprobs. A stop string ends the sample here: `process` returns
its core id, and the caller ends it in the core. A pooling request is one core request with no samples: its single
output carries the vector (a PoolingRequestOutput).
Runs in the API server process (on its event loop) or, for the offline LLMEngine, beside the core.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field

from llmfleet.engine.detokenizer import Detokenizer
from llmfleet.protocol.engine_messages import CoreRequest, SeqOutput, params_to_wire
from llmfleet.protocol.outputs import CompletionOutput, Logprob, PoolingOutput, PoolingRequestOutput, RequestOutput
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(slots=True, eq=False)
class _Sample:
    index: int
    core_id: str
    params: SamplingParams
    detok: Detokenizer | None
    token_ids: list[int] = field(default_factory=list)
    logprobs: list[dict[int, Logprob]] = field(default_factory=list)
    cumulative_logprob: float = 0.0     # of the sampled tokens (known when the sample asks for logprobs)
    finish_reason: str | None = None
    stop_reason: int | str | None = None


@dataclass(slots=True, eq=False)
class _RequestState:
    request_id: str
    prompt: str | None
    prompt_token_ids: list[int]
    samples: list[_Sample]
    cumulative: bool                    # an output every step (else only the final one)
    metrics: dict
    num_returned: int                   # n: the samples given back (best_of > n ranks them at the end)
    show_logprobs: bool                 # the user asked for logprobs (best_of asks for them on its own)
    num_cached_tokens: int = 0
    prompt_logprobs: list[dict[int, Logprob] | None] | None = None  # from the first sample's first output

    @property
    def finished(self) -> bool:
        return all(s.finish_reason is not None for s in self.samples)


class OutputProcessor:
    def __init__(self, tokenizer, enable_prefix_caching: bool):
        self.tokenizer = tokenizer
        self.enable_prefix_caching = enable_prefix_caching
        self._requests: dict[str, _RequestState] = {}
        self._by_core_id: dict[str, tuple[_RequestState, _Sample]] = {}
        self._pooling: dict[str, tuple[list[int], float]] = {}   # request id -> (prompt ids, arrival time)
        self._salts = itertools.count()

    def __len__(self) -> int:
        return len(self._requests) + len(self._pooling)

    def __contains__(self, request_id: str) -> bool:
        return request_id in self._requests or request_id in self._pooling

    @property
    def num_sequences(self) -> int:
        """Unfinished samples of every request (what the core runs)."""
        return len(self._by_core_id)

    def add(self, request_id: str, prompt: str | None, prompt_token_ids: list[int], params: SamplingParams,
            arrival_time: float, priority: int = 0, lora: dict | None = None) -> list[CoreRequest]:
        """Registers a request; returns the core requests to send (one per sample; `lora`: its adapter's wire
        form, for every sample)."""
        if request_id in self._requests:
            raise ValueError(f"request_id: {request_id!r} is already in use")
        if self.tokenizer is None and params.stop_strings:
            raise ValueError("stop: stop strings need a tokenizer (the engine has skip_tokenizer_init=True)")
        # With prefix caching off, the n samples still share their prompt's blocks, in a namespace of their own.
        many = params.num_samples > 1
        salt = f"samples-{next(self._salts)}" if many and not self.enable_prefix_caching else ""
        cumulative = params.output_kind == "cumulative" and not params.ranks_samples
        state = _RequestState(request_id, prompt, list(prompt_token_ids), [], cumulative,
                              {"arrival_time": arrival_time}, params.n, params.logprobs is not None)
        core = []
        for i in range(params.num_samples):
            child = params.child(i) if many else params
            core_id = f"{request_id}#{i}" if many else request_id
            # A cached prefix is not prefilled, so it would have no prompt logprobs: a namespace of its own.
            own_salt = f"prompt-logprobs-{next(self._salts)}" if child.prompt_logprobs is not None else salt
            detok = (Detokenizer(self.tokenizer, prompt_token_ids, child.skip_special_tokens, child.stop_strings,
                                 child.include_stop_str_in_output)
                     if child.detokenize and self.tokenizer is not None else None)
            sample = _Sample(i, core_id, child, detok)
            state.samples.append(sample)
            self._by_core_id[core_id] = (state, sample)
            core.append(CoreRequest(core_id, state.prompt_token_ids, params_to_wire(child), arrival_time, priority,
                                    own_salt, lora=lora))
        self._requests[request_id] = state
        return core

    def add_pooling(self, request_id: str, prompt_token_ids: list[int], params: PoolingParams,
                    arrival_time: float, priority: int = 0) -> CoreRequest:
        """Registers a pooling request; returns the one core request to send."""
        if request_id in self:
            raise ValueError(f"request_id: {request_id!r} is already in use")
        self._pooling[request_id] = (list(prompt_token_ids), arrival_time)
        return CoreRequest(request_id, self._pooling[request_id][0], {}, arrival_time, priority,
                           pooling={"normalize": params.normalize})

    def abort(self, request_id: str) -> list[str]:
        """Forgets a request; returns the core ids of its unfinished samples (to abort in the core)."""
        if self._pooling.pop(request_id, None) is not None:
            return [request_id]
        state = self._requests.pop(request_id, None)
        if state is None:
            return []
        return [s.core_id for s in state.samples if self._by_core_id.pop(s.core_id, None) is not None]

    def process(self, outputs: list[SeqOutput], now: float) -> tuple[list[RequestOutput], list[str]]:
        """Applies one step's core outputs. Returns the requests' new outputs (cumulative; only finished ones
        for final_only requests) and the core ids that a stop string ended."""
        touched: dict[str, _RequestState] = {}
        stopped: list[str] = []
        results: list = []
        for out in outputs:
            if out.request_id in self._pooling:
                results.append(self._pooled(out, now))
                continue
            entry = self._by_core_id.get(out.request_id)
            if entry is None:
                continue  # finished by a stop string or aborted here, while the core still ran it
            state, sample = entry
            if self._apply(state, sample, out, now):
                stopped.append(sample.core_id)
            if sample.finish_reason is not None:
                del self._by_core_id[sample.core_id]
            touched[state.request_id] = state
        for state in touched.values():
            finished = state.finished
            if finished:
                state.metrics["finished_time"] = now
                del self._requests[state.request_id]
            if finished or state.cumulative:
                results.append(self._output(state, finished))
        return results, stopped

    def _pooled(self, out: SeqOutput, now: float) -> PoolingRequestOutput:
        """A pooling request's one output: its vector, or an empty one when the core aborted it."""
        ids, arrival = self._pooling.pop(out.request_id)
        metrics = {"arrival_time": arrival, "finished_time": now}
        return PoolingRequestOutput(out.request_id, ids, PoolingOutput(out.embedding or []),
                                    finish_reason=out.finish_reason or "stop", metrics=metrics)

    def _apply(self, state: _RequestState, sample: _Sample, out: SeqOutput, now: float) -> bool:
        """Adds the sample's new tokens; True when a stop string ended it."""
        state.metrics.setdefault("first_token_time", now)
        if sample.index == 0 and not sample.token_ids:
            state.num_cached_tokens = out.num_cached_tokens
        if out.prompt_logprobs is not None:
            state.prompt_logprobs = [None] + [self._logprob_entry(*e) if e is not None else None
                                              for e in out.prompt_logprobs]
        for i, token in enumerate(out.new_token_ids):
            sample.token_ids.append(token)
            if out.logprobs is not None and sample.params.logprobs is not None:
                sample.cumulative_logprob += out.logprobs[i][1][0]
                if state.show_logprobs:
                    sample.logprobs.append(self._logprob_entry(*out.logprobs[i]))
            past_min = len(sample.token_ids) >= sample.params.min_tokens
            stop = sample.detok.append(token, past_min) if sample.detok is not None else None
            if stop is not None:
                sample.finish_reason, sample.stop_reason = "stop", stop
                return True
        if out.finish_reason is not None:
            sample.finish_reason, sample.stop_reason = out.finish_reason, out.stop_reason
        return False

    def _logprob_entry(self, ids: list[int], values: list[float], sampled_rank: int) -> dict[int, Logprob]:
        """The sampled token first, then the top-N by rank."""
        decode = (lambda t: self.tokenizer.decode([t])) if self.tokenizer is not None else (lambda t: None)
        entry = {ids[0]: Logprob(values[0], sampled_rank, decode(ids[0]))}
        for rank, (token, value) in enumerate(zip(ids[1:], values[1:]), start=1):
            entry.setdefault(token, Logprob(value, rank, decode(token)))
        return entry

    def _output(self, state: _RequestState, finished: bool) -> RequestOutput:
        samples = state.samples
        if len(samples) > state.num_returned:  # best_of: only ever given finished
            samples = sorted(samples, key=lambda s: -s.cumulative_logprob)[:state.num_returned]
        completions = []
        for index, s in enumerate(samples):
            done = s.finish_reason is not None
            completions.append(CompletionOutput(
                index=index, text=s.detok.visible_text(done) if s.detok else "", token_ids=list(s.token_ids),
                finish_reason=s.finish_reason, stop_reason=s.stop_reason,
                logprobs=list(s.logprobs) if state.show_logprobs else None,
                cumulative_logprob=s.cumulative_logprob if s.params.logprobs is not None else None))
        return RequestOutput(state.request_id, state.prompt, state.prompt_token_ids, completions, finished,
                             state.num_cached_tokens, dict(state.metrics), state.prompt_logprobs)


def tokenize_prompt(prompt, tokenizer) -> tuple[str | None, list[int]]:
    """(text or None, token ids) of a prompt given as text or token ids; ValueError naming `prompt`."""
    if isinstance(prompt, str):
        if not prompt:
            raise ValueError("prompt: must not be empty")
        if tokenizer is None:
            raise ValueError("prompt: text prompts need a tokenizer (the engine was built with "
                             "skip_tokenizer_init); pass token ids")
        return prompt, tokenizer.encode(prompt)
    if not isinstance(prompt, (list, tuple)):
        raise ValueError("prompt: must be a string or a list of token ids")
    return None, list(prompt)
