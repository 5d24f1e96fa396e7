"""Per-request edits of the logits before anything reads them: logit_bias, and min_tokens' ban on stop tokens.

They run before the logprobs are taken and before sampling, as OpenAI applies logit_bias. The edits are built only
when some request of the batch asks for one (the runner builds none otherwise), so a batch without
them pays nothing. Each edit is a scatter of a few values: one host-to-device copy per kind, no host sync, which
keeps it usable on the asynchronous-scheduling path (it needs only what the host knows at launch).
"""
from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass

import torch

from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(slots=True)
class LogitAdjustments:
    """Flat (row, token, value) lists: biases are added, banned tokens get -inf."""
    bias_rows: list[int]
    bias_tokens: list[int]
    bias_values: list[float]
    ban_rows: list[int]
    ban_tokens: list[int]

    @classmethod
    def build(cls, params: list[SamplingParams], num_outputs: list[int],
              eos_token_ids: Collection[int]) -> "LogitAdjustments":
        """The edits of a batch whose row i has `params[i]` and `num_outputs[i]` generated tokens (pending ones
        included) before the token being sampled. Callers build it only when some row has logit_bias or
        min_tokens."""
        adj = cls([], [], [], [], [])
        for row, (p, done) in enumerate(zip(params, num_outputs)):
            for token, bias in (p.logit_bias or {}).items():
                adj.bias_rows.append(row)
                adj.bias_tokens.append(token)
                adj.bias_values.append(float(bias))
            if done < p.min_tokens:
                banned = set(p.stop_token_ids or ()) | (set() if p.ignore_eos else set(eos_token_ids))
                adj.ban_rows += [row] * len(banned)
                adj.ban_tokens += sorted(banned)
        return adj


def adjust_logits(logits: torch.Tensor, adj: LogitAdjustments) -> torch.Tensor:
    """logits: [B, V]; a new tensor with the biases added and the banned tokens at -inf."""
    logits = logits.clone()
    vocab = logits.shape[-1]
    if adj.bias_rows:
        rows, tokens = _ids(adj.bias_rows, logits.device), _ids(adj.bias_tokens, logits.device)
        values = _to(torch.tensor(adj.bias_values, dtype=logits.dtype), logits.device)
        logits.index_put_((rows, tokens), values, accumulate=True)
    if adj.ban_rows:
        keep = [i for i, t in enumerate(adj.ban_tokens) if t < vocab]  # an EOS id beyond the logits cannot occur
        rows = _ids([adj.ban_rows[i] for i in keep], logits.device)
        tokens = _ids([adj.ban_tokens[i] for i in keep], logits.device)
        logits[rows, tokens] = float("-inf")
    return logits


def _ids(values: list[int], device: torch.device) -> torch.Tensor:
    return _to(torch.tensor(values, dtype=torch.int64), device)


def _to(host: torch.Tensor, device: torch.device) -> torch.Tensor:
    return host.pin_memory().to(device, non_blocking=True) if device.type == "cuda" else host
