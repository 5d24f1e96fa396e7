"""Shared pytest fixtures."""
from __future__ import annotations

import pytest

try:
    from checkpoints import checkpoint
except ImportError:  # tests/ imported as a package
    from tests.checkpoints import checkpoint


@pytest.fixture(scope="session")
def tiny_checkpoint():
    """A function arch -> Path of that arch's tiny checkpoint (see tests/checkpoints.py), built once per session."""
    return checkpoint
