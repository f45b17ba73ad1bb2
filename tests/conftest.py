"""Shared fixtures: hermetic environment (no plugins, feature cache and store in tmp folders)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("ROBUSTVIT_NO_PLUGINS", "1")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # no test reaches for the network (read when huggingface_hub loads)


@pytest.fixture(autouse=True)
def _hermetic(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ROBUSTVIT_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))
    monkeypatch.setenv("ROBUSTVIT_NO_PLUGINS", "1")
    monkeypatch.delenv("ROBUSTVIT_STORE", raising=False)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models on a shared 2-core machine: one intra-op thread is ~10x faster than two.

    Modules opt in with ``pytestmark = pytest.mark.usefixtures("one_thread")``.
    """
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def store_path(tmp_path: Path) -> Path:
    return tmp_path / "results.sqlite"
