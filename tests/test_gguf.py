"""GGUF checkpoints: files written from the tiny checkpoints in every listed tensor type load token-exact against
transformers' own GGUF conversion (float32, greedy); names, the q/k permutation, errors, tensor parallelism."""
from __future__ import annotations

import atexit
import functools
import multiprocessing
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
import transformers
from gguf import GGMLQuantizationType as Q
from transformers import AutoModelForCausalLM

from llmfleet import LLM, SamplingParams
from llmfleet.bench.perplexity import perplexity, transformers_model, transformers_perplexity
from llmfleet.model.gguf_checkpoint import find_gguf_file, hf_tensor_name
from llmfleet.model.loader import load_model
from llmfleet.model.source import resolve_model
from tests.checkpoints import make_checkpoint
from tests.gguf_files import permute_rows, write_gguf
from tests.test_loader import TP_IDS, _tp_worker, prefill_logits, state

transformers.logging.set_verbosity_error()
NEW_TOKENS = 24
PROMPTS = [[5, 40, 7, 300, 12, 99, 3], [1, 2, 3], [17, 250, 3, 99, 400, 8, 61, 2, 300, 45, 88, 120, 7]]
_ROOT = Path(tempfile.mkdtemp(prefix="llmfleet-gguf-"))
atexit.register(shutil.rmtree, _ROOT, ignore_errors=True)
# transformers' GGUF support reads neither Llama 3 rope scaling nor Qwen3's head width (it assumes 128).
_OVERRIDES = {"llama": {"rope_scaling": None}, "qwen3": {"head_dim": 128}}
_K_QUANT_SHAPE = {"hidden_size": 256, "intermediate_size": 256}  # K-quant rows hold 256 values


@functools.lru_cache(maxsize=None)
def gguf_model(arch: str, qtype: Q) -> tuple[Path, dict]:
    """(GGUF file, decoded tensors) of the tiny `arch` checkpoint stored in `qtype`, written once per session."""
    base = "llama" if arch == "llama-tied" else arch
    overrides = dict(_OVERRIDES.get(base, {}), **(_K_QUANT_SHAPE if qtype in (Q.Q5_K, Q.Q6_K) else {}))
    folder = make_checkpoint(_ROOT / f"{arch}-{qtype.name}" / "hf", arch, **overrides)
    file = folder.parent / "model.gguf"
    return file, write_gguf(folder, file, qtype)


def greedy(model) -> list[list[int]]:
    outs = []
    with torch.no_grad():
        for prompt in PROMPTS:
            gen = model.generate(torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=10**9, pad_token_id=0)
            outs.append(gen[0, len(prompt):].tolist())
    return outs


def engine_greedy(path) -> list[list[int]]:
    llm = LLM(str(path), device="cpu", dtype="float32", num_kv_blocks=64)
    outputs = llm.generate(PROMPTS, SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True))
    return [list(o.outputs[0].token_ids) for o in outputs]


# Every listed type once, spread over the architectures (Mistral has its own test below).
CASES = [("llama", Q.F32), ("qwen2", Q.F16), ("qwen3", Q.BF16), ("llama", Q.Q8_0), ("llama-tied", Q.Q4_0),
         ("qwen2", Q.Q4_1), ("llama", Q.Q5_K), ("qwen3", Q.Q6_K)]


@pytest.mark.parametrize("arch,qtype", CASES, ids=[f"{a}-{q.name}" for a, q in CASES])
def test_greedy_matches_transformers_gguf_loading(arch, qtype):
    file, _ = gguf_model(arch, qtype)
    reference = greedy(transformers_model(str(file)))
    assert len({tuple(r) for r in reference}) > 1 and len(set(reference[0])) > 3  # not a collapsed model
    assert engine_greedy(file) == reference


def test_mistral_gguf_matches_hf_with_the_decoded_weights():
    """llama.cpp files Mistral under `llama` (named "mistral"); transformers' GGUF loader cannot map it with this
    gguf-py, so the reference is the HF Mistral model holding the weights the file decodes to."""
    file, decoded = gguf_model("mistral", Q.Q8_0)
    hf = AutoModelForCausalLM.from_pretrained(file.parent / "hf", dtype=torch.float32).eval()
    heads = {"attn_q": hf.config.num_attention_heads, "attn_k": hf.config.num_key_value_heads}
    tensors = {}
    for name, weights in decoded.items():
        part = name.split(".")[-2]
        if part in heads:  # invert llama.cpp's permutation by its index map: row i came from row order[i]
            order, restored = permute_rows(np.arange(len(weights)), heads[part]), np.empty_like(weights)
            restored[order] = weights
            weights = restored
        tensors[hf_tensor_name(name)] = torch.from_numpy(weights.copy())
    hf.load_state_dict(tensors, strict=True)
    source = resolve_model(str(file))
    assert source.hf_config.architectures == ["MistralForCausalLM"]
    assert engine_greedy(file) == greedy(hf)


@pytest.mark.parametrize("arch", ["llama", "qwen3"])
def test_f32_gguf_loads_exactly_the_original_weights(arch):
    file, _ = gguf_model(arch, Q.F32)
    ours, _, info = load_model(str(file), torch.float32, "cpu")
    original, _, _ = load_model(str(file.parent / "hf"), torch.float32, "cpu")
    a, b = state(ours), state(original)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert info.eos_token_ids == [2]


def test_a_folder_holding_one_gguf_file_is_a_model(tmp_path):
    file, _ = gguf_model("qwen2", Q.Q4_1)
    shutil.copy(file, tmp_path / "only.gguf")
    assert find_gguf_file(tmp_path) == tmp_path / "only.gguf"
    source = resolve_model(str(tmp_path))
    assert source.path == str(tmp_path / "only.gguf") and source.tokenizer.decode([40, 41]) is not None
    shutil.copy(file, tmp_path / "second.gguf")
    with pytest.raises(ValueError, match="model: .*several GGUF files"):
        resolve_model(str(tmp_path))


def test_unknown_gguf_tensor_is_named():
    with pytest.raises(ValueError, match="blk.0.ssm_conv1d.weight"):
        hf_tensor_name("blk.0.ssm_conv1d.weight")
    assert hf_tensor_name("blk.3.attn_k.bias") == "model.layers.3.self_attn.k_proj.bias"
    assert hf_tensor_name("rope_freqs.weight") is None


def test_tensor_parallel_gguf_matches_transformers(tmp_path):
    file, _ = gguf_model("llama", Q.Q8_0)
    out_file = tmp_path / "logits.pt"
    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_tp_worker, args=(r, 2, str(tmp_path / "init"), [str(file)], str(out_file)))
             for r in range(2)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
        if proc.is_alive():
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0, 0]
    with torch.no_grad():
        reference = transformers_model(str(file))(torch.tensor([TP_IDS])).logits[0]
    assert (torch.load(out_file)[str(file)] - reference).abs().max().item() < 1e-4


def test_perplexity_agrees_with_transformers_on_a_gguf_file():
    file, _ = gguf_model("qwen2", Q.Q4_1)
    text = Path(__file__).resolve().parents[1] / "benchmarks" / "texts" / "heldout-en.txt"
    ours = perplexity(str(file), text, window=256)
    reference = transformers_perplexity(str(file), text, window=256)
    assert ours["tokens"] == reference["tokens"] > 1000
    assert abs(ours["nll"] - reference["nll"]) < 1e-4 and 1 < ours["perplexity"] < 1e4


def test_perplexity_of_quantized_layers_and_an_fp8_kv_cache_stays_near_the_float_score():
    """The bench's quantized scores run the methods' CPU paths: int8 weights and an fp8 KV cache move the score by
    little, and each differs from the float one (the option reached the model)."""
    file, _ = gguf_model("qwen2", Q.Q4_1)
    text = Path(__file__).resolve().parents[1] / "benchmarks" / "texts" / "heldout-en.txt"
    base = perplexity(str(file), text, window=256)["nll"]
    for options in ({"quantization": "int8"}, {"kv_cache_dtype": "fp8"}):
        nll = perplexity(str(file), text, window=256, **options)["nll"]
        assert nll != base and abs(nll - base) < 0.05 * base, options
