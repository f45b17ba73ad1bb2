"""Suites: one module per suite kind; built-ins registered lazily in :data:`BUILTINS`."""

from __future__ import annotations

BUILTINS: dict[str, str] = {
    "clean": "robustvit.suites.clean:CleanSuite",
    "corruption": "robustvit.suites.corruption:CorruptionSuite",
    "adversarial": "robustvit.suites.adversarial:AdversarialSuite",
    "ood": "robustvit.suites.ood:OODSuite",
    "probes": "robustvit.suites.probes:ProbesSuite",
    "stability": "robustvit.suites.stability:StabilitySuite",
    "shape_bias": "robustvit.suites.shape_bias:ShapeBiasSuite",
    "backgrounds": "robustvit.suites.backgrounds:BackgroundsSuite",
}
