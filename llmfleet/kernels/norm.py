"""RMSNorm and residual-add + RMSNorm: Triton kernels on CUDA, torch code elsewhere, both in Hugging Face's order.

HF's order: the input is upcast to float32, normalized there, cast back to its dtype, and only then multiplied by
the weight (so a bf16 model rounds twice). The fused form first adds the residual in the input dtype (one rounding,
as `residual + hidden` does in HF), keeps that sum as the new residual, and normalizes it.
"""
import torch

from llmfleet.kernels._triton import HAS_TRITON, check_device, next_pow2, tl, triton


@triton.jit
def _rms_norm_kernel(x_ptr, res_ptr, w_ptr, out_ptr, res_out_ptr, eps, stride_x, stride_res, stride_out,
                     HIDDEN: tl.constexpr, BLOCK: tl.constexpr, ADD_RESIDUAL: tl.constexpr):
    # One program per row; the whole row lives in registers (hidden sizes up to a few thousand).
    row = tl.program_id(0).to(tl.int64)
    cols = tl.arange(0, BLOCK)
    mask = cols < HIDDEN
    x = tl.load(x_ptr + row * stride_x + cols, mask=mask, other=0.0)                     # [BLOCK], input dtype
    if ADD_RESIDUAL:
        r = tl.load(res_ptr + row * stride_res + cols, mask=mask, other=0.0)
        x = (x.to(tl.float32) + r.to(tl.float32)).to(x.dtype)                             # rounded like HF's add
        tl.store(res_out_ptr + row * stride_res + cols, x, mask=mask)
    xf = x.to(tl.float32)
    rstd = tl.rsqrt(tl.sum(xf * xf, 0) / HIDDEN + eps)
    normed = (xf * rstd).to(x.dtype).to(tl.float32)                                       # HF: cast back first
    w = tl.load(w_ptr + cols, mask=mask, other=0.0).to(tl.float32)
    tl.store(out_ptr + row * stride_out + cols, (w * normed).to(out_ptr.dtype.element_ty), mask=mask)


def rms_norm_torch(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """HF's RMSNorm, verbatim in its order. x: [..., H]; weight: [H]."""
    xf = x.float()
    normed = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return weight * normed.to(x.dtype)


def rms_norm_triton(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    rows = _rows(x, weight, "x")
    out = torch.empty(x.shape, dtype=torch.promote_types(x.dtype, weight.dtype), device=x.device)
    _launch(rows, None, weight, out.view(-1, x.shape[-1]), None, eps)
    return out


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    """RMSNorm over the last dim of x ([..., H]) with weight [H]; out has dtype promote(x, weight)."""
    if x.is_cuda and HAS_TRITON:
        return rms_norm_triton(x, weight, eps)
    _check_weight(x, weight)
    return rms_norm_torch(x, weight, eps)


def fused_add_rms_norm_torch(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                             eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_fused(x, residual, weight)
    residual.copy_(residual + x)
    x.copy_(rms_norm_torch(residual, weight, eps))
    return x, residual


def fused_add_rms_norm_triton(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                              eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    _check_fused(x, residual, weight)
    rows = _rows(x, weight, "x")
    res = residual.view(-1, x.shape[-1])
    _launch(rows, res, weight, rows, res, eps)
    return x, residual


def fused_add_rms_norm(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, torch.Tensor]:
    """residual <- residual + x; x <- rms_norm(residual). Both in place; returns (x, residual).

    x, residual: contiguous [..., H] of one dtype; weight: [H] of that dtype.
    """
    if x.is_cuda and HAS_TRITON:
        return fused_add_rms_norm_triton(x, residual, weight, eps)
    return fused_add_rms_norm_torch(x, residual, weight, eps)


def _rows(x: torch.Tensor, weight: torch.Tensor, name: str) -> torch.Tensor:
    """x as [rows, H] without a copy where its layout allows one (the last dim must be contiguous)."""
    _check_weight(x, weight)
    check_device(_rms_norm_kernel, x, name)
    if x.stride(-1) != 1:
        x = x.contiguous()
    return x.reshape(-1, x.shape[-1])


def _check_weight(x: torch.Tensor, weight: torch.Tensor) -> None:
    if weight.shape != (x.shape[-1],):
        raise ValueError(f"weight: shape {tuple(weight.shape)}, expected ({x.shape[-1]},) to match x")


def _check_fused(x: torch.Tensor, residual: torch.Tensor, weight: torch.Tensor) -> None:
    _check_weight(x, weight)
    if residual.shape != x.shape or residual.dtype != x.dtype:
        raise ValueError(f"residual: {tuple(residual.shape)} {residual.dtype} must match x's "
                         f"{tuple(x.shape)} {x.dtype}")
    if not (x.is_contiguous() and residual.is_contiguous()):
        raise ValueError("x/residual: must be contiguous (both are written in place)")
    if weight.dtype != x.dtype:
        raise ValueError(f"weight: dtype {weight.dtype} must match x's {x.dtype} (the result is written into x)")


def _launch(rows, res, weight, out, res_out, eps: float) -> None:
    num_rows, hidden = rows.shape
    if num_rows == 0:
        return
    block = next_pow2(hidden)
    add = res is not None
    _rms_norm_kernel[(num_rows,)](
        rows, res if add else rows, weight.contiguous(), out, res_out if add else out, float(eps),
        rows.stride(0), res.stride(0) if add else 0, out.stride(0),
        HIDDEN=hidden, BLOCK=block, ADD_RESIDUAL=add, num_warps=min(16, max(1, block // 256)),
    )
