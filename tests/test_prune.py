"""2:4 pruning (llmfleet/lifecycle/prune.py) and serving (the sparse24 linear method): exact masks, Wanda's
activation weighting, and a pruned folder that llmfleet loads and decodes greedy-token-exact with transformers."""
from __future__ import annotations

import json

import pytest
import torch

from llmfleet.lifecycle.prune import SPARSITY_KEY, prunable_linears, prune, prune_model, two_four_mask
from llmfleet.model.layers.quantization.sparse24 import is_two_four

CALIBRATION = ["The quick brown fox jumps over the lazy dog. def fibonacci(n): return n " * 40]


def test_two_four_mask_keeps_exactly_the_top_two_of_every_four():
    scores = torch.randn(8, 32, generator=torch.Generator().manual_seed(0)).abs()
    keep = two_four_mask(scores)
    groups, kept = scores.reshape(8, 8, 4), keep.reshape(8, 8, 4)
    assert (kept.sum(-1) == 2).all()
    top2 = groups.topk(2, dim=-1).indices.sort(-1).values
    assert torch.equal(kept.nonzero()[:, -1].reshape(8, 8, 2), top2)
    with pytest.raises(ValueError, match="divisible by 4"):
        two_four_mask(torch.ones(2, 6))


def _model(tiny_checkpoint):
    from transformers import AutoModelForCausalLM
    return AutoModelForCausalLM.from_pretrained(tiny_checkpoint("llama"), dtype=torch.float32)


def test_every_group_of_four_inputs_has_exactly_two_zeros(tiny_checkpoint):
    model = _model(tiny_checkpoint)
    head = model.lm_head.weight.clone()
    zeros = prune_model(model, "magnitude")
    layers = prunable_linears(model)
    assert len(layers) == 14 and set(zeros) == set(layers) and all(z == 0.5 for z in zeros.values())
    for layer in layers.values():
        groups = layer.weight.reshape(layer.weight.shape[0], -1, 4)
        assert ((groups == 0).sum(-1) == 2).all()
        assert is_two_four(layer.weight)
    assert torch.equal(model.lm_head.weight, head)  # the LM head stays dense


def test_wanda_follows_the_activations_and_magnitude_does_not(tiny_checkpoint):
    magnitude, wanda, flat = _model(tiny_checkpoint), _model(tiny_checkpoint), _model(tiny_checkpoint)
    prune_model(magnitude, "magnitude")
    scale = torch.tensor([1.0, 1e9, 0.0, 1.0]).repeat(256)  # a huge input feature and a silent one per group
    norms = {name: scale[:layer.in_features] for name, layer in prunable_linears(wanda).items()}
    prune_model(wanda, "wanda", norms)
    prune_model(flat, "wanda", {name: torch.ones(layer.in_features) for name, layer in prunable_linears(flat).items()})
    name = "model.layers.0.mlp.down_proj"
    w_mag, w_wanda = prunable_linears(magnitude)[name].weight, prunable_linears(wanda)[name].weight
    assert not torch.equal(w_mag == 0, w_wanda == 0)
    assert (w_wanda.reshape(-1, 4)[:, 1] != 0).all() and (w_wanda.reshape(-1, 4)[:, 2] == 0).all()
    assert torch.equal(prunable_linears(flat)[name].weight, w_mag)  # equal norms: Wanda is magnitude
    with pytest.raises(ValueError, match="wanda needs"):
        prune_model(_model(tiny_checkpoint), "wanda")


def test_a_pruned_folder_serves_sparse24_and_matches_transformers(tiny_checkpoint, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from llmfleet.entrypoints.llm import LLM
    from llmfleet.protocol.sampling_params import SamplingParams
    out = tmp_path / "pruned"
    record = prune(str(tiny_checkpoint("llama")), "wanda", out, calibration_texts=CALIBRATION, samples=4,
                   seq_len=64, device="cpu")
    assert record["mean_zero_fraction"] == 0.5 and record["calibration"] == {"windows": 4, "seq_len": 64}
    assert json.loads((out / "config.json").read_text())[SPARSITY_KEY] == "2:4"
    llm = LLM(str(out), device="cpu", dtype="float32")
    methods = {getattr(m, "quant_method", None).name for m in llm.engine.runner.model.modules()
               if hasattr(m, "quant_method")}
    assert methods == {"sparse24"}
    prompts = ["The quick brown fox", "def fibonacci(n):", "Hello, world!"]
    params = SamplingParams(temperature=0, max_tokens=12, ignore_eos=True)
    ours = [o.outputs[0].token_ids for o in llm.generate(prompts, params, use_tqdm=False)]
    tokenizer = AutoTokenizer.from_pretrained(out)
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32)
    for prompt, tokens in zip(prompts, ours):
        ids = tokenizer(prompt, return_tensors="pt").input_ids
        ref = hf.generate(ids, max_new_tokens=12, do_sample=False, min_new_tokens=12)[0, ids.shape[1]:].tolist()
        assert tokens == ref, prompt


def test_sparse24_refuses_a_dense_checkpoint_and_other_patterns(tiny_checkpoint):
    from llmfleet.model.layers.quantization import linear_method_for
    from llmfleet.model.loader import load_model
    with pytest.raises(ValueError, match="not 2:4 sparse"):
        load_model(str(tiny_checkpoint("llama")), torch.float32, "cpu", quantization="sparse24")
    config = type("Config", (), {SPARSITY_KEY: "4:8"})()
    with pytest.raises(ValueError, match="llmfleet_sparsity"):
        linear_method_for(None, config)
    with pytest.raises(ValueError, match="sparse24"):
        linear_method_for("int8", type("Config", (), {SPARSITY_KEY: "2:4"})())
    with pytest.raises(ValueError, match="sparsity"):
        prune(str(tiny_checkpoint("llama")), "magnitude", "unused", sparsity="1:4")
