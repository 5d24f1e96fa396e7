"""The offline LLM as a vLLM user expects it: token ids in and out with skip_tokenizer_init=True (no tokenizer
files needed; what needs text is refused naming its field), a clear error for a folder without a tokenizer, and a
progress bar on by default."""
from __future__ import annotations

import shutil

import pytest

from llmfleet import LLM, SamplingParams
from llmfleet.model.source import TOKENIZER_FILES
from tests.checkpoints import checkpoint

PROMPTS = [[5, 77, 123, 9], [300, 41, 8]]
GREEDY = SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)


@pytest.fixture(scope="module")
def weights_only(tmp_path_factory):
    """The tiny llama checkpoint without its tokenizer files."""
    folder = tmp_path_factory.mktemp("no-tokenizer")
    source = checkpoint("llama")
    for path in source.iterdir():
        if path.is_file() and path.name not in TOKENIZER_FILES and "token" not in path.name:
            shutil.copy(path, folder / path.name)
    assert (folder / "config.json").exists() and not (folder / "tokenizer.json").exists()
    return folder


@pytest.fixture(scope="module")
def ids_only(weights_only) -> LLM:
    return LLM(str(weights_only), device="cpu", dtype="float32", skip_tokenizer_init=True)


def test_token_ids_in_and_out_without_a_tokenizer(ids_only):
    reference = LLM(str(checkpoint("llama")), device="cpu", dtype="float32")
    expected = reference.generate(PROMPTS, GREEDY, use_tqdm=False)
    outputs = ids_only.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert ids_only.get_tokenizer() is None
    assert [o.outputs[0].token_ids for o in outputs] == [o.outputs[0].token_ids for o in expected]
    assert all(len(o.outputs[0].token_ids) == 6 and o.outputs[0].text == "" for o in outputs)


def test_logprobs_come_without_decoded_tokens(ids_only):
    out = ids_only.generate(PROMPTS[0], SamplingParams(max_tokens=3, logprobs=2, ignore_eos=True), use_tqdm=False)
    steps = out[0].outputs[0].logprobs
    assert len(steps) == 3 and all(lp.decoded_token is None for step in steps for lp in step.values())


@pytest.mark.parametrize("prompt, params, field", [
    ("a text prompt", GREEDY, "prompt"),
    (PROMPTS[0], SamplingParams(max_tokens=4, stop=["x"]), "stop"),
])
def test_what_needs_text_is_refused_naming_the_field(ids_only, prompt, params, field):
    with pytest.raises(ValueError, match=f"^{field}: .*skip_tokenizer_init"):
        ids_only.generate(prompt, params, use_tqdm=False)
    with pytest.raises(ValueError, match="^messages: "):
        ids_only.chat([{"role": "user", "content": "hi"}])
    assert ids_only.generate(PROMPTS[1], GREEDY, use_tqdm=False)[0].finished  # still usable


def test_a_folder_without_tokenizer_files_says_so(weights_only):
    with pytest.raises(ValueError, match="^tokenizer: .*no tokenizer files.*skip_tokenizer_init=True"):
        LLM(str(weights_only), device="cpu", dtype="float32")


def test_progress_bar_is_on_by_default(ids_only, capsys):
    ids_only.generate(PROMPTS, GREEDY)
    err = capsys.readouterr().err
    assert "prompts" in err and "2/2" in err
    ids_only.generate(PROMPTS, GREEDY, use_tqdm=False)
    assert capsys.readouterr().err == ""
