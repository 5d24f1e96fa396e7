"""Batched sampling: per-request logit edits (logit_bias, min_tokens; logits_adjust.py), grammar bitmasks,
penalties, temperature, top-k / top-p / min-p, and per-request seeded randomness.

Sampling draws through the exponential race (argmax of p / E with E ~ Exp(1)), which needs no cumulative sums
and no host synchronisation. A request with a seed draws its E from its own generator, so its samples do not
depend on which other requests share the batch.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from llmfleet.model.layers.logits_adjust import LogitAdjustments, adjust_logits
from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(slots=True)
class SamplingBatch:
    params: list[SamplingParams]
    generators: list[torch.Generator | None]
    output_token_ids: list[list[int]] | None = None   # only when some row uses penalties
    prompt_token_ids: list[list[int]] | None = None    # for repetition penalty (prompt + output)
    adjustments: LogitAdjustments | None = None        # only when some row uses logit_bias or min_tokens
    # Structured outputs: allowed tokens of the constrained rows only, on the logits' device (None: no row is)
    token_bitmask: torch.Tensor | None = None          # [R, ceil(V / 32)] int32, bit j of word w: token 32w + j
    bitmask_rows: torch.Tensor | None = None           # [R] long: the batch row each bitmask row constrains

    @property
    def all_greedy(self) -> bool:
        return all(p.greedy for p in self.params)

    @property
    def max_logprobs(self) -> int | None:
        asked = [p.logprobs for p in self.params if p.logprobs is not None]
        return max(asked) if asked else None


@dataclass(slots=True)
class SamplerOutput:
    token_ids: torch.Tensor                        # [B] long
    logprobs: torch.Tensor | None = None           # [B, 1 + N]: sampled token's logprob, then top-N
    logprob_token_ids: torch.Tensor | None = None  # [B, 1 + N]
    ranks: torch.Tensor | None = None              # [B]: rank of the sampled token (1 = most likely)


def sample(logits: torch.Tensor, batch: SamplingBatch) -> SamplerOutput:
    """logits: [B, V] float32. Logit edits (logit_bias, min_tokens) come first, and the logprobs returned are those
    of the edited logits, as OpenAI reports them; grammar masks come after the logprobs (constrained rows are masked
    in place), so a constrained answer's logprobs stay finite."""
    if batch.adjustments is not None:
        logits = adjust_logits(logits, batch.adjustments)
    raw_logprobs = logits.log_softmax(dim=-1) if batch.max_logprobs is not None else None
    if batch.token_bitmask is not None:
        apply_token_bitmask(logits, batch.token_bitmask, batch.bitmask_rows)
    if batch.output_token_ids is not None:
        logits = apply_penalties(logits, batch)
    if batch.all_greedy:
        tokens = logits.argmax(dim=-1)
    else:
        tokens = _sample_random(logits, batch)
    out = SamplerOutput(tokens)
    if raw_logprobs is not None:
        _gather_logprobs(out, raw_logprobs, batch.max_logprobs)
    return out


def apply_token_bitmask(logits: torch.Tensor, bitmask: torch.Tensor, rows: torch.Tensor) -> None:
    """Sets the logits of the tokens a grammar forbids to -inf, in place, for the `rows` it constrains.

    logits: [B, V]; bitmask: [R, W] int32 with W * 32 >= V (ids past the tokenizer's vocabulary are forbidden);
    rows: [R] long. Runs on the logits' device without a host synchronisation.
    """
    vocab = logits.shape[-1]
    shifts = torch.arange(32, dtype=torch.int32, device=bitmask.device)
    allowed = ((bitmask[:, :, None] >> shifts) & 1).bool().flatten(1)[:, :vocab]   # [R, W * 32] -> [R, V]
    logits[rows] = logits[rows].masked_fill(~allowed, float("-inf"))


def _sample_random(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    if logits.is_cuda and all(_plain(p) for p in batch.params) and not any(batch.generators):
        from llmfleet.kernels.sampling import gumbel_sample

        inv_t = _small([1.0 / p.temperature for p in batch.params], logits.device)
        return gumbel_sample(logits, inv_t, seed=int(torch.randint(0, 2**31 - 1, ()).item()))
    device = logits.device
    greedy = _small([p.greedy for p in batch.params], device, torch.bool)
    sampled = draw(probabilities(logits, batch.params), batch.generators)
    return torch.where(greedy, logits.argmax(dim=-1), sampled)


def probabilities(logits: torch.Tensor, params: list[SamplingParams]) -> torch.Tensor:
    """The distribution each row samples from [B, V]: temperature, then top-k, top-p and min-p (greedy rows get
    temperature 1; callers take their argmax instead)."""
    device = logits.device
    temperature = _small([p.temperature if not p.greedy else 1.0 for p in params], device)
    scaled = logits / temperature[:, None]
    if any(p.top_k > 0 for p in params):
        scaled = _top_k(scaled, [p.top_k if p.top_k > 0 else scaled.shape[-1] for p in params])
    if any(p.top_p < 1 for p in params):
        scaled = _top_p(scaled, _small([p.top_p for p in params], device))
    probs = scaled.softmax(dim=-1)
    if any(p.min_p > 0 for p in params):
        min_p = _small([p.min_p for p in params], device)
        probs = probs.masked_fill(probs < min_p[:, None] * probs.max(dim=-1, keepdim=True).values, 0.0)
    return probs


def draw(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    """One token per row of `probs` [B, V] (unnormalised is fine), by the exponential race."""
    return (probs / _exponential_noise(probs, generators)).argmax(dim=-1)


def _small(values: list, device: torch.device, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A per-row parameter vector on the device, copied without stalling the stream (pinned, asynchronous)."""
    host = torch.tensor(values, dtype=dtype)
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host


def _plain(p: SamplingParams) -> bool:
    """Temperature sampling alone: one pass of Gumbel-max over the logits suffices."""
    return not p.greedy and p.top_k <= 0 and p.top_p >= 1 and p.min_p <= 0


def _exponential_noise(probs: torch.Tensor, generators: list[torch.Generator | None]) -> torch.Tensor:
    noise = torch.empty_like(probs).exponential_()
    for row, gen in enumerate(generators):
        if gen is not None:
            draw = torch.empty(probs.shape[-1], dtype=probs.dtype, device=gen.device).exponential_(generator=gen)
            noise[row] = draw.to(probs.device)
    return noise.clamp_(min=1e-20)


def _top_k(logits: torch.Tensor, ks: list[int]) -> torch.Tensor:
    k = _small(ks, logits.device, torch.int64)
    kth = logits.sort(dim=-1, descending=True).values.gather(-1, (k - 1).clamp(max=logits.shape[-1] - 1)[:, None])
    return logits.masked_fill(logits < kth, float("-inf"))


def _top_p(logits: torch.Tensor, top_p: torch.Tensor) -> torch.Tensor:
    sorted_logits, order = logits.sort(dim=-1, descending=True)
    probs = sorted_logits.softmax(dim=-1)
    # Keep the smallest prefix whose mass reaches top_p: drop a token when the mass before it already does.
    drop = (probs.cumsum(dim=-1) - probs) >= top_p[:, None]
    drop[:, 0] = False
    sorted_logits = sorted_logits.masked_fill(drop, float("-inf"))
    return torch.empty_like(logits).scatter_(-1, order, sorted_logits)


def apply_penalties(logits: torch.Tensor, batch: SamplingBatch) -> torch.Tensor:
    """Repetition penalty (over prompt and output, HF semantics), then presence/frequency (over output, OpenAI's)."""
    logits = logits.clone()
    vocab = logits.shape[-1]
    for row, params in enumerate(batch.params):
        if not params.has_penalties:
            continue
        output = torch.tensor(batch.output_token_ids[row], dtype=torch.long, device=logits.device)
        if params.repetition_penalty != 1.0:
            seen = torch.cat([torch.tensor(batch.prompt_token_ids[row], dtype=torch.long, device=logits.device),
                              output]).unique()
            values = logits[row, seen]
            logits[row, seen] = torch.where(values > 0, values / params.repetition_penalty,
                                            values * params.repetition_penalty)
        if output.numel() and (params.frequency_penalty or params.presence_penalty):
            counts = torch.bincount(output, minlength=vocab)[:vocab].to(logits.dtype)
            logits[row] -= params.frequency_penalty * counts + params.presence_penalty * (counts > 0).to(logits.dtype)
    return logits


def _gather_logprobs(out: SamplerOutput, logprobs: torch.Tensor, top_n: int) -> None:
    sampled = logprobs.gather(-1, out.token_ids[:, None])                     # [B, 1]
    out.ranks = (logprobs > sampled).sum(dim=-1) + 1
    if top_n > 0:
        top_values, top_ids = logprobs.topk(top_n, dim=-1)
        out.logprobs = torch.cat([sampled, top_values], dim=-1)
        out.logprob_token_ids = torch.cat([out.token_ids[:, None], top_ids], dim=-1)
    else:
        out.logprobs, out.logprob_token_ids = sampled, out.token_ids[:, None]
