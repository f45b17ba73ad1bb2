"""Adapters over torchattacks: FGSM, PGD (Linf, L2), APGD-CE, APGD-T, FAB-T and Square.

Every attack runs on the [0,1]-input model itself (normalisation lives inside it), so torchattacks'
``set_normalization_used`` is never called and nothing is normalised twice. Defaults are those of the
original papers / the AutoAttack repository, not torchattacks' own where they differ:

* APGD-CE / APGD-T: 100 iterations (torchattacks: 10), rho 0.75, 1 restart;
* APGD-T and FAB-T: ``n_target_classes = 9`` target classes (torchattacks: ``n_classes - 1``, i.e.
  999 on ImageNet), capped at ``num_classes - 1``;
* FAB-T: 100 iterations, alpha_max 0.1, eta 1.05, beta 0.9;
* Square: 5000 queries, p_init 0.8, margin loss, ``resc_schedule=False`` (torchattacks: True).

torchattacks seeds the global RNGs inside its attacks; :func:`robustvit.attacks.base.seeded` forks them
so a run's other random draws do not depend on which attacks ran.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torchattacks
from torch import nn

from robustvit.attacks.base import Attack, quiet
from robustvit.errors import UserError

_NORM_NAME = {"linf": "Linf", "l2": "L2"}


def _build(cls: type, model: nn.Module, device: torch.device, **kw: Any) -> Any:
    """A torchattacks attack bound to ``model`` on ``device`` (its own device guess prints on failure)."""
    with quiet():
        atk = cls(model, **kw)
    atk.set_device(device)
    return atk


def _targets(self: Attack, num_classes: int) -> int:
    n = int(self.opts["n_target_classes"])
    if num_classes < 4:
        raise UserError(f"attack {self.name!r} needs a model with at least 4 classes (targeted DLR loss), got {num_classes}")
    if n < 1:
        raise UserError(f"attack {self.name!r}: n_target_classes must be >= 1, got {n}")
    return min(n, num_classes - 1)


def _num_classes(model: nn.Module, x: torch.Tensor) -> int:
    n = getattr(model, "num_classes", None)
    if n is None:
        with torch.no_grad():
            n = int(model(x[:1]).shape[1])
    return int(n)


class FGSM(Attack):
    """Fast Gradient Sign Method (Goodfellow et al., 2015), Linf; torchattacks ``FGSM``."""

    name = "fgsm"
    norm = "linf"
    iterative = False
    library = "torchattacks"

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        return _build(torchattacks.FGSM, model, x.device, eps=eps)(x, y)


class PGDLinf(Attack):
    """Projected gradient descent (Madry et al., 2018), Linf; torchattacks ``PGD``.

    Options: ``steps``, ``rel_stepsize`` (step size as a fraction of eps), ``random_start`` and
    ``restarts`` (each further restart attacks only the points still robust, with seed + r).
    """

    name = "pgd-linf"
    norm = "linf"
    library = "torchattacks"
    options: ClassVar[dict[str, Any]] = {"steps": 10, "rel_stepsize": 0.25, "random_start": True, "restarts": 1}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 3}
    _cls: ClassVar[type] = torchattacks.PGD

    def validate(self) -> None:
        if self.opts["restarts"] < 1:
            raise UserError(f"attack {self.name!r}: restarts must be >= 1, got {self.opts['restarts']}")

    def _attack(self, model: nn.Module, device: torch.device, eps: float) -> Any:
        o = self.opts
        return _build(self._cls, model, device, eps=eps, alpha=o["rel_stepsize"] * eps, steps=o["steps"],
                      random_start=o["random_start"])

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        atk = self._attack(model, x.device, eps)
        adv = atk(x, y)
        for restart in range(1, self.opts["restarts"]):
            with torch.no_grad():
                left = (model(adv).argmax(1) == y).nonzero().flatten()
            if left.numel() == 0:
                break
            torch.manual_seed(seed + restart)
            adv[left] = atk(x[left], y[left])
        return adv


class PGDL2(PGDLinf):
    """Projected gradient descent, L2; torchattacks ``PGDL2``."""

    name = "pgd-l2"
    norm = "l2"
    _cls: ClassVar[type] = torchattacks.PGDL2


class APGDCE(Attack):
    """Auto-PGD with cross-entropy loss (Croce & Hein, 2020); torchattacks ``APGD(loss="ce")``."""

    name = "apgd-ce-linf"
    norm = "linf"
    library = "torchattacks"
    options: ClassVar[dict[str, Any]] = {"steps": 100, "restarts": 1, "rho": 0.75}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 4}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        o = self.opts
        atk = _build(torchattacks.APGD, model, x.device, norm=_NORM_NAME[self.norm], eps=eps, steps=o["steps"],
                     n_restarts=o["restarts"], seed=seed, loss="ce", rho=o["rho"])
        return atk(x, y)


class APGDCEL2(APGDCE):
    name = "apgd-ce-l2"
    norm = "l2"


class APGDT(Attack):
    """Targeted Auto-PGD with the targeted DLR loss over the top ``n_target_classes`` classes; ``APGDT``."""

    name = "apgd-t-linf"
    norm = "linf"
    library = "torchattacks"
    options: ClassVar[dict[str, Any]] = {"steps": 100, "restarts": 1, "rho": 0.75, "n_target_classes": 9}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 4, "n_target_classes": 2}

    def check_model(self, num_classes: int) -> None:
        _targets(self, num_classes)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        o = self.opts
        atk = _build(torchattacks.APGDT, model, x.device, norm=_NORM_NAME[self.norm], eps=eps, steps=o["steps"],
                     n_restarts=o["restarts"], seed=seed, rho=o["rho"])
        atk.n_target_classes = _targets(self, _num_classes(model, x))
        return atk(x, y)


class APGDTL2(APGDT):
    name = "apgd-t-l2"
    norm = "l2"


class FABT(Attack):
    """Targeted Fast Adaptive Boundary attack (Croce & Hein, 2020); torchattacks ``FAB(multi_targeted=True)``.

    A minimum-norm attack: run on its own it searches without a bound (the engine reports the median
    norm and the robust accuracy at each requested epsilon); inside AutoAttack it keeps only
    adversarial points within eps, as in the original.
    """

    name = "fab-t-linf"
    norm = "linf"
    min_norm = True
    library = "torchattacks"
    options: ClassVar[dict[str, Any]] = {
        "steps": 100, "restarts": 1, "n_target_classes": 9, "alpha_max": 0.1, "eta": 1.05, "beta": 0.9,
    }
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 4, "n_target_classes": 2}

    def check_model(self, num_classes: int) -> None:
        _targets(self, num_classes)

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        o = self.opts
        bound = 1e10 if eps == float("inf") else eps
        atk = _build(torchattacks.FAB, model, x.device, norm=_NORM_NAME[self.norm], eps=bound, steps=o["steps"],
                     n_restarts=o["restarts"], alpha_max=o["alpha_max"], eta=o["eta"], beta=o["beta"], seed=seed,
                     multi_targeted=True)
        atk.n_target_classes = _targets(self, _num_classes(model, x))
        return atk(x, y)


class FABTL2(FABT):
    name = "fab-t-l2"
    norm = "l2"


class Square(Attack):
    """Square Attack (Andriushchenko et al., 2020), score-based random search; torchattacks ``Square``."""

    name = "square-linf"
    norm = "linf"
    gradient_free = True
    library = "torchattacks"
    options: ClassVar[dict[str, Any]] = {"n_queries": 5000, "p_init": 0.8, "restarts": 1, "resc_schedule": False}
    smoke_options: ClassVar[dict[str, Any]] = {"n_queries": 20}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        o = self.opts
        atk = _build(torchattacks.Square, model, x.device, norm=_NORM_NAME[self.norm], eps=eps,
                     n_queries=o["n_queries"], n_restarts=o["restarts"], p_init=o["p_init"], loss="margin",
                     resc_schedule=o["resc_schedule"], seed=seed)
        return atk(x, y)


class SquareL2(Square):
    name = "square-l2"
    norm = "l2"
