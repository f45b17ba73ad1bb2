"""The registry instances, one per kind of plugin.

Built-in entries are lazy ``"module:attr"`` strings kept in tables owned by each subpackage, so
importing robustvit imports no model, corruption or attack code. Third-party plugins register
through the entry-point groups ``robustvit.models``, ``robustvit.datasets``, ``robustvit.suites``,
``robustvit.corruptions``, ``robustvit.attacks``, ``robustvit.detectors``, ``robustvit.metrics``
and ``robustvit.probes``.
"""

from __future__ import annotations

from robustvit.registry import Registry

#: model factories: ``fn(**kwargs) -> LoadedModel`` (see :mod:`robustvit.models`)
MODELS: Registry = Registry("models", tables=["robustvit.models.zoo:BUILTINS"])
#: dataset factories: ``fn(split, **kwargs) -> robustvit.data.Source``
DATASETS: Registry = Registry("datasets", tables=["robustvit.data.catalog:BUILTINS", "robustvit.ood.datasets:BUILTINS",
                                           "robustvit.data.cue_conflict:BUILTINS", "robustvit.data.imagenet9:BUILTINS"])
#: suite classes (subclasses of :class:`robustvit.suites.base.Suite`)
SUITES: Registry = Registry("suites", tables=["robustvit.suites:BUILTINS"])
#: batched corruption functions ``fn(images, severity, *, preset, generator) -> images``
CORRUPTIONS: Registry = Registry("corruptions", tables=["robustvit.corruptions:BUILTINS"])
#: attack adapters (see :mod:`robustvit.attacks`)
ATTACKS: Registry = Registry("attacks", tables=["robustvit.attacks:BUILTINS"])
#: OOD detectors (see :mod:`robustvit.ood`)
DETECTORS: Registry = Registry("detectors", tables=["robustvit.ood:BUILTINS"])
#: metric functions
METRICS: Registry = Registry("metrics", tables=["robustvit.metrics:BUILTINS"])
#: ViT probes (subclasses of :class:`robustvit.probes.base.Probe`)
PROBES: Registry = Registry("probes", tables=["robustvit.probes:BUILTINS"])

ALL: dict[str, Registry] = {
    r.kind: r for r in (MODELS, DATASETS, SUITES, CORRUPTIONS, ATTACKS, DETECTORS, METRICS, PROBES)
}
