"""SiLU-and-multiply for gated MLPs: out = silu(gate) * up, with x = [gate | up] along the last dim.

Rounded like HF's `act_fn(gate_proj(x)) * up_proj(x)`: silu is computed in float32 and cast to the input dtype,
then the product of two input-dtype values is rounded once more.
"""
import torch
import torch.nn.functional as F

from llmfleet.kernels._triton import HAS_TRITON, check_device, tl, triton

_BLOCK = 1024


@triton.jit
def _silu_and_mul_kernel(x_ptr, out_ptr, stride_x, stride_out, INTER: tl.constexpr, BLOCK: tl.constexpr):
    # Grid: (rows, column blocks of the intermediate size).
    row = tl.program_id(0).to(tl.int64)
    cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    mask = cols < INTER
    gate = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)
    up = tl.load(x_ptr + row * stride_x + INTER + cols, mask=mask, other=0.0)
    g = gate.to(tl.float32)
    act = (g / (1.0 + tl.exp(-g))).to(gate.dtype).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (act * up.to(tl.float32)).to(out_ptr.dtype.element_ty), mask=mask)


def silu_and_mul_torch(x: torch.Tensor) -> torch.Tensor:
    gate, up = x.chunk(2, dim=-1)
    return F.silu(gate) * up


def silu_and_mul_triton(x: torch.Tensor) -> torch.Tensor:
    _check(x)
    check_device(_silu_and_mul_kernel, x, "x")
    inter = x.shape[-1] // 2
    rows = (x if x.stride(-1) == 1 else x.contiguous()).reshape(-1, 2 * inter)
    out = torch.empty((*x.shape[:-1], inter), dtype=x.dtype, device=x.device)
    if rows.shape[0]:
        _silu_and_mul_kernel[(rows.shape[0], triton.cdiv(inter, _BLOCK))](
            rows, out, rows.stride(0), inter, INTER=inter, BLOCK=_BLOCK, num_warps=4)
    return out


def silu_and_mul(x: torch.Tensor) -> torch.Tensor:
    """x: [..., 2 * I] = [gate | up] -> [..., I]."""
    if x.is_cuda and HAS_TRITON:
        return silu_and_mul_triton(x)
    _check(x)
    return silu_and_mul_torch(x)


def _check(x: torch.Tensor) -> None:
    if x.dim() == 0 or x.shape[-1] % 2:
        raise ValueError(f"x: last dim must be even ([gate | up]), got shape {tuple(x.shape)}")
