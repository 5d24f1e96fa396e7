"""Triton, when it is installed; a stand-in that fails clearly when it is not.

Kernel modules import `triton` and `tl` from here, so that importing them (and using their torch fallbacks) works on a
machine without Triton. Calling a kernel there raises RuntimeError.
"""
from __future__ import annotations

try:
    import triton
    import triton.language as tl
    HAS_TRITON = True
except ImportError:  # pragma: no cover - exercised only where Triton is absent
    HAS_TRITON = False

    class _MissingKernel:
        def __init__(self, fn):
            self.fn = fn

        def __getitem__(self, grid):
            raise RuntimeError(f"{self.fn.__name__}: Triton is not installed; use the torch fallback")

    class _Language:
        constexpr = object  # only used in annotations of kernels that never run

    class _Triton:
        @staticmethod
        def jit(fn=None, **_):
            return _MissingKernel(fn) if fn is not None else _MissingKernel

        @staticmethod
        def next_power_of_2(n: int) -> int:
            return 1 << max(0, int(n) - 1).bit_length()

        @staticmethod
        def cdiv(a: int, b: int) -> int:
            return -(-a // b)

    triton, tl = _Triton(), _Language()


def is_interpreted(kernel) -> bool:
    """True when `kernel` was defined under TRITON_INTERPRET=1 (runs on CPU tensors through numpy)."""
    return type(kernel).__name__ == "InterpretedFunction"


def check_device(kernel, tensor, name: str) -> None:
    """A compiled kernel needs CUDA tensors; an interpreted one takes CPU tensors."""
    if not HAS_TRITON:
        raise RuntimeError(f"{name}: Triton is not installed")
    if tensor.device.type != "cuda" and not is_interpreted(kernel):
        raise ValueError(f"{name}: on {tensor.device}, but Triton kernels need a CUDA tensor "
                         "(or TRITON_INTERPRET=1 set before llmfleet.kernels is imported)")


def next_pow2(n: int, minimum: int = 1) -> int:
    return max(minimum, triton.next_power_of_2(n))
