"""Multi-LoRA serving on CPU: greedy tokens equal HF transformers + PEFT (unmerged and merged) for tiny random
adapters on every dense architecture, with adapters and the base model mixed in one batch, more adapters than
device slots (swaps), prefix caching on and preemption forced; prefix-cache isolation between adapters; no leaked
slots or blocks; clear errors for bad adapters; the shrink/expand kernels under the Triton interpreter."""
from __future__ import annotations

import functools
import json
import pathlib
import tempfile

import pytest
import torch

from llmfleet import LLM, SamplingParams
from llmfleet.kernels.lora import lora_delta_torch, lora_delta_triton, num_tiles, token_tiles
from llmfleet.protocol.lora import LoRARequest, read_adapter
from tests.checkpoints import ARCHS, checkpoint
from tests.lora_adapters import make_adapter, peft_model

NEW_TOKENS = 10
PROMPTS = [[(11 * j) % 500 + 3 for j in range(40)], [(7 * j + 5) % 500 + 3 for j in range(21)], [9, 8, 7]]


@functools.lru_cache(maxsize=None)
def adapters(arch: str) -> tuple[pathlib.Path, ...]:
    """Three adapters of different ranks and targets (the third with rsLoRA scaling)."""
    root = pathlib.Path(tempfile.mkdtemp(prefix=f"lora-{arch}-"))
    base = checkpoint(arch)
    return (make_adapter(base, root / "all-r8", seed=1, rank=8),
            make_adapter(base, root / "qv-down-r4", seed=2, rank=4, alpha=8, targets=("q_proj", "v_proj", "down_proj")),
            make_adapter(base, root / "mlp-r16", seed=3, rank=16, targets=("gate_proj", "up_proj", "o_proj", "k_proj"),
                         use_rslora=True))


def hf_greedy(arch: str, adapter: pathlib.Path | None, merged: bool) -> list[list[int]]:
    model = peft_model(checkpoint(arch), adapter, merged)
    outs = []
    with torch.no_grad():
        for prompt in PROMPTS:
            gen = model.generate(input_ids=torch.tensor([prompt]), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=10**9, pad_token_id=0)
            outs.append(gen[0, len(prompt):].tolist())
    return outs


def lora_llm(arch: str, **options) -> LLM:
    return LLM(str(checkpoint(arch)), device="cpu", dtype="float32", enable_lora=True, max_loras=2,
               max_lora_rank=16, **options)


def greedy(llm: LLM, prompts, loras) -> list[list[int]]:
    params = SamplingParams(temperature=0, max_tokens=NEW_TOKENS, ignore_eos=True)
    return [o.outputs[0].token_ids for o in llm.generate(prompts, params, lora_request=loras, use_tqdm=False)]


@pytest.mark.parametrize("arch", ARCHS)
def test_mixed_batch_matches_hf_peft(arch):
    paths = adapters(arch)
    want = {None: hf_greedy(arch, None, False)}
    for i, path in enumerate(paths):
        want[i] = hf_greedy(arch, path, merged=(i == 1))   # adapter 1 against PEFT's merge_and_unload
        assert want[i] != want[None]
    requests = [None] + [LoRARequest(f"a{i}", i + 1, str(p)) for i, p in enumerate(paths)]
    # Every prompt under every adapter and the base, interleaved; 3 adapters over 2 slots; a pool of 16 blocks of
    # 4 tokens for 12 sequences of up to 50 tokens (13 blocks), so sequences are preempted and recomputed.
    prompts = [p for p in PROMPTS for _ in requests]
    loras = [r for _ in PROMPTS for r in requests]
    llm = lora_llm(arch, num_kv_blocks=16, block_size=4, max_num_batched_tokens=64)
    got = greedy(llm, prompts, loras)
    keys = [None, 0, 1, 2]
    assert got == [want[keys[j]][i] for i in range(len(PROMPTS)) for j in range(len(requests))]
    assert llm.engine.stats().num_preemptions > 0
    slots = llm.engine.runner.lora
    assert slots.stats.evictions > 0 and len(slots._slots) <= 2
    assert llm.engine.kv.num_free_blocks == 16   # every block back (free or cached-and-evictable)


def test_prefix_cache_is_per_adapter():
    arch = "llama"
    a0, a1 = (LoRARequest(f"a{i}", i + 1, str(p)) for i, p in enumerate(adapters(arch)[:2]))
    llm = lora_llm(arch)
    prompt = PROMPTS[0]   # 40 tokens: two full blocks

    def hits(lora) -> int:
        before = llm.engine.stats().prefix_cache_hits
        greedy(llm, [prompt], [lora])
        return llm.engine.stats().prefix_cache_hits - before

    assert hits(a0) == 0
    assert hits(a1) == 0 and hits(None) == 0    # same tokens, other adapter or the base: nothing shared
    assert hits(a0) == 32 and hits(a1) == 32 and hits(None) == 32


def test_swapping_under_load_leaks_nothing():
    arch = "qwen3"
    paths = adapters(arch)
    llm = lora_llm(arch, num_kv_blocks=40, max_num_seqs=4, max_cpu_loras=2)
    engine, params = llm.engine, SamplingParams(temperature=0, max_tokens=6, ignore_eos=True)
    requests = [LoRARequest(f"a{i}", i + 1, str(paths[i % 3])) for i in range(6)]   # 6 ids, 3 folders
    for i in range(18):
        engine.add_request(f"r{i}", PROMPTS[i % 3], params, lora_request=requests[i % 6] if i % 4 else None)
    running_adapters = []
    while engine.has_unfinished_requests():
        engine.step()
        running_adapters.append({s.lora.lora_int_id for s in engine.scheduler.running if s.lora is not None})
    assert max(len(ids) for ids in running_adapters) <= 2
    slots = engine.runner.lora
    assert len(slots._slots) <= 2 and len(slots._host) <= 2 and slots.stats.slot_loads > 6
    assert engine.kv.num_free_blocks == 40


def test_bad_adapters_are_clear_value_errors(tmp_path):
    arch = "llama"
    llm = lora_llm(arch)
    with pytest.raises(ValueError, match="no adapter_config.json"):
        greedy(llm, [PROMPTS[2]], [LoRARequest("missing", 1, str(tmp_path / "nowhere"))])
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "adapter_config.json").write_text("{not json")
    with pytest.raises(ValueError, match="not valid JSON"):
        greedy(llm, [PROMPTS[2]], [LoRARequest("broken", 2, str(broken))])
    big = make_adapter(checkpoint(arch), tmp_path / "r32", seed=5, rank=32)
    with pytest.raises(ValueError, match="exceeds max_lora_rank=16"):
        greedy(llm, [PROMPTS[2]], [LoRARequest("big", 3, str(big))])
    other = make_adapter(checkpoint("qwen3"), tmp_path / "qwen3", seed=6, rank=4)   # head_dim 32: other shapes
    with pytest.raises(ValueError, match="this model needs"):
        greedy(llm, [PROMPTS[2]], [LoRARequest("other", 4, str(other))])
    with pytest.raises(ValueError, match="lora_request: this engine serves no adapters"):
        LLM(str(checkpoint(arch)), device="cpu", dtype="float32").generate(
            [PROMPTS[2]], lora_request=LoRARequest("a", 1, str(adapters(arch)[0])), use_tqdm=False)
    assert greedy(llm, [PROMPTS[2]], [None]) and not llm.engine.has_unfinished_requests()


def test_read_adapter_refuses_unsupported_options(tmp_path):
    path = adapters("llama")[0]
    info = read_adapter(str(path))
    assert info.rank == 8 and info.scale == 2.0 and len(info.modules) == 2 * 7
    for change, message in [({"use_dora": True}, "use_dora"), ({"bias": "all"}, "bias"),
                            ({"modules_to_save": ["lm_head"]}, "modules_to_save"), ({"r": 0}, "rank")]:
        folder = tmp_path / message
        folder.mkdir()
        config = json.loads((path / "adapter_config.json").read_text())
        (folder / "adapter_config.json").write_text(json.dumps({**config, **change}))
        (folder / "adapter_model.safetensors").write_bytes((path / "adapter_model.safetensors").read_bytes())
        with pytest.raises(ValueError, match=message):
            read_adapter(str(folder))
    with pytest.raises(ValueError, match="lora_int_id"):
        LoRARequest("a", 0, str(path))


def _grouping(slots: torch.Tensor, num_slots: int, size: int):
    rows = (slots >= 0).nonzero().flatten()
    ordered = rows[torch.argsort(slots[rows], stable=True)]
    order = torch.zeros(size, dtype=torch.int32)
    order[:ordered.numel()] = ordered.int()
    starts = torch.zeros(num_slots + 1, dtype=torch.int32)
    starts[1:] = torch.cumsum(torch.bincount(slots[rows], minlength=num_slots), 0).int()
    tiles = torch.tensor(token_tiles(starts.tolist(), num_tiles(size, num_slots)), dtype=torch.int32)
    return order, starts, tiles


@pytest.mark.parametrize("tokens,k,n,r,base_only", [(37, 80, 70, 24, False), (5, 64, 130, 48, False),
                                                    (70, 600, 70, 24, False),
                                                    (20, 32, 16, 16, True), (1, 48, 64, 8, False)])
def test_triton_kernels_match_the_reference(tokens, k, n, r, base_only):

    gen = torch.Generator().manual_seed(tokens)
    num_slots = 3
    x, y = torch.randn(tokens, k, generator=gen), torch.randn(tokens, n, generator=gen)
    a, b = torch.randn(num_slots, r, k, generator=gen), torch.randn(num_slots, n, r, generator=gen)
    slots = torch.full((tokens,), -1) if base_only else torch.randint(-1, num_slots, (tokens,), generator=gen)
    order, starts, tiles = _grouping(slots, num_slots, tokens + 4)
    want = lora_delta_torch(y.clone(), x, a, b, order, starts)
    got = lora_delta_triton(y.clone(), x, a, b, order, starts, tiles)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-4)
    unchanged = slots < 0
    assert torch.equal(got[unchanged], y[unchanged])   # base tokens get no delta


def test_bench_adapters_are_valid_peft_folders(tmp_path):
    import argparse

    from transformers import AutoConfig

    from llmfleet.bench import lora as bench_lora

    parser = argparse.ArgumentParser()
    bench_lora.add_arguments(parser)
    args = parser.parse_args(["--lora-adapters", "64", "--lora-rank", "12", "--max-loras", "8"])
    assert bench_lora.engine_options(args) == dict(enable_lora=True, max_loras=8, max_lora_rank=16, max_cpu_loras=4)
    config = AutoConfig.from_pretrained(checkpoint("qwen3"))
    path = bench_lora.write_adapter(str(tmp_path / "a"), config, rank=12, seed=0)
    info = read_adapter(path, 16)
    assert info.rank == 12 and info.scale == 2.0 and len(info.modules) == 7 * config.num_hidden_layers
    llm = lora_llm("qwen3")
    assert greedy(llm, [PROMPTS[2]], [LoRARequest("bench", 1, path)])   # its shapes fit the model
