"""Quantized linear methods, chosen by `EngineConfig.quantization` and the checkpoint's `quantization_config`.

| quantization | weights                          | activations        | from                                   |
| int8         | int8, per output channel         | model dtype (A16)  | a float checkpoint, quantized at load  |
| int4         | 4-bit, groups of 128, asymmetric | model dtype (A16)  | a float checkpoint, or GPTQ / AWQ      |
| fp8          | e4m3, per output channel         | e4m3, per token    | a float checkpoint, or fp8 / compressed-tensors |
| sparse24     | 2:4 semi-structured sparse float | model dtype        | a pruned checkpoint (llmfleet prune)   |
Embeddings and the LM head are never quantized (they are not linear layers here).
"""
from __future__ import annotations

import logging

from llmfleet.model.layers.quantization.base import LinearMethod, linear_method_scope, process_after_loading
from llmfleet.model.layers.quantization.fp8 import Fp8Checkpoint, Fp8QuantizeAtLoad
from llmfleet.model.layers.quantization.int4 import DEFAULT_GROUP_SIZE, Int4Checkpoint, Int4QuantizeAtLoad
from llmfleet.model.layers.quantization.int8 import Int8WeightOnly
from llmfleet.model.layers.quantization.sparse24 import Sparse24

from llmfleet.protocol.config import QUANTIZATIONS

__all__ = ["QUANTIZATIONS", "linear_method_for", "linear_method_scope", "process_after_loading", "LinearMethod"]
logger = logging.getLogger(__name__)
# a checkpoint's quantization_config.quant_method -> the quantization that reads it
_CHECKPOINT_METHODS = {"gptq": "int4", "awq": "int4", "fp8": "fp8", "compressed-tensors": "fp8"}


def linear_method_for(quantization: str | None, hf_config) -> LinearMethod | None:
    """The linear method for `quantization` (None: the checkpoint's own, else none) on this checkpoint."""
    if quantization is not None and quantization not in QUANTIZATIONS:
        raise ValueError(f"quantization: unknown value {quantization!r}; use one of {', '.join(QUANTIZATIONS)}")
    sparsity = getattr(hf_config, "llmfleet_sparsity", None)
    if sparsity is not None or quantization == "sparse24":
        return _sparse(quantization, sparsity)
    qcfg = _as_dict(getattr(hf_config, "quantization_config", None))
    if not qcfg:
        return _at_load(quantization)
    source = qcfg.get("quant_method")
    wanted = _CHECKPOINT_METHODS.get(source)
    if wanted is None:
        raise ValueError(f"quantization_config.quant_method: {source!r} checkpoints are not supported; "
                         f"readable are {', '.join(_CHECKPOINT_METHODS)}")
    if quantization not in (None, wanted):
        raise ValueError(f"quantization: {quantization!r} cannot read this {source} checkpoint; use {wanted!r}")
    logger.info("quantization: reading a %s checkpoint as %s", source, wanted)
    return _int4_checkpoint(qcfg) if wanted == "int4" else _fp8_checkpoint(qcfg)


def _at_load(quantization: str | None) -> LinearMethod | None:
    makers = {None: lambda: None, "int8": Int8WeightOnly, "int4": Int4QuantizeAtLoad, "fp8": Fp8QuantizeAtLoad}
    return makers[quantization]()


def _sparse(quantization: str | None, sparsity: str | None) -> LinearMethod:
    if sparsity not in (None, "2:4"):
        raise ValueError(f"llmfleet_sparsity: only '2:4' checkpoints are served, got {sparsity!r}")
    if quantization not in (None, "sparse24"):
        raise ValueError(f"quantization: {quantization!r} cannot serve a 2:4 sparse checkpoint; use 'sparse24'")
    return Sparse24()


def _int4_checkpoint(qcfg: dict) -> LinearMethod:
    bits = qcfg.get("bits", qcfg.get("w_bit", 4))
    if bits != 4:
        raise ValueError(f"quantization_config.bits: only 4-bit GPTQ/AWQ checkpoints are read, got {bits}")
    if qcfg.get("desc_act"):
        raise ValueError("quantization_config.desc_act: act-order GPTQ checkpoints are not supported")
    if qcfg["quant_method"] == "awq" and qcfg.get("version", "gemm").lower() != "gemm":
        raise ValueError(f"quantization_config.version: only AWQ 'gemm' packing is read, got {qcfg['version']!r}")
    group = qcfg.get("group_size", qcfg.get("q_group_size", DEFAULT_GROUP_SIZE))
    return Int4Checkpoint(qcfg["quant_method"], group)


def _fp8_checkpoint(qcfg: dict) -> LinearMethod:
    if qcfg.get("activation_scheme", "dynamic") != "dynamic":
        raise ValueError(f"quantization_config.activation_scheme: only dynamic activation scales are used, got "
                         f"{qcfg['activation_scheme']!r}")
    if qcfg.get("weight_block_size"):
        raise ValueError("quantization_config.weight_block_size: block-wise fp8 scales are not supported")
    if qcfg["quant_method"] == "compressed-tensors":
        fmt = qcfg.get("format")
        if fmt != "float-quantized":
            raise ValueError(f"quantization_config.format: compressed-tensors {fmt!r} is not read; "
                             "only 'float-quantized' (fp8) is")
    return Fp8Checkpoint()


def _as_dict(qcfg) -> dict:
    if qcfg is None or isinstance(qcfg, dict):
        return qcfg or {}
    return qcfg.to_dict() if hasattr(qcfg, "to_dict") else dict(vars(qcfg))
