"""Tiny random Hugging Face checkpoints with a real tokenizer, built on the fly (no hub access in tests).

`make_checkpoint(path, arch)` writes config.json, float32 safetensors weights, a byte-level BPE tokenizer trained on
a fixed built-in text, and a chat template into `path`. The same call always gives the same files' content.

Greedy decoding must agree between implementations that round float32 differently, so the weights use a large
initializer range: top-1 logits are then far apart (rarely near-tied) and the model does not collapse into
repeating one token. Norm weights and q/k/v biases are perturbed away from HF's 1/0 defaults so that a loader which
forgets to load them fails the parity tests.
"""
from __future__ import annotations

import atexit
import pathlib
import shutil
import tempfile

import torch
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers
from transformers import (LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM, MixtralConfig,
                          MixtralForCausalLM, PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM, Qwen2MoeConfig,
                          Qwen2MoeForCausalLM, Qwen3Config, Qwen3ForCausalLM, Qwen3MoeConfig, Qwen3MoeForCausalLM)

ARCHS = ("llama", "llama-tied", "mistral", "qwen2", "qwen3")
MOE_ARCHS = ("qwen3-moe", "mixtral", "qwen2-moe")  # tests/test_moe.py
TOKENIZER_VOCAB = 512  # == the default vocab_size, so every id a model can produce decodes to text
SPECIAL_TOKENS = ["<pad>", "<s>", "</s>", "<|system|>", "<|user|>", "<|assistant|>"]
PAD_ID, BOS_ID, EOS_ID = 0, 1, 2
CHAT_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}{{ eos_token }}\n"
    "{% endfor %}{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)

_TRAINING_TEXT = """\
The quick brown fox jumps over the lazy dog. A serving system answers many requests at once: it batches the
tokens of every running sequence into one step, keeps their keys and values in a paged cache, and streams each
new token back to its client as soon as it is sampled. Hello, world! How are you today? I am fine, thank you.
Once upon a time there was a small model that learned to count: one, two, three, four, five, six, seven.
def fibonacci(n: int) -> int:
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

class Request:
    def __init__(self, prompt: str, max_tokens: int = 16):
        self.prompt = prompt
        self.max_tokens = max_tokens

if __name__ == "__main__":
    print([fibonacci(i) for i in range(10)])
The weather is nice and the sun is shining over the hills. She said that the answer was forty-two.
"""

_BASE = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
             num_key_value_heads=2, vocab_size=512, max_position_embeddings=1024, initializer_range=0.2,
             rms_norm_eps=1e-6, bos_token_id=BOS_ID, eos_token_id=EOS_ID, pad_token_id=PAD_ID,
             tie_word_embeddings=False)

_ARCH_SPECS = {
    "llama": (LlamaConfig, LlamaForCausalLM, dict(
        rope_scaling={"rope_type": "llama3", "rope_theta": 500000.0, "factor": 4.0, "low_freq_factor": 1.0,
                      "high_freq_factor": 4.0, "original_max_position_embeddings": 256})),
    "llama-tied": (LlamaConfig, LlamaForCausalLM, dict(tie_word_embeddings=True, rope_theta=10000.0)),
    "mistral": (MistralConfig, MistralForCausalLM, dict(sliding_window=None, head_dim=16, rope_theta=1000000.0)),
    "qwen2": (Qwen2Config, Qwen2ForCausalLM, dict(rope_theta=1000000.0, use_sliding_window=False)),
    "qwen3": (Qwen3Config, Qwen3ForCausalLM, dict(head_dim=32, rope_theta=1000000.0, attention_bias=False,
                                                  use_sliding_window=False)),
    # layer 0 sparse, layer 1 dense (mlp_only_layers); 8 experts of width 32, top 2, renormalised
    "qwen3-moe": (Qwen3MoeConfig, Qwen3MoeForCausalLM, dict(
        head_dim=32, rope_theta=1000000.0, num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[1], use_sliding_window=False)),
    "mixtral": (MixtralConfig, MixtralForCausalLM, dict(
        num_local_experts=4, num_experts_per_tok=2, sliding_window=None, rope_theta=1000000.0,
        tie_word_embeddings=True)),
    # a shared expert beside the routed ones; top-k weights not renormalised
    "qwen2-moe": (Qwen2MoeConfig, Qwen2MoeForCausalLM, dict(
        num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=48,
        norm_topk_prob=False, rope_theta=1000000.0, use_sliding_window=False)),
}


def build_tokenizer() -> PreTrainedTokenizerFast:
    """A deterministic byte-level BPE (TOKENIZER_VOCAB entries) with bos/eos/pad and a chat template."""
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=TOKENIZER_VOCAB, special_tokens=SPECIAL_TOKENS, show_progress=False,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tok.train_from_iterator([_TRAINING_TEXT], trainer=trainer)
    tok.post_processor = processors.TemplateProcessing(single="<s> $A", pair="<s> $A <s> $B",
                                                       special_tokens=[("<s>", BOS_ID)])
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", pad_token="<pad>")
    fast.chat_template = CHAT_TEMPLATE
    return fast


def make_checkpoint(path, arch: str, *, seed: int = 0, max_shard_size: str | int | None = None,
                    **config_overrides) -> pathlib.Path:
    """Write a tiny random checkpoint of `arch` (one of ARCHS) into `path` and return it as a Path.

    config_overrides replace any config field (e.g. num_hidden_layers=1). max_shard_size (e.g. "20KB") saves a
    sharded checkpoint with model.safetensors.index.json.
    """
    if arch not in _ARCH_SPECS:
        raise ValueError(f"arch: unknown value {arch!r}; use one of {', '.join(ARCHS + MOE_ARCHS)}")
    config_cls, model_cls, extra = _ARCH_SPECS[arch]
    fields = {**_BASE, **extra, **config_overrides}
    if fields["vocab_size"] < TOKENIZER_VOCAB:
        raise ValueError(f"vocab_size: must be >= the tokenizer's {TOKENIZER_VOCAB}, got {fields['vocab_size']}")
    config = config_cls(**fields)
    torch.manual_seed(seed)
    model = model_cls(config).to(torch.float32).eval()
    _perturb_defaults(model, seed)
    out = pathlib.Path(path)
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.save_pretrained(out, safe_serialization=True, **kwargs)
    build_tokenizer().save_pretrained(out)
    return out


def _perturb_defaults(model: torch.nn.Module, seed: int) -> None:
    """Move norm weights off 1 and biases off 0 (HF's init), so that forgetting to load them is visible."""
    gen = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1.0 + 0.2 * torch.randn(param.shape, generator=gen))
            elif name.endswith(".bias"):
                param.copy_(0.1 * torch.randn(param.shape, generator=gen))


_CACHE: dict[tuple[str, str], pathlib.Path] = {}
_ROOT: list[pathlib.Path] = []


def checkpoint(arch: str, **config_overrides) -> pathlib.Path:
    """The checkpoint of `arch` built once per process (test session) under a temporary folder, removed at exit."""
    key = (arch, repr(sorted(config_overrides.items())))  # repr: overrides may hold dicts
    if key not in _CACHE:
        if not _ROOT:
            _ROOT.append(pathlib.Path(tempfile.mkdtemp(prefix="llmfleet-ckpt-")))
            atexit.register(shutil.rmtree, _ROOT[0], True)
        name = f"{arch}-{len(_CACHE)}"
        _CACHE[key] = make_checkpoint(_ROOT[0] / name, arch, **config_overrides)
    return _CACHE[key]
