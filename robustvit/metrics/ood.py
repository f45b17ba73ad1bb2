"""OOD-detection metrics: AUROC, AUPR-In, AUPR-Out and FPR@95TPR, with one fixed convention.

Convention (the one OpenOOD v1.5 and pytorch-ood 0.4 use):

* Scores are *outlier* scores: higher means more out-of-distribution.
* **OOD is the positive class.** AUROC is the probability that a random OOD image scores higher
  than a random ID image, ties counting one half (``sklearn.metrics.roc_auc_score``).
* **FPR@95TPR** is the fraction of ID images flagged as OOD at the highest threshold that still
  flags at least 95% of the OOD images (true positive rate >= 0.95); every distinct score is a
  candidate threshold (``roc_curve(..., drop_intermediate=False)``). Lower is better.
* **AUPR-Out** is the area under the precision-recall curve with OOD positive; **AUPR-In** the
  same with ID positive and the scores negated. Both are trapezoidal areas,
  ``sklearn.metrics.auc(recall, precision)`` over ``sklearn.metrics.precision_recall_curve``,
  which is what OpenOOD and pytorch-ood compute.

All four come from one sort of the scores (the counts behind ``sklearn.metrics.roc_curve``, every
distinct score a threshold, see :class:`_Curves`); the tests check each metric against
scikit-learn's own function (and pytorch-ood's ``OODMetrics``).

Converting to other papers' conventions:

* *ID as the positive class* (ODIN, Energy, KNN, ReAct papers and Hendrycks et al.'s code report
  "FPR of OOD at 95% TPR of ID"): swap the roles and negate the scores,
  ``fpr_at_tpr(-ood_scores, -id_scores)``. AUROC is the same number under both conventions;
  AUPR-In here *is* their "AUPR" with ID positive, AUPR-Out their "AUPR" with OOD positive.
* *Confidence scores* (higher = more ID, as OpenOOD's postprocessors return): pass ``-conf``.
* *Average precision* instead of the trapezoidal area (``average_precision_score``, used by
  Hendrycks et al.'s ImageNet-O numbers): :func:`average_precision` computes it with the same
  positive class; it differs from AUPR-Out by the interpolation only.
* *Percent*: multiply by 100.

Non-finite scores: ``+inf`` / ``-inf`` are kept in order (mapped to the largest / smallest
float); any NaN score makes every metric NaN (a failed detector must not look like chance).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

METRICS: tuple[str, ...] = ("auroc", "aupr_in", "aupr_out", "fpr95")
#: direction of each metric returned by :func:`ood_metrics`
HIGHER_IS_BETTER: dict[str, bool] = {"auroc": True, "aupr_in": True, "aupr_out": True, "fpr95": False}


def _to_numpy(scores: Any) -> np.ndarray:
    if hasattr(scores, "detach"):  # torch tensor, on any device
        scores = scores.detach().to("cpu").double().numpy()
    return np.asarray(scores, dtype=np.float64).reshape(-1)


def _prepare(id_scores: Any, ood_scores: Any) -> tuple[np.ndarray, np.ndarray] | None:
    """(is_ood, scores) as float arrays, or None when a score is NaN."""
    s_id, s_ood = _to_numpy(id_scores), _to_numpy(ood_scores)
    if s_id.size == 0 or s_ood.size == 0:
        raise ValueError(f"OOD metrics need ID and OOD scores (got {s_id.size} ID and {s_ood.size} OOD)")
    scores = np.concatenate([s_id, s_ood])
    if np.isnan(scores).any():
        return None
    big = np.finfo(np.float64).max
    scores = np.nan_to_num(scores, posinf=big, neginf=-big)
    is_ood = np.concatenate([np.zeros(s_id.size), np.ones(s_ood.size)])
    return is_ood, scores


class _Curves:
    """Counts at every distinct threshold, from one sort of the scores.

    ``tps[k]`` / ``fps[k]``: OOD / ID images scoring >= the k-th highest distinct score (k = 0 is
    the empty set): exactly the points of ``sklearn.metrics.roc_curve(drop_intermediate=False)``,
    computed as its ``_binary_clf_curve`` does, without its per-call input validation (which costs
    more than the counting; the suite computes a few hundred of these per model). Every metric
    derives from these counts, the precision-recall curves as ``precision_recall_curve`` builds
    them; the tests check each metric against scikit-learn's own function.
    """

    def __init__(self, is_ood: np.ndarray, scores: np.ndarray) -> None:
        order = np.argsort(scores, kind="mergesort")[::-1]
        ranked = scores[order]
        last = np.r_[np.flatnonzero(np.diff(ranked)), ranked.size - 1]  # last index of each tie group
        self.tps = np.r_[0.0, np.cumsum(is_ood[order])[last]]
        self.fps = np.r_[0.0, last + 1 - self.tps[1:]]
        self.n_ood, self.n_id = self.tps[-1], self.fps[-1]
        self.tpr = self.tps / self.n_ood
        self.fpr = self.fps / self.n_id

    def auroc(self) -> float:
        return float(np.trapezoid(self.tpr, self.fpr))

    @staticmethod
    def _pr_area(tps: np.ndarray, fps: np.ndarray) -> float:
        """Trapezoidal PR area from counts at thresholds of increasing recall, plus (recall 0, precision 1)."""
        precision = np.r_[1.0, tps / (tps + fps)]
        recall = np.r_[0.0, tps / tps[-1]]
        return float(np.trapezoid(precision, recall))

    def aupr_out(self) -> float:
        return self._pr_area(self.tps[1:], self.fps[1:])

    def aupr_in(self) -> float:
        # ID positive, lower score first: images scoring <= the k-th threshold are those not above it
        tps_in = self.n_id - self.fps[:-1]
        fps_in = self.n_ood - self.tps[:-1]
        return self._pr_area(tps_in[::-1], fps_in[::-1])

    def fpr_at(self, tpr: float) -> float:
        idx = int(np.searchsorted(self.tpr, tpr, side="left"))  # first threshold with TPR >= tpr
        return float(self.fpr[min(idx, len(self.fpr) - 1)])


def _curves(id_scores: Any, ood_scores: Any) -> _Curves | None:
    prepared = _prepare(id_scores, ood_scores)
    return None if prepared is None else _Curves(*prepared)


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve, OOD positive; 0.5 is chance, 1.0 a perfect separation.

    Args:
        id_scores: Outlier scores of in-distribution images (1-D array or tensor).
        ood_scores: Outlier scores of OOD images.

    Returns:
        ``roc_auc_score(is_ood, scores)``: P(score_OOD > score_ID) + 0.5 P(tie). Identical under
        the ID-positive convention (negate the scores and swap the labels).
    """
    curves = _curves(id_scores, ood_scores)
    return math.nan if curves is None else curves.auroc()


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under the precision-recall curve with OOD as the positive class.

    Chance level is the fraction of OOD images among all scored images.

    Returns:
        ``auc(recall, precision)`` of ``precision_recall_curve(is_ood, scores)``.
    """
    curves = _curves(id_scores, ood_scores)
    return math.nan if curves is None else curves.aupr_out()


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under the precision-recall curve with ID as the positive class.

    Lower outlier scores mean more likely ID, so the scores are negated. Chance level is the
    fraction of ID images.

    Returns:
        ``auc(recall, precision)`` of ``precision_recall_curve(1 - is_ood, -scores)``.
    """
    curves = _curves(id_scores, ood_scores)
    return math.nan if curves is None else curves.aupr_in()


def average_precision(id_scores: Any, ood_scores: Any) -> float:
    """Average precision (step-wise AUPR, no interpolation) with OOD positive.

    Not one of the suite's metrics; for comparing with papers that report
    ``sklearn.metrics.average_precision_score`` (e.g. ImageNet-O in Hendrycks et al., 2021).
    For their ID-positive variant use ``average_precision(-ood_scores, -id_scores)``.
    """
    from sklearn.metrics import average_precision_score

    prepared = _prepare(id_scores, ood_scores)
    return math.nan if prepared is None else float(average_precision_score(*prepared))


def fpr_at_tpr(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> float:
    """Fraction of ID images flagged OOD at the first threshold that flags >= ``tpr`` of the OOD images.

    OOD is the positive class (OpenOOD's and pytorch-ood's "FPR@95"). Thresholds are all distinct
    scores, from the highest down; ties enter together. For the ID-positive convention of the
    ODIN / Energy / KNN papers (fraction of OOD accepted when 95% of ID is accepted) call
    ``fpr_at_tpr(-ood_scores, -id_scores, tpr)``.

    Args:
        id_scores: Outlier scores of in-distribution images.
        ood_scores: Outlier scores of OOD images.
        tpr: The true positive rate to reach, a fraction in [0, 1].

    Returns:
        The false positive rate in [0, 1]; lower is better.
    """
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be a fraction in [0, 1], got {tpr}")
    curves = _curves(id_scores, ood_scores)
    return math.nan if curves is None else curves.fpr_at(tpr)


def ood_metrics(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> dict[str, float]:
    """All suite metrics for one (ID, OOD) pair: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``.

    See the module docstring for the convention; ``fpr95`` is :func:`fpr_at_tpr` at ``tpr``. The
    scores are sorted once (one ``roc_curve``) for all four.
    """
    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be a fraction in [0, 1], got {tpr}")
    curves = _curves(id_scores, ood_scores)
    if curves is None:
        return dict.fromkeys(METRICS, math.nan)
    return {"auroc": curves.auroc(), "aupr_in": curves.aupr_in(), "aupr_out": curves.aupr_out(), "fpr95": curves.fpr_at(tpr)}
