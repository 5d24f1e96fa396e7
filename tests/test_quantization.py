"""Quantized linear methods against the float reference (CPU), the int4/int8 Triton GEMM under the interpreter,
GPTQ and AWQ layouts built here from a float weight, tensor-parallel shards, flags and errors."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from llmfleet.kernels.quant_matmul import quant_matmul
from llmfleet.model.layers.linear import MergedColumnParallelLinear, QKVParallelLinear, RowParallelLinear
from llmfleet.model.layers.quantization import linear_method_for, linear_method_scope, packing
from llmfleet.model.layers.quantization.fp8 import Fp8Checkpoint, quantize_fp8_rows
from llmfleet.model.layers.quantization.int4 import Int4Checkpoint
from llmfleet.model.parallel_state import reset_tensor_parallel, set_tensor_parallel
from llmfleet.protocol.config import EngineConfig

# Output error relative to the output's norm, for normal weights and activations: int8 (per-channel, step
# max/127) ~1%, fp8 e4m3 on weights and activations (3 mantissa bits) ~4%, int4 (step range/15 per group) ~9%.
BOUNDS = {"int8": 0.02, "fp8": 0.07, "int4": 0.13}


def rel_err(y: torch.Tensor, ref: torch.Tensor) -> float:
    return ((y.float() - ref.float()).norm() / ref.float().norm()).item()


def build(method, make, tp: int = 1):
    """make() on each rank of a simulated tensor-parallel group, with `method` in scope."""
    try:
        layers = []
        for rank in range(tp):
            set_tensor_parallel(rank, tp)
            with linear_method_scope(method):
                layers.append(make())
        return layers
    finally:
        reset_tensor_parallel()


def finish(layer):
    layer.quant_method.process_after_loading(layer)
    return layer


@pytest.mark.parametrize("quant", ["int8", "int4", "fp8"])
def test_quantized_at_load_matches_float_within_the_formats_error(quant):
    gen = torch.Generator().manual_seed(0)
    w, bias, x = torch.randn(48, 256, generator=gen), torch.randn(48, generator=gen), torch.randn(5, 256, generator=gen)
    (layer,) = build(linear_method_for(quant, None), lambda: MergedColumnParallelLinear(256, [16, 32], bias=True))
    layer.weight.weight_loader(layer.weight, w[:16], 0)
    layer.weight.weight_loader(layer.weight, w[16:], 1)
    layer.bias.weight_loader(layer.bias, bias[:16], 0)
    layer.bias.weight_loader(layer.bias, bias[16:], 1)
    finish(layer)
    assert "weight" not in dict(layer.named_parameters())  # the float copy is gone
    ref = F.linear(x, w, bias)
    err = rel_err(layer(x), ref)
    assert 0 < err < BOUNDS[quant], err


@pytest.mark.parametrize("inputs, group", [(576, 64), (1536, 128), (208, 16)])
def test_int4_at_load_takes_the_largest_group_that_divides_the_inputs(inputs, group):
    gen = torch.Generator().manual_seed(0)
    w, x = torch.randn(32, inputs, generator=gen), torch.randn(3, inputs, generator=gen)
    (layer,) = build(linear_method_for("int4", None), lambda: RowParallelLinear(inputs, 32))
    layer.weight.weight_loader(layer.weight, w)
    finish(layer)
    assert tuple(layer.scales.shape) == (inputs // group, 32)
    assert 0 < rel_err(layer(x), F.linear(x, w)) < BOUNDS["int4"]


def test_int4_at_load_refuses_inputs_no_group_divides():
    with pytest.raises(ValueError, match="divisible by 16"):
        build(linear_method_for("int4", None), lambda: RowParallelLinear(40, 32))


def test_row_parallel_int4_shards_the_float_weight_then_quantizes():
    gen = torch.Generator().manual_seed(1)
    w, x = torch.randn(32, 512, generator=gen), torch.randn(3, 512, generator=gen)
    layers = build(linear_method_for("int4", None), lambda: RowParallelLinear(512, 32), tp=2)
    for layer in layers:
        layer.weight.weight_loader(layer.weight, w)
        finish(layer)
    y = sum(layer.matmul(x[:, 256 * r:256 * (r + 1)], None) for r, layer in enumerate(layers))
    assert rel_err(y, F.linear(x, w)) < BOUNDS["int4"]
    # each rank quantized only its own columns: its groups' scales are those of its slice
    _, scales, _ = packing.quantize_int4(w[:, 256:], 128)
    assert torch.equal(layers[1].scales, scales.t())


@pytest.mark.parametrize("bits", [4, 8])
def test_triton_quant_matmul_equals_dequantized_product(bits):
    gen = torch.Generator().manual_seed(2)
    k, n, group = 64, 48, 32 if bits == 4 else 64
    w, x = torch.randn(n, k, generator=gen), torch.randn(3, k, generator=gen)
    if bits == 4:
        q, scales, zeros = packing.quantize_int4(w, group)
        qweight, s, z = packing.pack_rows(q.t()), scales.t().contiguous(), zeros.t().contiguous()
        deq = packing.dequantize_int4(q, scales, zeros)
    else:
        scales = w.abs().amax(1) / 127
        q8 = (w / scales[:, None]).round().to(torch.int8)
        qweight, s, z = q8.t().contiguous(), scales[None, :].contiguous(), None
        deq = q8.float() * scales[:, None]
    ref = x @ deq.t()
    for split in (1, 2):  # the decode split adds float32 partial sums
        cfg = dict(block_m=16, block_n=16, block_k=16, split_k=split, num_warps=4, num_stages=1)
        y = quant_matmul(x, qweight, s, z, bits=bits, group_size=group, config=cfg)
        assert torch.allclose(y, ref, atol=1e-4, rtol=1e-4)


def test_pack_orders_follow_the_formats():
    cols = torch.arange(8, dtype=torch.uint8)[None, :]          # column j holds value j
    assert packing.pack_cols(cols).item() == 0x76543210            # GPTQ qzeros: sequential nibbles
    assert packing.pack_cols(cols, packing.AWQ_ORDER).item() == 0x75316420  # AWQ: nibble i <- column order[i]
    rows = torch.arange(8, dtype=torch.uint8)[:, None]
    assert packing.pack_rows(rows).item() == 0x76543210            # GPTQ qweight / ours: along the input
    q = torch.randint(0, 16, (16, 24), dtype=torch.uint8)
    assert torch.equal(packing.unpack_rows(packing.pack_rows(q)), q)
    assert torch.equal(packing.unpack_cols(packing.pack_cols(q, packing.AWQ_ORDER), packing.AWQ_ORDER), q)


def gptq_tensors(w: torch.Tensor, group: int) -> dict:
    """A GPTQ checkpoint's tensors of float weight w [N, K]: zeros stored minus one, scales in float16."""
    q, scales, zeros = packing.quantize_int4(w, group)
    return dict(qweight=packing.pack_rows(q.t()), qzeros=packing.pack_cols((zeros - 1).t().to(torch.uint8)),
                scales=scales.t().half(), g_idx=torch.arange(w.shape[1], dtype=torch.int32) // group)


def awq_tensors(w: torch.Tensor, group: int) -> dict:
    q, scales, zeros = packing.quantize_int4(w, group)
    return dict(qweight=packing.pack_cols(q.t(), packing.AWQ_ORDER),
                qzeros=packing.pack_cols(zeros.t().to(torch.uint8), packing.AWQ_ORDER), scales=scales.t().half())


def dequantized(w: torch.Tensor, group: int) -> torch.Tensor:
    q, scales, zeros = packing.quantize_int4(w, group)
    return packing.dequantize_int4(q, scales.half().float(), zeros)


@pytest.mark.parametrize("layout, tensors", [("gptq", gptq_tensors), ("awq", awq_tensors)])
@pytest.mark.parametrize("tp", [1, 2])
def test_gptq_and_awq_layouts_load_into_sharded_qkv(layout, tensors, tp):
    gen = torch.Generator().manual_seed(3)
    head, heads, kv_heads, hidden, group = 16, 4, 2, 128, 32
    parts = {"q": torch.randn(heads * head, hidden, generator=gen), "k": torch.randn(kv_heads * head, hidden,
             generator=gen), "v": torch.randn(kv_heads * head, hidden, generator=gen)}
    layers = build(Int4Checkpoint(layout, group), lambda: QKVParallelLinear(hidden, head, heads, kv_heads), tp)
    x = torch.randn(4, hidden, generator=gen)
    outputs = []
    for layer in layers:
        for shard, w in parts.items():
            for name, t in tensors(w, group).items():
                getattr(layer, name).weight_loader(getattr(layer, name), t, shard)
        outputs.append(layer(x))
    # this rank's q heads, then its k and v heads: the same order as the float layer's output
    q_per, kv_per = heads // tp * head, kv_heads // tp * head
    chunks = {s: [dequantized(w, group)[r * n:(r + 1) * n] for r in range(tp)]
              for s, w, n in (("q", parts["q"], q_per), ("k", parts["k"], kv_per), ("v", parts["v"], kv_per))}
    for rank, y in enumerate(outputs):
        ref = x @ torch.cat([chunks["q"][rank], chunks["k"][rank], chunks["v"][rank]]).t()
        assert torch.allclose(y, ref, atol=1e-4), rank
    q_float = torch.cat([y[:, :q_per] for y in outputs], -1)
    assert rel_err(q_float, x @ parts["q"].t()) < BOUNDS["int4"]


def test_gptq_row_parallel_splits_the_input_groups():
    gen = torch.Generator().manual_seed(4)
    w, x, group = torch.randn(16, 128, generator=gen), torch.randn(2, 128, generator=gen), 32
    layers = build(Int4Checkpoint("gptq", group), lambda: RowParallelLinear(128, 16), tp=2)
    for layer in layers:
        for name, t in gptq_tensors(w, group).items():
            getattr(layer, name).weight_loader(getattr(layer, name), t)
    y = sum(layer.matmul(x[:, 64 * r:64 * (r + 1)], None) for r, layer in enumerate(layers))
    assert torch.allclose(y, x @ dequantized(w, group).t(), atol=1e-4)


def test_act_order_gptq_is_refused():
    (layer,) = build(Int4Checkpoint("gptq", 32), lambda: RowParallelLinear(64, 16))
    g_idx = torch.arange(64, dtype=torch.int32).flip(0) // 32
    with pytest.raises(ValueError, match="g_idx"):
        layer.g_idx.weight_loader(layer.g_idx, g_idx)


@pytest.mark.parametrize("per_tensor", [True, False])
def test_fp8_checkpoint_scales_per_tensor_or_per_channel(per_tensor):
    gen = torch.Generator().manual_seed(5)
    gate, up, x = torch.randn(32, 64, generator=gen), torch.randn(32, 64, generator=gen), torch.randn(3, 64,
                                                                                                    generator=gen)
    layers = build(Fp8Checkpoint(), lambda: MergedColumnParallelLinear(64, [32, 32]), tp=2)
    refs = []
    for shard, w in ((0, gate), (1, up)):
        if per_tensor:
            scale = w.abs().max() / 448
            q, s = (w / scale).to(torch.float8_e4m3fn), scale.reshape(1)
        else:
            q, s = quantize_fp8_rows(w)
        refs.append(q.float() * s.reshape(-1, 1))
        for layer in layers:
            layer.weight.weight_loader(layer.weight, q, shard)
            layer.weight_scale.weight_loader(layer.weight_scale, s, shard)
    xq, xs = quantize_fp8_rows(x)
    x_deq = xq.float() * xs
    for rank, layer in enumerate(layers):
        w_local = torch.cat([refs[0][16 * rank:16 * (rank + 1)], refs[1][16 * rank:16 * (rank + 1)]])
        assert torch.allclose(layer(x), x_deq @ w_local.t(), atol=1e-4)


def test_bad_values_name_their_field():
    with pytest.raises(ValueError, match="quantization"):
        EngineConfig(model="m", quantization="int3")
    with pytest.raises(ValueError, match="kv_cache_dtype"):
        EngineConfig(model="m", kv_cache_dtype="int8")
    with pytest.raises(ValueError, match="quantization"):
        linear_method_for("int3", None)
    with pytest.raises(ValueError, match="group_size"):
        Int4Checkpoint("gptq", 100)


def test_flags_reach_the_engine_config(tmp_path):
    from llmfleet.entrypoints.cli import build_parser
    from llmfleet.entrypoints.serve import build_configs
    parser = build_parser()
    _, engine = build_configs(parser.parse_args(["serve", "--model", str(tmp_path), "--quantization", "int4",
                                                 "--kv-cache-dtype", "fp8"]))
    assert (engine.quantization, engine.kv_cache_dtype) == ("int4", "fp8")
    gen = parser.parse_args(["generate", "--prompt", "hi", "--quantization", "fp8"])
    bench = parser.parse_args(["bench", "offline", "--shape", "x", "--workload", "W0", "--quantization", "int8",
                               "--kv-cache-dtype", "fp8"])
    assert (gen.quantization, bench.quantization, bench.kv_cache_dtype) == ("fp8", "int8", "fp8")
    with pytest.raises(SystemExit):
        parser.parse_args(["serve", "--quantization", "int3"])
