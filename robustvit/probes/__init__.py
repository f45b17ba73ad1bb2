"""ViT probes: why ViTs and CNNs differ. One module per probe, registered lazily in :data:`BUILTINS`.

Every probe follows :class:`robustvit.probes.base.Probe`; the ``probes`` suite
(:mod:`robustvit.suites.probes`) runs them on any model (ViT-only probes skip other families with a
note) and names their cells ``<probe>/<cell>``.
"""

from __future__ import annotations

BUILTINS: dict[str, str | tuple[str, list[str]]] = {
    "patch_drop": "robustvit.probes.patch_drop:PatchDrop",
    "patch_shuffle": "robustvit.probes.patch_shuffle:PatchShuffle",
    "cutout": "robustvit.probes.cutout:Cutout",
    "fourier": "robustvit.probes.fourier:FourierHeatMap",
    "spectrum": "robustvit.probes.spectrum:PerturbationSpectrum",
    "attention": "robustvit.probes.attention:AttentionProbe",
    "interaction": "robustvit.probes.interaction:InteractionProbe",
}
"""Registered name -> ``"module:attr"`` (or with aliases) of each built-in probe class."""
