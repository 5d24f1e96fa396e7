"""fp8 KV cache and quantized GEMMs compiled on a CUDA device (`pytest -m gpu -k quant`)."""
from __future__ import annotations

import pytest
import torch

pytestmark = [pytest.mark.gpu, pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")]
FP8 = torch.float8_e4m3fn


def test_quant_kv_write_rounds_like_torch_on_the_gpu():
    from llmfleet.kernels.kv_write import write_kv
    x = torch.randn(256, 8, 128, device="cuda", dtype=torch.bfloat16) * 5
    cache = torch.zeros(2, 64, 16, 8, 128, dtype=FP8, device="cuda")
    scales = (torch.tensor(0.5, device="cuda"), torch.tensor(2.0, device="cuda"))
    write_kv(cache, x, x, torch.arange(256, device="cuda"), scales)
    flat = cache.view(2, -1, 8, 128)[:, :256].float()
    assert torch.equal(flat[0], (x.float() / 0.5).clamp(-448, 448).to(FP8).float())
    assert torch.equal(flat[1], (x.float() / 2.0).clamp(-448, 448).to(FP8).float())


def test_quant_fp8_kv_attention_matches_the_torch_reference_in_bf16():
    from tests.test_triton_attention import TritonAttentionBackend, make_batch
    from llmfleet.model.layers.attention import TorchAttentionBackend
    q, k, v, cache, meta, starts, seq_lens = make_batch([100, 700, 3], [(0, 300), (129, 64)], 8, 4, 128, 16,
                                                        torch.bfloat16, "cuda", 7)
    scales = (torch.tensor(0.5, device="cuda"), torch.tensor(1.5, device="cuda"))
    stored = cache.float().div(torch.tensor([0.5, 1.5], device="cuda").view(2, 1, 1, 1, 1)).to(FP8)
    a, b = stored.clone(), stored.clone()
    meta.query_start_loc_cpu, meta.seq_lens_cpu = starts, seq_lens
    ref = TorchAttentionBackend().forward(q, k, v, a, meta, 0.088, kv_scales=scales)
    out = TritonAttentionBackend().forward(q, k, v, b, meta, 0.088, kv_scales=scales)
    assert torch.equal(a.float(), b.float())
    assert (out.float() - ref.float()).abs().max() < 2e-2


@pytest.mark.parametrize("quant", ["int8", "int4", "fp8"])
@pytest.mark.parametrize("m", [1, 7, 300])
def test_quant_linear_compiled_matches_the_dequantized_product(quant, m):
    """The Triton GEMM (split-K at m <= 16) and torch._scaled_mm against the same weights dequantized."""
    from llmfleet.model.layers.linear import RowParallelLinear
    from llmfleet.model.layers.quantization import linear_method_for, linear_method_scope
    from llmfleet.model.layers.quantization.fp8 import quantize_fp8_rows
    torch.manual_seed(0)
    with torch.device("cuda"), linear_method_scope(linear_method_for(quant, None)):
        layer = RowParallelLinear(4096, 1024)
    w = torch.randn(1024, 4096, device="cuda") * 0.02
    layer.weight.data.copy_(w)
    layer.quant_method.process_after_loading(layer)
    x = torch.randn(m, 4096, device="cuda", dtype=torch.bfloat16)
    y = layer.matmul(x, None).float()
    if quant == "fp8":
        xq, xs = quantize_fp8_rows(x)
        ref = (xq.float() * xs) @ (layer.weight.float() * layer.weight_scale[:, None]).t()
    else:
        ref = x.float() @ layer.quant_method.dequantize(layer).t()
    assert (y - ref).norm() / ref.norm() < 1e-2
    exact = x.float() @ w.t()
    assert (y - exact).norm() / exact.norm() < {"int8": 0.02, "fp8": 0.07, "int4": 0.13}[quant]
