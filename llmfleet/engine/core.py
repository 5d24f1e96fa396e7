"""EngineCore: the token-level step loop. `step()` = schedule -> run -> sample -> update.

It owns sequences, token ids and KV blocks, and knows no text: detokenization, stop strings and the n samples of a
user request belong to the OutputProcessor (in the API server process, or in-process for the offline LLMEngine).
Every sequence arrives as a CoreRequest and leaves as SeqOutputs: token-id deltas and how it finished. A pooling
request (CoreRequest.pooling set) leaves as one SeqOutput carrying its vector, from the step that computed it.
Not thread-safe by design: every call happens on one thread (the engine-core process's main thread).
"""
from __future__ import annotations

import gc
import logging

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.kv_events import start_publisher
from llmfleet.engine.limits import Limits
from llmfleet.engine.request import Request, Status
from llmfleet.engine.scheduler import Scheduler
from llmfleet.engine.spec_decode.decoder import SpecDecoder
from llmfleet.engine.structured.manager import GrammarManager
from llmfleet.model.source import resolve_model
from llmfleet.protocol.config import EngineConfig
from llmfleet.protocol.engine_messages import CoreRequest, EngineStats, SeqOutput, params_from_wire
from llmfleet.protocol.lora import LoRARequest, lora_salt
from llmfleet.protocol.pooling_params import PoolingParams
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.worker.device import resolve_device, resolve_dtype
from llmfleet.worker.executor import build_executor, shutdown_executor

logger = logging.getLogger(__name__)


class EngineCore:
    def __init__(self, config: EngineConfig):
        self.config = config
        device = resolve_device(config.device)
        source = resolve_model(config.model, config.tokenizer, config.load_format, config.skip_tokenizer_init)
        self.model_name = source.name
        self.tokenizer = source.tokenizer
        # a ModelRunner here, or worker processes (one per tensor-parallel rank) behind the same calls
        self.runner = build_executor(config, device, resolve_dtype(config.dtype, device), source.path,
                                     source.hf_config)
        self.kv = KVCacheManager(self.runner.num_blocks, config.block_size, config.enable_prefix_caching)
        self.kv_events = start_publisher(config.kv_events_endpoint, config.block_size, self.kv.pool)  # None: off
        self.limits = Limits(self.runner.max_model_len, self.runner.info.vocab_size, self.runner.num_blocks,
                             config.block_size)
        eos = set(self.runner.info.eos_token_ids)
        if getattr(self.tokenizer, "eos_token_id", None) is not None:
            eos.add(self.tokenizer.eos_token_id)
        self.eos_token_ids = frozenset(eos)
        self.runner.eos_token_ids = self.eos_token_ids
        # Structured outputs need token strings: no tokenizer, no grammars (constrained requests are refused).
        self.grammars = (GrammarManager(self.tokenizer, self.runner.info.vocab_size, sorted(eos))
                         if self.tokenizer is not None else None)
        self.spec = SpecDecoder(config.speculative_config) if config.speculative_config is not None else None
        self.scheduler = Scheduler(self.kv, config.max_num_seqs, config.max_num_batched_tokens,
                                   self.grammars.ready if self.grammars is not None else None,
                                   self.spec.num_lookahead_tokens if self.spec is not None else 0,
                                   max_loras=config.max_loras if config.enable_lora else 0)
        self._seqs: dict[str, Request] = {}   # request id -> its sequence, until finished or aborted
        self._num_sync_only = 0               # unfinished sequences that need one step at a time
        self._inflight = None                 # (SchedulerOutput, LaunchedStep) whose tokens are not read back yet
        self.stalled = False                  # the last step scheduled nothing and had nothing to return
        self._pooling: dict[int, Request] = {}  # seq id -> pooling request, until its vector is read back
        self._prompt_tokens = self._generation_tokens = 0
        # Everything built so far (the model's modules, the block pool, tokenizer tables) lives as long as the
        # engine: move it out of the collector's sight, so the collections that every step's small objects
        # trigger scan only those, not the whole heap.
        gc.collect()
        gc.freeze()

    @property
    def tasks(self) -> list[str]:
        """What the model serves: an encoder only embeddings; a decoder generation and embeddings (pooled)."""
        return ["embed"] if self.runner.is_encoder else ["generate", "embed"]

    @property
    def max_model_len(self) -> int:
        return self.limits.max_model_len

    @property
    def vocab_size(self) -> int:
        return self.limits.vocab_size

    # ---- requests -------------------------------------------------------------------------------------------
    def add_request(self, request: CoreRequest) -> None:
        """Queues one sequence; raises ValueError naming the field for bad input (nothing is queued then)."""
        if request.request_id in self._seqs:
            raise ValueError(f"request_id: {request.request_id!r} is already in use")
        if request.pooling is not None:
            return self._add_pooling(request)
        if self.runner.is_encoder:
            raise ValueError("model: an encoder-only model serves embeddings (pooling requests), not generation")
        params = params_from_wire(request.params)
        if params.n != 1:
            raise ValueError(f"n: the engine core runs one sample per request, got n={params.n}")
        self.limits.check_token_ids(request.prompt_token_ids)
        max_total = self.limits.max_total_tokens(len(request.prompt_token_ids), params)
        if params.structured is not None and self.grammars is None:
            raise ValueError("structured: structured outputs need the tokenizer (the engine was started with "
                             "skip_tokenizer_init)")
        lora = self._lora_of(request)
        salt = lora_salt(lora.lora_name) + request.cache_salt if lora is not None else request.cache_salt
        seq = Request(request.prompt_token_ids, params, request.arrival_time, max_total, self.eos_token_ids,
                      request.priority, request.request_id, cache_salt=salt, lora=lora)
        self._seqs[request.request_id] = seq
        self._num_sync_only += _sync_only(seq)
        if params.structured is not None:
            self.grammars.add(seq)
        self.scheduler.add(seq)

    def _lora_of(self, request: CoreRequest) -> LoRARequest | None:
        """The request's adapter, read and checked on first use (ValueError when it is bad or LoRA is off)."""
        if request.lora is None:
            return None
        if self.runner.lora is None:
            raise ValueError("lora: this engine serves no adapters (start it with enable_lora)")
        lora = LoRARequest(**request.lora)
        self.runner.lora.check(lora)
        return lora

    def _add_pooling(self, request: CoreRequest) -> None:
        self.limits.check_token_ids(request.prompt_token_ids)
        self.limits.check_pooling_prompt(len(request.prompt_token_ids), self.config.max_num_batched_tokens)
        pooling = PoolingParams(**request.pooling)
        num_prompt = len(request.prompt_token_ids)
        seq = Request(request.prompt_token_ids, _NO_SAMPLING, request.arrival_time, num_prompt, frozenset(),
                      request.priority, request.request_id, pooling=pooling)
        self._seqs[request.request_id] = seq
        self._pooling[seq.seq_id] = seq
        self.scheduler.add(seq)

    def abort_requests(self, request_ids: list[str], status: Status = Status.FINISHED_ABORTED) -> None:
        """Ends sequences from outside the step (abort, or a stop string found by the detokenizer); unknown or
        finished ids are ignored. Their blocks return to the pool at once."""
        for request_id in request_ids:
            seq = self._seqs.get(request_id)
            if seq is not None:
                self._forget(seq)
                self.scheduler.finish(seq, status)

    def has_unfinished_requests(self) -> bool:
        return bool(self._seqs)

    def has_inflight_step(self) -> bool:
        """A launched step whose tokens were not read back (the next `step()` collects it)."""
        return self._inflight is not None

    # ---- the step -------------------------------------------------------------------------------------------
    def step(self) -> list[SeqOutput]:
        """Schedules and launches one step; returns the outputs of the step whose tokens arrived.

        With asynchronous scheduling, step N is scheduled and launched while step N-1 still runs on the device
        (its sampled tokens are pending on the host and reach step N's inputs on the device); N-1's tokens are
        then read back and processed while N runs. Sequences that need every token on the host before the next
        step (penalties, logprobs, seeds) switch the engine to one step at a time while they are present, and so
        do constrained ones: a step's grammar bitmask needs the previous step's token taken by the matcher.
        Speculation does too (its drafts continue the tokens read back), in the steps where it is active.
        """
        outputs: list[SeqOutput] = self._fail_grammars()
        speculating = self.spec is not None and self.spec.active(self._batch_size())
        overlap = self.config.async_scheduling and self._num_sync_only == 0 and not speculating
        if self._inflight is not None and not overlap:
            outputs += self._finish(self._inflight)
            self._inflight = None
        self._propose(speculating)
        out = self.scheduler.schedule()
        if speculating:
            self.spec.ask_proposals(out, self.scheduler.by_id)
        if self.grammars is not None:
            self.grammars.fill(out, self.scheduler.by_id)
        launched = None
        if out.num_scheduled_tokens:
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
        # Nothing could run (every waiting request's grammar still compiling): the caller may wait instead of
        # stepping again at once
        self.stalled = not out.num_scheduled_tokens and self._inflight is None and not outputs
        return outputs

    def _batch_size(self) -> int:
        """Sequences the next step can hold: the running ones and as many waiting ones as max_num_seqs admits
        (a long queue behind a small batch does not make the step compute-bound)."""
        scheduler = self.scheduler
        return min(len(scheduler.running) + len(scheduler.waiting), self.config.max_num_seqs)

    def _propose(self, speculating: bool) -> None:
        """Drafts for this step's decodes (n-gram here; a draft model's came with the last step), or none."""
        if speculating:
            self.spec.propose(self.scheduler.running)
        elif self.spec is not None:
            self.spec.clear(self.scheduler.running)

    def _finish(self, inflight) -> list[SeqOutput]:
        """Reads back a launched step's tokens and turns them into sequence outputs."""
        out, launched = inflight
        result = self.runner.collect(launched)
        by_id = self.scheduler.by_id   # looked up before resolve, which forgets sequences that end there
        for seq_id, (first, entries) in result.prompt_logprobs.items():
            if seq_id in by_id:
                by_id[seq_id].record_prompt_logprobs(first, entries)
        applies = [(by_id[i], token) for i, token in result.sampled.items() if i in by_id and by_id[i].num_pending]
        known = {seq.seq_id: len(seq.all_token_ids) for seq, _ in applies} if result.verified else None
        if out.scheduled_spec_decode_tokens:
            self._record_verified(out, result.verified, by_id)
        self.scheduler.resolve(out, result.sampled)
        if result.verified:
            self.scheduler.accept_verified(result.verified)
        self._take_drafts(result.draft_token_ids, by_id)
        outputs = self._pooled(result.pooled) if result.pooled else []
        for seq, token in applies:
            if self._seqs.get(seq.request_id) is not seq:
                continue  # aborted while its token was on the device
            before = known[seq.seq_id] if known is not None else len(seq.all_token_ids) - 1
            tokens = seq.all_token_ids[before:] if known is not None else [token]
            if self.grammars is not None:
                for t in tokens:
                    self._advance_grammar(seq, t)
            self._generation_tokens += len(tokens)
            first = before == seq.num_prompt_tokens  # its first token (pending ones aside)
            if first:
                self._prompt_tokens += seq.num_prompt_tokens
            finished = seq.status.finished and not seq.num_pending
            if finished:
                self._forget(seq)
            outputs.append(SeqOutput(
                seq.request_id, tokens, seq.status.value if finished else None,
                seq.stop_reason if finished and isinstance(seq.stop_reason, int) else None,
                max(seq.num_cached_tokens, 0), self._logprobs(result, seq.seq_id, len(tokens)),
                seq.prompt_logprobs if first else None))
        return outputs

    @staticmethod
    def _logprobs(result, seq_id: int, count: int) -> list | None:
        """Logprob entries of a sequence's `count` new tokens (None: it did not ask)."""
        first = result.logprobs.get(seq_id)
        if first is None:
            return None
        return [first] + result.verified_logprobs.get(seq_id, [])[:count - 1]

    def _record_verified(self, out, verified: dict[int, list[int]], by_id: dict) -> None:
        """Acceptance metrics and adaptive draft lengths: one verify pass per sequence that had drafts."""
        for seq_id, drafts in out.scheduled_spec_decode_tokens.items():
            seq = by_id.get(seq_id)
            if seq is not None:
                self.spec.record(seq, len(drafts), len(verified.get(seq_id, ())))

    def _take_drafts(self, drafts: dict[int, list[int]], by_id: dict) -> None:
        """A worker-side proposer's drafts wait on their sequences for the next schedule."""
        for seq_id, tokens in drafts.items():
            seq = by_id.get(seq_id)
            if seq is not None and not seq.status.finished:
                seq.spec_token_ids = tokens

    def _pooled(self, pooled: dict[int, list[float]]) -> list[SeqOutput]:
        outputs = []
        for seq_id, vector in pooled.items():
            seq = self._pooling.get(seq_id)
            if seq is None:
                continue  # aborted while it ran
            self._forget(seq)
            self._prompt_tokens += seq.num_prompt_tokens
            outputs.append(SeqOutput(seq.request_id, [], "stop", embedding=vector))
        return outputs

    def _forget(self, seq: Request) -> None:
        del self._seqs[seq.request_id]
        self._pooling.pop(seq.seq_id, None)
        self._num_sync_only -= _sync_only(seq)
        if seq.params.structured is not None:
            self.grammars.remove(seq)

    def _advance_grammar(self, seq: Request, token: int) -> None:
        """The matcher takes the drawn token; a complete grammar ends the sequence (even with ignore_eos)."""
        if not self.grammars.accept(seq, token):
            logger.error("request %s: token %d breaks its grammar; ending it", seq.request_id, token)
            self.scheduler.finish(seq, Status.FINISHED_ABORTED)
        elif not seq.status.finished and self.grammars.terminated(seq):
            self.scheduler.finish(seq, Status.FINISHED_STOPPED)

    def _fail_grammars(self) -> list[SeqOutput]:
        """Sequences whose grammar did not compile end as aborted (the API server checks specs first, so this is
        what its checks cannot see)."""
        if self.grammars is None:
            return []
        failed = [seq for seq, _ in self.grammars.take_failed() if self._seqs.get(seq.request_id) is seq]
        for seq in failed:
            self._forget(seq)
            self.scheduler.finish(seq, Status.FINISHED_ABORTED)
        return [SeqOutput(seq.request_id, [], Status.FINISHED_ABORTED.value) for seq in failed]

    def shutdown(self) -> None:
        """Stops the worker processes, where the model runs in some (nothing to do for an in-process runner)."""
        shutdown_executor(self.runner)

    def reset_prefix_cache(self) -> int:
        return self.kv.reset_prefix_cache()

    def stats(self) -> EngineStats:
        return EngineStats(
            num_running=len(self.scheduler.running), num_waiting=len(self.scheduler.waiting),
            num_free_blocks=self.kv.num_free_blocks, num_total_blocks=self.kv.pool.num_blocks,
            kv_cache_usage=self.kv.usage, prefix_cache_queries=self.kv.stats.queries,
            prefix_cache_hits=self.kv.stats.hits, num_preemptions=self.scheduler.num_preemptions,
            prompt_tokens=self._prompt_tokens, generation_tokens=self._generation_tokens,
            **self._spec_stats())

    def _spec_stats(self) -> dict:
        if self.spec is None:
            return {}
        s = self.spec.stats
        return dict(spec_num_drafts=s.num_drafts, spec_num_draft_tokens=s.num_draft_tokens,
                    spec_num_accepted_tokens=s.num_accepted_tokens, spec_accepted_per_pos=list(s.accepted_per_pos))


_NO_SAMPLING = SamplingParams(max_tokens=1, detokenize=False)  # what a pooling request's Request carries


def _sync_only(seq: Request) -> bool:
    """Needs every sampled token on the host before the next step is scheduled."""
    p = seq.params
    return (p.has_penalties or p.logprobs is not None or p.seed is not None or p.prompt_logprobs is not None
            or p.structured is not None)
