"""Adapters over foolbox 3: Carlini-Wagner L2, DeepFool (L2, Linf) and HopSkipJump (decision-based).

All three are minimum-norm attacks: they search for the smallest perturbation that changes the
prediction, without an epsilon. The engine reports their median norm and, for each requested epsilon,
the robust accuracy with the found perturbation clipped to that epsilon and re-predicted.

foolbox pitfalls handled here: the model is given to ``PyTorchModel`` with ``bounds=(0, 1)``, no
``preprocessing`` (the [0,1]-input model normalises inside) and an explicit ``device`` (foolbox moves a
model to ``cuda:0`` when given none); foolbox's success flags are ignored (the engine re-predicts);
HopSkipJump's initialisation is run here so that points it cannot start from count as not attacked
instead of failing the whole batch.
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import foolbox as fb
import torch
from torch import nn

from robustvit.attacks.base import Attack


def _fmodel(model: nn.Module, device: torch.device) -> fb.PyTorchModel:
    return fb.PyTorchModel(model, bounds=(0, 1), device=device)


def _raw(attack: fb.attacks.base.MinimizationAttack, model: nn.Module, x: torch.Tensor, y: torch.Tensor,
         **kwargs: Any) -> torch.Tensor:
    raw, _clipped, _success = attack(_fmodel(model, x.device), x, fb.criteria.Misclassification(y), epsilons=None,
                                     **kwargs)
    return raw.detach()


class CWL2(Attack):
    """Carlini & Wagner L2 attack (2017) with binary search over the constant; foolbox ``L2CarliniWagnerAttack``.

    Defaults trade foolbox's 9 x 10000 steps for 5 x 200 (about AutoAttack's cost per point).
    """

    name = "cw-l2"
    norm = "l2"
    min_norm = True
    library = "foolbox"
    options: ClassVar[dict[str, Any]] = {
        "binary_search_steps": 5, "steps": 200, "stepsize": 0.01, "confidence": 0.0, "initial_const": 0.001,
        "abort_early": True,
    }
    smoke_options: ClassVar[dict[str, Any]] = {"binary_search_steps": 2, "steps": 5}

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        return _raw(fb.attacks.L2CarliniWagnerAttack(**self.opts), model, x, y)


class DeepFoolL2(Attack):
    """DeepFool (Moosavi-Dezfooli et al., 2016), L2; foolbox ``L2DeepFoolAttack`` (batched)."""

    name = "deepfool-l2"
    norm = "l2"
    min_norm = True
    library = "foolbox"
    options: ClassVar[dict[str, Any]] = {"steps": 50, "candidates": 10, "overshoot": 0.02}
    smoke_options: ClassVar[dict[str, Any]] = {"steps": 5}
    _cls: ClassVar[type] = fb.attacks.L2DeepFoolAttack

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        return _raw(self._cls(**self.opts), model, x, y)


class DeepFoolLinf(DeepFoolL2):
    """DeepFool, Linf; foolbox ``LinfDeepFoolAttack``."""

    name = "deepfool-linf"
    norm = "linf"
    _cls: ClassVar[type] = fb.attacks.LinfDeepFoolAttack


class HopSkipJumpL2(Attack):
    """HopSkipJump (Chen et al., 2020), decision-based (labels only); foolbox ``HopSkipJumpAttack``.

    Starts from foolbox's blended-uniform-noise search; points with no adversarial starting point
    are returned unchanged (not attacked, counted robust).
    """

    name = "hsj-l2"
    norm = "l2"
    min_norm = True
    gradient_free = True
    library = "foolbox"
    options: ClassVar[dict[str, Any]] = {
        "steps": 64, "initial_gradient_eval_steps": 100, "max_gradient_eval_steps": 10000, "gamma": 1.0,
        "init_steps": 50, "init_directions": 1000,
    }
    smoke_options: ClassVar[dict[str, Any]] = {
        "steps": 2, "initial_gradient_eval_steps": 10, "max_gradient_eval_steps": 20, "init_directions": 20,
    }

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        o = dict(self.opts)
        init = fb.attacks.LinearSearchBlendedUniformNoiseAttack(directions=o.pop("init_directions"),
                                                                steps=o.pop("init_steps"))
        fmodel = _fmodel(model, x.device)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "failed to draw sufficient random inputs": handled below
            starts = init.run(fmodel, x, fb.criteria.Misclassification(y)).detach()
        ok = model(starts).argmax(1) != y
        adv = x.clone()
        if bool(ok.any()):
            attack = fb.attacks.HopSkipJumpAttack(constraint=self.norm, **o)
            adv[ok] = _raw(attack, model, x[ok], y[ok], starting_points=starts[ok])
        return adv


class HopSkipJumpLinf(HopSkipJumpL2):
    name = "hsj-linf"
    norm = "linf"
