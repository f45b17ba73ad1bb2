"""Sanity checks: they fire on models built to mask gradients or to be random, and stay quiet on the zoo."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from robustvit.attacks.checks import CellStat, record_flags, run_checks
from robustvit.data.catalog import digits
from robustvit.models import load_model

pytestmark = pytest.mark.usefixtures("one_thread")


class Quantised(nn.Module):
    """A non-differentiable input layer (rounding to ``levels`` grey levels): zero input gradients."""

    def __init__(self, inner: nn.Module, levels: int) -> None:
        super().__init__()
        self.inner, self.levels, self.num_classes = inner, levels, inner.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(torch.round(x * self.levels) / self.levels)


class NoisyInput(nn.Module):
    """A randomised defence: Gaussian noise on the input, also in eval mode."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_classes = inner, inner.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x + 0.05 * torch.randn_like(x))


class Softmaxed(nn.Module):
    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner, self.num_classes = inner, inner.num_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x).softmax(1)


@pytest.fixture(scope="module")
def points() -> tuple[torch.Tensor, torch.Tensor]:
    source = digits("test")
    return source.images[:16], source.labels[:16]


@pytest.fixture(scope="module")
def resnet():
    return load_model("zoo_resnet").eval()


@pytest.mark.parametrize("name", ["zoo_resnet", "zoo_vit"])
def test_quiet_on_the_zoo_models(name: str, points) -> None:
    values = run_checks(load_model(name).eval(), *points, eps=8 / 255, seed=0)
    assert values["clean_acc"] == 1.0
    assert {k: v for k, v in values.items() if k.startswith("flag_")} == dict.fromkeys(
        ["flag_randomized", "flag_softmax_output", "flag_zero_gradients", "flag_eps0", "flag_square_beats_pgd",
         "flag_gradient_masking"], 0.0)


def test_fire_on_a_quantising_input_layer(resnet, points) -> None:
    masked = Quantised(resnet, levels=8).eval()
    values = run_checks(masked, *points, eps=32 / 255, seed=0)
    assert values["flag_zero_gradients"] == 1.0 and values["zero_grad_frac"] == 1.0
    assert values["pgd_robust_acc"] == 1.0  # PGD is blind here ...
    assert values["flag_square_beats_pgd"] == 1.0 and values["square_gain"] > 0.2  # ... Square is not
    assert values["flag_gradient_masking"] == 1.0
    assert values["flag_randomized"] == 0.0 and values["flag_softmax_output"] == 0.0


def test_fire_on_a_randomised_model(resnet, points) -> None:
    values = run_checks(NoisyInput(resnet).eval(), *points, eps=8 / 255, seed=0, square_queries=5)
    assert values["flag_randomized"] == 1.0 and values["flag_gradient_masking"] == 1.0


def test_fire_on_softmax_outputs(resnet, points) -> None:
    values = run_checks(Softmaxed(resnet).eval(), *points, eps=8 / 255, seed=0, square_queries=5)
    assert values["flag_softmax_output"] == 1.0


def _cell(label: str, eps: float, robust: float, kind: str = "gradient", **kw) -> CellStat:
    return CellStat(label=label, norm="linf", eps=eps, kind=kind, robust_acc=robust, clean_acc=0.9, n=100, **kw)


def test_record_flags() -> None:
    fine = [_cell("pgd-linf", 0.0, 0.9), _cell("pgd-linf", 2 / 255, 0.5), _cell("pgd-linf", 4 / 255, 0.2),
            _cell("square-linf", 4 / 255, 0.3, "blackbox"), _cell("fgsm", 4 / 255, 0.6, "other")]
    assert record_flags(fine) == {"flag_nonmonotonic": 0.0, "flag_square_beats_gradient": 0.0, "flag_eps0": 0.0}
    rising = [*fine, _cell("pgd-linf", 8 / 255, 0.25)]
    assert record_flags(rising)["flag_nonmonotonic"] == 1.0
    within_one_point = [*fine, _cell("pgd-linf", 8 / 255, 0.21)]
    assert record_flags(within_one_point)["flag_nonmonotonic"] == 0.0
    square_wins = [*fine, _cell("square-linf", 2 / 255, 0.4, "blackbox")]
    assert record_flags(square_wins)["flag_square_beats_gradient"] == 1.0
    # beating a weak single-step attack (FGSM, kind "other") is expected, not masking
    assert record_flags([_cell("fgsm", 4 / 255, 0.6, "other"), _cell("square-linf", 4 / 255, 0.3, "blackbox")]) \
        == {"flag_nonmonotonic": 0.0, "flag_square_beats_gradient": 0.0, "flag_eps0": 0.0}
    aa_square = [_cell("autoattack-linf", 4 / 255, 0.2, square_gain=0.01)]
    assert record_flags(aa_square)["flag_square_beats_gradient"] == 1.0
    eps0_off = [_cell("pgd-linf", 0.0, 0.8)]
    assert record_flags(eps0_off)["flag_eps0"] == 1.0
