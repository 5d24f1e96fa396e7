"""Continuous batching under a per-step token budget.

Each step: running sequences first (a decode needs one token; a sequence mid-prefill gets its next chunk), then
waiting sequences are admitted in priority order while the budget, `max_num_seqs` and free KV blocks allow, their
prompts chunked to the budget that is left. When a running sequence cannot get a block, the lowest-priority,
latest-arrived running sequence is preempted: its blocks are freed and it is recomputed later (its prefix may still
be cached). No admissions happen in a step that preempted.
"""
from __future__ import annotations

import bisect
from dataclasses import dataclass, field

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.request import Request, Status


@dataclass(slots=True)
class SchedulerOutput:
    """The one contract between scheduler and runner. Sequences are in batch order: single-token queries first."""
    seqs: list[Request] = field(default_factory=list)          # scheduled sequences, in batch order
    num_tokens: list[int] = field(default_factory=list)        # tokens scheduled per sequence (query length)
    block_ids: list[list[int]] = field(default_factory=list)   # each sequence's block table after allocation
    preempted: list[Request] = field(default_factory=list)     # sequences preempted during this schedule

    @property
    def num_decodes(self) -> int:
        return sum(1 for n in self.num_tokens if n == 1)


class Scheduler:
    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int):
        self.kv = kv
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: list[Request] = []   # sorted by Request.sort_key
        self.running: list[Request] = []   # in admission order
        self.num_preemptions = 0

    def add(self, seq: Request) -> None:
        seq.status = Status.WAITING
        bisect.insort(self.waiting, seq, key=Request.sort_key)

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        scheduled: dict[int, tuple[Request, int]] = {}
        budget = self._schedule_running(scheduled, out.preempted)
        if not out.preempted:
            self._admit_waiting(scheduled, budget)
        pairs = sorted(scheduled.values(), key=lambda p: p[1] != 1)  # stable: decodes first
        for seq, n in pairs:
            out.seqs.append(seq)
            out.num_tokens.append(n)
            out.block_ids.append(self.kv.block_ids(seq))
        return out

    def _schedule_running(self, scheduled: dict[int, tuple[Request, int]], preempted: list[Request]) -> int:
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not Status.RUNNING:  # preempted earlier in this loop
                continue
            n = min(seq.num_tokens - seq.num_computed_tokens, budget)
            while not self.kv.allocate_slots(seq, n):
                victim = max(self.running, key=Request.sort_key)
                budget += scheduled.pop(victim.seq_id, (None, 0))[1]
                self._preempt(victim)
                preempted.append(victim)
                if victim is seq:
                    break
            else:
                scheduled[seq.seq_id] = (seq, n)
                budget -= n
        return budget

    def _admit_waiting(self, scheduled: dict[int, tuple[Request, int]], budget: int) -> None:
        while self.waiting and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[0]
            computed, num_hit = self.kv.get_computed_blocks(seq)
            n = min(seq.num_tokens - num_hit, budget)
            if not self.kv.allocate_slots(seq, n, computed):
                break
            self.waiting.pop(0)
            seq.status = Status.RUNNING
            seq.num_computed_tokens = num_hit
            if seq.num_cached_tokens < 0:
                seq.num_cached_tokens = num_hit
            self.running.append(seq)
            scheduled[seq.seq_id] = (seq, n)
            budget -= n

    def _preempt(self, seq: Request) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)
        seq.status = Status.PREEMPTED

    def update(self, out: SchedulerOutput, sampled: list[int | None]) -> list[Request]:
        """One step at a time: applies a step's results at once (`sampled[i]` is None for a prefill chunk that did
        not reach its sequence's end). Returns the sequences that finished."""
        finished = self.launched(out)
        return finished + [s for s in self.resolve(out, sampled) if s not in finished]

    def launched(self, out: SchedulerOutput) -> list[Request]:
        """Asynchronous scheduling: the step went to the device and its tokens are not back yet. Computed tokens
        advance and each sampling sequence gets a PENDING token, so the next step can be scheduled now; sequences
        that reach their length limit end here. Returns them."""
        finished = []
        for seq, n in zip(out.seqs, out.num_tokens):
            seq.num_computed_tokens += n
            if seq.num_computed_tokens == seq.num_tokens:
                seq.append_pending()
                if seq.status.finished:
                    self._retire(seq)
                    finished.append(seq)
        return finished

    def resolve(self, out: SchedulerOutput, sampled: list[int | None]) -> list[Request]:
        """The launched step's tokens arrived: fill in the pending tokens. Returns the sequences a stop token
        ended (those ended earlier, or aborted, have dropped their pending tokens and are skipped)."""
        finished = []
        for seq, token in zip(out.seqs, sampled):
            if token is None or seq.num_pending == 0:
                continue
            was = seq.status
            seq.resolve_pending(token)
            if seq.status is Status.FINISHED_STOPPED and was is not Status.FINISHED_STOPPED:
                if was is Status.RUNNING:
                    self._retire(seq)
                elif was in (Status.WAITING, Status.PREEMPTED):
                    self.waiting.remove(seq)
                finished.append(seq)
        return finished

    def finish(self, seq: Request, status: Status) -> None:
        """Ends a sequence from outside the step (stop string, abort); frees its blocks at once."""
        if seq.status.finished:
            if seq.num_pending:  # ended by its length, but ended again before its last token was read back
                seq.status = status
                seq.drop_pending()
            return
        if seq in self.waiting:
            self.waiting.remove(seq)
            self.kv.free(seq)
        elif seq in self.running:
            self._retire(seq)
        seq.status = status
        seq.drop_pending()

    def _retire(self, seq: Request) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
