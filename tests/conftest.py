"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

# ../shared/data beside the checkout: present on the project's machines, absent for users.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> Path:
    """The shared data directory; skips the test where it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"{SHARED_DATA_DIR} is absent")
    return SHARED_DATA_DIR
