"""The sparse24 linear method on CUDA: weights compressed to semi-structured sparse tensors, products equal to the
dense masked ones for decode and prefill sizes, and a pruned model served by the engine (CUDA graphs included)."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from llmfleet.model.layers.quantization.sparse24 import Sparse24, two_four_mask

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]


@pytest.mark.parametrize("tokens", [1, 7, 64, 2048])
def test_semi_structured_product_matches_the_dense_masked_one(tokens):
    gen = torch.Generator(device="cuda").manual_seed(0)
    weight = torch.randn(960, 576, device="cuda", dtype=torch.bfloat16, generator=gen)
    weight = weight * two_four_mask(weight.abs().float()).to(weight.dtype)          # [out, in], 2:4
    layer = nn.Module()
    layer.weight = nn.Parameter(weight.clone(), requires_grad=False)
    method = Sparse24()
    method.process_after_loading(layer)
    assert layer.sparse
    x = torch.randn(tokens, 576, device="cuda", dtype=torch.bfloat16, generator=gen)  # [T, in]
    bias = torch.randn(960, device="cuda", dtype=torch.bfloat16, generator=gen)
    ref = torch.nn.functional.linear(x.float(), weight.float(), bias.float())
    got = method.apply(layer, x, bias)
    assert got.shape == (tokens, 960)
    torch.testing.assert_close(got.float(), ref, atol=0.25, rtol=0.02)


def test_a_pruned_model_is_served_with_sparse_layers(tiny_checkpoint, tmp_path):
    from transformers import LlamaConfig, LlamaForCausalLM

    from llmfleet.entrypoints.llm import LLM
    from llmfleet.lifecycle.prune import prune
    from llmfleet.protocol.sampling_params import SamplingParams
    from transformers import AutoTokenizer
    config = LlamaConfig(vocab_size=512, hidden_size=256, intermediate_size=512, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.2, bos_token_id=1,
                         eos_token_id=2, pad_token_id=0, max_position_embeddings=2048)
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(tmp_path / "dense")
    AutoTokenizer.from_pretrained(tiny_checkpoint("llama")).save_pretrained(tmp_path / "dense")
    prune(str(tmp_path / "dense"), "magnitude", tmp_path / "pruned")
    llm = LLM(str(tmp_path / "pruned"), dtype="bfloat16", gpu_memory_utilization=0.2)
    flags = [m.sparse for m in llm.engine.runner.model.modules() if hasattr(m, "sparse")]
    assert flags and all(flags)
    outputs = llm.generate(["hello world", "the fox"] * 8, SamplingParams(temperature=0, max_tokens=32,
                                                                          ignore_eos=True), use_tqdm=False)
    assert all(len(o.outputs[0].token_ids) == 32 for o in outputs)
    assert outputs[0].outputs[0].token_ids == outputs[2].outputs[0].token_ids  # same prompt, same greedy answer
