"""Fused norm, activation and rotary kernels against their torch fallbacks and against HF's own modules.

Without CUDA the Triton kernels run under the interpreter (float32; tests/conftest.py sets TRITON_INTERPRET), and
the torch fallbacks are checked against HF's modules in bf16. `-m gpu` runs the compiled kernels in bf16 at model
sizes.
"""

import pytest
import torch
from transformers.models.llama.modeling_llama import LlamaRMSNorm, apply_rotary_pos_emb

from llmfleet.kernels import activation, norm, rotary

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def randn(*shape, dtype=torch.float32, seed=0):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed)).to(dtype).to(DEVICE)


def hf_rms_norm(x, weight, eps):
    module = LlamaRMSNorm(x.shape[-1], eps=eps).to(x.device, weight.dtype)
    module.weight.data.copy_(weight)
    return module(x)


def hf_rotary(positions, q, k, cache, head_dim):
    """HF's apply_rotary_pos_emb on [1, H, T, D] tensors, rotating the first rot_dim dims (partial rotary)."""
    rot = cache.shape[1]
    cos, sin = cache[positions].chunk(2, dim=-1)
    cos, sin = torch.cat([cos, cos], -1)[None].to(q.dtype), torch.cat([sin, sin], -1)[None].to(q.dtype)
    q4 = q.view(q.shape[0], -1, head_dim).transpose(0, 1)[None]                                   # [1, H, T, D]
    k4 = k.view(k.shape[0], -1, head_dim).transpose(0, 1)[None]
    qr, kr = apply_rotary_pos_emb(q4[..., :rot], k4[..., :rot], cos, sin)
    q_out, k_out = q4.clone(), k4.clone()
    q_out[..., :rot], k_out[..., :rot] = qr, kr
    return q_out[0].transpose(0, 1).reshape(q.shape), k_out[0].transpose(0, 1).reshape(k.shape)


# ---- torch fallbacks are HF's numerics (bf16 on the CPU, bit for bit) -------------------------------------------

def test_torch_fallbacks_match_hf_bitwise_in_bf16():
    x, res = randn(9, 64, dtype=torch.bfloat16, seed=1), randn(9, 64, dtype=torch.bfloat16, seed=2)
    w = (1 + 0.1 * randn(64, seed=3)).to(torch.bfloat16)
    assert torch.equal(norm.rms_norm_torch(x, w, 1e-6), hf_rms_norm(x, w, 1e-6))
    out, new_res = norm.fused_add_rms_norm_torch(x.clone(), res.clone(), w, 1e-6)
    assert torch.equal(new_res, res + x) and torch.equal(out, hf_rms_norm(res + x, w, 1e-6))
    gate_up = randn(5, 2 * 48, dtype=torch.bfloat16, seed=4)
    gate, up = gate_up.chunk(2, -1)
    assert torch.equal(activation.silu_and_mul_torch(gate_up), torch.nn.functional.silu(gate) * up)
    cache = rotary.make_cos_sin_cache(16, 64, 10000.0)
    q, k, pos = randn(6, 4 * 32, dtype=torch.bfloat16, seed=5), randn(6, 2 * 32, dtype=torch.bfloat16, seed=6), \
        torch.tensor([0, 5, 63, 7, 7, 30], device=DEVICE)
    want_q, want_k = hf_rotary(pos, q, k, cache.to(DEVICE), 32)
    rotary.apply_rotary_torch(pos, q, k, cache.to(DEVICE), 32)
    assert torch.equal(q, want_q) and torch.equal(k, want_k)


def test_bad_inputs_name_the_field():
    x = randn(3, 8)
    with pytest.raises(ValueError, match="weight"):
        norm.rms_norm(x, randn(7), 1e-6)
    with pytest.raises(ValueError, match="residual"):
        norm.fused_add_rms_norm(x, randn(3, 7), randn(8), 1e-6)
    with pytest.raises(ValueError, match="x"):
        activation.silu_and_mul(randn(3, 7))
    with pytest.raises(ValueError, match="cos_sin_cache"):
        rotary.apply_rotary(torch.zeros(3, dtype=torch.long), randn(3, 16), randn(3, 16), randn(10, 17), 16)
    with pytest.raises(ValueError, match="heads of a token"):
        rotary.apply_rotary(torch.zeros(3, dtype=torch.long), randn(3, 2, 32)[:, :, :16], randn(3, 16),
                            randn(10, 16), 16)


# ---- Triton kernels against the fallbacks (interpreter on CPU, float32) -----------------------------------------

@pytest.mark.parametrize("shape", [(7, 96), (2, 3, 64), (1, 33)])
def test_rms_norm_kernels(shape):
    x, res, w = randn(*shape, seed=1), randn(*shape, seed=2), randn(shape[-1], seed=3)
    torch.testing.assert_close(norm.rms_norm_triton(x, w, 1e-5), norm.rms_norm_torch(x, w, 1e-5),
                               rtol=1e-6, atol=1e-6)
    strided = randn(shape[0], 2 * shape[-1], seed=4)[:, ::2]  # a non-contiguous last dim is copied first
    torch.testing.assert_close(norm.rms_norm_triton(strided, w, 1e-5), norm.rms_norm_torch(strided, w, 1e-5),
                               rtol=1e-6, atol=1e-6)
    want_out, want_res = norm.fused_add_rms_norm_torch(x.clone(), res.clone(), w, 1e-5)
    x_buf, res_buf = x.clone(), res.clone()
    out, new_res = norm.fused_add_rms_norm_triton(x_buf, res_buf, w, 1e-5)
    assert out.data_ptr() == x_buf.data_ptr() and new_res.data_ptr() == res_buf.data_ptr()  # in place
    torch.testing.assert_close(new_res, want_res, rtol=0, atol=0)
    torch.testing.assert_close(out, want_out, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("shape", [(5, 2 * 48), (2, 3, 2 * 40), (1, 2 * 1500)])
def test_silu_and_mul_kernel(shape):
    x = randn(*shape, seed=7) * 4
    torch.testing.assert_close(activation.silu_and_mul_triton(x), activation.silu_and_mul_torch(x),
                               rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("num_heads,num_kv_heads,head_dim,rot_dim", [(4, 2, 32, 32), (3, 1, 32, 16), (2, 2, 24, 24)])
def test_rotary_kernel_on_fused_qkv_slices(num_heads, num_kv_heads, head_dim, rot_dim):
    tokens = 11
    qkv = randn(tokens, (num_heads + 2 * num_kv_heads) * head_dim, seed=8)
    cache = rotary.make_cos_sin_cache(rot_dim, 100, 10000.0).to(DEVICE)
    pos = torch.randint(0, 100, (tokens,), generator=torch.Generator().manual_seed(9)).to(DEVICE)
    q, k = qkv[:, :num_heads * head_dim], qkv[:, num_heads * head_dim:(num_heads + num_kv_heads) * head_dim]
    want_q, want_k = hf_rotary(pos, q, k, cache, head_dim)
    v_before = qkv[:, (num_heads + num_kv_heads) * head_dim:].clone()
    rotary.apply_rotary_triton(pos, q, k, cache, head_dim)
    torch.testing.assert_close(q, want_q, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(k, want_k, rtol=1e-6, atol=1e-6)
    assert torch.equal(qkv[:, (num_heads + num_kv_heads) * head_dim:], v_before)  # v untouched


# ---- GPU: compiled kernels in bf16 at model sizes ---------------------------------------------------------------

def agreement(name, out, ref):
    """(fraction of elements bitwise equal, largest difference in units of ref's bf16 spacing), printed."""
    out64, ref64 = out.double().flatten(), ref.double().flatten()
    nonzero = ref64 != 0  # exact zeros (cancellations) count in the bitwise fraction only
    spacing = torch.exp2(torch.floor(torch.log2(ref64[nonzero].abs())) - 7)
    ulps = ((out64[nonzero] - ref64[nonzero]).abs() / spacing).max().item()
    exact = (out64 == ref64).double().mean().item()
    print(f"{name}: bitwise equal {exact:.5f}, max {ulps:.2f} ulp")
    return exact, ulps


def same_rounding(name, out, ref):
    """Equal but for rare one-step differences (float32 sums taken in another order flip a rounding now and then);
    a kernel that rounds in another order than HF differs in far more than 1% of elements."""
    exact, ulps = agreement(name, out, ref)
    return exact >= 0.99 and ulps <= 2


@pytest.mark.gpu
@pytest.mark.parametrize("hidden", [1024, 4096])
def test_gpu_norms_bf16(hidden):
    x, res = randn(3000, hidden, dtype=torch.bfloat16, seed=1), randn(3000, hidden, dtype=torch.bfloat16, seed=2)
    w = (1 + 0.1 * randn(hidden, seed=3)).to(torch.bfloat16)
    assert same_rounding(f"rms_norm {hidden}", norm.rms_norm(x, w, 1e-6), hf_rms_norm(x, w, 1e-6))
    want_out, want_res = norm.fused_add_rms_norm_torch(x.clone(), res.clone(), w, 1e-6)
    got_out, got_res = norm.fused_add_rms_norm(x.clone(), res.clone(), w, 1e-6)
    assert torch.equal(got_res, want_res)
    assert same_rounding(f"fused_add_rms_norm {hidden}", got_out, want_out)


@pytest.mark.gpu
def test_gpu_silu_and_mul_bf16():
    x = randn(2000, 2 * 14336, dtype=torch.bfloat16, seed=4) * 3
    assert same_rounding("silu_and_mul", activation.silu_and_mul(x), activation.silu_and_mul_torch(x))


@pytest.mark.gpu
def test_gpu_rotary_bf16():
    qkv = randn(2000, (32 + 16) * 128, dtype=torch.bfloat16, seed=5)
    q, k = qkv[:, :32 * 128], qkv[:, 32 * 128:40 * 128]
    cache = rotary.make_cos_sin_cache(128, 40000, 500000.0).to(DEVICE)
    pos = torch.randint(0, 40000, (2000,), device=DEVICE)
    want_q, want_k = hf_rotary(pos, q, k, cache, 128)
    fallback_q, fallback_k = rotary.apply_rotary_torch(pos, q.clone(), k.clone(), cache, 128)
    agreement("rotary: torch fallback vs HF", fallback_q, want_q)
    rotary.apply_rotary(pos, q, k, cache, 128)
    agreement("rotary: kernel vs torch fallback", q, fallback_q)
    assert same_rounding("rotary q", q, want_q) and same_rounding("rotary k", k, want_k)
