"""The shipped demo models: they load in HF transformers and in llmfleet, agree with each other, are as good as
their training log says, and the target writes valid Python (which a random model of the same shape does not)."""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from llmfleet.data.stdlib_corpus import encode_stream, load_split, split_of, validation_windows
from llmfleet.demo_models import DEFAULT_MODEL, DEMO_MODELS, demo_path
from llmfleet.model.layers.attention import AttentionMetadata

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results" / "demo_training"
SEQ_LEN = 512
SAMPLE_WINDOWS = 4        # the first 4 of the 64 validation windows the training log scores one by one
PPL_MARGIN = 1.05         # this interpreter's stdlib may differ a little from the one tokenised for training
SIZE_LIMIT_BYTES = 30_000_000
FIB_PROMPT = "def fibonacci(n):\n"


def test_demo_path_maps_demo_names_only():
    assert demo_path("demo") == DEMO_MODELS["demo"] and DEFAULT_MODEL == "demo"
    assert demo_path("demo-draft") == DEMO_MODELS["demo-draft"]
    assert demo_path("org/some-model") is None and demo_path("") is None


def test_folders_are_complete_bf16_llama_and_within_the_size_limit():
    from safetensors import safe_open
    total = 0
    for name, folder in DEMO_MODELS.items():
        folder = Path(folder)
        for required in ("config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                         "tokenizer_config.json", "special_tokens_map.json", "README.md"):
            assert (folder / required).is_file(), f"{name}: {required} missing"
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["LlamaForCausalLM"] and config["vocab_size"] == 8192
        with safe_open(str(folder / "model.safetensors"), "pt") as f:
            assert {f.get_slice(k).get_dtype() for k in f.keys()} == {"BF16"}
        total += sum(p.stat().st_size for p in folder.iterdir() if p.is_file())
    assert total <= SIZE_LIMIT_BYTES, f"demo folders take {total} bytes"


def test_tokenizer_loads_with_specials_chat_template_and_round_trip():
    from transformers import AutoTokenizer
    tok = AutoTokenizer.from_pretrained(DEMO_MODELS["demo"])
    assert (tok.eos_token, tok.bos_token, tok.pad_token) == ("<|endoftext|>", "<|endoftext|>", "<|pad|>")
    assert (tok.eos_token_id, tok.pad_token_id, len(tok)) == (0, 3, 8192)
    text = "class Point:\n    def __init__(self, x):\n        self.x = x  # café\n"
    ids = tok.encode(text)
    assert ids[0] != tok.bos_token_id and tok.decode(ids) == text
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    draft = AutoTokenizer.from_pretrained(DEMO_MODELS["demo-draft"])
    assert draft.encode(text) == ids


def test_split_is_stable_and_disjoint():
    assert split_of("json/decoder.py") == split_of("json/decoder.py")
    train = {f.relpath for f in load_split("train")}
    val = {f.relpath for f in load_split("validation")}
    assert val and train and not (train & val)
    assert not any("/test" in p or p.startswith("test") or "site-packages" in p for p in train | val)
    with pytest.raises(ValueError, match="split"):
        load_split("dev")


@pytest.fixture(scope="module")
def windows() -> torch.Tensor:
    """int64 [SAMPLE_WINDOWS, SEQ_LEN + 1]: the start of this interpreter's validation stream."""
    from tokenizers import Tokenizer
    tok = Tokenizer.from_file(str(Path(DEMO_MODELS["demo"]) / "tokenizer.json"))
    stream = encode_stream([f.text for f in load_split("validation")],
                           lambda texts: [e.ids for e in tok.encode_batch(texts)], tok.token_to_id("<|endoftext|>"))
    return torch.from_numpy(validation_windows(stream, SAMPLE_WINDOWS, SEQ_LEN))


def hf_window_losses(folder: str, windows: torch.Tensor) -> torch.Tensor:
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    with torch.no_grad():
        logits = model(input_ids=windows[:, :-1]).logits  # [W, L, V]
    return F.cross_entropy(logits.transpose(1, 2), windows[:, 1:], reduction="none").mean(dim=1)  # [W]


def llmfleet_window_losses(folder: str, windows: torch.Tensor, block_size: int = 16) -> torch.Tensor:
    """Every window as one prefill sequence of a single flat batch over a paged KV cache."""
    from llmfleet.model.loader import load_model
    model, _, info = load_model(folder, torch.float32, "cpu")
    num_seqs, seq_len = windows.shape[0], windows.shape[1] - 1
    blocks_per_seq = seq_len // block_size
    for attn in model.attention_layers():
        attn.kv_cache = torch.zeros(2, num_seqs * blocks_per_seq, block_size, info.num_kv_heads, info.head_dim)
    block_tables = torch.arange(num_seqs * blocks_per_seq, dtype=torch.int32).view(num_seqs, blocks_per_seq)
    meta = AttentionMetadata(
        num_seqs=num_seqs, num_decodes=0, max_query_len=seq_len, max_seq_len=seq_len,
        query_start_loc=torch.arange(num_seqs + 1, dtype=torch.int32) * seq_len,
        seq_lens=torch.full((num_seqs,), seq_len, dtype=torch.int32), block_tables=block_tables,
        slot_mapping=torch.arange(num_seqs * seq_len, dtype=torch.int64),  # blocks are laid out contiguously
        query_start_loc_cpu=[i * seq_len for i in range(num_seqs + 1)], seq_lens_cpu=[seq_len] * num_seqs)
    input_ids = windows[:, :-1].reshape(-1)                   # [T]
    positions = torch.arange(seq_len).repeat(num_seqs)        # [T]
    with torch.no_grad():
        logits = model.compute_logits(model.forward(input_ids, positions, meta))  # [T, V]
    nll = F.cross_entropy(logits, windows[:, 1:].reshape(-1), reduction="none")
    return nll.view(num_seqs, seq_len).mean(dim=1)             # [W]


@pytest.mark.parametrize("name", ["demo", "demo-draft"])
def test_perplexity_matches_training_log_in_hf_and_llmfleet(name, windows):
    log = json.loads((RESULTS / f"{name}.json").read_text())
    recorded = math.exp(float(np.mean(log["val_window_losses"][:SAMPLE_WINDOWS])))
    hf_ppl = math.exp(hf_window_losses(DEMO_MODELS[name], windows).mean().item())
    ours_ppl = math.exp(llmfleet_window_losses(DEMO_MODELS[name], windows).mean().item())
    assert abs(ours_ppl - hf_ppl) / hf_ppl < 0.01, (name, hf_ppl, ours_ppl)
    assert hf_ppl < recorded * PPL_MARGIN, (name, hf_ppl, recorded)


def complete_lines(prompt: str, text: str) -> str:
    """prompt + text cut after its last newline (an unfinished last line is dropped)."""
    return prompt + text[:text.rfind("\n") + 1]


def greedy_fibonacci(**llm_options) -> str:
    from llmfleet import LLM, SamplingParams
    llm = LLM("demo", device="cpu", **llm_options)
    outputs = llm.generate([FIB_PROMPT], SamplingParams(temperature=0, max_tokens=96))
    return outputs[0].outputs[0].text


def test_trained_demo_writes_valid_python():
    text = greedy_fibonacci()
    source = complete_lines(FIB_PROMPT, text)
    assert source.count("\n") >= 3, f"too little code: {text!r}"
    compile(source, "<demo>", "exec")


def test_random_weights_of_the_same_shape_do_not():
    text = greedy_fibonacci(load_format="dummy")
    with pytest.raises(SyntaxError):
        compile(complete_lines(FIB_PROMPT, text), "<random>", "exec")
