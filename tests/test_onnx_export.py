"""ONNX export of tiny Llama and Qwen3 checkpoints: onnxruntime's greedy tokens equal llmfleet's (float32, CPU),
the KV-cache path equals recomputing without it, and the int8 model runs and mostly agrees."""
from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from llmfleet.entrypoints.llm import LLM  # noqa: E402
from llmfleet.export.onnx_export import export_onnx  # noqa: E402
from llmfleet.export.runtime import OnnxDecoderSession  # noqa: E402
from llmfleet.protocol.sampling_params import SamplingParams  # noqa: E402

PROMPTS = [[1, 5, 77, 200], [1, 300], [1, 42, 43, 44, 45, 46, 47, 48, 49]]
NEW_TOKENS = 10


@pytest.fixture(scope="module", params=["llama", "qwen3"])
def exported(request, tiny_checkpoint, tmp_path_factory):
    checkpoint = tiny_checkpoint(request.param)
    out = export_onnx(str(checkpoint), tmp_path_factory.mktemp(f"onnx-{request.param}"))
    return checkpoint, out


def llmfleet_greedy(checkpoint) -> list[list[int]]:
    llm = LLM(str(checkpoint), device="cpu", dtype="float32", num_kv_blocks=64)
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0.0, ignore_eos=True)
    return [list(o.outputs[0].token_ids) for o in llm.generate(PROMPTS, params, use_tqdm=False)]


def test_onnxruntime_greedy_equals_llmfleet(exported):
    checkpoint, out = exported
    session = OnnxDecoderSession(out)
    assert [session.greedy(p, NEW_TOKENS).tokens for p in PROMPTS] == llmfleet_greedy(checkpoint)


def test_kv_cache_path_equals_no_cache_path(exported):
    session = OnnxDecoderSession(exported[1])
    for prompt in PROMPTS:
        assert session.greedy(prompt, NEW_TOKENS).tokens == session.greedy_no_cache(prompt, NEW_TOKENS)


def test_present_grows_by_the_new_tokens_and_batches_are_independent(exported):
    session = OnnxDecoderSession(exported[1])
    meta = session.meta
    ids = np.array([[1, 5, 77], [1, 300, 301]])
    logits, present = session.step(ids, session.empty_past(batch=2))
    assert logits.shape == (2, 3, meta["vocab_size"])
    assert len(present) == 2 * meta["num_layers"]
    assert all(p.shape == (2, meta["num_kv_heads"], 3, meta["head_dim"]) for p in present)
    alone, _ = session.step(ids[1:], session.empty_past())
    np.testing.assert_allclose(logits[1], alone[0], rtol=1e-5, atol=1e-5)


def test_int8_model_runs_and_meta_lists_it(exported):
    _, out = exported
    meta = json.loads((out / "export.json").read_text())
    assert meta["files"] == ["model.onnx", "model.int8.onnx"]
    assert meta["inputs"][:3] == ["input_ids", "attention_mask", "position_ids"]
    assert meta["outputs"][1:3] == ["present.0.key", "present.0.value"]
    tokens = OnnxDecoderSession(out, "model.int8.onnx").greedy(PROMPTS[0], NEW_TOKENS).tokens
    assert len(tokens) == NEW_TOKENS and all(0 <= t < meta["vocab_size"] for t in tokens)
    assert (out / "model.int8.onnx").stat().st_size < (out / "model.onnx").stat().st_size


def test_vocab_json_decodes_each_id(exported):
    vocab = json.loads((exported[1] / "vocab.json").read_text())
    assert len(vocab) == 512 and vocab[2] == "</s>"


def test_bad_prompt_is_a_value_error(exported):
    with pytest.raises(ValueError, match="prompt"):
        OnnxDecoderSession(exported[1]).greedy([], 4)


def test_tied_embedding_is_stored_once(tiny_checkpoint, tmp_path):
    import onnx

    out = export_onnx(str(tiny_checkpoint("llama-tied")), tmp_path, int8=False)
    graph = onnx.load(str(out / "model.onnx")).graph
    vocab_sized = [i.name for i in graph.initializer if 512 in i.dims and 64 in i.dims]
    assert len(vocab_sized) == 1, vocab_sized


def test_cli_export_onnx_writes_the_files(tiny_checkpoint, tmp_path):
    from llmfleet.entrypoints.cli import main

    assert main(["export", "onnx", str(tiny_checkpoint("llama")), "--out", str(tmp_path), "--no-int8"]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.json", "model.onnx", "vocab.json"]
