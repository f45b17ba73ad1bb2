"""The clean suite: accuracy and calibration on unmodified data.

It runs on any dataset, so natural distribution shifts (ImageNet-V2, -R, -A, -Sketch) are clean
runs on shifted data (see ``suites/natural_shift.toml``). It reads the shared forward pass
(:meth:`SuiteContext.features`), so OOD and corruption suites on the same data reuse it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from robustvit.context import SuiteContext
from robustvit.metrics.classification import ece, nll, top1, topk
from robustvit.records import CellResult
from robustvit.suites.base import Suite


class CleanSuite(Suite):
    """Top-1, top-5 (with at least 5 classes), NLL and 15-bin ECE; one cell, ``""``."""

    kind: ClassVar[str] = "clean"
    version: ClassVar[str] = "1"
    options: ClassVar[dict] = {}

    def cells(self) -> list[str]:
        return [""]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        fs = ctx.features()
        n = len(fs.labels)
        result = CellResult("")
        result.add("top1", top1(fs.logits, fs.labels), n, True)
        if fs.logits.shape[1] >= 5:
            result.add("top5", topk(fs.logits, fs.labels, 5), n, True)
        result.add("nll", nll(fs.logits, fs.labels), n, False)
        result.add("ece", ece(fs.logits, fs.labels, 15), n, False)
        yield result
