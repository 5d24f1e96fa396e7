"""Quantized models end to end on CPU: greedy generation through LLM(quantization=...), and GPTQ / AWQ / fp8
checkpoint folders (built here from the tiny float checkpoint) loaded whole and under gloo tensor parallelism."""
from __future__ import annotations

import json
import multiprocessing
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmfleet import LLM, SamplingParams
from llmfleet.model.loader import load_model
from llmfleet.model.layers.quantization.fp8 import quantize_fp8_rows
from tests.checkpoints import checkpoint
from tests.test_loader import TP_IDS, prefill_logits
from tests.test_quantization import awq_tensors, dequantized, gptq_tensors

PROMPTS = [[5, 77, 123, 9, 41], [300, 41, 8, 250]]
GROUP = 32  # the tiny model's layers have 64 or 128 inputs
LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def greedy(llm: LLM, max_tokens: int = 8) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=max_tokens, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(PROMPTS, params, use_tqdm=False)]


def test_int8_greedy_generation_agrees_with_the_float_model():
    path = str(checkpoint("llama"))
    reference = greedy(LLM(path, device="cpu", dtype="float32", skip_tokenizer_init=True))
    int8 = greedy(LLM(path, device="cpu", dtype="float32", skip_tokenizer_init=True, quantization="int8"))
    # per-channel int8 moves logits by ~1%: the first tokens must agree, later ones may drift after a near-tie
    assert [ids[:4] for ids in int8] == [ids[:4] for ids in reference]


def test_int4_on_layers_narrower_than_a_group_takes_smaller_groups():
    model, _, _ = load_model(str(checkpoint("llama")), torch.float32, "cpu", quantization="int4")
    layers = [m for m in model.modules() if hasattr(m, "qweight")]
    assert layers and all(m.qweight.shape[0] * 8 % m.scales.shape[0] == 0 for m in layers)
    groups = {m.qweight.shape[0] * 8 // m.scales.shape[0] for m in layers}
    assert 128 in groups and min(groups) < 128   # the wide layers keep 128; the narrow ones (64 inputs) take less


def quantized_folder(tmp_path, layout: str):
    """(quantized checkpoint folder, float folder holding what its weights dequantize to)."""
    source = checkpoint("llama")
    folders = {}
    for kind in ("quant", "float"):
        folders[kind] = tmp_path / f"{layout}-{kind}"
        shutil.copytree(source, folders[kind])
    tensors = load_file(source / "model.safetensors")
    quant, deq = {}, {}
    for name, t in tensors.items():
        if not name.endswith(tuple(f"{m}.weight" for m in LINEAR)):
            quant[name] = deq[name] = t
            continue
        base = name[: -len("weight")]
        if layout == "fp8":
            q, s = quantize_fp8_rows(t)
            quant[base + "weight"], quant[base + "weight_scale"] = q, s
            deq[name] = t
        else:
            for part, value in (gptq_tensors if layout == "gptq" else awq_tensors)(t, GROUP).items():
                quant[base + part] = value
            deq[name] = dequantized(t, GROUP)
    quant = {k: v.contiguous() for k, v in quant.items()}
    save_file(quant, folders["quant"] / "model.safetensors", metadata={"format": "pt"})
    save_file(deq, folders["float"] / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((source / "config.json").read_text())
    config["quantization_config"] = (
        {"quant_method": "fp8", "activation_scheme": "dynamic"} if layout == "fp8" else
        {"quant_method": layout, "bits": 4, "group_size": GROUP, "desc_act": False, "sym": False, "version": "gemm"})
    (folders["quant"] / "config.json").write_text(json.dumps(config))
    return folders["quant"], folders["float"]


@pytest.mark.parametrize("layout", ["gptq", "awq"])
def test_gptq_and_awq_checkpoints_equal_their_dequantized_float_model(tmp_path, layout):
    quant, float_folder = quantized_folder(tmp_path, layout)
    model, _, _ = load_model(str(quant), torch.float32, "cpu")  # the method comes from quantization_config
    assert model.model.layers[0].self_attn.qkv_proj.qweight.dtype == torch.int32
    assert model.lm_head.weight.dtype == torch.float32               # embeddings and lm_head stay float
    reference, _, _ = load_model(str(float_folder), torch.float32, "cpu")
    assert torch.allclose(prefill_logits(model, TP_IDS), prefill_logits(reference, TP_IDS), atol=1e-4)
    with pytest.raises(ValueError, match="quantization: 'fp8' cannot read this"):
        load_model(str(quant), torch.float32, "cpu", quantization="fp8")


def test_fp8_checkpoint_equals_fp8_quantized_at_load(tmp_path):
    quant, float_folder = quantized_folder(tmp_path, "fp8")
    model, _, _ = load_model(str(quant), torch.float32, "cpu", quantization="fp8")
    at_load, _, _ = load_model(str(float_folder), torch.float32, "cpu", quantization="fp8")
    assert model.model.layers[1].mlp.down_proj.weight.dtype == torch.float8_e4m3fn
    assert torch.equal(prefill_logits(model, TP_IDS), prefill_logits(at_load, TP_IDS))


def _tp_worker(rank: int, size: int, init_file: str, path: str, out_file: str) -> None:
    import torch.distributed as dist
    from llmfleet.model.parallel_state import set_tensor_parallel
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    set_tensor_parallel(rank, size)
    model, _, _ = load_model(path, torch.float32, "cpu")
    logits = prefill_logits(model, TP_IDS)
    if rank == 0:
        torch.save(logits, out_file)
    dist.destroy_process_group()


def test_gptq_checkpoint_under_tensor_parallelism(tmp_path):
    quant, float_folder = quantized_folder(tmp_path, "gptq")
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tp_worker, args=(r, 2, str(tmp_path / "init"), str(quant), str(tmp_path / "l.pt")))
             for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    assert [proc.exitcode for proc in procs] == [0, 0]
    reference, _, _ = load_model(str(float_folder), torch.float32, "cpu")
    assert torch.allclose(torch.load(tmp_path / "l.pt"), prefill_logits(reference, TP_IDS), atol=1e-4)


def test_gptq_checkpoint_generates_like_its_dequantized_float_model(tmp_path):
    quant, float_folder = quantized_folder(tmp_path, "gptq")
    opts = dict(device="cpu", dtype="float32", skip_tokenizer_init=True)
    assert greedy(LLM(str(quant), **opts)) == greedy(LLM(str(float_folder), **opts))
