"""The clean suite: accuracy and calibration on unmodified data.

It runs on any dataset, so natural distribution shifts (ImageNet-V2, -R, -A, -Sketch) are clean
runs on shifted data (see ``suites/natural_shift.toml``). It reads the shared forward pass
(:meth:`SuiteContext.features`), so OOD and corruption suites on the same data reuse it.

Per-image outcomes: ``top1`` and ``top5`` (correct or not), ``nll`` (per-image loss) and ``conf``
(max softmax probability, with ``top1`` the input of ECE).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, ClassVar

from robustvit.context import SuiteContext
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    from robustvit.results.outcomes import Outcomes

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
        out = Outcomes().add_pool("images", ctx.image_index(n))
        probs = fs.logits.float().softmax(dim=1)
        conf, pred = probs.max(dim=1)
        out.add("top1", pred == fs.labels)
        if fs.logits.shape[1] >= 5:
            out.add("top5", (fs.logits.topk(5, dim=1).indices == fs.labels[:, None]).any(dim=1))
        out.add("nll", F.cross_entropy(fs.logits.float(), fs.labels, reduction="none"))
        out.add("conf", conf)
        out.meta["ece"] = {"conf": "conf", "correct": "top1", "bins": ECE_BINS}
        yield self.finish("", out)

    def shardable(self, cell: str) -> bool:
        return True

    def finish(self, cell: str, outcomes: Outcomes) -> CellResult:
        """Top-1, top-5, mean NLL and ECE (Guo et al. 2017: 15 equal-width confidence bins, |accuracy -
        confidence| weighted by bin size), all from the per-image outcomes, so a cell merged from image
        shards equals one computed whole."""
        from robustvit.results.bootstrap import recompute

        n = outcomes.pool_size("images")
        result = CellResult(cell)
        for metric, higher in (("top1", True), ("top5", True), ("nll", False), ("ece", False)):
            if metric in outcomes.arrays or metric == "ece":
                result.add(metric, recompute(outcomes, metric) if n else float("nan"), n, higher)
        result.outcomes = outcomes
        return result
