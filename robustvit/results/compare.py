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
        """Outcomes of a store, read one model-suite-config at a time (all its cells' blobs in one query)."""
        blobs: dict[tuple, dict[str, bytes]] = {}

        def fetch(key: tuple, cell: str) -> bytes | None:
            if key not in blobs:
                blobs[key] = {c: bytes(b) for _k, c, b in store.outcome_blobs([key])}
            return blobs[key].get(cell)

        return cls(fetch)

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
    for (protocol, path), members in _grouped(rows, ("protocol", "path")).items():
        fams = {f: [m for m in members if m["family"] == f] for f in ("vit", "cnn")}
        if not all(fams.values()):
            continue
        means = {f: _nanmean([m["value"] for m in ms]) for f, ms in fams.items()}
        row = {"metric": path, "protocol": protocol, "vit": means["vit"], "cnn": means["cnn"],
               "diff": means["vit"] - means["cnn"], "ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan,
               "n": max(int(m["n"]) for m in members), "verdict": "tie",
               "higher_is_better": bool(members[-1]["higher_is_better"]),
               "vit_models": len(fams["vit"]), "cnn_models": len(fams["cnn"])}
        out.append(row)
        metric = str(members[0]["metric"])
        loaded = {f: [source.for_row(m) for m in ms] for f, ms in fams.items()}
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


ROW_FIELDS = ("protocol", "path", "suite", "cell", "metric", "model", "family", "value", "n", "higher_is_better",
              *KEY)


def _grouped(rows: pd.DataFrame, by: tuple[str, ...]) -> dict[tuple, list[dict[str, Any]]]:
    """Rows as plain dicts grouped by ``by`` (first-seen order): no per-row pandas overhead."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    columns = [c for c in ROW_FIELDS if c in rows.columns]
    for values in zip(*(rows[c].tolist() for c in columns)):
        row = dict(zip(columns, values, strict=True))
        groups.setdefault(tuple(row[b] for b in by), []).append(row)
    return groups


def _nanmean(values: list[float]) -> float:
    finite = [float(v) for v in values if v == v]
    return sum(finite) / len(finite) if finite else math.nan


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
    diff = np.mean(np.stack(arrays["vit"]), axis=0) - np.mean(np.stack(arrays["cnn"]), axis=0)
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
    for (protocol,), members in _grouped(rows, ("protocol",)).items():
        metric = next((m for m in CORRECTNESS if any(r["metric"] == m for r in members)), None)
        members = [r for r in members if r["metric"] == metric]
        vits = list(dict.fromkeys(r["model"] for r in members if r["family"] == "vit"))
        cnns = list(dict.fromkeys(r["model"] for r in members if r["family"] == "cnn"))
        if not vits or not cnns:
            continue
        kappas, c_obs, c_exp, cells, n = [], [], [], 0, 0
        by_cell: dict[str, list[dict[str, Any]]] = {}
        for r in members:
            by_cell.setdefault(str(r["cell"]), []).append(r)
        for cell_rows in by_cell.values():
            arrays = {}
            for r in cell_rows:
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
        suite = str(members[0]["suite"])
        for i, v in enumerate(vits):
            for j, c in enumerate(cnns):
                out.append({"protocol": protocol, "suite": suite, "vit_model": v, "cnn_model": c, "cells": cells,
                            "n": n, "c_obs": float(mean["c_obs"][i, j]), "c_exp": float(mean["c_exp"][i, j]),
                            "kappa": float(mean["kappa"][i, j])})
    return pd.DataFrame(out, columns=list(CONSISTENCY_COLUMNS))
