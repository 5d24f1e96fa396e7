"""The Hugging Face folder loader: sharded files, tied weights, dummy weights, configs, errors, tensor parallelism."""
from __future__ import annotations

import json
import multiprocessing

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, Qwen3Config

from tests.checkpoints import checkpoint, make_checkpoint
from llmfleet.model.layers.attention import AttentionMetadata
from llmfleet.model.loader import ModelInfo, load_model
from llmfleet.model.weights import safetensors_files

transformers.logging.set_verbosity_error()


def prefill_logits(model, ids: list[int]) -> torch.Tensor:
    """Logits [T, V] of one sequence prefilled into a fresh paged cache (blocks 0, 1, ... of 4 tokens)."""
    for attn in model.attention_layers():
        attn.kv_cache = torch.zeros(2, 16, 4, attn.num_kv_heads, attn.head_dim, dtype=model.lm_head.weight.dtype)
    t = len(ids)
    meta = AttentionMetadata(num_seqs=1, num_decodes=0, max_query_len=t, max_seq_len=t,
                             query_start_loc=torch.tensor([0, t], dtype=torch.int32),
                             seq_lens=torch.tensor([t], dtype=torch.int32),
                             block_tables=torch.arange(16, dtype=torch.int32)[None], slot_mapping=torch.arange(t),
                             query_start_loc_cpu=[0, t], seq_lens_cpu=[t])
    with torch.no_grad():
        return model.compute_logits(model(torch.tensor(ids), torch.arange(t), meta))


def state(model) -> dict[str, torch.Tensor]:
    return {name: p.detach().clone() for name, p in model.named_parameters()}


def rewrite_weights(folder, edit) -> None:
    """Apply edit(dict of tensors) to a single-file checkpoint in place."""
    tensors = load_file(folder / "model.safetensors")
    edit(tensors)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})


def test_sharded_checkpoint_loads_identically(tmp_path):
    single = make_checkpoint(tmp_path / "single", "qwen2")
    sharded = make_checkpoint(tmp_path / "sharded", "qwen2", max_shard_size="40KB")
    assert (sharded / "model.safetensors.index.json").is_file() and len(safetensors_files(sharded)) > 2
    a, _, _ = load_model(str(single), torch.float32, "cpu")
    b, _, _ = load_model(str(sharded), torch.float32, "cpu")
    sa, sb = state(a), state(b)
    assert sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_model_info_and_generation_config_eos(tmp_path):
    folder = make_checkpoint(tmp_path / "m", "qwen3")
    (folder / "generation_config.json").write_text(json.dumps({"eos_token_id": [2, 5]}))
    _, config, info = load_model(str(folder), torch.float32, "cpu")
    assert info == ModelInfo(num_layers=2, num_heads=4, num_kv_heads=2, head_dim=32, hidden_size=64, vocab_size=512,
                             max_position_embeddings=1024, eos_token_ids=[2, 5], architecture="Qwen3ForCausalLM")
    assert info.kv_heads_per_rank(4) == 1 and config.head_dim == 32


def test_tied_checkpoint_that_also_stores_lm_head_loads(tmp_path):
    folder = make_checkpoint(tmp_path / "t", "llama-tied")
    rewrite_weights(folder, lambda t: t.__setitem__("lm_head.weight", t["model.embed_tokens.weight"].clone()))
    model, _, _ = load_model(str(folder), torch.float32, "cpu")
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_rotary_buffers_in_checkpoint_are_skipped(tmp_path):
    folder = make_checkpoint(tmp_path / "r", "llama")
    rewrite_weights(folder, lambda t: t.__setitem__("model.layers.0.self_attn.rotary_emb.inv_freq", torch.ones(8)))
    model, _, _ = load_model(str(folder), torch.float32, "cpu")
    hf = AutoModelForCausalLM.from_pretrained(checkpoint("llama"), dtype=torch.float32).eval()
    ids = [1, 40, 7, 300, 12]
    with torch.no_grad():
        assert (prefill_logits(model, ids) - hf(torch.tensor([ids])).logits[0]).abs().max().item() < 1e-4


def test_missing_tensor_is_named(tmp_path):
    folder = make_checkpoint(tmp_path / "m", "llama")
    rewrite_weights(folder, lambda t: t.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(ValueError, match=r"missing from the checkpoint: model\.layers\.1\.mlp\.gate_up_proj\.weight "
                                         r"\(part 1\)$"):
        load_model(str(folder), torch.float32, "cpu")


def test_unexpected_tensor_is_named(tmp_path):
    folder = make_checkpoint(tmp_path / "u", "mistral")
    rewrite_weights(folder, lambda t: t.__setitem__("model.layers.0.self_attn.q_proj.bias", torch.zeros(64)))
    with pytest.raises(ValueError, match=r"match no model parameter: model\.layers\.0\.self_attn\.q_proj\.bias$"):
        load_model(str(folder), torch.float32, "cpu")


def test_wrong_shape_is_a_clear_error(tmp_path):
    folder = make_checkpoint(tmp_path / "s", "llama")
    rewrite_weights(folder, lambda t: t.__setitem__("model.norm.weight", torch.ones(65)))
    with pytest.raises(ValueError, match=r"shape mismatch.*\(64,\).*\(65,\)"):
        load_model(str(folder), torch.float32, "cpu")


def test_unknown_architecture_lists_supported(tmp_path):
    folder = make_checkpoint(tmp_path / "a", "llama")
    config = json.loads((folder / "config.json").read_text())
    config["architectures"] = ["FalconForCausalLM"]
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match="'FalconForCausalLM'.*LlamaForCausalLM, MistralForCausalLM, "
                                         "MixtralForCausalLM, Qwen2ForCausalLM, Qwen2MoeForCausalLM, "
                                         "Qwen3ForCausalLM, Qwen3MoeForCausalLM"):
        load_model(str(folder), torch.float32, "cpu")


def test_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="model_path.*not a local folder"):
        load_model(str(tmp_path / "nowhere"), torch.float32, "cpu")
    with pytest.raises(ValueError, match="load_format.*'pt'"):
        load_model(str(checkpoint("llama")), torch.float32, "cpu", load_format="pt")
    with pytest.raises(ValueError, match="model_path: no config.json"):
        load_model(str(tmp_path), torch.float32, "cpu")
    (tmp_path / "config.json").write_text((checkpoint("llama") / "config.json").read_text())
    with pytest.raises(ValueError, match="model_path: no \\*.safetensors"):
        load_model(str(tmp_path), torch.float32, "cpu")


def test_dummy_weights_from_an_in_memory_config():
    config = Qwen3Config(vocab_size=1000, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, head_dim=32, tie_word_embeddings=True,
                         max_position_embeddings=256, eos_token_id=7)
    model, same, info = load_model("qwen3-tiny", torch.bfloat16, "cpu", load_format="dummy", hf_config=config)
    assert same is config and info.architecture == "Qwen3ForCausalLM" and info.eos_token_ids == [7]
    assert torch.get_default_dtype() == torch.float32             # restored after building in bfloat16
    assert model.lm_head.weight.dtype == torch.bfloat16
    assert model.model.rotary_emb.cos_sin_cache.dtype == torch.float32
    assert torch.equal(model.model.layers[0].self_attn.q_norm.weight, torch.ones(32, dtype=torch.bfloat16))
    std = model.model.layers[1].mlp.down_proj.weight.float().std().item()
    assert 0.018 < std < 0.022
    logits = prefill_logits(model, [1, 2, 3, 4, 5])
    assert logits.dtype == torch.float32 and logits.shape == (5, 1000) and torch.isfinite(logits).all()


# (arch, overrides): biases on every projection exercise the column-sharded and the rank-0-only row biases
TP_CASES = (("qwen2", {}), ("qwen3", {}), ("llama-tied", {}), ("llama", {"attention_bias": True, "mlp_bias": True}))
TP_IDS = [1, 17, 250, 3, 99, 400, 8, 61, 2, 300, 45]


def _tp_worker(rank: int, size: int, init_file: str, paths: list[str], out_file: str) -> None:
    """One rank of a gloo tensor-parallel group: load each checkpoint sharded, rank 0 saves the logits."""
    import torch.distributed as dist
    from llmfleet.model.parallel_state import set_tensor_parallel
    torch.set_num_threads(1)  # a forked child must not reuse the parent's OpenMP pool
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=size)
    set_tensor_parallel(rank, size)
    results = {}
    for path in paths:
        model, _, _ = load_model(path, torch.float32, "cpu")
        results[path] = prefill_logits(model, TP_IDS)
    if rank == 0:
        torch.save(results, out_file)
    dist.destroy_process_group()


@pytest.mark.parametrize("size", [2, 4])
def test_tensor_parallel_model_matches_hf(tmp_path, size):
    paths = [str(checkpoint(arch, **overrides)) for arch, overrides in TP_CASES]
    out_file = tmp_path / "logits.pt"
    ctx = multiprocessing.get_context("fork")  # the children inherit the imports: no start-up cost
    procs = [ctx.Process(target=_tp_worker, args=(r, size, str(tmp_path / "init"), paths, str(out_file)))
             for r in range(size)]
    for proc in procs:
        proc.start()
    for proc in procs:
        proc.join(timeout=120)
    for proc in procs:
        if proc.is_alive():
            proc.kill()
    assert [proc.exitcode for proc in procs] == [0] * size
    results = torch.load(out_file)
    for path in paths:
        hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            reference = hf(torch.tensor([TP_IDS])).logits[0]
        assert (results[path] - reference).abs().max().item() < 1e-4, path
