"""The one record schema.

Results are flat, long-format rows: one metric value per row. Reports, leaderboards and the gate
read only these columns (as a pandas DataFrame from :meth:`robustvit.store.Store.records`).

=================  =======  ==========================================================================
column             type     meaning
=================  =======  ==========================================================================
run_id             str      the run that computed the row (see the ``runs`` manifest table)
model              str      model name as the user typed it (``zoo_vit``, ``timm:vit_base_patch16_224``)
model_sha          str      sha256 (first 16 hex) of the checkpoint / weights; identifies the weights
family             str      ``vit`` | ``cnn`` | ``hybrid``
params             int      number of parameters of the model
suite              str      the suite's name in the run: its table name in a suite file
                            (``[suites.imagenet_r]``), else its kind; the first part of metric paths
kind               str      the suite's kind: ``clean``, ``corruption``, ``adversarial``, ``ood``, ...
suite_version      str      version of the suite's code; a new version invalidates cached cells
config_key         str      hash of the suite options, dataset, limit, seed, batch size and amp (cache key)
protocol           str      what makes two numbers comparable: ``<kind>-<hash>`` of the suite kind, the
                            options that define its numbers, the dataset fingerprint, the image subset
                            (limit and seed) and the suite version (the ``protocols`` table holds the
                            description); rows of an older store get ``legacy-<kind>-<config_key>``
dataset            str      the evaluation dataset spec (``digits``, a folder path)
cell               str      the unit of work: ``""`` for suite-level aggregates, else for example
                            ``gaussian_noise/3``, ``pgd-linf/eps=4/255``, ``ood/far/textures/energy``
metric             str      ``top1``, ``error``, ``mce``, ``robust_acc``, ``auroc``, ...
value              float    the number (never a string; NaN where undefined)
ci_low, ci_high    float    its 95% interval: Wilson for proportions stored as per-image booleans, a
                            seeded percentile bootstrap over images (1,000 resamples, stratified by
                            image pool) for aggregates (mCE, mean error, AUROC, FPR@95, ECE, means
                            over cells); NaN when the cell has no per-image outcomes (older stores,
                            the adversarial ``checks`` probes, medians): shown as "no interval"
n                  int      number of examples behind the value
higher_is_better   bool     direction of the metric (ranking, gates)
created_at         str      ISO-8601 UTC time the row was written
=================  =======  ==========================================================================

A metric's full path, used by gates and reports, is ``suite/cell/metric`` with an empty cell
omitted: ``clean/top1``, ``corruption/mce``, ``adversarial/pgd-linf/eps=4/255/robust_acc``.

Beside the records, the store keeps per cell its per-image outcomes (one blob, see
:mod:`robustvit.results.outcomes`), written in the same transaction: what the metrics, their
intervals and paired comparisons are computed from.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from robustvit.results.outcomes import Outcomes

RECORD_COLUMNS: tuple[str, ...] = (
    "run_id",
    "model",
    "model_sha",
    "family",
    "params",
    "suite",
    "kind",
    "suite_version",
    "config_key",
    "protocol",
    "dataset",
    "cell",
    "metric",
    "value",
    "ci_low",
    "ci_high",
    "n",
    "higher_is_better",
    "created_at",
)


@dataclass(frozen=True)
class Metric:
    """One measured value of a cell."""

    metric: str
    value: float
    n: int
    higher_is_better: bool
    ci_low: float = math.nan
    ci_high: float = math.nan

    def __post_init__(self) -> None:
        object.__setattr__(self, "value", float(self.value))
        object.__setattr__(self, "n", int(self.n))


@dataclass
class CellResult:
    """All metrics of one finished cell and its per-image outcomes; the store writes a cell whole or not at all."""

    cell: str
    metrics: list[Metric] = field(default_factory=list)
    outcomes: Outcomes | None = None
    #: compute time of this cell alone, when the suite computed several cells in one shared pass
    #: (the runner reports the rest of the suite's time as shared work); None: timed by the runner
    seconds: float | None = None

    def add(self, metric: str, value: float, n: int, higher_is_better: bool) -> CellResult:
        self.metrics.append(Metric(metric, value, n, higher_is_better))
        return self

    def with_intervals(self, intervals: dict[str, tuple[float, float]]) -> CellResult:
        """The same cell with ``ci_low`` / ``ci_high`` set from ``metric -> (low, high)``."""
        self.metrics = [Metric(m.metric, m.value, m.n, m.higher_is_better, *intervals.get(m.metric, (m.ci_low, m.ci_high)))
                        for m in self.metrics]
        return self


def metric_path(suite: str, cell: str, metric: str) -> str:
    """``suite/cell/metric``, with an empty cell left out."""
    return "/".join(p for p in (suite, cell, metric) if p)


def finite_or_nan(value: object) -> float:
    """``float(value)``, or NaN for None, non-numbers and infinities (values are never strings)."""
    try:
        number = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return math.nan
    return number if math.isfinite(number) else math.nan
