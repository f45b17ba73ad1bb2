"""The attack adapter contract, epsilon parsing and the small tensor helpers every adapter shares.

An adapter wraps one attack of torchattacks or foolbox (or, for AutoAttack, a cascade of adapters)
behind one call: :meth:`Attack.perturb` takes the model (a [0,1]-input module such as
:class:`robustvit.models.wrapper.ModelWrapper`), clean images in [0,1], labels, an epsilon in that
same [0,1] pixel space and an integer seed, and returns adversarial images. Adapters never decide
whether an attack succeeded: :mod:`robustvit.attacks.engine` projects the returned images onto the
threat model and re-predicts them through the model.
"""

from __future__ import annotations

import contextlib
import io
import math
import re
from collections.abc import Iterator, Mapping
from fractions import Fraction
from typing import Any, ClassVar

import torch
from torch import nn

from robustvit.errors import UserError

NORMS = ("linf", "l2")

_EPS_RE = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*(?:/\s*([0-9]*\.?[0-9]+)\s*)?$")


def parse_eps(value: object) -> tuple[float, str]:
    """Parse an epsilon from a suite file: ``"4/255"``, ``"0.5"``, ``0.5`` or ``0``.

    Returns:
        ``(value, label)``: the float in [0,1] pixel space and the canonical text used in cell names
        (``"4/255"``, ``"0.5"``).

    Raises:
        UserError: for anything that is not a non-negative number or ``"a/b"`` fraction.
    """
    if isinstance(value, bool):
        raise UserError(f"bad epsilon {value!r} (allowed: a non-negative number or a fraction like '4/255')")
    if isinstance(value, int | float):
        if not math.isfinite(value) or value < 0:
            raise UserError(f"bad epsilon {value!r} (allowed: a non-negative number or a fraction like '4/255')")
        return float(value), f"{float(value):g}"
    match = _EPS_RE.match(str(value))
    if not match or (match.group(2) is not None and float(match.group(2)) == 0):
        raise UserError(f"bad epsilon {value!r} (allowed: a non-negative number or a fraction like '4/255')")
    num, den = match.group(1), match.group(2)
    if den is None:
        return float(num), f"{float(num):g}"
    return float(Fraction(num) / Fraction(den)), f"{num}/{den}"


def eps_list(values: object) -> list[tuple[float, str]]:
    """A list of parsed epsilons (a single value is a list of one), without duplicates, in order."""
    items = values if isinstance(values, list | tuple) else [values]
    out: list[tuple[float, str]] = []
    for item in items:
        parsed = parse_eps(item)
        if parsed[1] not in {label for _, label in out}:
            out.append(parsed)
    if not out:
        raise UserError("empty epsilon list (give at least one, e.g. eps = ['4/255'])")
    return out


def lp_norm(delta: torch.Tensor, norm: str) -> torch.Tensor:
    """Per-example Linf or L2 norm of a batch of perturbations."""
    flat = delta.flatten(1)
    return flat.abs().amax(1) if norm == "linf" else flat.norm(p=2, dim=1)


def project(x: torch.Tensor, x_adv: torch.Tensor, eps: float, norm: str, *, rtol: float = 1e-5) -> torch.Tensor:
    """Put ``x_adv`` inside the eps-ball around ``x`` and inside [0,1].

    Points already inside (up to a relative tolerance of float rounding) are returned untouched, so a
    library's output is re-checked exactly as it came back; only real violations are projected.
    """
    x_adv = x_adv.detach().to(x.dtype)
    delta = x_adv - x
    dist = lp_norm(delta, norm)
    outside = (dist > eps * (1 + rtol) + 1e-7) | (x_adv.flatten(1).amin(1) < 0) | (x_adv.flatten(1).amax(1) > 1)
    if not bool(outside.any()):
        return x_adv
    if norm == "linf":
        fixed = x + delta.clamp(-eps, eps)
    else:
        scale = (eps / dist.clamp_min(1e-12)).clamp(max=1.0).view(-1, *([1] * (x.dim() - 1)))
        fixed = x + delta * scale
    fixed = fixed.clamp(0, 1)
    return torch.where(outside.view(-1, *([1] * (x.dim() - 1))), fixed, x_adv)


@contextlib.contextmanager
def seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global RNGs (CPU and ``device``) for a library call, restoring them afterwards.

    torchattacks and foolbox draw from (and torchattacks re-seeds) the global generators; forking them
    keeps a run's other random draws independent of which attacks ran before.
    """
    # torch.manual_seed seeds every CUDA device, so all of them are forked (and restored)
    devices = list(range(torch.cuda.device_count())) if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


@contextlib.contextmanager
def frozen(model: nn.Module) -> Iterator[None]:
    """Turn off ``requires_grad`` of the model's parameters during an attack (input gradients only).

    Forward passes then keep no activations for weight gradients: less memory and time per step.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluate ``model`` in eval mode (dropout off, batch-norm statistics frozen), restoring its mode after."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextlib.contextmanager
def quiet() -> Iterator[None]:
    """Swallow stdout of third-party code (torchattacks prints when it cannot find a device)."""
    with contextlib.redirect_stdout(io.StringIO()):
        yield


class Attack:
    """Base class of attack adapters.

    Subclasses set the class attributes and implement :meth:`perturb`.

    Attributes:
        name: Registered name (``"pgd-linf"``).
        norm: Threat model, ``"linf"`` or ``"l2"``.
        min_norm: Minimum-norm attack (DeepFool, CW, FAB, decision-based): it ignores epsilon while
            searching; the engine reports the median norm and the robust accuracy with the found
            perturbations clipped to each requested epsilon.
        gradient_free: Uses only model outputs (Square, HopSkipJump); runs under ``torch.no_grad``.
        iterative: A multi-step attack (FGSM is not); iterative bounded gradient attacks are the
            reference of the "black-box attack beats gradient attacks" check.
        library: ``"torchattacks"``, ``"foolbox"`` or ``"robustvit"`` (cascades).
        options: Option names and their defaults (the original papers' settings where they exist).
        smoke_options: Cheap settings for tests.
    """

    name: ClassVar[str] = "?"
    norm: ClassVar[str] = "linf"
    min_norm: ClassVar[bool] = False
    gradient_free: ClassVar[bool] = False
    iterative: ClassVar[bool] = True
    library: ClassVar[str] = "?"
    options: ClassVar[Mapping[str, Any]] = {}
    smoke_options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **opts: Any) -> None:
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise UserError(f"attack {self.name!r}: unknown option {unknown[0]!r} (allowed: {allowed})")
        self.opts: dict[str, Any] = {**self.options, **opts}
        for key, default in self.options.items():
            value = self.opts[key]
            if isinstance(default, bool) and not isinstance(value, bool):
                raise UserError(f"attack {self.name!r}: option {key!r} must be true or false, got {value!r}")
            if isinstance(default, int) and not isinstance(default, bool):
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise UserError(f"attack {self.name!r}: option {key!r} must be an integer >= 0, got {value!r}")
            if isinstance(default, float) and (isinstance(value, bool) or not isinstance(value, int | float)):
                raise UserError(f"attack {self.name!r}: option {key!r} must be a number, got {value!r}")
        self.validate()

    def validate(self) -> None:
        """Check ``self.opts`` beyond their types; raise :class:`UserError`."""

    @property
    def label(self) -> str:
        """Name used in cell names; differs from :attr:`name` where an option changes the attack."""
        return self.name

    def check_model(self, num_classes: int) -> None:
        """Raise :class:`UserError` if the attack cannot run on a model with ``num_classes`` logits."""

    def perturb(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int) -> torch.Tensor:
        """Adversarial versions of ``x`` (all initially correctly classified) for labels ``y``."""
        raise NotImplementedError

    def run(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, eps: float, seed: int
    ) -> tuple[torch.Tensor, dict[str, float]]:
        """``(adversarial images, extra per-batch counts)``; cascades report per-member counts."""
        return self.perturb(model, x, y, eps=eps, seed=seed), {}

    @property
    def check_kind(self) -> str:
        """Role in the result checks: ``gradient`` (reference), ``blackbox`` or ``other``."""
        if self.gradient_free:
            return "blackbox"
        return "gradient" if self.iterative and not self.min_norm else "other"

    def describe(self) -> dict[str, Any]:
        return {"attack": self.name, "label": self.label, "norm": self.norm, "library": self.library, **self.opts}
