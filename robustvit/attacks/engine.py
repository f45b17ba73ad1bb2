"""Run one attack on one batch and count, by re-predicting, which points stay robust.

This is the one place where an attack's output becomes a number: clean predictions, the attack on the
initially correct points only (with seeded, forked RNGs and frozen parameters), projection of the
returned images onto the threat model, and re-prediction through the model. Library success flags are
never used. On CUDA out-of-memory the batch is halved and retried (down to single images).
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Callable, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field

import torch
from torch import nn

from robustvit.attacks.base import Attack, eval_mode, frozen, lp_norm, project, seeded

AutocastFactory = Callable[[], AbstractContextManager]


@dataclass
class BatchOutcome:
    """Counts from one batch; the suite sums them over batches.

    Attributes:
        n: Points in the batch.
        clean: Points classified correctly without attack.
        robust: Per requested epsilon, points classified correctly after the attack (a subset of clean).
        norms: Minimum-norm attacks only: per initially correct point, the norm of the adversarial the
            attack found (``inf`` where it found none).
        extra: Attack-specific counts (AutoAttack: ``robust_after_<member>``).
        correct: Per point of the batch: classified correctly without attack (bool, CPU).
        robust_masks: Per requested epsilon, per point: still correct after the attack (bool, CPU).
        point_extra: Per-point booleans of attack-specific outcomes (AutoAttack: ``robust_after_<member>``).
    """

    n: int
    clean: int
    robust: list[int]
    norms: list[float] = field(default_factory=list)
    extra: dict[str, float] = field(default_factory=dict)
    correct: torch.Tensor | None = None
    robust_masks: list[torch.Tensor] = field(default_factory=list)
    point_extra: dict[str, torch.Tensor] = field(default_factory=dict)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, torch.OutOfMemoryError) or "out of memory" in str(exc).lower()


def split_on_oom(
    fn: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, dict[str, float]]],
    x: torch.Tensor,
    y: torch.Tensor,
) -> tuple[torch.Tensor, dict[str, float]]:
    """``fn(x, y)``; on out-of-memory, the two halves separately (recursively), results concatenated."""
    try:
        return fn(x, y)
    except (torch.OutOfMemoryError, RuntimeError) as exc:
        if not _is_oom(exc) or len(x) < 2:
            raise
    # outside the except block, so the failed attempt's frames (and tensors) are released first
    if x.is_cuda:
        torch.cuda.empty_cache()
    half = len(x) // 2
    out_a, extra_a = split_on_oom(fn, x[:half], y[:half])
    out_b, extra_b = split_on_oom(fn, x[half:], y[half:])
    extra = {k: torch.cat([extra_a[k], extra_b[k]]) if isinstance(extra_a.get(k), torch.Tensor)
             else extra_a.get(k, 0.0) + extra_b.get(k, 0.0) for k in {*extra_a, *extra_b}}  # per-point: concatenated
    return torch.cat([out_a, out_b]), extra


def predict(model: nn.Module, x: torch.Tensor, autocast: AutocastFactory | None = None) -> torch.Tensor:
    """Predicted classes (no gradients), halving the batch on out-of-memory."""

    def fn(xb: torch.Tensor, _yb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        with torch.no_grad(), autocast() if autocast else contextlib.nullcontext():
            return model(xb).argmax(1), {}

    return split_on_oom(fn, x, x.new_empty(len(x)))[0]


def attack_batch(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    seed: int,
    *,
    autocast: AutocastFactory | None = None,
) -> BatchOutcome:
    """Attack one batch; count clean and robust points per epsilon.

    Args:
        attack: The adapter.
        model: A [0,1]-input classifier; evaluated in eval mode (its mode is restored afterwards).
        x: Images (N,3,H,W) in [0,1]; attacked in fp32.
        y: Labels (N,).
        eps: Epsilons in [0,1] pixel space. Bounded attacks take exactly one; minimum-norm attacks run
            once without a bound and are evaluated at each epsilon by clipping their perturbation.
        seed: Integer seed of this (attack, epsilon, batch); the same seed gives the same numbers.
        autocast: Optional mixed-precision context factory (fp32 when ``None``).
    """
    if not attack.min_norm and len(eps) != 1:
        raise ValueError(f"bounded attack {attack.name!r} takes one epsilon per call, got {len(eps)}")
    with eval_mode(model):
        return _attack_batch(attack, model, x.detach().float(), y.detach().long().to(x.device), eps, seed, autocast)


def _attack_batch(
    attack: Attack,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: Sequence[float],
    seed: int,
    autocast: AutocastFactory | None,
) -> BatchOutcome:
    correct = predict(model, x, autocast) == y
    idx = correct.nonzero().flatten()
    outcome = BatchOutcome(n=len(x), clean=int(idx.numel()), robust=[0] * len(eps), correct=correct.cpu(),
                           robust_masks=[torch.zeros(len(x), dtype=torch.bool) for _ in eps])
    if idx.numel() == 0:
        return outcome
    xs, ys = x[idx], y[idx]
    bound = math.inf if attack.min_norm else float(eps[0])

    def run(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
        grad = torch.no_grad() if attack.gradient_free else torch.enable_grad()
        with grad, autocast() if autocast else contextlib.nullcontext():
            adv, extra = attack.run(model, xb, yb, eps=bound, seed=seed)
        return adv.detach().float(), extra

    with seeded(seed, x.device), frozen(model):
        adv, extra = split_on_oom(run, xs, ys)
    idx_cpu = idx.cpu()
    for key, value in extra.items():
        if isinstance(value, torch.Tensor):  # per attacked point -> per point of the batch
            full = torch.zeros(len(x), dtype=torch.bool)
            full[idx_cpu] = value.cpu().bool()
            outcome.point_extra[key] = full
        else:
            outcome.extra[key] = value
    if attack.min_norm:
        found = predict(model, adv, autocast) != ys
        norms = lp_norm(adv - xs, attack.norm).masked_fill(~found, math.inf)
        outcome.norms = norms.tolist()
    for k, e in enumerate(eps):
        adv_e = project(xs, adv, float(e), attack.norm)
        still = (predict(model, adv_e, autocast) == ys).cpu()
        outcome.robust[k] = int(still.sum())
        outcome.robust_masks[k][idx_cpu] = still
    return outcome
