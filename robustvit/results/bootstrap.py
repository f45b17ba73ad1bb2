"""Seeded bootstrap over images: replicates of any stored metric, intervals of a cell's metrics.

One :class:`Resampler` draws, for each pool of images (see :mod:`robustvit.results.outcomes`), the
same ``n_boot`` resamples whatever model, cell or process asks: the draws derive from (seed, pool
name, pool size) only. So replicates of two models on one protocol are paired, the replicates of
an aggregate are computed from the same resamples as its cells', and a merged or re-batched run
gives the same intervals.

Intervals (:func:`cell_intervals`), one rule for every suite:

* a proportion stored as per-image booleans: the Wilson score interval (:func:`~robustvit.results.stats.wilson`);
* every other metric with per-image outcomes (means of per-image values such as mCE and mean
  error, AUROC / AUPR / FPR@95, ECE, means over cells): the percentile interval of ``n_boot``
  bootstrap replicates (Efron & Tibshirani 1993), stratified by pool (ID and OOD images apart);
* no outcomes (cells written by an older version, probes of the ``checks`` cell, medians): no interval (NaN).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable, Iterable

import numpy as np

from robustvit.results.outcomes import Outcomes
from robustvit.results.stats import LEVEL, percentile_interval, wilson

N_BOOT = 1000
BOOT_SEED = 0
OOD_METRICS = ("auroc", "aupr_in", "aupr_out", "fpr95")
_CACHE_ELEMENTS = 64_000_000  # counts kept in memory (float32): 256 MB at most

#: (model outcomes of a cell) lookup used by means over cells: cell name -> Outcomes or None
Lookup = Callable[[str], "Outcomes | None"]


def _seed(*parts: object) -> int:
    return int.from_bytes(hashlib.sha256("|".join(map(str, parts)).encode()).digest()[:8], "little")


class Resampler:
    """Bootstrap resamples per pool of images: (n_boot, n) counts, seeded by (seed, pool, n)."""

    def __init__(self, n_boot: int = N_BOOT, seed: int = BOOT_SEED) -> None:
        self.n_boot = int(n_boot)
        self.seed = int(seed)
        self._cache: dict[tuple[str, int], np.ndarray] = {}
        self._cached = 0

    def counts(self, pool: str, n: int) -> np.ndarray:
        """How often each of the ``n`` images of ``pool`` is drawn in each resample: (n_boot, n) float32."""
        key = (pool, int(n))
        if key in self._cache:
            return self._cache[key]
        rng = np.random.default_rng(_seed(self.seed, pool, n))
        out = np.empty((self.n_boot, n), dtype=np.float32)
        step = max(1, 4_000_000 // max(n, 1))
        for start in range(0, self.n_boot, step):
            rows = min(step, self.n_boot - start)
            draws = rng.integers(0, n, size=(rows, n)) + (np.arange(rows) * n)[:, None] if n else np.empty((rows, 0), int)
            out[start:start + rows] = np.bincount(draws.ravel(), minlength=rows * n).reshape(rows, n)
        if self._cached + out.size <= _CACHE_ELEMENTS:
            self._cache[key] = out
            self._cached += out.size
        return out

    def means(self, pool: str, values: np.ndarray) -> np.ndarray:
        """Replicates of column means of ``values`` (n,) or (n, k); NaN entries are left out of their mean."""
        v = np.asarray(values, dtype=np.float64)
        flat = v.ndim == 1
        v = v[:, None] if flat else v
        counts = self.counts(pool, v.shape[0])
        mask = ~np.isnan(v)
        with np.errstate(invalid="ignore", divide="ignore"):
            if not v.shape[0]:
                reps = np.full((self.n_boot, v.shape[1]), np.nan)
            elif mask.all():  # every resample has n images: one float32 product (counts are exact)
                reps = (counts @ v.astype(np.float32)).astype(np.float64) / v.shape[0]
            else:
                counts = counts.astype(np.float64)
                reps = (counts @ np.where(mask, v, 0.0)) / (counts @ mask.astype(np.float64))
        return reps[:, 0] if flat else reps


def replicates(outcomes: Outcomes, metric: str, resampler: Resampler, lookup: Lookup | None = None) -> np.ndarray | None:
    """Bootstrap replicates (n_boot,) of ``metric`` from a cell's outcomes; None when they cannot tell."""
    if metric in outcomes.arrays and not metric.startswith("@"):
        return resampler.means(outcomes.pools.get(metric, "images"), outcomes.arrays[metric])
    ood = outcomes.meta.get("ood")
    if ood and metric in OOD_METRICS:
        return _ood_replicates(outcomes, ood, resampler)[metric]
    ece = outcomes.meta.get("ece")
    if ece and metric == "ece":
        return _ece_replicates(outcomes, ece, resampler)
    cells = outcomes.meta.get("mean_of", {}).get(metric)
    if cells and lookup is not None:
        reps = []
        for cell in cells:
            other = lookup(cell)
            r = None if other is None else replicates(other, metric, resampler, lookup)
            if r is None:
                return None
            reps.append(r)
        return np.mean(reps, axis=0)
    return None


def _ood_replicates(outcomes: Outcomes, ood: dict, resampler: Resampler) -> dict[str, np.ndarray]:
    from robustvit.results.ood_bootstrap import weighted_ood_metrics

    key = ("ood", resampler.n_boot, resampler.seed, type(resampler).__name__)
    if key in outcomes.memo:
        return outcomes.memo[key]
    id_name, ood_name = ood["id"], ood["ood"]
    s_id, s_ood = outcomes.arrays[id_name], outcomes.arrays[ood_name]
    c_id = resampler.counts(outcomes.pools.get(id_name, "id"), len(s_id))
    c_ood = resampler.counts(outcomes.pools.get(ood_name, "ood"), len(s_ood))
    outcomes.memo[key] = weighted_ood_metrics(s_id.astype(np.float64), s_ood.astype(np.float64), c_id, c_ood,
                                              tpr=float(ood.get("tpr", 0.95)))
    return outcomes.memo[key]


def _ece_replicates(outcomes: Outcomes, ece: dict, resampler: Resampler) -> np.ndarray:
    """ECE (15 equal-width bins, Guo et al. 2017) of each resample: per-bin sums by one matrix product."""
    conf = outcomes.arrays[ece["conf"]].astype(np.float64)
    correct = outcomes.arrays[ece["correct"]].astype(np.float64)
    bins = int(ece.get("bins", 15))
    which = np.clip(np.ceil(conf * bins).astype(int) - 1, 0, bins - 1)
    onehot = np.zeros((len(conf), bins))
    onehot[np.arange(len(conf)), which] = 1.0
    counts = resampler.counts(outcomes.pools.get(ece["conf"], "images"), len(conf)).astype(np.float64)
    gap = counts @ (onehot * conf[:, None]) - counts @ (onehot * correct[:, None])
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.abs(gap).sum(1) / counts.sum(1)


def cell_intervals(metrics: Iterable[str], outcomes: Outcomes | None, resampler: Resampler,
                   lookup: Lookup | None = None, level: float = LEVEL) -> dict[str, tuple[float, float]]:
    """95% intervals of a cell's metrics from its outcomes (see the module docstring for the rule)."""
    out: dict[str, tuple[float, float]] = {}
    if outcomes is None or not outcomes:
        return out
    for metric in metrics:
        arr = outcomes.arrays.get(metric)
        if arr is not None and arr.dtype == np.bool_:
            low, high = wilson(arr.sum(), arr.size, level)
            out[metric] = (float(low), float(high))
            continue
        reps = replicates(outcomes, metric, resampler, lookup)
        if reps is not None:
            low, high = percentile_interval(reps, level)
            out[metric] = (float(low), float(high))
    return out


def recompute(outcomes: Outcomes, metric: str, lookup: Lookup | None = None) -> float:
    """The value of ``metric`` from the outcomes alone (the tests compare it with the stored value)."""
    one = _Identity()
    reps = replicates(outcomes, metric, one, lookup)
    return math.nan if reps is None else float(reps[0])


class _Identity(Resampler):
    """A "resampler" whose only resample is the data itself: replicates are the point estimates."""

    def __init__(self) -> None:
        super().__init__(n_boot=1)

    def counts(self, pool: str, n: int) -> np.ndarray:
        return np.ones((1, n), dtype=np.float32)
