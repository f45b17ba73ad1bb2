"""Per-image vectors of suite aggregates (the corruption and stability suites), built from their cells' outcomes.

Each aggregate (a corruption's error, CE and relative CE; the suite's mean error, mCE and relative
mCE) is a mean over images of a per-image value, so its vector is stored as its outcomes: the results
layer bootstraps it like any mean (intervals, paired comparisons). Without the cells' outcomes (older
stores, records passed alone) nothing is built and the aggregates carry no interval.
"""

from __future__ import annotations

from typing import Any


class PerImage:
    """Per-image vectors of the aggregates, built from the cells' outcomes (inactive without them)."""

    def __init__(self, outcomes: Any) -> None:
        self.source = outcomes
        self.index: Any = None
        self.vectors: dict[str, dict[str, Any]] = {}
        self.active = outcomes is not None

    def _errors(self, cell: str, metric: str = "error") -> Any:
        out = self.source.get(cell) if self.active else None
        if out is None or metric not in out.arrays:
            self.active = False
            return None
        if self.index is None:
            self.index = out.index("images")
        elif len(out.index("images")) != len(self.index):
            self.active = False
            return None
        return out.arrays[metric].astype("float64")

    def sum(self, cells: list[str], metric: str = "error") -> Any:
        """Per image: ``metric`` (the error) summed over ``cells`` (None without their outcomes)."""
        total = 0.0
        for cell in cells:
            err = self._errors(cell, metric)
            if err is None:
                return None
            total = total + err
        return total

    def less(self, summed: Any, cell: str, times: int) -> Any:
        """``summed`` minus ``times`` the per-image errors of ``cell`` (the clean cell for relative CE)."""
        base = self._errors(cell) if summed is not None else None
        return None if base is None else summed - times * base

    def add(self, cell: str, metric: str, summed: Any, divisor: float) -> None:
        if self.active and summed is not None and divisor:
            self.vectors.setdefault(cell, {})[metric] = summed / divisor

    def mean(self, cell: str, metric: str, parts: list[tuple[str, str]]) -> None:
        vecs = [self.vectors.get(c, {}).get(mt) for c, mt in parts]
        if self.active and vecs and all(v is not None for v in vecs):
            self.vectors.setdefault(cell, {})[metric] = sum(vecs) / len(vecs)

    def outcomes(self, cell: str) -> Any:
        if not self.active or cell not in self.vectors:
            return None
        from robustvit.results.outcomes import Outcomes

        out = Outcomes().add_pool("images", self.index)
        for metric, vec in self.vectors[cell].items():
            out.add(metric, vec)
        return out
