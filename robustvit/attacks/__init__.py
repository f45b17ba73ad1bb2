"""Adversarial attacks: adapters over torchattacks and foolbox, AutoAttack, sanity checks.

Every registered attack is an :class:`robustvit.attacks.base.Attack` subclass working on a model that
takes [0,1] RGB input (normalisation inside the model), with epsilons in that same pixel space.
Names carry the threat model (``pgd-linf``, ``apgd-ce-l2``); the short aliases (``apgd-ce``,
``autoattack``, ``square``, ...) mean the Linf version. Built-ins are registered lazily through
:data:`BUILTINS` (read by :data:`robustvit.registries.ATTACKS`).

Modules: :mod:`~robustvit.attacks.base` (contract, epsilon parsing, projection),
:mod:`~robustvit.attacks.torchattacks_adapters`, :mod:`~robustvit.attacks.foolbox_adapters`,
:mod:`~robustvit.attacks.autoattack` (the cascade), :mod:`~robustvit.attacks.engine` (one batch ->
counts, re-predicted), :mod:`~robustvit.attacks.checks` (gradient-masking sanity checks).
"""

from __future__ import annotations

_TA = "robustvit.attacks.torchattacks_adapters"
_FB = "robustvit.attacks.foolbox_adapters"
_AA = "robustvit.attacks.autoattack"

BUILTINS: dict[str, str | tuple[str, list[str]]] = {
    "fgsm": (f"{_TA}:FGSM", ["fgsm-linf"]),
    "pgd-linf": (f"{_TA}:PGDLinf", ["pgd"]),
    "pgd-l2": f"{_TA}:PGDL2",
    "apgd-ce-linf": (f"{_TA}:APGDCE", ["apgd-ce"]),
    "apgd-ce-l2": f"{_TA}:APGDCEL2",
    "apgd-t-linf": (f"{_TA}:APGDT", ["apgd-t", "apgd-dlr-t"]),
    "apgd-t-l2": f"{_TA}:APGDTL2",
    "fab-t-linf": (f"{_TA}:FABT", ["fab-t"]),
    "fab-t-l2": f"{_TA}:FABTL2",
    "square-linf": (f"{_TA}:Square", ["square"]),
    "square-l2": f"{_TA}:SquareL2",
    "cw-l2": (f"{_FB}:CWL2", ["cw"]),
    "deepfool-l2": (f"{_FB}:DeepFoolL2", ["deepfool"]),
    "deepfool-linf": f"{_FB}:DeepFoolLinf",
    "hsj-l2": (f"{_FB}:HopSkipJumpL2", ["hopskipjump", "hsj"]),
    "hsj-linf": f"{_FB}:HopSkipJumpLinf",
    "autoattack-linf": (f"{_AA}:AutoAttack", ["autoattack", "aa"]),
    "autoattack-l2": f"{_AA}:AutoAttackL2",
}
