"""Benchmarks run as the ``robustvit`` command runs: big CPU tensors on transparent huge pages
(``robustvit.cli.THP_ENV``), set here before torch's first large allocation. Export
``THP_MEM_ALLOC_ENABLE=0`` to measure without them."""

from __future__ import annotations

import os

import pytest

from robustvit.cli import THP_ENV

os.environ.setdefault(THP_ENV, "1")


@pytest.fixture
def single_thread():
    """Tiny models are timed on one intra-op thread: the fastest and steadiest setting on a shared CPU."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
