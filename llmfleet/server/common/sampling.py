"""From request fields to SamplingParams, with the context-length rule applied per prompt."""
from __future__ import annotations

from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.protocol.structured import StructuredSpec
from llmfleet.protocol.openai.common import SamplingFields
from llmfleet.server.errors import APIError

# Fields passed to SamplingParams only when the client set them, so the engine's defaults hold otherwise.
_OPTIONAL = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "presence_penalty",
             "frequency_penalty", "repetition_penalty")


def check_unsupported(req: SamplingFields) -> None:
    """Refuse features this server does not implement, rather than silently ignoring them."""
    if req.logit_bias:
        raise APIError(400, "logit_bias: not supported by this server", "logit_bias", "unsupported")


def resolve_max_tokens(requested: int | None, default: int | None, prompt_len: int, limit: int,
                       prompt_param: str) -> int:
    """How many tokens to generate: `requested` must fit the context with the prompt; a default is clipped to fit.

    `default` None means "up to the context limit". Raises 400 `context_length_exceeded` when nothing fits.
    """
    if requested is not None and (isinstance(requested, bool) or requested < 1):
        raise APIError(400, f"max_tokens: must be an integer >= 1, got {requested!r}", "max_tokens", "invalid_value")
    room = limit - prompt_len
    if room < 1:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, your prompt has "
                            f"{prompt_len} tokens, leaving no room for the completion. Please reduce the length of "
                            f"the prompt.", prompt_param, "context_length_exceeded")
    if requested is None:
        return room if default is None else min(default, room)
    if requested > room:
        raise APIError(400, f"This model's maximum context length is {limit} tokens. However, you requested "
                            f"{prompt_len + requested} tokens ({prompt_len} in the prompt, {requested} for the "
                            f"completion). Please reduce the length of the prompt or completion.",
                       prompt_param, "context_length_exceeded")
    return requested


def build_params(req: SamplingFields, max_tokens: int, logprobs: int | None,
                 structured: StructuredSpec | None = None) -> SamplingParams:
    """SamplingParams for one prompt (`structured`: its checked constraint); its ValueError (naming the field)
    becomes a 400."""
    kwargs = {name: getattr(req, name) for name in _OPTIONAL if getattr(req, name) is not None}
    try:
        return SamplingParams(n=req.n, max_tokens=max_tokens, logprobs=logprobs, ignore_eos=req.ignore_eos,
                              skip_special_tokens=req.skip_special_tokens, structured=structured, **kwargs)
    except ValueError as exc:
        raise APIError.from_value_error(exc) from None
