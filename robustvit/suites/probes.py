"""The probes suite: ViT probes (patch drop and shuffle, CutOut, Fourier sensitivity, attention,
patch interactions, perturbation spectra) on any model, cells ``<probe>/<cell>``.

Options:

* ``probes``: ``"all"`` (default: every registered probe) or a list of probe names
  (``robustvit list probes``).
* ``params``: per-probe options, e.g. ``{patch_drop = {fractions = [0.0, 0.5]}, fourier = {stride = 2}}``.
* ``protocol``: ``standard`` (default) or another protocol, handed to every listed probe that has a
  ``protocol`` option (``cutout``: ``paul_chen``, Paul & Chen's images and hole geometry) unless its
  ``params`` set one; an error when no listed probe has one. It shows in the probes' configs.

A probe marked ViT-only (attention) computes no cells for other families: the runner notes it was
skipped and why. Metric paths read ``probes/<probe>/<cell>/<metric>``, e.g.
``probes/patch_drop/random/f=0.5/top1``.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.probes.base import Probe


class ProbesSuite(Suite):
    """Runs the requested probes; see the module docstring."""

    kind: ClassVar[str] = "probes"
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, Any]] = {"probes": "all", "params": {}, "protocol": "standard"}

    def validate(self) -> None:
        from robustvit.registries import PROBES

        where = f"suite {self.name!r}"
        names = self.opts["probes"]
        if names == "all":
            names = PROBES.names()
        if isinstance(names, str) or not isinstance(names, list) or not names:
            raise UserError(f"{where}: 'probes' must be \"all\" or a non-empty list (known: {', '.join(PROBES.names())})")
        names = list(dict.fromkeys(PROBES.canonical(str(n)) for n in names))
        params = self.opts["params"]
        if not isinstance(params, Mapping):
            raise UserError(f"{where}: 'params' must be a table of probe name -> options")
        unknown = [p for p in params if PROBES.canonical(str(p)) not in names]
        if unknown:
            raise UserError(f"{where}: 'params' sets {unknown[0]!r}, which is not in 'probes' ({', '.join(names)})")
        given = {PROBES.canonical(str(k)): dict(v) if isinstance(v, Mapping) else v for k, v in params.items()}
        protocol = self.opts["protocol"]
        takers = [n for n in names if "protocol" in PROBES.get(n).options]
        if protocol != "standard" and not takers:
            raise UserError(f"{where}: protocol {protocol!r} applies to none of {', '.join(names)} (probes with a "
                            f"protocol: {', '.join(n for n in PROBES.names() if 'protocol' in PROBES.get(n).options)})")
        self.probes: list[Probe] = []
        for name in names:
            kw = given.get(name, {})
            if not isinstance(kw, dict):
                raise UserError(f"{where}: params.{name} must be a table of options")
            if protocol != "standard" and name in takers:
                kw = {"protocol": protocol, **kw}
            try:
                self.probes.append(PROBES.get(name)(**kw))
            except UserError as exc:
                raise UserError(f"{where}: {exc}") from None

    def config(self) -> dict[str, Any]:
        return {"probes": [p.name for p in self.probes], "params": {p.name: p.config() for p in self.probes}}

    def cells(self) -> list[str]:
        return [f"{p.name}/{c}" for p in self.probes for c in p.cells()]

    def cells_for(self, model: Any) -> list[str]:
        return [f"{p.name}/{c}" for p in self.probes if p.skip_reason(model) is None for c in p.cells_for(model)]

    def notes_for(self, model: Any) -> list[str]:
        return [reason for p in self.probes if (reason := p.skip_reason(model)) is not None]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        wanted = set(cells)
        for probe in self.probes:
            mine = [c for c in probe.cells_for(ctx.model) if f"{probe.name}/{c}" in wanted]
            if not mine or probe.skip_reason(ctx.model) is not None:
                continue
            for result in probe.run(ctx, mine):
                result.cell = f"{probe.name}/{result.cell}" if result.cell else probe.name
                yield result
