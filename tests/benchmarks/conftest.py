"""Benchmarks run as the ``robustvit`` command runs: big CPU tensors on transparent huge pages
(``robustvit.cli.THP_ENV``), set here before torch's first large allocation. Export
``THP_MEM_ALLOC_ENABLE=0`` to measure without them."""

from __future__ import annotations

import os

from robustvit.cli import THP_ENV

os.environ.setdefault(THP_ENV, "1")
