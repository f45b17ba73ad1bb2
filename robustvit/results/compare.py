"""Paired ViT-vs-CNN comparisons and error consistency, from per-image outcomes.

Within one protocol every model saw the same images, so families are compared on paired data:

* **Family difference** of a metric: the mean over the ViT models minus the mean over the CNN models.
  Its 95% interval is a paired bootstrap over images (the same resamples of each image pool for
  every model, :class:`~robustvit.results.bootstrap.Resampler`): each resample recomputes every
  model's metric, averages each family, and takes the difference. With several models per family the
  family means are bootstrapped over images as well (the models are the fixed set being compared).
* **p-value**: McNemar's exact test when each family has one model and the metric is a single
  accuracy (per-image booleans); otherwise the two-sided bootstrap p-value.
* **Verdict**: ``"vit"`` or ``"cnn"`` (the better family given the metric's direction) only when the
  interval excludes 0, else ``"tie"`` (also when there are no outcomes to test with).
* **Error consistency** (Geirhos et al., NeurIPS 2020): Cohen's kappa between the per-image
  correctness of a ViT and a CNN, for every ViT-CNN pair, averaged over the protocol's accuracy cells.
"""

from __future__ import annotations

import math
import warnings
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from robustvit.results.bootstrap import Resampler, replicates
from robustvit.results.outcomes import Outcomes, decode
from robustvit.results.stats import bootstrap_p_value, error_consistency, mcnemar_exact, percentile_interval

if TYPE_CHECKING:
    import pandas as pd

VERDICTS = ("vit", "cnn", "tie")
COMPARISON_COLUMNS = ("metric", "protocol", "vit", "cnn", "diff", "ci_low", "ci_high", "p_value", "n", "verdict",
                      "higher_is_better", "vit_models", "cnn_models")
CONSISTENCY_COLUMNS = ("protocol", "suite", "vit_model", "cnn_model", "cells", "n", "c_obs", "c_exp", "kappa")
#: per-image boolean arrays that error consistency reads, in order of preference
CORRECTNESS = ("top1", "robust_acc")
KEY = ("model_sha", "suite", "suite_version", "config_key")


class OutcomeSource:
    """The per-image outcomes behind selected records, read on demand and kept in a small LRU cache.

    Args:
        fetch: ``fetch(key, cell) -> blob or None`` with key = (model_sha, suite, suite_version, config_key);
            :meth:`from_store` builds it from a :class:`robustvit.store.Store`.
        capacity: Decoded cells kept in memory.
    """

    def __init__(self, fetch: Callable[[tuple, str], Any], capacity: int = 4096) -> None:
        self.fetch = fetch
        self.capacity = capacity
        self._cache: OrderedDict[tuple, Outcomes | None] = OrderedDict()

    @classmethod
    def from_store(cls, store: Any) -> OutcomeSource:
        return cls(lambda key, cell: store.outcomes(dict(zip(KEY, key, strict=True)), cell))

    @classmethod
    def empty(cls) -> OutcomeSource:
        return cls(lambda key, cell: None)

    def get(self, key: tuple, cell: str) -> Outcomes | None:
        k = (*key, cell)
        if k in self._cache:
            self._cache.move_to_end(k)
            return self._cache[k]
        found = self.fetch(key, cell)
        out = decode(found) if isinstance(found, (bytes, bytearray, memoryview)) else found
        self._cache[k] = out
        if len(self._cache) > self.capacity:
            self._cache.popitem(last=False)
        return out

    def for_row(self, row: Any) -> tuple[Outcomes | None, Callable[[str], Outcomes | None]]:
        key = tuple(str(row[k]) for k in KEY)
        return self.get(key, str(row["cell"] or "")), lambda cell: self.get(key, cell)


@dataclass
class _Pending:
    """One comparison whose mean-type family difference waits for the batched matrix product."""

    row: dict[str, Any]
    key: tuple[str, int]  # (pool, images)
    column: int


def compare_families(selected: pd.DataFrame, source: OutcomeSource, paths: Iterable[str] | None = None, *,
                     resampler: Resampler | None = None) -> pd.DataFrame:
    """ViT-vs-CNN comparison rows (columns :data:`COMPARISON_COLUMNS`) for each (protocol, metric path).

    Args:
        selected: Current records (:func:`robustvit.results.select.latest`).
        source: Where the outcomes come from.
        paths: Metric paths to compare (default: every path); only (protocol, path) groups with at
            least one ViT and one CNN are compared.
        resampler: Bootstrap resamples (default: 1,000, seed 0).
    """
    import pandas as pd

    resampler = resampler or Resampler()
    rows = selected[selected["family"].isin(("vit", "cnn"))]
    if paths is not None:
        rows = rows[rows["path"].isin(set(paths))]
    out: list[dict[str, Any]] = []
    pending: dict[tuple[str, int], list[np.ndarray]] = {}
    waiting: list[_Pending] = []
    for (protocol, path), group in rows.groupby(["protocol", "path"], sort=False):
        fams = {f: group[group["family"] == f] for f in ("vit", "cnn")}
        if any(g.empty for g in fams.values()):
            continue
        hib = bool(group["higher_is_better"].iloc[-1])
        means = {f: float(np.nanmean(g["value"].astype(float))) if g["value"].notna().any() else math.nan
                 for f, g in fams.items()}
        row = {"metric": path, "protocol": protocol, "vit": means["vit"], "cnn": means["cnn"],
               "diff": means["vit"] - means["cnn"], "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
               "n": int(group["n"].max()), "verdict": "tie", "higher_is_better": hib,
               "vit_models": len(fams["vit"]), "cnn_models": len(fams["cnn"])}
        out.append(row)
        metric = str(group["metric"].iloc[0])
        loaded = {f: [source.for_row(r) for _, r in g.iterrows()] for f, g in fams.items()}
        if any(o is None for pairs in loaded.values() for o, _ in pairs):
            continue  # a model without outcomes: no interval, no verdict
        vectors = _linear(loaded, metric)
        if vectors is not None:  # mean-type: the difference of family means is a mean over images
            pool, diff_vec, singles = vectors
            key = (pool, len(diff_vec))
            pending.setdefault(key, []).append(diff_vec)
            waiting.append(_Pending(row, key, len(pending[key]) - 1))
            if singles is not None:
                row["p_value"] = mcnemar_exact(*singles)
            continue
        reps = {f: [replicates(o, metric, resampler, lookup) for o, lookup in pairs] for f, pairs in loaded.items()}
        if any(r is None for rs in reps.values() for r in rs):
            continue
        _finish(row, np.mean(reps["vit"], axis=0) - np.mean(reps["cnn"], axis=0))
    reps = {key: resampler.means(key[0], np.stack(columns, axis=1)) for key, columns in pending.items()}
    for item in waiting:  # one matrix product per pool for all mean-type comparisons
        _finish(item.row, reps[item.key][:, item.column], keep_p=not math.isnan(item.row["p_value"]))
    return pd.DataFrame(out, columns=list(COMPARISON_COLUMNS))


def _linear(loaded: dict[str, list], metric: str) -> tuple[str, np.ndarray, tuple | None] | None:
    """(pool, per-image ViT-mean minus CNN-mean vector, the two boolean arrays when one model each) or None."""
    arrays, pools = {}, set()
    for fam, pairs in loaded.items():
        fam_arrays = []
        for outcomes, _ in pairs:
            arr = outcomes.arrays.get(metric)
            if arr is None or (arr.dtype != np.bool_ and np.isnan(arr).any()):
                return None
            pools.add((outcomes.pools.get(metric, "images"), len(arr)))
            fam_arrays.append(arr)
        arrays[fam] = fam_arrays
    if len(pools) != 1:
        return None
    pool = next(iter(pools))[0]
    diff = (np.mean([a.astype(np.float64) for a in arrays["vit"]], axis=0)
            - np.mean([a.astype(np.float64) for a in arrays["cnn"]], axis=0))
    singles = None
    if len(arrays["vit"]) == len(arrays["cnn"]) == 1 and all(a[0].dtype == np.bool_ for a in arrays.values()):
        singles = (arrays["vit"][0], arrays["cnn"][0])
    return pool, diff, singles


def _finish(row: dict[str, Any], diff_reps: np.ndarray, keep_p: bool = False) -> None:
    low, high = percentile_interval(diff_reps)
    row["ci_low"], row["ci_high"] = float(low), float(high)
    if not keep_p:
        row["p_value"] = bootstrap_p_value(diff_reps)
    row["verdict"] = verdict(row["ci_low"], row["ci_high"], row["higher_is_better"])


def verdict(ci_low: float, ci_high: float, higher_is_better: bool) -> str:
    """``"vit"`` / ``"cnn"`` when the interval of (ViT minus CNN) excludes 0, else ``"tie"``."""
    if math.isnan(ci_low) or math.isnan(ci_high) or ci_low <= 0 <= ci_high:
        return "tie"
    vit_higher = ci_low > 0
    return "vit" if vit_higher == bool(higher_is_better) else "cnn"


def consistency(selected: pd.DataFrame, source: OutcomeSource) -> pd.DataFrame:
    """Error consistency of every ViT-CNN pair per protocol (columns :data:`CONSISTENCY_COLUMNS`).

    Over the protocol's cells whose outcomes hold per-image correctness (``top1``, else ``robust_acc``):
    kappa per cell, averaged over the cells; ``n`` is the number of images per cell.
    """
    import pandas as pd

    out = []
    rows = selected[selected["family"].isin(("vit", "cnn")) & selected["metric"].isin(CORRECTNESS)]
    for protocol, group in rows.groupby("protocol", sort=False):
        metric = next((m for m in CORRECTNESS if (group["metric"] == m).any()), None)
        group = group[group["metric"] == metric]
        vits = list(dict.fromkeys(group.loc[group["family"] == "vit", "model"]))
        cnns = list(dict.fromkeys(group.loc[group["family"] == "cnn", "model"]))
        if not vits or not cnns:
            continue
        kappas, c_obs, c_exp, cells, n = [], [], [], 0, 0
        for _cell, cg in group.groupby("cell", sort=False):
            arrays = {}
            for _, r in cg.iterrows():
                o, _ = source.for_row(r)
                arr = None if o is None else o.arrays.get(metric)
                if arr is not None and arr.dtype == np.bool_:
                    arrays[r["model"]] = arr
            if not all(m in arrays for m in vits + cnns) or len({len(a) for a in arrays.values()}) != 1:
                continue
            ec = error_consistency(np.stack([arrays[m] for m in vits]), np.stack([arrays[m] for m in cnns]))
            kappas.append(ec["kappa"])
            c_obs.append(ec["c_obs"])
            c_exp.append(ec["c_exp"])
            cells += 1
            n = len(next(iter(arrays.values())))
        if not cells:
            continue
        with warnings.catch_warnings():  # kappa is NaN where both models are always right (c_exp = 1)
            warnings.simplefilter("ignore", RuntimeWarning)
            mean = {k: np.nanmean(np.stack(v), axis=0)
                    for k, v in (("kappa", kappas), ("c_obs", c_obs), ("c_exp", c_exp))}
        suite = str(group["suite"].iloc[0])
        for i, v in enumerate(vits):
            for j, c in enumerate(cnns):
                out.append({"protocol": protocol, "suite": suite, "vit_model": v, "cnn_model": c, "cells": cells,
                            "n": n, "c_obs": float(mean["c_obs"][i, j]), "c_exp": float(mean["c_exp"][i, j]),
                            "kappa": float(mean["kappa"][i, j])})
    return pd.DataFrame(out, columns=list(CONSISTENCY_COLUMNS))
