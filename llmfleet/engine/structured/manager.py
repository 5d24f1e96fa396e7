"""Grammars of the engine core: compiled off the step loop, cached, and one matcher per constrained sequence.

`add` submits a sequence's grammar to a small thread pool (xgrammar releases the GIL while compiling), keyed by
(kind, spec) so equal specs compile once; the scheduler asks `ready` and skips a sequence whose grammar is still
compiling, so the others run meanwhile. Each step, `fill` writes the allowed-token bitmask of every constrained
sequence that samples; `accept` advances its matcher with the token it drew. A spec that fails to compile ends
its sequence (`take_failed`), never the engine.

Tokens of one sequence are never discarded once known (a preempted sequence recomputes its KV but keeps its
tokens), so a matcher only ever moves forward: preemption needs nothing from it.
"""
from __future__ import annotations

import logging
import os
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor

import xgrammar as xgr

from llmfleet.engine.request import Request
from llmfleet.engine.structured.grammar import build_grammar
from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.protocol.structured import StructuredSpec

logger = logging.getLogger(__name__)


class GrammarManager:
    def __init__(self, tokenizer, vocab_size: int, stop_token_ids: list[int], max_workers: int = 2,
                 cache_size: int = 512):
        self.vocab_size = vocab_size
        # xgrammar spreads one compilation over threads of its own: up to 8, half the cores (the rest step)
        self.compile_threads = max(1, min(8, (os.cpu_count() or 2) // 2))
        self._pool = ThreadPoolExecutor(max_workers, thread_name_prefix="grammar")
        # Reading the vocabulary takes seconds for 150k tokens: done in the pool, so start-up does not wait for it
        # (the first compilations do)
        self._compiler = self._pool.submit(self._new_compiler, tokenizer, vocab_size, stop_token_ids)
        self._compiled: OrderedDict[tuple[str, str], Future] = OrderedDict()  # LRU of compiled grammars
        self._cache_size = cache_size
        self._pending: dict[int, Future] = {}            # seq id -> its grammar, until a matcher is built
        self._matchers: dict[int, xgr.GrammarMatcher] = {}
        self._failed: list[tuple[Request, str]] = []      # to end, with why (see take_failed)
        self._failed_ids: set[int] = set()

    def __len__(self) -> int:
        """Constrained sequences held (compiling or matching)."""
        return len(self._pending) + len(self._matchers)

    def add(self, seq: Request) -> None:
        """Starts (or reuses) the compilation of a constrained sequence's grammar."""
        self._pending[seq.seq_id] = self._future(seq.params.structured)

    def _future(self, spec: StructuredSpec) -> Future:
        future = self._compiled.get(spec.key)
        if future is not None:
            self._compiled.move_to_end(spec.key)
            return future
        future = self._pool.submit(self._compile, spec)
        self._compiled[spec.key] = future
        if len(self._compiled) > self._cache_size:
            self._compiled.popitem(last=False)
        return future

    def _new_compiler(self, tokenizer, vocab_size: int, stop_token_ids: list[int]) -> xgr.GrammarCompiler:
        info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=stop_token_ids)
        return xgr.GrammarCompiler(info, max_threads=self.compile_threads)

    def _compile(self, spec: StructuredSpec) -> xgr.CompiledGrammar:
        return self._compiler.result().compile_grammar(build_grammar(spec))

    def ready(self, seq: Request) -> bool:
        """May the scheduler admit `seq`? Unconstrained: yes. Constrained: once its grammar compiled (a failed
        one is queued for `take_failed` and the sequence is not admitted)."""
        future = self._pending.get(seq.seq_id)
        if future is None:
            return True
        if not future.done():
            return False
        if future.exception() is not None:
            if seq.seq_id not in self._failed_ids:
                logger.warning("request %s: grammar failed to compile: %s", seq.request_id, future.exception())
                self._failed_ids.add(seq.seq_id)
                self._failed.append((seq, str(future.exception())))
            return False
        del self._pending[seq.seq_id]
        self._matchers[seq.seq_id] = xgr.GrammarMatcher(future.result())
        return True

    def take_failed(self) -> list[tuple[Request, str]]:
        """Sequences whose grammar failed since the last call, with the reason."""
        failed, self._failed = self._failed, []
        return failed

    def remove(self, seq: Request) -> None:
        self._pending.pop(seq.seq_id, None)
        self._matchers.pop(seq.seq_id, None)
        self._failed_ids.discard(seq.seq_id)

    def accept(self, seq: Request, token_id: int) -> bool:
        """Advances `seq`'s matcher by the token it drew; False when the grammar refuses it. A sequence that is
        not constrained accepts anything."""
        matcher = self._matchers.get(seq.seq_id)
        return matcher is None or matcher.accept_token(token_id)

    def terminated(self, seq: Request) -> bool:
        """The grammar is complete and took its stop token: nothing more may follow."""
        matcher = self._matchers.get(seq.seq_id)
        return matcher is not None and matcher.is_terminated()

    def fill(self, out: SchedulerOutput, by_id: dict[int, Request]) -> None:
        """Writes this step's bitmask for the constrained sequences that sample in it (their last scheduled token
        is their newest one); leaves `out` untouched when there are none."""
        if not self._matchers:
            return
        rows = []
        for seq_id, n in out.num_scheduled_tokens.items():
            seq = by_id[seq_id]
            if seq_id in self._matchers and seq.num_computed_tokens + n == seq.num_tokens:
                rows.append(seq_id)
        if not rows:
            return
        bitmask = xgr.allocate_token_bitmask(len(rows), self.vocab_size)  # int32 [R, ceil(V / 32)], all allowed
        for i, seq_id in enumerate(rows):
            self._matchers[seq_id].fill_next_token_bitmask(bitmask, i)
        out.grammar_seq_ids = rows
        out.grammar_bitmask = bitmask

    def shutdown(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
