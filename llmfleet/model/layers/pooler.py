"""Pooling a sequence's hidden states into one vector: mean over its tokens, its last token, or its first ([CLS]).

Which method a model uses comes from its folder's sentence-transformers files when they exist (modules.json naming a
Pooling module, whose `1_Pooling/config.json` says the mode, and a Normalize module after it; the maximum sequence
length from sentence_bert_config.json), else from the engine's `pooling` option; decoders default to the last
token, normalized (what decoder embedding models are trained with). `EngineConfig.pooling` overrides the folder.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
import torch.nn.functional as F

_ST_MODES = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}


@dataclass(frozen=True, slots=True)
class PoolerConfig:
    method: str                       # mean | last | cls
    normalize: bool                   # L2-normalize the pooled vector (a request may turn it off)
    max_seq_length: int | None = None  # sentence-transformers' limit on input tokens (None: the model's)


def pooler_config(model_path: str | None, is_encoder: bool, method: str | None) -> PoolerConfig:
    """The pooling of the model in `model_path`; `method` (the engine's --pooling) overrides the folder's."""
    folder = Path(model_path) if model_path else None
    modules = _read_json(folder / "modules.json") if folder else None
    if not modules:
        return PoolerConfig(method or ("mean" if is_encoder else "last"), True)
    types = [m.get("type", "") for m in modules]
    pooling = next((m for m in modules if m.get("type", "").endswith(".Pooling")), None)
    found = None
    if pooling is not None:
        config = _read_json(folder / pooling.get("path", "") / "config.json") or {}
        found = next((mode for key, mode in _ST_MODES.items() if config.get(key)), None)
        if found is None and not method:
            raise ValueError(f"pooling: {folder}'s pooling config asks for a mode this engine does not implement "
                             f"({config}); pass --pooling mean|last|cls")
    bert = _read_json(folder / "sentence_bert_config.json") or {}
    return PoolerConfig(method or found or ("mean" if is_encoder else "last"),
                        any(t.endswith(".Normalize") for t in types), bert.get("max_seq_length"))


def _read_json(path: Path):
    return json.loads(path.read_text()) if path.is_file() else None


def pool(hidden: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor, method: str,
         normalize: torch.Tensor) -> torch.Tensor:
    """hidden [T, H] of a flat batch; starts, lengths [P]: each pooled sequence's token range; normalize [P] bool.
    Returns [P, H] in float32."""
    vectors = _METHODS[method](hidden.float(), starts, lengths)
    return torch.where(normalize[:, None], F.normalize(vectors, p=2, dim=-1), vectors)


def _mean(hidden: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    # The pooled sequences' tokens, gathered contiguously in their order, then summed per sequence.
    offsets = torch.repeat_interleave(starts - (torch.cumsum(lengths, 0) - lengths), lengths)       # [N]
    tokens = hidden.index_select(0, torch.arange(offsets.numel(), device=hidden.device) + offsets)  # [N, H]
    sums = torch.segment_reduce(tokens, "sum", lengths=lengths, axis=0)                           # [P, H]
    return sums / lengths[:, None].to(hidden.dtype)


def _last(hidden: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return hidden[starts + lengths - 1]


def _first(hidden: torch.Tensor, starts: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    return hidden[starts]


_METHODS = {"mean": _mean, "last": _last, "cls": _first}
