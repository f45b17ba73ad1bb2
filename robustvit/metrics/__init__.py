"""Metric functions, one module per concern: :mod:`classification`, :mod:`corruption`, :mod:`ood`.

Each function's docstring says which paper and which convention it follows.
"""

from __future__ import annotations

BUILTINS: dict[str, str | tuple[str, list[str]]] = {
    "top1": "robustvit.metrics.classification:top1",
    "topk": "robustvit.metrics.classification:topk",
    "nll": "robustvit.metrics.classification:nll",
    "ece": "robustvit.metrics.classification:ece",
    "auroc": "robustvit.metrics.ood:auroc",
    "aupr_in": "robustvit.metrics.ood:aupr_in",
    "aupr_out": "robustvit.metrics.ood:aupr_out",
    "fpr_at_tpr": ("robustvit.metrics.ood:fpr_at_tpr", ["fpr95"]),
    "ce": "robustvit.metrics.corruption:corruption_error",
    "relative_ce": "robustvit.metrics.corruption:relative_corruption_error",
}
