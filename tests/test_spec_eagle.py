"""EAGLE heads on CPU: scripts/train_eagle.py trains one for a tiny target in a few steps and writes the EAGLE
checkpoint layout; the engine loads it (`method: "eagle"`) and greedy output equals the output without speculation
token for token, with exact acceptance counters; an untrained random head too; the EAGLE-3 layout and a checkpoint of
neither layout are refused naming the field."""
from __future__ import annotations

import functools
import importlib.util
import json
import pathlib
import tempfile

import pytest
import torch
from safetensors.torch import load_file, save_file

from llmfleet import LLM, SamplingParams
from llmfleet.model.models.eagle import eagle_layout
from tests.checkpoints import checkpoint
from tests.test_spec_decode import prompts

NEW_TOKENS = 24
ROOT = pathlib.Path(__file__).resolve().parents[1]


def _train_eagle():
    spec = importlib.util.spec_from_file_location("train_eagle", ROOT / "scripts" / "train_eagle.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@functools.lru_cache(maxsize=None)
def trained_head() -> pathlib.Path:
    out = pathlib.Path(tempfile.mkdtemp(prefix="eagle-head-"))
    rc = _train_eagle().main(["--model", str(checkpoint("llama")), "--out", str(out), "--device", "cpu",
                              "--num-random", "6", "--num-text", "3", "--max-new", "24", "--steps", "3",
                              "--batch-size", "2", "--length", "64"])
    assert rc == 0
    return out


@functools.lru_cache(maxsize=None)
def baseline() -> tuple:
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32")
    return _generate(llm)


def _generate(llm: LLM) -> tuple:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    return tuple(tuple(o.outputs[0].token_ids) for o in llm.generate(prompts(), params, use_tqdm=False))


def test_training_writes_the_eagle_layout():
    head = trained_head()
    names = sorted(load_file(str(head / "model.safetensors")))
    assert eagle_layout(names) == "eagle"
    assert "fc.weight" in names and "fc.bias" in names and "layers.0.self_attn.q_proj.weight" in names
    assert not any("input_layernorm" in n for n in names)
    assert json.loads((head / "config.json").read_text())["num_hidden_layers"] == 1
    report = json.loads((head / "training.json").read_text())
    assert report["steps"] == 3 and 0.0 <= report["val_agreement"] <= 1.0


@pytest.mark.parametrize("head", ["trained", "random", "random-bin"])
def test_eagle_greedy_identity_and_counters(head, tmp_path):
    path = trained_head()
    if head != "trained":   # same layout, random weights, plus an embed_tokens copy (skipped on load)
        state = {k: torch.randn_like(v.float()) * 0.2 for k, v in load_file(str(path / "model.safetensors")).items()}
        state["embed_tokens.weight"] = torch.zeros(512, 64)
        if head == "random-bin":   # as the EAGLE releases ship it: pytorch_model.bin, no config.json
            torch.save(state, tmp_path / "pytorch_model.bin")
        else:
            save_file(state, str(tmp_path / "model.safetensors"))
        path = tmp_path
    spec = {"method": "eagle", "model": str(path), "num_speculative_tokens": 3}
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    assert _generate(llm) == baseline()
    stats = llm.engine.stats()
    assert stats.spec_num_drafts > 0
    assert stats.spec_num_draft_tokens >= stats.spec_num_drafts
    assert sum(stats.spec_accepted_per_pos) == stats.spec_num_accepted_tokens
    # every token beyond each request's first came from a verify pass: 1 + accepted per pass
    assert stats.generation_tokens == NEW_TOKENS * len(prompts())
    kv = llm.engine.kv
    kv.pool.check_invariants()
    assert kv.num_free_blocks == kv.pool.num_blocks


def test_eagle3_and_unknown_layouts_are_refused(tmp_path):
    save_file({"midlayer.self_attn.q_proj.weight": torch.zeros(4, 8), "d2t": torch.zeros(4, dtype=torch.long)},
              str(tmp_path / "model.safetensors"))
    spec = {"method": "eagle3", "model": str(tmp_path)}
    with pytest.raises(ValueError, match="speculative_config.model: EAGLE-3"):
        LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    with pytest.raises(ValueError, match="speculative_config.model: not an EAGLE head"):
        eagle_layout(["model.layers.0.self_attn.q_proj.weight", "lm_head.weight"])


def _reference_drafts(module, target, head, ids: list[int]) -> list[int]:
    """The training script's head over a whole known sequence: its first draft, then one chained step."""
    ids = torch.tensor([ids])
    with torch.no_grad():
        f = target.model(input_ids=ids).last_hidden_state
        embeds = target.model.embed_tokens(ids[:, 1:])
        g = head(embeds, f[:, :-1])
        d1 = target.lm_head(g[0, -1]).argmax().item()
        g2 = head(torch.cat([embeds, target.model.embed_tokens(torch.tensor([[d1]]))], 1),
                  torch.cat([f[:, :-1], g[:, -1:]], 1))
        return [d1, target.lm_head(g2[0, -1]).argmax().item()]


def test_engine_drafts_equal_the_training_forward():
    """The engine's paged head drafts what the training script's plain-torch head predicts from the target's
    features, after the prefill and after later verify steps: positions, features and rotary line up, and the
    head's KV of rejected drafts is rewritten."""
    from transformers import AutoModelForCausalLM

    path = trained_head()
    spec = {"method": "eagle", "model": str(path), "num_speculative_tokens": 2, "adaptive": False}
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    runner = llm.engine.runner
    seen = []
    propose = runner.drafter.propose

    def recording(states, lengths, step=None):
        drafts = propose(states, lengths, step)
        seen.extend((list(s.token_ids), drafts[s.seq_id]) for s in states if s.seq_id in drafts)
        return drafts

    runner.drafter.propose = recording
    llm.generate([prompts()[2]], SamplingParams(temperature=0, max_tokens=10, ignore_eos=True), use_tqdm=False)
    assert len(seen) >= 3
    target = AutoModelForCausalLM.from_pretrained(str(checkpoint("llama")), dtype=torch.float32).eval()
    module = _train_eagle()
    head = module.TrainHead(target.config)
    head.load_state_dict({k: v.float() for k, v in load_file(str(path / "model.safetensors")).items()},
                         strict=False)
    for ids, drafts in seen:
        assert drafts == _reference_drafts(module, target, head, ids)


@functools.lru_cache(maxsize=None)
def initial_head() -> pathlib.Path:
    """The training script's untrained head (its layer copied from the target's last): drafts from step one."""
    from transformers import AutoModelForCausalLM

    module = _train_eagle()
    target = AutoModelForCausalLM.from_pretrained(str(checkpoint("llama")), dtype=torch.float32)
    head = module.TrainHead(target.config)
    head.init_from(target)
    out = pathlib.Path(tempfile.mkdtemp(prefix="eagle-initial-"))
    module.save(head, pathlib.Path(checkpoint("llama")), out)
    return out


@pytest.mark.parametrize("config", ["budget-5-no-prefix-cache", "preemption"])
def test_eagle_identity_with_chunks_and_preemption(config):
    from tests.test_spec_decode import CONFIGS, baseline as spec_baseline, _generate as spec_generate

    spec = {"method": "eagle", "model": str(initial_head()), "num_speculative_tokens": 3}
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec, **CONFIGS[config])
    assert spec_generate(llm) == spec_baseline(config)
    stats = llm.engine.stats()
    assert stats.spec_num_drafts > 0
    if config == "preemption":
        assert stats.num_preemptions > 0
    kv = llm.engine.kv
    kv.pool.check_invariants()
    assert kv.num_free_blocks == kv.pool.num_blocks


def test_eagle_two_samples_and_logprobs():
    from tests.test_spec_decode import baseline as spec_baseline, _generate as spec_generate

    spec = {"method": "eagle", "model": str(initial_head()), "num_speculative_tokens": 3}
    llm = LLM(str(checkpoint("llama")), device="cpu", dtype="float32", speculative_config=spec)
    assert spec_generate(llm, n=2) == spec_baseline("default", 2)
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True, logprobs=1)
    plain = LLM(str(checkpoint("llama")), device="cpu", dtype="float32").generate(prompts()[3], params,
                                                                                  use_tqdm=False)[0].outputs[0]
    fast = llm.generate(prompts()[3], params, use_tqdm=False)[0].outputs[0]
    assert fast.token_ids == plain.token_ids
    for mine, theirs in zip(fast.logprobs, plain.logprobs):
        assert list(mine) == list(theirs)
