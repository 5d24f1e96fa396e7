"""Shared pytest fixtures."""
from __future__ import annotations

import os

import pytest
import torch

# Triton kernels run under Triton's interpreter where there is no GPU. The variable must be set before anything
# imports triton (transformers may), since triton's own jit helpers (e.g. tl.rand) are defined at its import.
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

try:
    from checkpoints import checkpoint
except ImportError:  # tests/ imported as a package
    from tests.checkpoints import checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """A function arch -> Path of that arch's tiny checkpoint (see tests/checkpoints.py), built once per session."""
    return checkpoint

try:  # real Redis and PostgreSQL, for the tenancy tests
    from services import postgres_url, redis_url  # noqa: F401
except ImportError:
    from tests.services import postgres_url, redis_url  # noqa: F401
