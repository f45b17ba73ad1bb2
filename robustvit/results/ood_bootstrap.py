"""Bootstrap confidence intervals for the OOD-detection metrics, all replicates vectorised.

Same conventions as :mod:`robustvit.metrics.ood`: scores are outlier scores (higher = more OOD),
**OOD is the positive class**, AUROC and the AUPR-In / AUPR-Out areas are trapezoidal, FPR is
taken at the first threshold (from the highest score down) whose TPR reaches ``tpr``; ``+inf`` /
``-inf`` scores keep their order and any NaN score makes every metric NaN.

:func:`weighted_ood_metrics` computes the four metrics for many bootstrap replicates at once, each
replicate given as count weights on the ID and OOD samples (how often each was drawn): row ``b``
equals ``ood_metrics(np.repeat(id_scores, id_counts[b]), np.repeat(ood_scores, ood_counts[b]))``.
The pooled scores are sorted once; per replicate only cumulative sums of the weights are taken,
read at the last sample of each distinct score. A distinct score whose samples all have weight 0
in a replicate repeats the previous curve point and so adds nothing (zero-width trapezoids).

:func:`ood_bootstrap` draws the replicates (a stratified bootstrap: ID and OOD resampled
separately, each keeping its size) and returns percentile intervals (Efron & Tibshirani, 1993,
*An Introduction to the Bootstrap*, ch. 13). Torch-free: numpy only.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from robustvit.metrics.ood import METRICS, _prepare, _to_numpy


def _as_counts(counts: Any, n: int, name: str) -> np.ndarray:
    arr = np.asarray(counts)  # cast to float per chunk, not here: B x n may be large
    if arr.dtype.kind not in "biuf":
        arr = arr.astype(np.float64)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != n:
        raise ValueError(f"{name} must have shape (B, {n}), got {np.shape(counts)}")
    if not np.isfinite(arr).all() or (arr < 0).any():
        raise ValueError(f"{name} must be finite and non-negative")
    return arr


def _cum_at(counts: np.ndarray, order: np.ndarray, k: np.ndarray) -> np.ndarray:
    """Per row, the total weight of the first ``k[j]`` samples in ``order``: shape (rows, len(k))."""
    cum = np.zeros((counts.shape[0], order.size + 1))
    np.cumsum(np.take(counts, order, axis=1), axis=1, dtype=np.float64, out=cum[:, 1:])
    return np.take(cum, k, axis=1)


def _pr_area(tps: np.ndarray, fps: np.ndarray) -> np.ndarray:
    """Row-wise ``_Curves._pr_area``; a point with no weight yet (0/0) duplicates (recall 0, precision 1)."""
    denom = tps + fps
    precision = np.where(denom > 0, tps / np.where(denom > 0, denom, 1.0), 1.0)
    ones, zeros = np.ones((tps.shape[0], 1)), np.zeros((tps.shape[0], 1))
    precision = np.concatenate([ones, precision], axis=1)
    recall = np.concatenate([zeros, tps / tps[:, -1:]], axis=1)
    return np.trapezoid(precision, recall, axis=1)


def weighted_ood_metrics(
    id_scores: Any,
    ood_scores: Any,
    id_counts: Any,
    ood_counts: Any,
    tpr: float = 0.95,
    max_elements: int = 4_000_000,
) -> dict[str, np.ndarray]:
    """AUROC, AUPR-In, AUPR-Out and FPR@``tpr`` for many weighted replicates of one (ID, OOD) pair.

    Args:
        id_scores: Outlier scores of the ID images, shape (n_id,).
        ood_scores: Outlier scores of the OOD images, shape (n_ood,).
        id_counts: Non-negative weights of the ID images, shape (B, n_id) (or (n_id,) for B = 1);
            integer counts are how many times each image was drawn.
        ood_counts: Non-negative weights of the OOD images, shape (B, n_ood).
        tpr: The true positive rate for the FPR metric, a fraction in [0, 1].
        max_elements: Rows are processed in chunks of at most this many ``rows * (n_id + n_ood)``
            elements (at least one row per chunk), so memory does not grow with B.

    Returns:
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}`` -> float arrays of shape (B,). Row ``b`` is
        :func:`robustvit.metrics.ood.ood_metrics` of the scores repeated by row ``b``'s counts. A
        row whose ID or OOD weights sum to 0 is NaN; any NaN score makes every row NaN.
    """
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be a fraction in [0, 1], got {tpr}")
    s_id, s_ood = _to_numpy(id_scores), _to_numpy(ood_scores)
    prepared = _prepare(s_id, s_ood)
    w_id, w_ood = _as_counts(id_counts, s_id.size, "id_counts"), _as_counts(ood_counts, s_ood.size, "ood_counts")
    if w_id.shape[0] != w_ood.shape[0]:
        raise ValueError(f"id_counts and ood_counts differ in rows: {w_id.shape[0]} vs {w_ood.shape[0]}")
    n_rows = w_id.shape[0]
    out = {name: np.full(n_rows, np.nan) for name in METRICS}
    if prepared is None:
        return out
    is_ood, scores = prepared  # +-inf mapped to the largest / smallest float, as in ood_metrics
    s_id, s_ood = scores[is_ood == 0], scores[is_ood == 1]
    thresholds = np.unique(scores)[::-1]  # distinct scores, highest first: the curve points k = 1..G
    # per side: samples sorted by descending score; k-th point = weight of the samples scoring >= threshold k
    order_id, order_ood = np.argsort(-s_id, kind="stable"), np.argsort(-s_ood, kind="stable")
    k_id = np.r_[0, s_id.size - np.searchsorted(np.sort(s_id), thresholds, side="left")]
    k_ood = np.r_[0, s_ood.size - np.searchsorted(np.sort(s_ood), thresholds, side="left")]
    chunk = max(1, int(max_elements) // scores.size)
    for lo in range(0, n_rows, chunk):
        rows = slice(lo, min(lo + chunk, n_rows))
        fps = _cum_at(w_id[rows], order_id, k_id)  # (rows, G + 1), column 0 the empty set
        tps = _cum_at(w_ood[rows], order_ood, k_ood)
        tot_id, tot_ood = fps[:, -1:], tps[:, -1:]
        valid = (tot_id[:, 0] > 0) & (tot_ood[:, 0] > 0)
        with np.errstate(divide="ignore", invalid="ignore"):
            tpr_curve, fpr_curve = tps / tot_ood, fps / tot_id
            out["auroc"][rows] = np.trapezoid(tpr_curve, fpr_curve, axis=1)
            out["aupr_out"][rows] = _pr_area(tps[:, 1:], fps[:, 1:])
            # ID positive, lower score first: images scoring <= threshold k are those not above it
            out["aupr_in"][rows] = _pr_area((tot_id - fps[:, :-1])[:, ::-1], (tot_ood - tps[:, :-1])[:, ::-1])
        idx = np.minimum((tpr_curve < tpr).sum(axis=1), tps.shape[1] - 1)  # searchsorted(side="left") per row
        out["fpr95"][rows] = np.take_along_axis(fpr_curve, idx[:, None], axis=1)[:, 0]
        for name in METRICS:
            out[name][rows] = np.where(valid, out[name][rows], np.nan)
    return out


def ood_bootstrap(
    id_scores: Any,
    ood_scores: Any,
    *,
    tpr: float = 0.95,
    n_boot: int = 1000,
    seed: int = 0,
    level: float = 0.95,
) -> dict[str, tuple[float, float]]:
    """Stratified percentile-bootstrap confidence intervals of the four OOD metrics.

    ID and OOD images are resampled separately with replacement, each set keeping its size
    (``default_rng(seed).multinomial(n, [1/n] * n, size=n_boot)``, ID first, then OOD); each
    replicate's metrics come from :func:`weighted_ood_metrics`. The interval is the percentile
    interval of Efron & Tibshirani (1993), NaN replicates ignored.

    Args:
        id_scores: Outlier scores of the ID images (higher = more OOD).
        ood_scores: Outlier scores of the OOD images.
        tpr: The true positive rate for the FPR metric.
        n_boot: Number of bootstrap replicates.
        seed: Seed of ``numpy.random.default_rng``; the same seed gives the same intervals.
        level: Confidence level of the two-sided interval, in (0, 1).

    Returns:
        ``{"auroc", "aupr_in", "aupr_out", "fpr95"}`` -> ``(low, high)``; ``(nan, nan)`` when a
        score is NaN.
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"level must be in (0, 1), got {level}")
    if n_boot < 1:
        raise ValueError(f"n_boot must be positive, got {n_boot}")
    s_id, s_ood = _to_numpy(id_scores), _to_numpy(ood_scores)
    if s_id.size == 0 or s_ood.size == 0:
        raise ValueError(f"OOD metrics need ID and OOD scores (got {s_id.size} ID and {s_ood.size} OOD)")
    rng = np.random.default_rng(seed)
    id_counts = rng.multinomial(s_id.size, np.full(s_id.size, 1 / s_id.size), size=n_boot)
    ood_counts = rng.multinomial(s_ood.size, np.full(s_ood.size, 1 / s_ood.size), size=n_boot)
    reps = weighted_ood_metrics(s_id, s_ood, id_counts, ood_counts, tpr=tpr)
    alpha = (1.0 - level) / 2.0
    out: dict[str, tuple[float, float]] = {}
    for name in METRICS:
        r = reps[name]
        if np.isnan(r).all():
            out[name] = (np.nan, np.nan)
        else:
            out[name] = (float(np.nanquantile(r, alpha)), float(np.nanquantile(r, 1.0 - alpha)))
    return out
