"""Closed-form statistics of the results layer: Wilson intervals, McNemar's exact test, error consistency.

All vectorised over numpy arrays; the tests check them against statsmodels / scipy / scikit-learn.
"""

from __future__ import annotations

import math
import warnings
from functools import lru_cache

import numpy as np

LEVEL = 0.95


@lru_cache(maxsize=8)
def z_value(level: float = LEVEL) -> float:
    """The two-sided normal quantile of a confidence level (1.95996 for 95%)."""
    from scipy.stats import norm

    return float(norm.ppf(0.5 + level / 2))


def wilson(k: np.ndarray | float, n: np.ndarray | float, level: float = LEVEL) -> tuple[np.ndarray, np.ndarray]:
    """Wilson score interval of a proportion ``k / n`` (Wilson 1927; no continuity correction).

    The interval of ``statsmodels.stats.proportion.proportion_confint(k, n, method="wilson")`` and
    of ``scipy.stats.binomtest(k, n).proportion_ci(method="wilson")``. NaN where ``n`` is 0.
    """
    k = np.asarray(k, dtype=np.float64)
    n = np.asarray(n, dtype=np.float64)
    z = z_value(level)
    with np.errstate(invalid="ignore", divide="ignore"):
        p = k / n
        denom = 1 + z * z / n
        center = (p + z * z / (2 * n)) / denom
        half = z / denom * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
        low, high = np.clip(center - half, 0.0, 1.0), np.clip(center + half, 0.0, 1.0)
    bad = ~(n > 0)
    return np.where(bad, np.nan, low), np.where(bad, np.nan, high)


def percentile_interval(replicates: np.ndarray, level: float = LEVEL, axis: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Percentile bootstrap interval (Efron & Tibshirani 1993, ch. 13) of replicates along ``axis``."""
    reps = np.asarray(replicates, dtype=np.float64)
    if reps.size == 0 or np.isnan(reps).all():
        shape = np.delete(reps.shape, axis) if reps.ndim > 1 else ()
        return np.full(shape, np.nan), np.full(shape, np.nan)
    alpha = (1 - level) / 2
    with warnings.catch_warnings():  # all-NaN slices along the axis give NaN, silently
        warnings.simplefilter("ignore", RuntimeWarning)
        low, high = np.nanquantile(reps, [alpha, 1 - alpha], axis=axis)
    return low, high


def bootstrap_p_value(diff_replicates: np.ndarray) -> float:
    """Two-sided bootstrap p-value of "difference = 0": twice the smaller tail mass at 0 (capped at 1)."""
    reps = np.asarray(diff_replicates, dtype=np.float64)
    reps = reps[~np.isnan(reps)]
    if reps.size == 0:
        return math.nan
    below, above = float(np.mean(reps <= 0)), float(np.mean(reps >= 0))
    return min(1.0, 2 * min(below, above))


def mcnemar_exact(a_correct: np.ndarray, b_correct: np.ndarray) -> float:
    """Two-sided exact McNemar test of two paired accuracies (binomial test on the discordant pairs).

    ``statsmodels.stats.contingency_tables.mcnemar(table, exact=True)``; 1.0 when no pair disagrees.
    """
    from scipy.stats import binomtest

    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    only_a, only_b = int(np.sum(a & ~b)), int(np.sum(~a & b))
    if only_a + only_b == 0:
        return 1.0
    return float(binomtest(min(only_a, only_b), only_a + only_b, 0.5).pvalue)


def error_consistency(a_correct: np.ndarray, b_correct: np.ndarray) -> dict[str, np.ndarray]:
    """Error consistency (Geirhos et al., NeurIPS 2020): Cohen's kappa over per-image correctness.

    ``c_obs`` is the fraction of images both classify correctly or both incorrectly; ``c_exp =
    p_a p_b + (1 - p_a)(1 - p_b)`` what two independent observers with those accuracies would share;
    ``kappa = (c_obs - c_exp) / (1 - c_exp)``. Vectorised over models: ``a_correct`` (m_a, n) and
    ``b_correct`` (m_b, n) give (m_a, m_b) matrices; 1-D inputs give scalars. NaN where ``c_exp`` is 1.
    """
    a = np.atleast_2d(np.asarray(a_correct, dtype=np.float32))
    b = np.atleast_2d(np.asarray(b_correct, dtype=np.float32))
    n = a.shape[1]
    right_a, right_b = a.sum(1, dtype=np.float64)[:, None], b.sum(1, dtype=np.float64)[None, :]
    both_right = (a @ b.T).astype(np.float64)  # exact: integer counts below 2**24 per pair
    both = (2 * both_right - right_a - right_b + n) / n  # both right + both wrong
    pa, pb = right_a / n, right_b / n
    expected = pa * pb + (1 - pa) * (1 - pb)
    with np.errstate(invalid="ignore", divide="ignore"):
        kappa = np.where(expected < 1, (both - expected) / (1 - expected), np.nan)
    out = {"c_obs": both, "c_exp": expected, "kappa": kappa}
    if np.ndim(a_correct) == 1 and np.ndim(b_correct) == 1:
        return {k: v[0, 0] for k, v in out.items()}
    return out
