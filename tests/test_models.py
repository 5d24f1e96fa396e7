"""Model parity with Hugging Face transformers through the paged KV cache, and the layers one by one (CPU, fp32)."""
from __future__ import annotations

import types

import pytest
import torch
import torch.nn.functional as F
import transformers
from transformers import AutoModelForCausalLM, LlamaConfig
from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb

from tests.checkpoints import ARCHS, checkpoint
from llmfleet.model.parallel_state import reset_tensor_parallel, set_tensor_parallel
from llmfleet.model.layers.activation import SiluAndMul
from llmfleet.model.layers.attention import AttentionMetadata
from llmfleet.model.layers.embedding import VocabParallelEmbedding
from llmfleet.model.layers.linear import (ColumnParallelLinear, MergedColumnParallelLinear, QKVParallelLinear,
                                    RowParallelLinear)
from llmfleet.model.layers.norm import RMSNorm
from llmfleet.model.layers.rotary import RotaryEmbedding, rope_parameters_from_config
from llmfleet.model.loader import load_model

transformers.logging.set_verbosity_error()
BLOCK_SIZE, NUM_BLOCKS, TOL = 4, 32, 1e-4


class PagedSequences:
    """Drives a model step by step over a fresh paged KV cache, like the runner: block tables, slot mapping."""

    def __init__(self, model, block_lists: list[list[int]]):
        self.model, self.blocks = model, block_lists
        self.cached = [0] * len(block_lists)
        for attn in model.attention_layers():
            attn.kv_cache = torch.zeros(2, NUM_BLOCKS, BLOCK_SIZE, attn.num_kv_heads, attn.head_dim)

    def step(self, chunks: dict[int, list[int]]) -> list[torch.Tensor]:
        """Feed each sequence i its new tokens chunks[i] (decodes first); return each one's logits [len, V]."""
        order = sorted(chunks, key=lambda i: len(chunks[i]) != 1)
        ids, positions, slots, starts, seq_lens = [], [], [], [0], []
        for i in order:
            for pos in range(self.cached[i], self.cached[i] + len(chunks[i])):
                positions.append(pos)
                slots.append(self.blocks[i][pos // BLOCK_SIZE] * BLOCK_SIZE + pos % BLOCK_SIZE)
            ids += chunks[i]
            self.cached[i] += len(chunks[i])
            starts.append(len(ids))
            seq_lens.append(self.cached[i])
        width = max(len(self.blocks[i]) for i in order)
        table = [self.blocks[i] + [0] * (width - len(self.blocks[i])) for i in order]
        meta = AttentionMetadata(
            num_seqs=len(order), num_decodes=sum(len(chunks[i]) == 1 for i in order),
            max_query_len=max(len(chunks[i]) for i in order), max_seq_len=max(seq_lens),
            query_start_loc=torch.tensor(starts, dtype=torch.int32), seq_lens=torch.tensor(seq_lens, dtype=torch.int32),
            block_tables=torch.tensor(table, dtype=torch.int32), slot_mapping=torch.tensor(slots, dtype=torch.int64),
            query_start_loc_cpu=starts, seq_lens_cpu=seq_lens)
        with torch.no_grad():
            logits = self.model.compute_logits(self.model(torch.tensor(ids), torch.tensor(positions), meta))
        return {i: logits[starts[k]:starts[k + 1]] for k, i in enumerate(order)}


_MODELS: dict[str, tuple] = {}


def models(arch: str):
    """(our model, HF model) of the arch's test checkpoint, loaded once per session."""
    if arch not in _MODELS:
        path = checkpoint(arch)
        ours, _, _ = load_model(str(path), torch.float32, "cpu")
        _MODELS[arch] = ours, AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    return _MODELS[arch]


def hf_logits(hf, ids: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return hf(torch.tensor([ids])).logits[0]


def random_ids(n: int, seed: int) -> list[int]:
    return torch.randint(3, 512, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_matches_hf(arch):
    ours, hf = models(arch)
    ids = random_ids(23, seed=1)
    logits = PagedSequences(ours, [[5, 2, 9, 0, 17, 3]]).step({0: ids})[0]
    assert logits.dtype == torch.float32 and logits.shape == (23, 512)
    assert (logits - hf_logits(hf, ids)).abs().max().item() < TOL


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_decode_through_cache_matches_hf(arch):
    ours, hf = models(arch)
    seq = PagedSequences(ours, [[7, 1, 30, 12, 4]])
    ids = random_ids(9, seed=2)
    step_logits = [seq.step({0: ids})[0][-1]]
    for _ in range(8):                                   # one token at a time through the cache
        ids.append(int(step_logits[-1].argmax()))
        step_logits.append(seq.step({0: [ids[-1]]})[0][-1])
    reference = hf_logits(hf, ids)[8:]                   # HF full forward: logits at positions 8..16
    assert (torch.stack(step_logits) - reference).abs().max().item() < TOL
    assert len(set(ids[9:])) > 1                         # the tiny model does not collapse into one token


@pytest.mark.parametrize("arch", ARCHS)
def test_packed_batch_equals_each_sequence_alone(arch):
    ours, _ = models(arch)
    a, b = random_ids(9, seed=3), random_ids(13, seed=4)
    alone_a = PagedSequences(ours, [[1, 2, 3]])
    alone_b = PagedSequences(ours, [[4, 5, 6, 7]])
    packed = PagedSequences(ours, [[8, 9, 10], [11, 12, 13, 14]])
    # step 1: both prefills (different lengths); step 2: a decodes while b prefills its last chunk
    first = packed.step({0: a[:7], 1: b[:5]})
    second = packed.step({0: a[7:8], 1: b[5:]})
    expect_a = [alone_a.step({0: a[:7]})[0], alone_a.step({0: a[7:8]})[0]]
    expect_b = [alone_b.step({0: b[:5]})[0], alone_b.step({0: b[5:]})[0]]
    for got, expected in [(first[0], expect_a[0]), (second[0], expect_a[1]),
                          (first[1], expect_b[0]), (second[1], expect_b[1])]:
        assert got.shape == expected.shape
        assert (got - expected).abs().max().item() < 1e-5


def test_tied_model_shares_embedding_and_untied_does_not():
    tied, _ = models("llama-tied")
    untied, _ = models("llama")
    assert tied.lm_head.weight is tied.model.embed_tokens.weight
    assert untied.lm_head.weight.data_ptr() != untied.model.embed_tokens.weight.data_ptr()
    assert len(tied.attention_layers()) == 2 and tied.attention_layers()[1] is tied.model.layers[1].self_attn.attn


ROPE_CASES = {
    "default": {"rope_type": "default", "rope_theta": 10000.0},
    "linear": {"rope_type": "linear", "rope_theta": 10000.0, "factor": 4.0},
    "llama3": {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 8.0, "low_freq_factor": 1.0,
               "high_freq_factor": 4.0, "original_max_position_embeddings": 128},
}


@pytest.mark.parametrize("case", sorted(ROPE_CASES))
def test_rotary_matches_hf(case):
    config = LlamaConfig(hidden_size=256, num_attention_heads=4, max_position_embeddings=2048,
                         rope_parameters=dict(ROPE_CASES[case]))
    positions = torch.tensor([0, 1, 5, 77, 300, 1023, 2047])
    q, k = torch.randn(7, 4 * 64), torch.randn(7, 2 * 64)
    ours = RotaryEmbedding(64, 2048, rope_parameters_from_config(config))
    got_q, got_k = ours(positions, q, k)
    cos, sin = LlamaRotaryEmbedding(config)(q, positions[None])
    ref_q, ref_k = apply_rotary_pos_emb(q.view(1, 7, 4, 64).transpose(1, 2), k.view(1, 7, 2, 64).transpose(1, 2),
                                        cos, sin)
    assert torch.allclose(got_q, ref_q.transpose(1, 2).reshape(7, -1), atol=1e-5, rtol=0)
    assert torch.allclose(got_k, ref_k.transpose(1, 2).reshape(7, -1), atol=1e-5, rtol=0)


def test_rope_parameters_from_4x_and_5x_configs():
    old = types.SimpleNamespace(rope_theta=5e5, rope_scaling={"type": "linear", "factor": 2.0})
    assert rope_parameters_from_config(old) == {"rope_type": "linear", "rope_theta": 5e5, "factor": 2.0}
    assert rope_parameters_from_config(types.SimpleNamespace(rope_theta=1e6, rope_scaling=None)) == {
        "rope_type": "default", "rope_theta": 1e6}
    new = types.SimpleNamespace(rope_parameters={"rope_type": "default", "rope_theta": 123.0})
    assert rope_parameters_from_config(new) == {"rope_type": "default", "rope_theta": 123.0}


def test_unsupported_rope_type_is_a_clear_error():
    with pytest.raises(ValueError, match="rope_type.*'yarn'.*default, linear, llama3"):
        RotaryEmbedding(16, 64, {"rope_type": "yarn", "rope_theta": 1e4, "factor": 4.0})


def test_rmsnorm_fused_residual_equals_add_then_norm():
    norm = RMSNorm(32, eps=1e-5)
    norm.weight.copy_(torch.linspace(0.5, 1.5, 32))
    x, residual = torch.randn(5, 32), torch.randn(5, 32)
    out, new_residual = norm(x, residual)
    assert torch.equal(new_residual, x + residual)
    expected = norm.weight * (new_residual / torch.sqrt(new_residual.pow(2).mean(-1, keepdim=True) + 1e-5))
    assert torch.allclose(out, expected, atol=1e-6, rtol=0)
    assert torch.equal(norm(x + residual), out)


def test_silu_and_mul():
    x = torch.randn(3, 8)
    assert torch.equal(SiluAndMul()(x), F.silu(x[:, :4]) * x[:, 4:])


def _per_rank(tp: int, build):
    """build() on each rank of a simulated tensor-parallel group (layers only read rank/size when built)."""
    try:
        layers = []
        for rank in range(tp):
            set_tensor_parallel(rank, tp)
            layers.append(build())
        return layers
    finally:
        reset_tensor_parallel()


def test_column_and_row_parallel_shards_recombine():
    x, w, bias = torch.randn(3, 16), torch.randn(12, 16), torch.randn(12)
    cols = _per_rank(2, lambda: ColumnParallelLinear(16, 12, bias=True))
    for layer in cols:
        layer.weight.weight_loader(layer.weight, w)
        layer.bias.weight_loader(layer.bias, bias)
    assert torch.allclose(torch.cat([layer.matmul(x, layer.bias) for layer in cols], -1), F.linear(x, w, bias))
    wr = torch.randn(12, 16)
    rows = _per_rank(2, lambda: RowParallelLinear(16, 12, bias=True))
    for layer in rows:
        layer.weight.weight_loader(layer.weight, wr)
        layer.bias.weight_loader(layer.bias, bias)
    partial = [layer.matmul(x[:, 8 * r:8 * (r + 1)], bias if r == 0 else None) for r, layer in enumerate(rows)]
    assert torch.allclose(partial[0] + partial[1], F.linear(x, wr, bias), atol=1e-5)


def test_merged_column_shards_place_each_part():
    gate, up = torch.randn(8, 4), torch.randn(8, 4)
    layers = _per_rank(2, lambda: MergedColumnParallelLinear(4, [8, 8]))
    for layer in layers:
        layer.weight.weight_loader(layer.weight, gate, 0)
        layer.weight.weight_loader(layer.weight, up, 1)
    assert torch.equal(layers[1].weight, torch.cat([gate[4:], up[4:]]))
    with pytest.raises(ValueError, match="shard_id"):
        layers[0].weight.weight_loader(layers[0].weight, gate, 2)


@pytest.mark.parametrize("tp, kv_rank_of", [(2, [0, 1]), (4, [0, 0, 1, 1])])
def test_qkv_shards_split_heads_and_replicate_kv_heads(tp, kv_rank_of):
    head, heads, kv_heads = 2, 4, 2
    q, k, v = torch.randn(heads * head, 3), torch.randn(kv_heads * head, 3), torch.randn(kv_heads * head, 3)
    layers = _per_rank(tp, lambda: QKVParallelLinear(3, head, heads, kv_heads))
    q_local = heads // tp * head
    for rank, layer in enumerate(layers):
        for shard, tensor in (("q", q), ("k", k), ("v", v)):
            layer.weight.weight_loader(layer.weight, tensor, shard)
        kv = kv_rank_of[rank]
        expected = torch.cat([q[rank * q_local:(rank + 1) * q_local], k[kv * head:(kv + 1) * head],
                              v[kv * head:(kv + 1) * head]])
        assert torch.equal(layer.weight, expected)
    with pytest.raises(ValueError, match="shard_id"):
        layers[0].weight.weight_loader(layers[0].weight, q, None)


def test_vocab_parallel_embedding_pads_the_last_shard():
    table = torch.randn(7, 4)
    shards = _per_rank(2, lambda: VocabParallelEmbedding(7, 4))
    for layer in shards:
        layer.weight.weight_loader(layer.weight, table)
    assert torch.equal(shards[0].weight, table[:4])
    assert torch.equal(shards[1].weight, torch.cat([table[4:], torch.zeros(1, 4)]))
    with pytest.raises(ValueError, match="shape mismatch"):
        shards[0].weight.weight_loader(shards[0].weight, torch.randn(8, 4))
