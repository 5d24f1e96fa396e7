"""LLMEngine: the synchronous engine core. `step()` = schedule -> run -> sample -> update.

Not thread-safe by design: every call happens on one thread (AsyncEngine runs it in its own). A user request with
n samples becomes n sequences sharing the prompt's full KV blocks through the prefix cache.
"""
from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field

from llmfleet.protocol.config import EngineConfig
from llmfleet.worker.device import resolve_device, resolve_dtype
from llmfleet.engine.detokenizer import Detokenizer
from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.kv_events import start_publisher
from llmfleet.model.source import resolve_model
from llmfleet.engine.request import Request, Status
from llmfleet.worker.runner import ModelRunner
from llmfleet.engine.scheduler import Scheduler
from llmfleet.protocol.outputs import CompletionOutput, Logprob, RequestOutput
from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(slots=True)
class EngineStats:
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


@dataclass(slots=True, eq=False)
class _Group:
    request_id: str
    prompt: str | None
    seqs: list[Request]
    detoks: list[Detokenizer | None]
    metrics: dict = field(default_factory=dict)

    @property
    def finished(self) -> bool:
        return all(s.status.finished and not s.num_pending for s in self.seqs)

    @property
    def sync_only(self) -> bool:
        """Needs every sampled token on the host before the next step is scheduled."""
        p = self.seqs[0].params
        return p.has_penalties or p.logprobs is not None or p.seed is not None


class LLMEngine:
    def __init__(self, config: EngineConfig):
        self.config = config
        device = resolve_device(config.device)
        source = resolve_model(config.model, config.tokenizer, config.load_format)
        self.model_name = source.name
        self.tokenizer = source.tokenizer
        self.runner = ModelRunner(config, device, resolve_dtype(config.dtype, device), source.path, source.hf_config)
        self.max_model_len = self.runner.max_model_len
        self.vocab_size = self.runner.info.vocab_size
        self.kv = KVCacheManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.scheduler = Scheduler(self.kv, config.max_num_seqs, config.max_num_batched_tokens)
        self.kv_events = start_publisher(config.kv_events_endpoint, config.block_size, self.kv.pool)  # None: off
        eos = set(self.runner.info.eos_token_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self._groups: dict[str, _Group] = {}
        self._salts = itertools.count()
        self._num_sync_only = 0   # unfinished requests that need one step at a time
        self._inflight = None     # (SchedulerOutput, LaunchedStep) whose tokens are not read back yet
        self._prompt_tokens = self._generation_tokens = 0

    # ---- requests -------------------------------------------------------------------------------------------
    def add_request(self, request_id: str, prompt: str | list[int], params: SamplingParams,
                    priority: int = 0, arrival_time: float | None = None) -> None:
        """Queues a request; raises ValueError naming the field for bad input (nothing is queued then)."""
        if request_id in self._groups:
            raise ValueError(f"request_id: {request_id!r} is already in use")
        if not isinstance(params, SamplingParams):
            raise ValueError("sampling_params: must be a SamplingParams")
        text, ids = self._tokenize(prompt)
        max_total = self._check_lengths(len(ids), params)
        arrival = time.monotonic() if arrival_time is None else arrival_time
        group = _Group(request_id, text, [], [], {"arrival_time": arrival})
        # With prefix caching off, the n samples still share their prompt's blocks, in a namespace of their own.
        salt = f"samples-{next(self._salts)}" if params.n > 1 and not self.config.enable_prefix_caching else ""
        for i in range(params.n):
            child = params.child(i) if params.n > 1 else params
            seq = Request(ids, child, arrival, max_total, self.eos_token_ids, priority, request_id, i, cache_salt=salt)
            group.seqs.append(seq)
            group.detoks.append(Detokenizer(self.tokenizer, ids, child.skip_special_tokens, child.stop_strings)
                                if child.detokenize else None)
        self._groups[request_id] = group
        self._num_sync_only += group.sync_only
        for seq in group.seqs:
            self.scheduler.add(seq)

    def _tokenize(self, prompt) -> tuple[str | None, list[int]]:
        if isinstance(prompt, str):
            if not prompt:
                raise ValueError("prompt: must not be empty")
            return prompt, self.tokenizer.encode(prompt)
        if not isinstance(prompt, (list, tuple)) or not all(isinstance(t, int) for t in prompt):
            raise ValueError("prompt: must be a string or a list of token ids")
        if not prompt:
            raise ValueError("prompt: must not be empty")
        bad = [t for t in prompt if not 0 <= t < self.vocab_size]
        if bad:
            raise ValueError(f"prompt: token id {bad[0]} is outside the vocabulary [0, {self.vocab_size})")
        return None, list(prompt)

    def _check_lengths(self, num_prompt: int, params: SamplingParams) -> int:
        if num_prompt >= self.max_model_len:
            raise ValueError(f"prompt: has {num_prompt} tokens; the limit is {self.max_model_len - 1} "
                             f"(max_model_len {self.max_model_len} includes at least one generated token)")
        capacity = self.kv.pool.num_blocks * self.kv.block_size
        if num_prompt + 1 > capacity:
            raise ValueError(f"prompt: has {num_prompt} tokens but the KV cache holds only {capacity}; "
                             f"enlarge the cache")
        if params.max_tokens is None:  # as long as the context and the whole KV cache allow
            return min(self.max_model_len, capacity)
        max_total = min(num_prompt + params.max_tokens, self.max_model_len)
        blocks = self.kv.blocks_needed(max_total)
        if blocks > self.kv.pool.num_blocks:
            raise ValueError(f"max_tokens: the request may reach {max_total} tokens ({blocks} KV blocks) but the KV "
                             f"cache has {self.kv.pool.num_blocks} blocks; lower max_tokens or enlarge the cache")
        return max_total

    def abort_request(self, request_ids: str | list[str]) -> None:
        for request_id in [request_ids] if isinstance(request_ids, str) else request_ids:
            group = self._groups.get(request_id)
            if group is None:
                continue
            self._forget(group)
            for seq in group.seqs:
                self.scheduler.finish(seq, Status.FINISHED_ABORTED)

    def has_unfinished_requests(self) -> bool:
        return bool(self._groups)

    # ---- the step -------------------------------------------------------------------------------------------
    def step(self) -> list[RequestOutput]:
        """Schedules and launches one step; returns the outputs of the step whose tokens arrived.

        With asynchronous scheduling, step N is scheduled and launched while step N-1 still runs on the device
        (its sampled tokens are PENDING on the host and reach step N's inputs on the device); N-1's tokens are
        then read back and processed while N runs. Requests that need every token on the host before the next
        step (penalties, logprobs, seeds) switch the engine to one step at a time while they are present.
        """
        outputs: list[RequestOutput] = []
        overlap = self.config.async_scheduling and self._num_sync_only == 0
        if self._inflight is not None and not overlap:
            outputs += self._finish(self._inflight)
            self._inflight = None
        out = self.scheduler.schedule()
        launched = None
        if out.seqs:
            launched = (out, self.runner.launch(out, self._inflight[1] if self._inflight else None))
            self.scheduler.launched(out)
        if self._inflight is not None:
            outputs += self._finish(self._inflight)
        self._inflight = launched
        if launched is not None and not overlap:
            outputs += self._finish(launched)
            self._inflight = None
        if self.kv_events is not None:
            self.kv_events.publish_pending()
        return outputs

    def _finish(self, inflight) -> list[RequestOutput]:
        """Reads back a launched step's tokens and turns them into request outputs."""
        out, launched = inflight
        result = self.runner.collect(launched)
        applies = [token is not None and seq.num_pending > 0 for seq, token in zip(out.seqs, result.sampled)]
        self.scheduler.resolve(out, result.sampled)
        now = time.monotonic()
        touched: dict[str, _Group] = {}
        for seq, token, logprobs, applied in zip(out.seqs, result.sampled, result.logprobs, applies):
            group = self._groups.get(seq.group_id)
            if not applied or group is None:
                continue
            self._generation_tokens += 1
            if "first_token_time" not in group.metrics:
                group.metrics["first_token_time"] = now
                self._prompt_tokens += seq.num_prompt_tokens
            self._postprocess(group, seq, token, logprobs)
            touched[group.request_id] = group
        outputs = []
        for group in touched.values():
            finished = group.finished
            if finished:
                group.metrics["finished_time"] = now
                self._forget(group)
            if finished or group.seqs[0].params.output_kind == "cumulative":
                outputs.append(self._output(group))
        return outputs

    def _forget(self, group: _Group) -> None:
        del self._groups[group.request_id]
        self._num_sync_only -= group.sync_only

    def _postprocess(self, group: _Group, seq: Request, token: int, logprobs) -> None:
        detok = group.detoks[seq.index]
        if logprobs is not None:
            seq.logprobs.append(self._logprob_entry(*logprobs))
        if detok is None:
            return
        stop = detok.append(token)
        if stop is not None:
            self.scheduler.finish(seq, Status.FINISHED_STOPPED)
            seq.status, seq.stop_reason = Status.FINISHED_STOPPED, stop

    def _logprob_entry(self, ids: list[int], values: list[float], sampled_rank: int) -> dict[int, Logprob]:
        """The sampled token first, then the top-N by rank."""
        entry = {ids[0]: Logprob(values[0], sampled_rank, self.tokenizer.decode([ids[0]]))}
        for rank, (token, value) in enumerate(zip(ids[1:], values[1:]), start=1):
            entry.setdefault(token, Logprob(value, rank, self.tokenizer.decode([token])))
        return entry

    def _output(self, group: _Group) -> RequestOutput:
        completions = []
        for seq, detok in zip(group.seqs, group.detoks):
            finished = seq.status.finished and not seq.num_pending  # its last token may still be on its way
            completions.append(CompletionOutput(
                index=seq.index, text=detok.visible_text(finished) if detok else "",
                token_ids=seq.output_token_ids, finish_reason=seq.status.value if finished else None,
                stop_reason=seq.stop_reason, logprobs=list(seq.logprobs) if seq.params.logprobs is not None else None))
        first = group.seqs[0]
        return RequestOutput(group.request_id, group.prompt, first.prompt_token_ids, completions, group.finished,
                             max(first.num_cached_tokens, 0), dict(group.metrics))

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_free_blocks=self.kv.num_free_blocks, num_total_blocks=self.kv.pool.num_blocks,
            kv_cache_usage=self.kv.usage, prefix_cache_queries=self.kv.stats.queries,
            prefix_cache_hits=self.kv.stats.hits, num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self._prompt_tokens, generation_tokens=self._generation_tokens)
