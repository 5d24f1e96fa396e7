"""GPU correctness (run with `pytest -m gpu` on a CUDA machine): the engine in bf16 — Triton attention, decode
CUDA graphs — against HF transformers with eager attention, on the same random weights.

bf16 differs from exact arithmetic by itself, so each comparison is made against HF in float32 and measured
against HF's own bf16 error: the engine must be no more than twice as far from float32 as HF bf16 is. Greedy tokens
must equal HF bf16's for the first 16 tokens of every prompt, except where the two picks are a tie at bf16
precision (their float32 logits differ by less than twice HF bf16's error at that position); at most a quarter of
the prompts may end in such a tie.
"""
from __future__ import annotations

import functools
import random

import pytest
import torch

from tests.checkpoints import ARCHS, checkpoint

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]

NEW_TOKENS = 16
LENGTHS = [1, 7, 16, 33, 100, 257, 500, 900]

OVERRIDES = dict(hidden_size=256, intermediate_size=512, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                 num_hidden_layers=3)


def prompts() -> list[list[int]]:
    rng = random.Random(7)
    return [[rng.randrange(3, 512) for _ in range(n)] for n in LENGTHS]


@functools.lru_cache(maxsize=None)
def hf_model(arch: str, dtype: torch.dtype = torch.bfloat16):
    from transformers import AutoModelForCausalLM

    path = checkpoint(arch, **OVERRIDES)
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, attn_implementation="eager").cuda().eval()


def hf_logits(arch: str, ids: list[int], dtype: torch.dtype) -> torch.Tensor:
    with torch.no_grad():
        return hf_model(arch, dtype)(torch.tensor([ids], device="cuda")).logits[0].float()


def rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


@functools.lru_cache(maxsize=None)
def engine_llm(arch: str):
    from llmfleet import LLM

    return LLM(str(checkpoint(arch, **OVERRIDES)), device="cuda", dtype="bfloat16", max_num_seqs=16,
               num_kv_blocks=1024)


@pytest.mark.parametrize("arch", ARCHS)
def test_prefill_logits_close_to_hf(arch):
    from llmfleet.layers.attention import AttentionMetadata

    runner = engine_llm(arch).engine.runner
    for prompt in prompts():
        n, bs = len(prompt), runner.block_size
        blocks = torch.arange(-(-n // bs), dtype=torch.int32, device="cuda")
        meta = AttentionMetadata(
            num_seqs=1, num_decodes=int(n == 1), max_query_len=n, max_seq_len=n,
            query_start_loc=torch.tensor([0, n], dtype=torch.int32, device="cuda"),
            seq_lens=torch.tensor([n], dtype=torch.int32, device="cuda"), block_tables=blocks[None],
            slot_mapping=torch.arange(n, device="cuda"))
        with torch.inference_mode():
            ids = torch.tensor(prompt, device="cuda")
            got = runner.model.compute_logits(runner.model.forward(ids, torch.arange(n, device="cuda"), meta))
        exact = hf_logits(arch, prompt, torch.float32)
        ours, theirs = rel(got, exact), rel(hf_logits(arch, prompt, torch.bfloat16), exact)
        assert ours < 2 * theirs + 1e-3, f"{arch}, {n} tokens: error {ours:.3g} vs HF bf16's {theirs:.3g}"


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_tokens_match_hf_bf16(arch):
    from llmfleet import SamplingParams

    model = hf_model(arch)
    outs = engine_llm(arch).generate(prompts(), SamplingParams(temperature=0, max_tokens=NEW_TOKENS,
                                                               ignore_eos=True, logprobs=1))
    ties = []
    for prompt, out in zip(prompts(), outs):
        with torch.no_grad():
            gen = model.generate(torch.tensor([prompt], device="cuda"), max_new_tokens=NEW_TOKENS, do_sample=False,
                                 eos_token_id=10**9, pad_token_id=0, output_logits=True, return_dict_in_generate=True)
        ref = gen.sequences[0, len(prompt):].tolist()
        got = out.outputs[0].token_ids
        if got == ref:
            _check_logprobs(arch, prompt, out.outputs[0], gen.logits)
            continue
        step = next(i for i, (a, b) in enumerate(zip(got, ref)) if a != b)
        context = prompt + got[:step]
        exact = hf_logits(arch, context, torch.float32)[-1]
        noise = (hf_logits(arch, context, torch.bfloat16)[-1] - exact).abs().max().item()
        gap = abs(exact[ref[step]] - exact[got[step]]).item()
        assert gap <= 2 * noise, f"{arch}: token {step} of a {len(prompt)}-token prompt: float32 gap {gap:.3g} " \
                                 f"between the two picks exceeds twice HF bf16's error {noise:.3g}"
        ties.append((len(prompt), step, round(gap, 4), round(noise, 4)))
    assert len(ties) <= len(LENGTHS) // 4, f"{arch}: too many near-tie divergences {ties}"


def _check_logprobs(arch: str, prompt: list[int], completion, hf_bf16_logits) -> None:
    """The engine's logprob of each greedy token (decode steps run in CUDA graphs) is as close to float32 as HF
    bf16's is (within twice its error, plus a small floor)."""
    tokens = completion.token_ids
    exact = hf_logits(arch, prompt + tokens, torch.float32)[len(prompt) - 1:-1].log_softmax(-1)
    for i, (token, entry) in enumerate(zip(tokens, completion.logprobs)):
        want = exact[i, token].item()
        theirs = hf_bf16_logits[i][0].float().log_softmax(-1)[token].item()
        assert abs(entry[token].logprob - want) <= 2 * abs(theirs - want) + 0.02, (arch, i, entry[token], want, theirs)


def test_memory_sizing_beside_another_engine_and_the_too_small_error():
    from llmfleet import LLM

    engine_llm("qwen3")                                         # another engine already holds memory
    llm = LLM(str(checkpoint("llama", **OVERRIDES)), device="cuda", dtype="bfloat16", gpu_memory_utilization=0.2)
    runner = llm.engine.runner
    kv_bytes = runner.num_blocks * runner.bytes_per_block
    total = torch.cuda.get_device_properties(0).total_memory
    assert 0.1 * total < kv_bytes < 0.2 * total
    del llm
    with pytest.raises(ValueError, match="KV cache too small.*max_model_len"):
        LLM(str(checkpoint("llama", **OVERRIDES)), device="cuda", dtype="bfloat16", gpu_memory_utilization=0.001)
