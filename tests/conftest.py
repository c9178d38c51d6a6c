"""Shared pytest fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

# ../shared/data beside the checkout: present on the project's machines, absent for users.
SHARED_DATA_DIR = Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.fixture
def shared_data_dir() -> Path:
    """The shared data directory; skips the test where it is absent."""
    if not SHARED_DATA_DIR.is_dir():
        pytest.skip(f"{SHARED_DATA_DIR} is absent")
    return SHARED_DATA_DIR


@pytest.fixture(scope="session", autouse=True)
def private_cache(tmp_path_factory):
    """Decoded-data caches go to a folder of the test session, not the user's home (the
    CLI subprocesses inherit it)."""
    import os

    os.environ["KDSEARCH_CACHE"] = str(tmp_path_factory.mktemp("kdsearch-cache"))
    yield


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    """One CPU thread for the whole suite: tiny models gain nothing from more, a busy machine
    slows them a lot, and bit-exact comparisons with subprocess runs need one thread count."""
    import os

    threads, env = torch.get_num_threads(), os.environ.get("OMP_NUM_THREADS")
    torch.set_num_threads(1)
    os.environ["OMP_NUM_THREADS"] = "1"  # what kdsearch's commands take by default
    yield
    torch.set_num_threads(threads)
    if env is None:
        os.environ.pop("OMP_NUM_THREADS")
    else:
        os.environ["OMP_NUM_THREADS"] = env
