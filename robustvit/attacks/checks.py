"""Sanity checks that flag an unreliable robustness evaluation, after AutoAttack's ``checks.py``.

Two kinds:

* probes of the model on a few points, run by the suite as its ``checks`` cell
  (:func:`run_checks`): non-deterministic outputs (randomised defence), outputs that already are
  probabilities (softmax layer: cross-entropy on them has vanishing gradients), points with zero input
  gradient (non-differentiable or saturated layers), epsilon 0 not giving the clean accuracy, and a
  gradient-free attack (Square, run on the points PGD left robust) fooling more of them;
* checks of stored results (:func:`record_flags`, used by the suite's ``aggregate``): robust accuracy
  rising with epsilon, a black-box attack beating every gradient attack at the same epsilon, Square
  finding points after the gradient attacks inside AutoAttack, epsilon-0 cells below clean accuracy.

Every flag is a 0/1 float metric named ``flag_*`` (1 = suspicious; ``higher_is_better=False``), so
reports and gates can show and act on them.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import nn

from robustvit.attacks.autoattack import Cascade
from robustvit.attacks.base import eval_mode
from robustvit.attacks.engine import AutocastFactory, attack_batch
from robustvit.attacks.torchattacks_adapters import PGDLinf, Square

#: tolerance on robust accuracy of the original ``check_square_sr``
SQUARE_ALPHA = 0.002
#: max difference of L2-normalised logits between identical forward passes (original ``check_randomized``)
RANDOMIZED_ALPHA = 1e-4


def check_randomized(model: nn.Module, x: torch.Tensor, n: int = 3) -> bool:
    """Whether repeated forward passes of the same input give different outputs."""
    with torch.no_grad():
        outs = [model(x).float() for _ in range(n)]
    outs = [o / (o.norm(dim=1, keepdim=True) + 1e-10) for o in outs]
    preds = {tuple(o.argmax(1).tolist()) for o in outs}
    diff = max(float((outs[0] - o).norm(dim=1).max()) for o in outs[1:])
    return len(preds) > 1 or diff > RANDOMIZED_ALPHA


def check_softmax_output(logits: torch.Tensor) -> bool:
    """Whether the outputs look like probabilities (in [0,1], rows summing to 1) instead of logits."""
    logits = logits.float()
    in_range = bool(((logits >= 0) & (logits <= 1)).all())
    return in_range and bool(torch.allclose(logits.sum(1), torch.ones(len(logits), device=logits.device), atol=1e-4))


def zero_gradient_fraction(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of points whose margin-loss input gradient is (numerically) zero.

    The margin (true logit minus the largest other) does not saturate like cross-entropy on a very
    confident model, so a zero gradient points at a non-differentiable or flat layer.
    """
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        logits = model(x).float()
        true = logits.gather(1, y[:, None]).squeeze(1)
        other = logits.masked_fill(nn.functional.one_hot(y, logits.shape[1]).bool(), float("-inf")).amax(1)
        (grad,) = torch.autograd.grad((true - other).sum(), x)
    return float((grad.flatten(1).abs().amax(1) < 1e-8).float().mean())


def run_checks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    eps: float,
    seed: int,
    pgd_steps: int = 20,
    square_queries: int = 200,
    autocast: AutocastFactory | None = None,
) -> dict[str, float]:
    """Probe the model on a few points; returns ``flag_*`` (0/1) and supporting values.

    Args:
        model: A [0,1]-input classifier.
        x: A few images in [0,1] (e.g. 64).
        y: Their labels.
        eps: Linf epsilon of the PGD-vs-Square comparison (the largest one the suite evaluates).
        seed: Integer seed.
        pgd_steps: PGD steps of the comparison.
        square_queries: Square queries on the points PGD left robust.
        autocast: Optional mixed-precision context factory.
    """
    x, y = x.detach().float(), y.detach().long()
    with eval_mode(model):
        with torch.no_grad():
            logits = model(x)
        zero_frac = zero_gradient_fraction(model, x, y)
        randomized = check_randomized(model, x)
    n = len(x)
    eps0 = attack_batch(PGDLinf(steps=2), model, x, y, [0.0], seed, autocast=autocast)
    # as in AutoAttack: Square runs on the points PGD left robust; finding more is suspicious
    probe = Cascade({"pgd": PGDLinf(steps=pgd_steps, rel_stepsize=2.5 / pgd_steps),
                     "square": Square(n_queries=square_queries)})
    out = attack_batch(probe, model, x, y, [eps], seed + 1, autocast=autocast)
    pgd_acc, final_acc = out.extra.get("robust_after_pgd", 0.0) / n, out.robust[0] / n
    flags = {
        "flag_randomized": float(randomized),
        "flag_softmax_output": float(check_softmax_output(logits)),
        "flag_zero_gradients": float(zero_frac > 0),
        "flag_eps0": float(eps0.robust[0] != eps0.clean),
        "flag_square_beats_pgd": float(final_acc < pgd_acc - SQUARE_ALPHA),
    }
    flags["flag_gradient_masking"] = float(any(flags.values()))
    return {
        **flags,
        "zero_grad_frac": zero_frac,
        "clean_acc": out.clean / n,
        "pgd_robust_acc": pgd_acc,
        "square_gain": pgd_acc - final_acc,
        "eps": eps,
    }


@dataclass(frozen=True)
class CellStat:
    """One stored cell of the suite, as :func:`record_flags` sees it."""

    label: str  # attack label, the part of the cell name before "/eps="
    norm: str
    eps: float
    kind: str  # "gradient" (iterative, bounded: the reference), "blackbox" (gradient-free) or "other"
    robust_acc: float
    clean_acc: float
    n: int
    square_gain: float = 0.0  # AutoAttack: robust accuracy removed by Square after the gradient members


def record_flags(cells: Iterable[CellStat]) -> dict[str, float]:
    """Flags from stored per-cell results (a pure function of them).

    * ``flag_nonmonotonic``: an attack's robust accuracy rises with epsilon by more than one point;
    * ``flag_square_beats_gradient``: at some (norm, eps) a gradient-free attack ends below every
      iterative bounded gradient attack (PGD, APGD, AutoAttack) by more than 0.2 points, or Square removed robust points inside AutoAttack;
    * ``flag_eps0``: an epsilon-0 cell whose robust accuracy differs from its clean accuracy.
    """
    cells = list(cells)
    nonmono = square = eps0 = False
    by_label: dict[str, list[CellStat]] = {}
    for c in cells:
        by_label.setdefault(c.label, []).append(c)
        eps0 |= c.eps == 0 and abs(c.robust_acc - c.clean_acc) > 1e-12
        square |= c.square_gain > SQUARE_ALPHA
    for series in by_label.values():
        series.sort(key=lambda c: c.eps)
        for a, b in zip(series, series[1:], strict=False):
            nonmono |= b.robust_acc > a.robust_acc + max(1.0 / max(a.n, 1), 1e-9) + 1e-12
    groups: dict[tuple[str, float], list[CellStat]] = {}
    for c in cells:
        groups.setdefault((c.norm, round(c.eps, 12)), []).append(c)
    for group in groups.values():
        white = [c.robust_acc for c in group if c.kind == "gradient"]
        black = [c.robust_acc for c in group if c.kind == "blackbox"]
        if white and black and min(black) < min(white) - SQUARE_ALPHA:
            square = True
    return {
        "flag_nonmonotonic": float(nonmono),
        "flag_square_beats_gradient": float(square),
        "flag_eps0": float(eps0),
    }
