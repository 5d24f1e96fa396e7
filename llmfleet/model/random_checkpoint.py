"""A tiny random Llama checkpoint with a real byte-level tokenizer: the server's last-resort default model.

Every byte is a token (no merges), so any text round-trips; the weights are random, so generations are noise.
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]


def write_random_checkpoint(path: Path, seed: int = 0) -> Path:
    """Write config, float32 safetensors weights and tokenizer files into `path` (atomically: a temp dir, then
    a rename, so a crash never leaves a half-written model behind)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tmp = path.with_name(path.name + ".tmp")
    for stale in (tmp, path):  # leftovers of an interrupted earlier attempt
        shutil.rmtree(stale, ignore_errors=True)
    tmp.mkdir(parents=True)
    tokenizer = _byte_tokenizer()
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=128, intermediate_size=256, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=2048,
                         bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True)
    torch.manual_seed(seed)
    LlamaForCausalLM(config).to(torch.float32).save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / "llmfleet_random.json").write_text(json.dumps({"random": True, "seed": seed}))
    tmp.replace(path)
    return path


def _byte_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS + sorted(alphabet))}
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIAL_TOKENS)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast
