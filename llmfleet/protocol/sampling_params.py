"""Per-request sampling parameters, validated on construction (every error names its field)."""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from llmfleet.protocol.structured import StructuredSpec

_GREEDY_BELOW = 1e-5
MAX_LOGIT_BIAS = 100.0  # OpenAI's bound on each bias


@dataclass(slots=True)
class SamplingParams:
    n: int = 1
    max_tokens: int | None = 16               # None: up to the context limit
    temperature: float = 1.0                  # 0 means greedy
    top_p: float = 1.0
    top_k: int = 0                            # 0 or -1: disabled
    min_p: float = 0.0
    seed: int | None = None
    stop: list[str] | str | None = None
    stop_token_ids: list[int] | None = None
    ignore_eos: bool = False
    logprobs: int | None = None               # top-N log-probabilities per generated token (plus the sampled one)
    prompt_logprobs: int | None = None        # top-N per prompt token (plus the prompt's own), from the prefill
    presence_penalty: float = 0.0
    frequency_penalty: float = 0.0
    repetition_penalty: float = 1.0
    skip_special_tokens: bool = True
    detokenize: bool = True                   # False: token ids only (benchmarks); stop strings need text
    logit_bias: dict[int, float] | None = None  # token id -> added to its logit before sampling and logprobs
    min_tokens: int = 0                       # EOS and stop_token_ids cannot be sampled (nor stop strings end
    #                                           the text) before this many tokens
    include_stop_str_in_output: bool = False  # keep the stop string that ended the text
    best_of: int | None = None                # sample this many (>= n), return the n of highest cumulative logprob
    output_kind: str = "cumulative"           # cumulative: an output every step; final_only: when finished
    structured: StructuredSpec | None = None  # the output must match this grammar (JSON schema, regex, ...)
    _stop_strings: tuple[str, ...] = field(default=(), init=False, repr=False)

    def __post_init__(self) -> None:
        _require(isinstance(self.n, int) and self.n >= 1, "n", f"must be an integer >= 1, got {self.n!r}")
        if self.max_tokens is not None:
            _require(isinstance(self.max_tokens, int) and self.max_tokens >= 1, "max_tokens",
                     f"must be an integer >= 1, got {self.max_tokens!r}")
        _require(_is_number(self.temperature) and 0 <= self.temperature <= 1e4, "temperature",
                 f"must be in [0, 10000], got {self.temperature!r}")
        _require(_is_number(self.top_p) and 0 < self.top_p <= 1, "top_p", f"must be in (0, 1], got {self.top_p!r}")
        _require(isinstance(self.top_k, int) and -1 <= self.top_k < 2**31, "top_k",
                 f"must be -1, 0 (disabled) or a positive integer below 2^31, got {self.top_k!r}")
        _require(_is_number(self.min_p) and 0 <= self.min_p <= 1, "min_p", f"must be in [0, 1], got {self.min_p!r}")
        _require(self.seed is None or (isinstance(self.seed, int) and -2**63 <= self.seed < 2**63), "seed",
                 f"must be a 64-bit integer, got {self.seed!r}")
        for name in ("presence_penalty", "frequency_penalty"):
            value = getattr(self, name)
            _require(_is_number(value) and -2 <= value <= 2, name, f"must be in [-2, 2], got {value!r}")
        _require(_is_number(self.repetition_penalty) and self.repetition_penalty > 0, "repetition_penalty",
                 f"must be > 0, got {self.repetition_penalty!r}")
        for name in ("logprobs", "prompt_logprobs"):
            value = getattr(self, name)
            if value is not None:
                _require(isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= 20, name,
                         f"must be an integer in [0, 20], got {value!r}")
        stops = [self.stop] if isinstance(self.stop, str) else list(self.stop or [])
        _require(all(isinstance(s, str) and s for s in stops), "stop", "must be non-empty strings")
        self._stop_strings = tuple(stops)
        _require(self.detokenize or not stops, "stop", "stop strings need detokenize=True")
        _require(self.output_kind in ("cumulative", "final_only"), "output_kind",
                 f"must be 'cumulative' or 'final_only', got {self.output_kind!r}")
        self.structured = StructuredSpec.from_wire(self.structured)
        ids = self.stop_token_ids or []
        _require(all(isinstance(t, int) and t >= 0 for t in ids), "stop_token_ids",
                 "must be non-negative integers")
        self._check_extras()

    def _check_extras(self) -> None:
        for token, bias in (self.logit_bias or {}).items():
            _require(isinstance(token, int) and not isinstance(token, bool) and token >= 0, "logit_bias",
                     f"keys must be token ids (non-negative integers), got {token!r}")
            _require(_is_number(bias) and -MAX_LOGIT_BIAS <= bias <= MAX_LOGIT_BIAS, "logit_bias",
                     f"the bias of token {token} must be in [-100, 100], got {bias!r}")
        _require(isinstance(self.min_tokens, int) and not isinstance(self.min_tokens, bool) and self.min_tokens >= 0,
                 "min_tokens", f"must be an integer >= 0, got {self.min_tokens!r}")
        if self.max_tokens is not None:
            _require(self.min_tokens <= self.max_tokens, "min_tokens",
                     f"must be at most max_tokens ({self.max_tokens}), got {self.min_tokens}")
        if self.best_of is not None:
            _require(isinstance(self.best_of, int) and not isinstance(self.best_of, bool) and self.best_of >= self.n,
                     "best_of", f"must be an integer >= n ({self.n}), got {self.best_of!r}")

    @property
    def greedy(self) -> bool:
        """Temperatures below 1e-5 sample like 0: dividing logits by them overflows."""
        return self.temperature < _GREEDY_BELOW or self.top_k == 1

    @property
    def stop_strings(self) -> tuple[str, ...]:
        return self._stop_strings

    @property
    def has_penalties(self) -> bool:
        return self.presence_penalty != 0 or self.frequency_penalty != 0 or self.repetition_penalty != 1

    @property
    def num_samples(self) -> int:
        """Sequences the engine runs: best_of when set, else n."""
        return self.best_of or self.n

    @property
    def ranks_samples(self) -> bool:
        """More samples run than are returned: the n of highest cumulative logprob are chosen at the end."""
        return self.num_samples > self.n

    def child(self, index: int) -> "SamplingParams":
        """Parameters of the index-th of the samples: n=1, a distinct seed derived from the parent's, and the
        sampled token's logprob when samples are ranked (best_of > n) by their cumulative logprob. The prompt's
        logprobs are the same for every sample: the first computes them."""
        seed = None if self.seed is None else (self.seed + index * 1_000_003) % 2**63
        logprobs = 0 if self.logprobs is None and self.ranks_samples else self.logprobs
        return replace(self, n=1, best_of=None, seed=seed, logprobs=logprobs, stop=list(self._stop_strings),
                       prompt_logprobs=self.prompt_logprobs if index == 0 else None)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and value == value


def _require(ok: bool, name: str, message: str) -> None:
    if not ok:
        raise ValueError(f"{name}: {message}")
