"""SpecDecoder: the engine's speculative-decoding policy and bookkeeping.

Before a step is scheduled, `propose` gives each due decode its drafts (n-gram lookup here; with a draft model the
worker proposed them after the previous step and they are already on the Request). After the step, `record` counts
what the target accepted. Which sequences speculate:
  - requests whose sampling needs the whole vocabulary edited per position (penalties, logit_bias, min_tokens) or a
    grammar's mask speculate not at all (their decodes run one token at a time, exactly as without speculation);
  - no request speculates in a step where more than `disable_by_batch_size` sequences are running or waiting: a
    large batch is compute-bound and the verify tokens would cost more than they save;
  - with `adaptive`, a sequence's draft length follows its acceptance: all k accepted -> k + 1 next time (up to
    num_speculative_tokens), else the accepted count + 1 (at least 1).
"""
from __future__ import annotations

from dataclasses import dataclass, field

from llmfleet.engine.request import Request
from llmfleet.engine.spec_decode.ngram import NgramProposer
from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.protocol.speculative import SpeculativeConfig


@dataclass(slots=True)
class SpecDecodeStats:
    """Cumulative counters under vLLM's metric names (vllm:spec_decode_*_total)."""
    num_drafts: int = 0              # verify passes of one sequence with >= 1 draft token
    num_draft_tokens: int = 0        # draft tokens verified
    num_accepted_tokens: int = 0     # of those, accepted
    accepted_per_pos: list[int] = field(default_factory=list)  # accepted draft tokens at position 0, 1, ...


def speculates(seq: Request) -> bool:
    """Whether a sequence's sampling can be verified position by position (else it never speculates)."""
    p = seq.params
    return (seq.pooling is None and not p.has_penalties and not p.logit_bias and not p.min_tokens
            and p.structured is None)


class SpecDecoder:
    def __init__(self, config: SpeculativeConfig):
        self.config = config
        self.k = config.num_speculative_tokens
        self.ngram = (NgramProposer(config.prompt_lookup_min, config.prompt_lookup_max)
                      if not config.uses_draft_model else None)
        self.stats = SpecDecodeStats(accepted_per_pos=[0] * self.k)
        self._num_proposed = 0

    @property
    def num_lookahead_tokens(self) -> int:
        """KV slots a sampling sequence needs after its tokens: a draft model writes its drafts' KV there."""
        return self.k if self.config.uses_draft_model else 0

    def active(self, num_seqs: int) -> bool:
        """Whether this step speculates, with `num_seqs` sequences running or waiting."""
        limit = self.config.disable_by_batch_size
        return limit is None or num_seqs <= limit

    def draft_len(self, seq: Request) -> int:
        return self.k if seq.spec_draft_len < 0 or not self.config.adaptive else seq.spec_draft_len

    def propose(self, running: list[Request]) -> None:
        """N-gram drafts for every running sequence whose next step is a decode of its last known token."""
        if self.ngram is None:
            return
        for seq in running:
            if seq.num_computed_tokens == seq.num_tokens - 1 and not seq.num_pending and speculates(seq):
                seq.spec_token_ids = self.ngram.propose(seq.all_token_ids, self.draft_len(seq), seq.seq_id)
        self._num_proposed += 1
        if self._num_proposed % 256 == 0:   # now and then: the mirrors of sequences no longer running go
            self.ngram.forget({seq.seq_id for seq in running})

    def ask_proposals(self, out: SchedulerOutput, by_id: dict[int, Request]) -> None:
        """Draft model: asks the worker for drafts after this step, for the sequences that sample in it."""
        if self.ngram is not None:
            return
        for seq_id, n in out.num_scheduled_tokens.items():
            seq = by_id[seq_id]
            drafts = len(out.scheduled_spec_decode_tokens.get(seq_id, ()))
            if seq.num_computed_tokens + n - drafts == seq.num_tokens and speculates(seq):
                out.spec_num_proposals[seq_id] = self.draft_len(seq)

    def record(self, seq: Request, num_drafts: int, num_accepted: int) -> None:
        """One verify pass of `seq`: `num_accepted` of its `num_drafts` draft tokens were accepted."""
        stats = self.stats
        stats.num_drafts += 1
        stats.num_draft_tokens += num_drafts
        stats.num_accepted_tokens += num_accepted
        for pos in range(num_accepted):
            stats.accepted_per_pos[pos] += 1
        if self.config.adaptive:
            seq.spec_draft_len = min(num_drafts + 1, self.k) if num_accepted == num_drafts else num_accepted + 1

    @staticmethod
    def clear(seqs: list[Request]) -> None:
        """Speculation is off this step: proposals made earlier are dropped."""
        for seq in seqs:
            seq.spec_token_ids = []
