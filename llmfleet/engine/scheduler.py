"""Continuous batching under a per-step token budget.

Each step: running sequences first (a decode needs one token; a sequence mid-prefill gets its next chunk), then
waiting sequences are admitted in priority order while the budget, `max_num_seqs` and free KV blocks allow, their
prompts chunked to the budget that is left. When a running sequence cannot get a block, the lowest-priority,
latest-arrived running sequence is preempted: its blocks are freed and it is recomputed later (its prefix may still
be cached). No admissions happen in a step that preempted. A waiting sequence that `admissible` refuses (its
grammar is still compiling) is passed over, and the ones behind it are admitted meanwhile.

The step goes to the worker as plain data (protocol/scheduler_output.py): a sequence whole the first time it is
scheduled, diffs after, its table whole again after a preemption, and the ids of sequences that ended once the
next step runs. Sampled tokens come back by seq id; until then they are counted as pending on the Request.

Pooling requests (embeddings) are never chunked: one is admitted only when its whole prompt fits the budget left in
the step (the core refuses prompts longer than the whole budget), and it finishes, its blocks freed, in the step
that computes it. Encoders attend bidirectionally, so a chunk could not see the tokens after it.

Speculative decoding adds nothing but more tokens of a decode: a running sequence with proposed drafts
(`Request.spec_token_ids`) whose decode is due is scheduled for 1 + k tokens (k capped by the budget left and its
length limit), the drafts listed in `scheduled_spec_decode_tokens`. Only the known token counts as computed at
launch; `accept_verified` advances over the drafts the target accepted. Draft slots are allocated like any token
but never published to the prefix cache (their ids are not known tokens); rejected ones are reused by the next
step. `num_lookahead_tokens` more slots are reserved after a sampling sequence's tokens for a draft model's KV.
"""
from __future__ import annotations

import bisect
from collections.abc import Callable

from llmfleet.engine.kv_cache import KVCacheManager
from llmfleet.engine.request import Request, Status
from llmfleet.protocol.scheduler_output import NewSeqData, SchedulerOutput


_NO_BLOCKS: list[int] = []  # shared by every diff without new blocks: never modified


class Scheduler:
    def __init__(self, kv: KVCacheManager, max_num_seqs: int, max_num_batched_tokens: int,
                 admissible: Callable[[Request], bool] | None = None, num_lookahead_tokens: int = 0,
                 max_loras: int = 0):
        self.kv = kv
        self.max_loras = max_loras  # > 0: running sequences use at most this many distinct adapters (device slots)
        self.num_lookahead_tokens = num_lookahead_tokens
        self.admissible = admissible or (lambda seq: True)
        self.max_num_seqs = max_num_seqs
        self.max_num_batched_tokens = max_num_batched_tokens
        self.waiting: list[Request] = []   # sorted by Request.sort_key
        self.running: list[Request] = []   # in admission order
        # Every sequence whose end has not been fully seen: unfinished, or finished with tokens still to arrive.
        self.by_id: dict[int, Request] = {}
        # Sequences the worker holds state for: seq id -> (num_preemptions, block ids sent) as of the last step
        # that described it. A preemption since then means its table must be sent again whole.
        self._on_worker: dict[int, tuple[int, int]] = {}
        self.num_preemptions = 0

    def add(self, seq: Request) -> None:
        seq.status = Status.WAITING
        bisect.insort(self.waiting, seq, key=Request.sort_key)
        self.by_id[seq.seq_id] = seq

    def has_unfinished(self) -> bool:
        return bool(self.waiting or self.running)

    def schedule(self) -> SchedulerOutput:
        out = SchedulerOutput()
        scheduled: dict[int, tuple[Request, int]] = {}
        budget = self._schedule_running(scheduled, out.preempted_seq_ids, out.scheduled_spec_decode_tokens)
        if not out.preempted_seq_ids:
            self._admit_waiting(scheduled, budget)
        drafts = out.scheduled_spec_decode_tokens
        for seq, n in sorted(scheduled.values(), key=lambda p: p[1] != 1):  # stable: decodes first
            out.num_scheduled_tokens[seq.seq_id] = n
            known = n - len(drafts[seq.seq_id]) if drafts and seq.seq_id in drafts else n
            placeholders = seq.num_computed_tokens + known - len(seq.all_token_ids)
            if placeholders > 0:
                out.num_placeholder_tokens[seq.seq_id] = placeholders
            self._describe(seq, out)
        if out.num_scheduled_tokens:  # ended sequences are reported with the next step that reaches the worker
            out.finished_seq_ids = self._take_finished()
        return out

    def _describe(self, seq: Request, out: SchedulerOutput) -> None:
        """The sequence as the worker needs it: whole the first time, a diff after (most decodes: no new block)."""
        ids = self.kv.block_ids(seq)
        sent = self._on_worker.get(seq.seq_id)
        if sent is None:
            out.new_seqs.append(NewSeqData(seq.seq_id, seq.prompt_token_ids, seq.output_token_ids, seq.params,
                                           list(ids), seq.num_computed_tokens, seq.pooling, seq.lora))
        elif sent[0] != seq.num_preemptions:
            out.cached_seqs.add(seq.seq_id, list(ids), seq.num_computed_tokens, True)
        elif len(ids) > sent[1]:
            out.cached_seqs.add(seq.seq_id, ids[sent[1]:], seq.num_computed_tokens, False)
        else:
            out.cached_seqs.add(seq.seq_id, _NO_BLOCKS, seq.num_computed_tokens, False)
            return
        self._on_worker[seq.seq_id] = (seq.num_preemptions, len(ids))

    def _take_finished(self) -> list[int]:
        """Sequences the worker holds that have ended since the last report."""
        done = [i for i in self._on_worker if i not in self.by_id or self.by_id[i].status.finished]
        for seq_id in done:
            del self._on_worker[seq_id]
        return done

    def _schedule_running(self, scheduled: dict[int, tuple[Request, int]], preempted: list[int],
                          drafts: dict[int, list[int]]) -> int:
        budget = self.max_num_batched_tokens
        for seq in list(self.running):
            if budget == 0:
                break
            if seq.status is not Status.RUNNING:  # preempted earlier in this loop
                continue
            remaining = seq.num_tokens - seq.num_computed_tokens
            n = min(remaining, budget)
            spec = self._drafts(seq, remaining, budget) if seq.spec_token_ids else _NO_BLOCKS
            lookahead = self.num_lookahead_tokens if n == remaining else 0
            while self.kv.allocate_slots(seq, n + len(spec), num_lookahead_tokens=lookahead) is None:
                victim = max(self.running, key=Request.sort_key)
                budget += scheduled.pop(victim.seq_id, (None, 0))[1]
                drafts.pop(victim.seq_id, None)
                self._preempt(victim)
                preempted.append(victim.seq_id)
                if victim is seq:
                    break
            else:
                scheduled[seq.seq_id] = (seq, n + len(spec))
                budget -= n + len(spec)
                if spec:
                    drafts[seq.seq_id] = spec
        return budget

    def _drafts(self, seq: Request, remaining: int, budget: int) -> list[int]:
        """The proposed drafts that fit this step: only on a due decode whose last token is known, within the
        budget and so that every accepted token stays within the length limit. They are consumed either way."""
        proposed, seq.spec_token_ids = seq.spec_token_ids, []
        if remaining != 1 or seq.num_pending:
            return _NO_BLOCKS
        k = min(len(proposed), budget - 1, seq.max_total_tokens - seq.num_tokens - 1)
        return proposed[:k] if k > 0 else _NO_BLOCKS

    def _admit_waiting(self, scheduled: dict[int, tuple[Request, int]], budget: int) -> None:
        skipped = 0  # waiting sequences passed over, at the head of the queue
        loras = {s.lora.lora_int_id for s in self.running if s.lora is not None} if self.max_loras else None
        while len(self.waiting) > skipped and budget > 0 and len(self.running) < self.max_num_seqs:
            seq = self.waiting[skipped]
            if not self.admissible(seq) or not _lora_fits(seq, loras, self.max_loras):
                skipped += 1
                continue
            computed, num_hit = self.kv.get_computed_blocks(seq)
            if seq.pooling is not None and seq.num_tokens > budget:
                break  # not chunked: waits for a step with room for all of it (FCFS: nothing passes it)
            n = min(seq.num_tokens - num_hit, budget)
            lookahead = self.num_lookahead_tokens if n == seq.num_tokens - num_hit else 0
            if self.kv.allocate_slots(seq, n, computed, lookahead) is None:
                break
            self.waiting.pop(skipped)
            seq.status = Status.RUNNING
            seq.num_computed_tokens = num_hit
            if seq.num_cached_tokens < 0:
                seq.num_cached_tokens = num_hit
            self.running.append(seq)
            scheduled[seq.seq_id] = (seq, n)
            budget -= n
            if loras is not None and seq.lora is not None:
                loras.add(seq.lora.lora_int_id)

    def _preempt(self, seq: Request) -> None:
        self.running.remove(seq)
        self.kv.free(seq)
        seq.num_computed_tokens = 0
        seq.num_preemptions += 1
        self.num_preemptions += 1
        self.add(seq)
        seq.status = Status.PREEMPTED

    def update(self, out: SchedulerOutput, sampled: dict[int, int]) -> list[Request]:
        """One step at a time: applies a step's results at once (`sampled`: seq id -> token, for the sequences
        that sampled; a prefill chunk that did not reach its sequence's end has none). Returns the sequences that
        finished."""
        finished = self.launched(out)
        return finished + [s for s in self.resolve(out, sampled) if s not in finished]

    def launched(self, out: SchedulerOutput) -> list[Request]:
        """Asynchronous scheduling: the step went to the device and its tokens are not back yet. Computed tokens
        advance and each sampling sequence counts one more pending token, so the next step can be scheduled now;
        sequences that reach their length limit end here. Returns them."""
        finished = []
        drafts = out.scheduled_spec_decode_tokens
        for seq_id, n in out.num_scheduled_tokens.items():
            seq = self.by_id[seq_id]
            seq.num_computed_tokens += n - len(drafts[seq_id]) if drafts and seq_id in drafts else n
            if seq.pooling is not None:  # computed whole: done; its vector arrives with the step's results
                seq.status = Status.FINISHED_STOPPED
                self._retire(seq)
                self._forget_if_done(seq)
                finished.append(seq)
            elif seq.num_computed_tokens == seq.num_tokens:
                seq.append_pending()
                if seq.status.finished:
                    self._retire(seq)
                    finished.append(seq)
        return finished

    def resolve(self, out: SchedulerOutput, sampled: dict[int, int]) -> list[Request]:
        """The launched step's tokens arrived (seq id -> token): they replace pending ones. Returns the sequences
        a stop token ended (those ended earlier, or aborted, have dropped their pending tokens and are skipped)."""
        finished = []
        for seq_id, token in sampled.items():
            seq = self.by_id.get(seq_id)
            if seq is None or seq.num_pending == 0:
                continue
            was = seq.status
            seq.resolve_pending(token)
            if seq.status is Status.FINISHED_STOPPED and was is not Status.FINISHED_STOPPED:
                if was is Status.RUNNING:
                    self._retire(seq)
                elif was in (Status.WAITING, Status.PREEMPTED):
                    self.waiting.remove(seq)
                finished.append(seq)
            self._forget_if_done(seq)
        return finished

    def accept_verified(self, verified: dict[int, list[int]]) -> list[Request]:
        """Speculative decoding, after `resolve`: seq id -> the tokens its verify step gave after the first. Returns
        the sequences those tokens ended (a stop token, or the length limit)."""
        finished = []
        for seq_id, tokens in verified.items():
            seq = self.by_id.get(seq_id)
            if seq is None or seq.status.finished:
                continue
            seq.append_verified(tokens)
            if seq.status.finished:
                self._retire(seq)
                finished.append(seq)
                self._forget_if_done(seq)
        return finished

    def finish(self, seq: Request, status: Status) -> None:
        """Ends a sequence from outside the step (stop string, abort); frees its blocks at once."""
        if seq.status.finished:
            if seq.num_pending:  # ended by its length, but ended again before its last token was read back
                seq.status = status
                seq.drop_pending()
            self._forget_if_done(seq)
            return
        if seq in self.waiting:
            self.waiting.remove(seq)
            self.kv.free(seq)
        elif seq in self.running:
            self._retire(seq)
        seq.status = status
        seq.drop_pending()
        self._forget_if_done(seq)

    def _retire(self, seq: Request) -> None:
        self.running.remove(seq)
        self.kv.free(seq)

    def _forget_if_done(self, seq: Request) -> None:
        """A finished sequence with no token still to arrive needs no lookup by id any more."""
        if seq.status.finished and not seq.num_pending:
            self.by_id.pop(seq.seq_id, None)


def _lora_fits(seq: Request, loras: set[int] | None, max_loras: int) -> bool:
    """Its adapter is already running, or a slot is left for it (every step's adapters then fit the slots)."""
    return loras is None or seq.lora is None or seq.lora.lora_int_id in loras or len(loras) < max_loras
