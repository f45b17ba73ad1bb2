"""Metric functions, one module per concern: :mod:`classification`, :mod:`corruption`, :mod:`ood`.

Each function's docstring says which paper and which convention it follows.
"""

from __future__ import annotations

BUILTINS: dict[str, str] = {
    "top1": "robustvit.metrics.classification:top1",
    "topk": "robustvit.metrics.classification:topk",
    "nll": "robustvit.metrics.classification:nll",
    "ece": "robustvit.metrics.classification:ece",
}
