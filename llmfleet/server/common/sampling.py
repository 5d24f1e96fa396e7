"""From request fields to SamplingParams, with the context-length rule applied per prompt; unknown fields refused."""
from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from llmfleet.protocol.openai.common import SamplingFields, unknown_fields
from llmfleet.protocol.sampling_params import SamplingParams
from llmfleet.server.errors import APIError

logger = logging.getLogger(__name__)

# Fields passed to SamplingParams only when the client set them, so the engine's defaults hold otherwise.
_OPTIONAL = ("temperature", "top_p", "top_k", "min_p", "seed", "stop", "stop_token_ids", "presence_penalty",
             "frequency_penalty", "repetition_penalty")
_ALWAYS = ("n", "ignore_eos", "skip_special_tokens", "min_tokens", "include_stop_str_in_output")


def check_fields(req: SamplingFields, lenient: bool) -> None:
    """`check_unknown`, and 400 for stream_options without a stream."""
    check_unknown(req, lenient)
    if req.stream_options is not None and not req.stream:
        raise APIError(400, "stream_options: only allowed when stream is true", "stream_options", "invalid_value")


def check_unknown(req: BaseModel, lenient: bool) -> None:
    """400 for what the request names but this server does not know (OpenAI's "Unrecognized request argument"),
    unless `lenient` (then a debug log)."""
    names = unknown_fields(req)
    if names and lenient:
        logger.debug("ignoring unknown request fields: %s", ", ".join(names))
    elif names:
        plural = "s" if len(names) > 1 else ""
        raise APIError(400, f"Unrecognized request argument{plural} supplied: {', '.join(names)}", names[0],
                       "unrecognized_argument")


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


def build_params(req: SamplingFields, max_tokens: int, logprobs: int | None, **extra: Any) -> SamplingParams:
    """SamplingParams for one prompt (`extra`: the endpoint's own fields, e.g. best_of); its ValueError (naming
    the field) becomes a 400."""
    kwargs = {name: getattr(req, name) for name in _OPTIONAL if getattr(req, name) is not None}
    kwargs.update({name: getattr(req, name) for name in _ALWAYS}, **extra)
    try:
        return SamplingParams(max_tokens=max_tokens, logprobs=logprobs, logit_bias=_logit_bias(req.logit_bias),
                              **kwargs)
    except ValueError as exc:
        raise APIError.from_value_error(exc) from None


def _logit_bias(bias: dict[str, float] | None) -> dict[int, float] | None:
    """JSON keys are strings: {"50256": -100} names token 50256."""
    if not bias:
        return None
    bad = next((key for key in bias if not key.isascii() or not key.isdigit()), None)
    if bad is not None:
        raise APIError(400, f"logit_bias: keys must be token ids, got {bad!r}", "logit_bias", "invalid_value")
    return {int(key): value for key, value in bias.items()}
