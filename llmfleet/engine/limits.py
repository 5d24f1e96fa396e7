"""What a prompt and its max_tokens must fit: the context length, the vocabulary and the KV cache.

Checked where a request is submitted (the API server process knows these numbers from the core's Ready message,
so a bad request gets its 400 before anything is sent) and again in the core. Imports no torch.
"""
from __future__ import annotations

from dataclasses import dataclass

from llmfleet.protocol.sampling_params import SamplingParams


@dataclass(frozen=True, slots=True)
class Limits:
    max_model_len: int
    vocab_size: int
    num_kv_blocks: int
    block_size: int

    @property
    def kv_capacity(self) -> int:
        """Tokens the whole KV cache holds."""
        return self.num_kv_blocks * self.block_size

    def check_token_ids(self, ids: list[int]) -> None:
        """ValueError naming `prompt` for an empty prompt or ids outside the vocabulary."""
        if not isinstance(ids, (list, tuple)) or not all(isinstance(t, int) and not isinstance(t, bool) for t in ids):
            raise ValueError("prompt: must be a string or a list of token ids")
        if not ids:
            raise ValueError("prompt: must not be empty")
        bad = next((t for t in ids if not 0 <= t < self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"prompt: token id {bad} is outside the vocabulary [0, {self.vocab_size})")

    def check_pooling_prompt(self, num_prompt: int, max_num_batched_tokens: int) -> None:
        """A pooling prompt may fill the context (nothing is generated) but runs in one step: ValueError naming
        `input` when it cannot."""
        if num_prompt > self.max_model_len:
            raise ValueError(f"input: has {num_prompt} tokens; this model takes at most {self.max_model_len}")
        if num_prompt > max_num_batched_tokens:
            raise ValueError(f"input: has {num_prompt} tokens; pooling requests run whole in one step, whose "
                             f"budget is {max_num_batched_tokens} tokens (max_num_batched_tokens)")
        if -(-num_prompt // self.block_size) > self.num_kv_blocks:
            raise ValueError(f"input: has {num_prompt} tokens but the KV cache holds only {self.kv_capacity}")

    def max_total_tokens(self, num_prompt: int, params: SamplingParams) -> int:
        """Prompt + output tokens the sequence may reach; ValueError naming the field when it cannot fit (or when
        a logit bias names a token outside the vocabulary)."""
        bad = next((t for t in params.logit_bias or () if t >= self.vocab_size), None)
        if bad is not None:
            raise ValueError(f"logit_bias: token id {bad} is outside the vocabulary [0, {self.vocab_size})")
        if num_prompt >= self.max_model_len:
            raise ValueError(f"prompt: has {num_prompt} tokens; the limit is {self.max_model_len - 1} "
                             f"(max_model_len {self.max_model_len} includes at least one generated token)")
        capacity = self.kv_capacity
        if num_prompt + 1 > capacity:
            raise ValueError(f"prompt: has {num_prompt} tokens but the KV cache holds only {capacity}; "
                             f"enlarge the cache")
        if params.max_tokens is None:  # as long as the context and the whole KV cache allow
            return min(self.max_model_len, capacity)
        max_total = min(num_prompt + params.max_tokens, self.max_model_len)
        blocks = -(-max_total // self.block_size)
        if blocks > self.num_kv_blocks:
            raise ValueError(f"max_tokens: the request may reach {max_total} tokens ({blocks} KV blocks) but the KV "
                             f"cache has {self.num_kv_blocks} blocks; lower max_tokens or enlarge the cache")
        return max_total
