"""AutoAttack (Croce & Hein, 2020) as a cascade over the member adapters, with per-point worst case.

Version ``standard`` is APGD-CE, APGD-T, FAB-T and Square with the original repository's settings
(100 iterations, 1 restart, 9 target classes, 5000 Square queries, p_init 0.8); version ``fast`` is
APGD-CE and APGD-T only. Each member attacks only the points every earlier member failed on; a point
counts as robust only if it survives all members (the worst case over attacks per point, never an
average over attacks). After each member the returned images are projected onto the threat model and
re-predicted through the model, so no member's own success flag is trusted.

Per batch the cascade reports ``robust_after_<member>`` counts (robust points left after each member),
from which the suite derives the per-member robust accuracy and the "Square found points the gradient
attacks missed" gradient-masking check of the original ``checks.py``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from robustvit.attacks.base import Attack, project
from robustvit.attacks.torchattacks_adapters import APGDCE, APGDCEL2, APGDT, APGDTL2, FABT, FABTL2, Square, SquareL2
from robustvit.errors import UserError

VERSIONS = ("standard", "fast")

_MEMBERS: dict[str, dict[str, type[Attack]]] = {
    "linf": {"apgd-ce": APGDCE, "apgd-t": APGDT, "fab-t": FABT, "square": Square},
    "l2": {"apgd-ce": APGDCEL2, "apgd-t": APGDTL2, "fab-t": FABTL2, "square": SquareL2},
}
_VERSION_MEMBERS = {"standard": ("apgd-ce", "apgd-t", "fab-t", "square"), "fast": ("apgd-ce", "apgd-t")}


class Cascade(Attack):
    """Members run in order, each on the points all earlier members failed on (per-point worst case).

    After each member its images are projected onto the threat model and re-predicted; ``run`` reports
    ``robust_after_<member>`` counts and, per point, ``point:robust_after_<member>`` booleans. Every member gets the same seed, as in the original AutoAttack.

    Args:
        members: Member name -> attack adapter, in order; all with the same threat model.
    """

    name = "cascade"
    library = "robustvit"

    def __init__(self, members: Mapping[str, Attack] | None = None, **opts: Any) -> None:
        super().__init__(**opts)
        if members is not None:
            self.members = dict(members)
        norms = {m.norm for m in self.members.values()}
        if len(norms) != 1:
            raise ValueError(f"cascade members must share one threat model, got {sorted(norms)}")
        self.norm = norms.pop()

    def check_model(self, num_classes: int) -> None:
        for member in self.members.values():
            member.check_model(num_classes)

    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        adv = x.clone()
        robust = torch.ones(len(x), dtype=torch.bool, device=x.device)
        counts: dict[str, float] = {}
        for key, member in self.members.items():
            idx = robust.nonzero().flatten()
            if idx.numel():
                grad_ctx = torch.no_grad() if member.gradient_free else torch.enable_grad()
                with grad_ctx:
                    out = member.perturb(model, x[idx], y[idx], eps=eps, seed=seed)
                out = project(x[idx], out, eps, self.norm)
                with torch.no_grad():
                    fooled = model(out).argmax(1) != y[idx]
                adv[idx[fooled]] = out[fooled]
                robust[idx[fooled]] = False
            counts[f"robust_after_{key}"] = float(robust.sum())
            counts[f"point:robust_after_{key}"] = robust.clone()  # per point (concatenated on OOM splits)
        return adv, counts

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        return self.run(model, x, y, eps=eps, seed=seed)[0]


class AutoAttack(Cascade):
    """AutoAttack, Linf. Options: ``version`` (``standard`` | ``fast``), ``steps``, ``n_target_classes``,
    ``n_queries`` (Square)."""

    name = "autoattack-linf"
    norm = "linf"
    options: ClassVar[dict[str, Any]] = {"version": "standard", "steps": 100, "n_target_classes": 9, "n_queries": 5000}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 3, "n_target_classes": 2, "n_queries": 10}

    def validate(self) -> None:
        o = self.opts
        if o["version"] not in VERSIONS:
            raise UserError(f"attack {self.name!r}: unknown version {o['version']!r} (allowed: {', '.join(VERSIONS)})")
        per_member: dict[str, dict[str, Any]] = {
            "apgd-ce": {"steps": o["steps"]},
            "apgd-t": {"steps": o["steps"], "n_target_classes": o["n_target_classes"]},
            "fab-t": {"steps": o["steps"], "n_target_classes": o["n_target_classes"]},
            "square": {"n_queries": o["n_queries"]},
        }
        table = _MEMBERS[self.norm]
        self.members = {key: table[key](**per_member[key]) for key in _VERSION_MEMBERS[o["version"]]}

    @property
    def label(self) -> str:
        version = self.opts["version"]
        return self.name if version == "standard" else self.name.replace("autoattack", f"autoattack-{version}")


class AutoAttackL2(AutoAttack):
    """AutoAttack, L2."""

    name = "autoattack-l2"
    norm = "l2"
