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


def auroc(id_scores: Any, ood_scores: Any) -> float:
    """Area under the ROC curve, OOD positive; 0.5 is chance, 1.0 a perfect separation.

    Args:
        id_scores: Outlier scores of in-distribution images (1-D array or tensor).
        ood_scores: Outlier scores of OOD images.

    Returns:
        ``roc_auc_score(is_ood, scores)``: P(score_OOD > score_ID) + 0.5 P(tie). Identical under
        the ID-positive convention (negate the scores and swap the labels).
    """
    from sklearn.metrics import roc_auc_score

    prepared = _prepare(id_scores, ood_scores)
    return math.nan if prepared is None else float(roc_auc_score(*prepared))


def _aupr(positive: np.ndarray, scores: np.ndarray) -> float:
    from sklearn.metrics import auc, precision_recall_curve

    precision, recall, _ = precision_recall_curve(positive, scores)
    return float(auc(recall, precision))


def aupr_out(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under the precision-recall curve with OOD as the positive class.

    Chance level is the fraction of OOD images among all scored images.

    Returns:
        ``auc(recall, precision)`` of ``precision_recall_curve(is_ood, scores)``.
    """
    prepared = _prepare(id_scores, ood_scores)
    return math.nan if prepared is None else _aupr(prepared[0], prepared[1])


def aupr_in(id_scores: Any, ood_scores: Any) -> float:
    """Trapezoidal area under the precision-recall curve with ID as the positive class.

    Lower outlier scores mean more likely ID, so the scores are negated. Chance level is the
    fraction of ID images.

    Returns:
        ``auc(recall, precision)`` of ``precision_recall_curve(1 - is_ood, -scores)``.
    """
    prepared = _prepare(id_scores, ood_scores)
    return math.nan if prepared is None else _aupr(1.0 - prepared[0], -prepared[1])


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
    from sklearn.metrics import roc_curve

    if not 0.0 <= tpr <= 1.0:
        raise ValueError(f"tpr must be a fraction in [0, 1], got {tpr}")
    prepared = _prepare(id_scores, ood_scores)
    if prepared is None:
        return math.nan
    fpr_curve, tpr_curve, _ = roc_curve(*prepared, drop_intermediate=False)
    idx = int(np.searchsorted(tpr_curve, tpr, side="left"))  # first point with TPR >= tpr
    return float(fpr_curve[min(idx, len(fpr_curve) - 1)])


def ood_metrics(id_scores: Any, ood_scores: Any, tpr: float = 0.95) -> dict[str, float]:
    """All suite metrics for one (ID, OOD) pair: ``auroc``, ``aupr_in``, ``aupr_out``, ``fpr95``.

    See the module docstring for the convention. ``fpr95`` is :func:`fpr_at_tpr` at ``tpr``.
    """
    return {
        "auroc": auroc(id_scores, ood_scores),
        "aupr_in": aupr_in(id_scores, ood_scores),
        "aupr_out": aupr_out(id_scores, ood_scores),
        "fpr95": fpr_at_tpr(id_scores, ood_scores, tpr),
    }

