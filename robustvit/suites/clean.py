"""The clean suite: accuracy and calibration on unmodified data.

It runs on any dataset, so natural distribution shifts (ImageNet-V2, -R, -A, -Sketch) are clean
runs on shifted data (see ``suites/natural_shift.toml``). It reads the shared forward pass
(:meth:`SuiteContext.features`), so OOD and corruption suites on the same data reuse it.

Per-image outcomes: ``top1`` and ``top5`` (correct or not), ``nll`` (per-image loss) and ``conf``
(max softmax probability, with ``top1`` the input of ECE).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import ClassVar

from robustvit.context import SuiteContext
from robustvit.metrics.classification import ece, nll, top1, topk
from robustvit.records import CellResult
from robustvit.suites.base import Suite

ECE_BINS = 15


class CleanSuite(Suite):
    """Top-1, top-5 (with at least 5 classes), NLL and 15-bin ECE; one cell, ``""``."""

    kind: ClassVar[str] = "clean"
    version: ClassVar[str] = "2"
    options: ClassVar[dict] = {}

    def cells(self) -> list[str]:
        return [""]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        import torch.nn.functional as F

        from robustvit.results.outcomes import Outcomes

        fs = ctx.features()
        n = len(fs.labels)
        result = CellResult("")
        result.add("top1", top1(fs.logits, fs.labels), n, True)
        out = Outcomes().add_pool("images", ctx.image_index(n))
        probs = fs.logits.float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        out.add("top1", pred == fs.labels)
        if fs.logits.shape[1] >= 5:
            result.add("top5", topk(fs.logits, fs.labels, 5), n, True)
            out.add("top5", (fs.logits.topk(5, dim=1).indices == fs.labels[:, None]).any(dim=1))
        result.add("nll", nll(fs.logits, fs.labels), n, False)
        result.add("ece", ece(fs.logits, fs.labels, ECE_BINS), n, False)
        out.add("nll", F.cross_entropy(fs.logits.float(), fs.labels, reduction="none"))
        out.add("conf", conf)
        out.meta["ece"] = {"conf": "conf", "correct": "top1", "bins": ECE_BINS}
        result.outcomes = out
        yield result
