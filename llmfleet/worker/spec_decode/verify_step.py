"""The runner's verify path: a step with draft tokens samples through rejection.verify, then reads back, per
sequence, its accepted drafts and the target's own token. The worker's sequence states take them all in."""
from __future__ import annotations

import torch

from llmfleet.protocol.scheduler_output import SchedulerOutput
from llmfleet.worker.spec_decode.rejection import verify
from llmfleet.worker.transfer import HostCopy


def launch_verify(runner, step, out: SchedulerOutput, logits: torch.Tensor, counts: list[int]) -> None:
    """Queues verification of the step's drafts; the emitted tokens and their counts go to the host as one copy."""
    drafts = [out.scheduled_spec_decode_tokens.get(s.seq_id, []) for s in step.seqs]
    q = [s.draft_probs for s in step.seqs] if runner.drafter is not None else None
    step.verified = verify(logits, runner._sampling_batch(step, out, counts), counts, drafts, q)
    step.tokens = HostCopy(torch.cat([step.verified.tokens.flatten(), step.verified.counts]))


def collect_verified(runner, step) -> tuple[dict, dict, dict, dict]:
    """(seq id -> first token, -> its logprobs, -> the tokens after it, -> their logprobs) of a verify step."""
    host = step.tokens.wait().tolist()
    num_seqs, width = step.verified.tokens.shape
    counts = host[num_seqs * width:]
    emitted = [host[b * width:b * width + counts[b]] for b in range(num_seqs)]
    runner.seqs.received_verified(step.step_id, step.seqs, emitted)
    sampled = {s.seq_id: e[0] for s, e in zip(step.seqs, emitted)}
    verified = {s.seq_id: e[1:] for s, e in zip(step.seqs, emitted) if len(e) > 1}
    logprobs, verified_logprobs = {}, {}
    if step.verified.logprobs is not None:
        rows = [s for s in step.seqs for _ in range(width)]
        entries = runner._collect_logprobs(step.verified.logprobs, rows, keyed=False)
        for b, seq in enumerate(step.seqs):
            if seq.params.logprobs is not None:
                mine = entries[b * width:b * width + counts[b]]
                logprobs[seq.seq_id] = mine[0]
                if len(mine) > 1:
                    verified_logprobs[seq.seq_id] = mine[1:]
    return sampled, logprobs, verified, verified_logprobs


def expand_rows(values: list, reps: list[int] | None, step: int = 0) -> list:
    """Each value repeated reps[i] times (None: unchanged); with step=1, increasing by one per repeat."""
    if reps is None:
        return values
    return [v + j * step if step else v for v, r in zip(values, reps) for j in range(r)]
