"""Benchmark model shapes: configs built in memory (random weights), and a synthetic tokenizer for them."""
from __future__ import annotations

import functools

SHAPES = {
    "qwen3-0.6b": dict(
        architectures=["Qwen3ForCausalLM"], model_type="qwen3", vocab_size=151936, hidden_size=1024,
        intermediate_size=3072, num_hidden_layers=28, num_attention_heads=16, num_key_value_heads=8, head_dim=128,
        tie_word_embeddings=True, rope_theta=1_000_000.0, max_position_embeddings=40960, rms_norm_eps=1e-6,
        eos_token_id=151645, bos_token_id=151643),
    "llama3-8b": dict(
        architectures=["LlamaForCausalLM"], model_type="llama", vocab_size=128256, hidden_size=4096,
        intermediate_size=14336, num_hidden_layers=32, num_attention_heads=32, num_key_value_heads=8, head_dim=128,
        tie_word_embeddings=False, rope_theta=500_000.0, max_position_embeddings=131072, rms_norm_eps=1e-5,
        eos_token_id=128001, bos_token_id=128000),
    # Mixtures of experts (their published config.json files): 30.5B parameters, 3.3B active per token;
    # 46.7B, 12.9B active.
    "qwen3-30b-a3b": dict(
        architectures=["Qwen3MoeForCausalLM"], model_type="qwen3_moe", vocab_size=151936, hidden_size=2048,
        intermediate_size=6144, moe_intermediate_size=768, num_experts=128, num_experts_per_tok=8,
        norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[], num_hidden_layers=48,
        num_attention_heads=32, num_key_value_heads=4, head_dim=128, tie_word_embeddings=False,
        rope_theta=1_000_000.0, max_position_embeddings=40960, rms_norm_eps=1e-6, eos_token_id=151645,
        bos_token_id=151643),
    "mixtral-8x7b": dict(
        architectures=["MixtralForCausalLM"], model_type="mixtral", vocab_size=32000, hidden_size=4096,
        intermediate_size=14336, num_local_experts=8, num_experts_per_tok=2, num_hidden_layers=32,
        num_attention_heads=32, num_key_value_heads=8, head_dim=128, tie_word_embeddings=False,
        rope_theta=1_000_000.0, max_position_embeddings=32768, rms_norm_eps=1e-5, sliding_window=None,
        eos_token_id=2, bos_token_id=1),
}


def shape_config(name: str):
    """A transformers config for a named shape (or the path of a folder whose config.json to use)."""
    from transformers import AutoConfig, PretrainedConfig

    if name not in SHAPES:
        return AutoConfig.from_pretrained(name, local_files_only=True)
    fields = dict(SHAPES[name])
    model_type = fields.pop("model_type")
    config_class = type(AutoConfig.for_model(model_type))
    config = config_class(**fields)
    assert isinstance(config, PretrainedConfig)
    return config


@functools.lru_cache(maxsize=4)
def synthetic_tokenizer(vocab_size: int):
    """A word-level tokenizer whose token i is the word `t{i}`: real detokenization cost, no files needed."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"t{i}": i for i in range(vocab_size)}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="t0"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with spaces
    return PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="t0")
