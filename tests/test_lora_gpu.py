"""LoRA on a CUDA device (run with `pytest -m gpu`): the Triton shrink/expand pair against the torch reference,
inside a CUDA graph replayed under new token groupings, and the engine (CUDA graphs on) against checkpoints with
the adapters merged into their weights."""
from __future__ import annotations

import json
import shutil

import pytest
import torch

from tests.checkpoints import checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

OVERRIDES = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 num_hidden_layers=3)


def grouping(slots_of_tokens: torch.Tensor, num_slots: int, size: int):
    """(order [size], starts [S + 1], tiles) int32 on CUDA for per-token slots (-1: no adapter)."""
    from llmfleet.kernels.lora import num_tiles, token_tiles

    rows = (slots_of_tokens >= 0).nonzero().flatten()
    ordered = rows[torch.argsort(slots_of_tokens[rows], stable=True)]
    order = torch.zeros(size, dtype=torch.int32)
    order[:ordered.numel()] = ordered.int()
    starts = torch.zeros(num_slots + 1, dtype=torch.int32)
    starts[1:] = torch.cumsum(torch.bincount(slots_of_tokens[rows], minlength=num_slots), 0).int()
    tiles = torch.tensor(token_tiles(starts.tolist(), num_tiles(size, num_slots)), dtype=torch.int32)
    return order.cuda(), starts.cuda(), tiles.cuda()


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize("tokens,k,n,r", [(1, 4096, 6144, 48), (7, 512, 1536, 16), (300, 4096, 28672, 32),
                                          (2048, 14336, 4096, 16), (256, 1024, 1000, 192)])
def test_triton_matches_reference(dtype, tokens, k, n, r):
    from llmfleet.kernels.lora import lora_delta_torch, lora_delta_triton

    gen = torch.Generator().manual_seed(tokens + r)
    slots = 5
    x = torch.randn(tokens, k, generator=gen).to(dtype).cuda()
    a = (torch.randn(slots, r, k, generator=gen) * k ** -0.5).to(dtype).cuda()
    b = (torch.randn(slots, n, r, generator=gen) * 0.1).to(dtype).cuda()
    order, starts, tiles = grouping(torch.randint(-1, slots, (tokens,), generator=gen), slots, tokens + 3)
    y = torch.randn(tokens, n, generator=gen).to(dtype).cuda()
    want = lora_delta_torch(y.float().clone(), x.float(), a.float(), b.float(), order, starts)
    got = lora_delta_triton(y.clone(), x, a, b, order, starts, tiles).float()
    tol = 2e-2 if dtype == torch.bfloat16 else 1e-4
    assert ((got - want).norm() / want.norm()).item() < tol


def test_graph_replays_new_groupings():
    from llmfleet.kernels.lora import lora_delta_torch, lora_delta_triton

    tokens, k, n, r, slots = 64, 512, 768, 32, 4
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(tokens, k, generator=gen).cuda()
    a = torch.randn(slots, r, k, generator=gen).cuda()
    b = torch.randn(slots, n, r, generator=gen).cuda()
    y = torch.zeros(tokens, n, device="cuda")
    order, starts, tiles = grouping(torch.full((tokens,), -1), slots, tokens)
    lora_delta_triton(y, x, a, b, order, starts, tiles)   # compile outside the capture
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        lora_delta_triton(y, x, a, b, order, starts, tiles)
    for seed in range(3):
        assignment = torch.randint(-1, slots, (tokens,), generator=torch.Generator().manual_seed(seed))
        for buffer, new in zip((order, starts, tiles), grouping(assignment, slots, tokens)):
            buffer.copy_(new)
        y.zero_()
        graph.replay()
        want = lora_delta_torch(torch.zeros(tokens, n, device="cuda"), x, a, b, order, starts)
        assert ((y - want).norm() / want.norm()).item() < 1e-4


def merged_checkpoint(base, adapter, out):
    """A copy of `base` with W + scale * B A in place of each adapted weight (float32)."""
    from safetensors.torch import load_file, save_file

    shutil.copytree(base, out)
    weights = load_file(str(out / "model.safetensors"))
    lora = load_file(str(adapter / "adapter_model.safetensors"))
    config = json.loads((adapter / "adapter_config.json").read_text())
    scale = config["lora_alpha"] / config["r"]
    for key, a in lora.items():
        if ".lora_A." in key:
            b = lora[key.replace(".lora_A.", ".lora_B.")]
            name = key[len("base_model.model."):key.index(".lora_A.")] + ".weight"
            weights[name] = weights[name] + scale * b.float() @ a.float()
    save_file(weights, str(out / "model.safetensors"))
    return out


def test_engine_with_graphs_matches_merged_weights(tmp_path):
    from transformers import AutoConfig

    from llmfleet import LLM, SamplingParams
    from llmfleet.bench.lora import write_adapter
    from llmfleet.protocol.lora import LoRARequest

    base = checkpoint("llama", **OVERRIDES)
    config = AutoConfig.from_pretrained(base)
    adapters = [tmp_path / f"a{i}" for i in range(2)]
    for i, path in enumerate(adapters):
        write_adapter(str(path), config, rank=8 * (i + 1), seed=i, b_std=0.3, dtype=torch.float32)
    prompts = [[(7 * i + 3 * j) % 500 + 3 for j in range(5 + 37 * i)] for i in range(6)]
    params = SamplingParams(temperature=0, max_tokens=16, ignore_eos=True)
    requests = [None, LoRARequest("a0", 1, str(adapters[0])), LoRARequest("a1", 2, str(adapters[1]))] * 2
    llm = LLM(str(base), device="cuda", dtype="float32", enable_lora=True, max_loras=2, num_kv_blocks=512,
              max_lora_rank=16)
    assert llm.engine.runner.graphs is not None
    got = [o.outputs[0].token_ids for o in llm.generate(prompts, params, lora_request=requests, use_tqdm=False)]
    del llm
    want = {}
    for name, folder in (("base", base), ("a0", merged_checkpoint(base, adapters[0], tmp_path / "m0")),
                         ("a1", merged_checkpoint(base, adapters[1], tmp_path / "m1"))):
        plain = LLM(str(folder), device="cuda", dtype="float32", num_kv_blocks=512)
        want[name] = [o.outputs[0].token_ids for o in plain.generate(prompts, params, use_tqdm=False)]
        del plain
    expected = [want[r.lora_name if r else "base"][i] for i, r in enumerate(requests)]
    assert [g[0] for g in got] == [e[0] for e in expected]
    same = sum(x == y for g, e in zip(got, expected) for x, y in zip(g, e))
    assert same >= 0.9 * 16 * len(prompts), (got, expected)
    assert want["a0"][1] != want["base"][1] and want["a1"][2] != want["base"][2]  # the adapters change outputs
