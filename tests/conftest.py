"""Shared fixtures and policy.

Tests that need an external tool (tshark) or root skip with a stated reason on a developer's
machine, but CI sets TWAMP_CI=1 and there a missing prerequisite is a failure, not a skip.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

# The perfSONAR captures ship with the tests (tests/vectors/README.md says where they come from).
VECTORS = Path(__file__).resolve().parent / "vectors"
IN_CI = os.environ.get("TWAMP_CI") == "1"


def require(condition: bool, reason: str) -> None:
    """Skip (developer machine) or fail (CI) when a prerequisite is missing."""
    if condition:
        return
    if IN_CI:
        pytest.fail(f"CI prerequisite missing: {reason}")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def vectors_dir() -> Path:
    """tests/vectors: part of the repository, so a missing file is a failure, never a skip."""
    assert VECTORS.is_dir(), f"{VECTORS} is missing from this checkout"
    return VECTORS


@pytest.fixture(scope="session")
def tshark() -> str:
    path = shutil.which("tshark")
    require(path is not None, "tshark is not installed (apt-get install tshark)")
    assert path is not None
    return path


@pytest.fixture(scope="session")
def root() -> None:
    require(os.geteuid() == 0, "needs root")
