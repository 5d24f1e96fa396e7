"""Verifying draft tokens: the target's logits at a sequence's last 1 + k positions against its k drafts.

Row j of a sequence holds the target's distribution p_j for the token after input j (input 0 is its last known
token, inputs 1..k its drafts d_1..d_k). Draft d_{j+1} is checked against p_j, in order, stopping at the first
rejection; the sequence then gains the a accepted drafts and one token of the target's own:
  - greedy: d_{j+1} is accepted when it is argmax p_j; the token after them is argmax p_a. The output is the one
    plain greedy decoding gives, token for token.
  - sampled: d_{j+1}, drawn by the proposer from q_j, is accepted with probability min(1, p_j(d) / q_j(d)); on a
    rejection at j the token is drawn from the residual max(p_j - q_j, 0), normalised; with all k accepted it is
    drawn from p_k. Each emitted token then follows p exactly (Leviathan et al., 2023; Chen et al., 2023). An
    n-gram proposal is a point mass (q_j(d) = 1): accepted with probability p_j(d), residual p_j without d.
A sequence without drafts (k = 0) gets the plain sample of its one row: one code path for every row of a step.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from llmfleet.model.layers.logits_adjust import adjust_logits
from llmfleet.model.layers.sampler import (SamplerOutput, SamplingBatch, _gather_logprobs, draw, probabilities,
                                           sample)
from llmfleet.worker.transfer import to_device


@dataclass(slots=True)
class Verified:
    tokens: torch.Tensor             # [S, K + 1] long: sequence b's emitted tokens are its first counts[b]
    counts: torch.Tensor             # [S] long: accepted drafts + 1
    logprobs: SamplerOutput | None   # of the emitted tokens, over the S * (K + 1) entries flattened (when asked)


def verify(logits: torch.Tensor, batch: SamplingBatch, spec_counts: list[int], drafts: list[list[int]],
           draft_probs: list[torch.Tensor | None] | None = None) -> Verified:
    """logits [R, V], R = sum(1 + k_b): sequence b's 1 + k_b rows in order; `batch` has one entry per row.
    drafts[b]: its k_b draft tokens; draft_probs[b]: q [>= k_b, V] of a draft model (None: point masses)."""
    device = logits.device
    num_seqs, width = len(spec_counts), max(spec_counts) + 1
    k, rows, d_tok = _host_indices(spec_counts, drafts, width, device)         # [S], [S, K + 1], [S, K]
    offsets = torch.arange(width, device=device)
    raw_logprobs = None
    if batch.max_logprobs is not None:   # before sample(): a grammar mask edits the logits in place
        edited = adjust_logits(logits, batch.adjustments) if batch.adjustments is not None else logits
        raw_logprobs = edited[rows.flatten()].log_softmax(dim=-1)
    base = sample(logits, batch).token_ids[rows]                                # [S, K + 1]: plain draws
    valid = offsets[None, :-1] < k[:, None]
    accept = d_tok == base[:, :-1]                                              # greedy acceptance
    tokens = base
    first_rows = _first_rows(spec_counts)
    sampled = [b for b in range(num_seqs) if spec_counts[b] and not batch.params[first_rows[b]].greedy]
    if sampled:
        gens = [batch.generators[first_rows[b]] for b in sampled]
        accept, recovered = _rejection(logits, batch, rows, d_tok, sampled, gens, draft_probs, spec_counts, accept)
    accepted = torch.cumprod((accept & valid).to(torch.int64), dim=1).sum(dim=1)  # [S]
    at = offsets[None, :]
    tokens = torch.where(at[:, :-1] < accepted[:, None], d_tok, tokens[:, :-1])
    tokens = torch.cat([tokens, base[:, -1:]], dim=1)
    if sampled:   # a rejection at j < k: the residual's draw replaces the target's plain one
        use = (at == accepted[:, None]) & (accepted[:, None] < k[:, None])
        tokens = torch.where(use, recovered, tokens)
    out = None
    if raw_logprobs is not None:
        out = SamplerOutput(tokens.flatten())
        _gather_logprobs(out, raw_logprobs, batch.max_logprobs)
    return Verified(tokens, accepted + 1, out)


def _host_indices(spec_counts: list[int], drafts: list[list[int]], width: int, device):
    """(k [S], logits rows [S, K + 1], drafts [S, K] zero-padded), built on the host and sent in one asynchronous
    copy: no device round trip while the step's forward is still queued."""
    num_seqs = len(spec_counts)
    k = np.asarray(spec_counts, dtype=np.int64)
    starts = np.zeros(num_seqs, dtype=np.int64)
    np.cumsum(k[:-1] + 1, out=starts[1:])
    rows = starts[:, None] + np.minimum(np.arange(width)[None, :], k[:, None])
    d_tok = np.zeros((num_seqs, width - 1), dtype=np.int64)
    for b, d in enumerate(drafts):
        d_tok[b, :len(d)] = d
    packed = to_device(np.concatenate([k, rows.ravel(), d_tok.ravel()]), str(device))
    return packed[:num_seqs], packed[num_seqs:num_seqs * (width + 1)].view(num_seqs, width), \
        packed[num_seqs * (width + 1):].view(num_seqs, width - 1)


def _first_rows(spec_counts: list[int]) -> list[int]:
    """Index of each sequence's first row."""
    rows, at = [], 0
    for c in spec_counts:
        rows.append(at)
        at += c + 1
    return rows


def _rejection(logits, batch, rows, d_tok, sampled, gens, draft_probs, spec_counts, accept):
    """Rejection sampling for the sequences in `sampled`: (acceptance [S, K], residual draws [S, K + 1])."""
    device, vocab = logits.device, logits.shape[-1]
    sel = torch.tensor(sampled, dtype=torch.int64, device=device)
    sel_rows = rows[sel]                                                        # [s, K + 1]
    flat = sel_rows.flatten()
    p = probabilities(logits[flat], [batch.params[i] for i in flat.tolist()])
    p = p.view(len(sampled), rows.shape[1], vocab)[:, :-1]                      # [s, K, V]
    d = d_tok[sel]
    p_d = p.gather(-1, d[..., None]).squeeze(-1)
    if draft_probs is None or draft_probs[sampled[0]] is None:   # point masses
        q = torch.zeros_like(p).scatter_(-1, d[..., None], 1.0)
    else:
        width = p.shape[1]
        q = torch.stack([_pad_rows(draft_probs[b][:spec_counts[b]], width) for b in sampled]).to(p.dtype)
    q_d = q.gather(-1, d[..., None]).squeeze(-1)
    u = _uniform(len(sampled), d.shape[1], gens, device)
    ok = u * q_d < p_d
    residual = (p - q).clamp_(min=0)
    empty = residual.sum(dim=-1, keepdim=True) <= 0         # p == q: never rejected; any row shape will do
    residual = torch.where(empty, p, residual)
    drawn = draw(residual.flatten(0, 1), [g for g in gens for _ in range(d.shape[1])]).view_as(d)
    accept = accept.clone()
    accept[sel] = ok
    recovered = torch.zeros((rows.shape[0], rows.shape[1]), dtype=torch.int64, device=device)
    recovered[sel, :-1] = drawn
    return accept, recovered


def _pad_rows(q: torch.Tensor, rows: int) -> torch.Tensor:
    """q [n, V] with zero rows appended up to `rows`."""
    return q if q.shape[0] == rows else torch.cat([q, q.new_zeros((rows - q.shape[0], q.shape[1]))])


def _uniform(rows: int, cols: int, generators: list, device) -> torch.Tensor:
    """U(0, 1) draws [rows, cols]; a seeded sequence draws its row from its own generator."""
    u = torch.rand((rows, cols), device=device)
    for i, gen in enumerate(generators):
        if gen is not None:
            u[i] = torch.rand(cols, generator=gen, device=gen.device).to(device)
    return u
