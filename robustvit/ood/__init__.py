"""OOD detectors: one module per detector, registered lazily in :data:`BUILTINS`.

Every detector follows :class:`robustvit.ood.base.Detector`: ``fit(features, logits, labels)``
on ID training data, ``score(features, logits)`` -> one outlier score per image, **higher = more
OOD**. All but ODIN work on the one shared forward pass (penultimate features and logits);
ODIN scores images through :meth:`~robustvit.ood.base.Detector.score_images`.
The embedded OOD image sets are registered as datasets in :mod:`robustvit.ood.datasets`.
"""

from __future__ import annotations

BUILTINS: dict[str, str | tuple[str, list[str]]] = {
    "msp": ("robustvit.ood.msp:MSP", ["softmax"]),
    "maxlogit": ("robustvit.ood.maxlogit:MaxLogit", ["max_logit", "mls"]),
    "energy": "robustvit.ood.energy:Energy",
    "entropy": "robustvit.ood.entropy:Entropy",
    "odin": "robustvit.ood.odin:ODIN",
    "mahalanobis": ("robustvit.ood.mahalanobis:Mahalanobis", ["mds"]),
    "rmd": ("robustvit.ood.rmd:RelativeMahalanobis", ["relative_mahalanobis"]),
    "vim": "robustvit.ood.vim:ViM",
    "knn": "robustvit.ood.knn:KNN",
    "react": "robustvit.ood.react:ReAct",
    "ash": "robustvit.ood.ash:ASH",
    "gen": "robustvit.ood.gen:GEN",
}
"""Registered name -> ``"module:attr"`` (or with aliases) of each built-in detector class."""
