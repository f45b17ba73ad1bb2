"""Attack adapters: epsilon parsing, projection, and every registered attack on a tiny model.

The registry-parametrised tests pick up a new attack without a new test: it only needs
``smoke_options`` for a cheap run.
"""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from robustvit.attacks.base import lp_norm, parse_eps, project
from robustvit.attacks.engine import attack_batch
from robustvit.attacks.torchattacks_adapters import FGSM
from robustvit.errors import UserError
from robustvit.models.wrapper import ModelWrapper
from robustvit.registries import ATTACKS

DATA_CONFIG = {"input_size": (3, 32, 32), "mean": (0.49, 0.48, 0.45), "std": (0.25, 0.24, 0.26)}
EPS = {"linf": 8 / 255, "l2": 0.5}

pytestmark = pytest.mark.usefixtures("one_thread")



def tiny_cnn(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(128, 10),
    )


def wrapped(net: nn.Module) -> ModelWrapper:
    return ModelWrapper(net, name="tiny", family="cnn", sha="0", data_config=DATA_CONFIG, num_classes=10).eval()


@pytest.fixture(scope="module")
def model() -> ModelWrapper:
    return wrapped(tiny_cnn())


@pytest.fixture(scope="module")
def batch(model: ModelWrapper) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    x = torch.rand(8, 3, 32, 32, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)
    y[:2] = (y[:2] + 1) % 10  # two initially misclassified points
    return x, y


@pytest.mark.parametrize(("text", "value", "label"), [
    ("4/255", 4 / 255, "4/255"), (" 8 / 255 ", 8 / 255, "8/255"), ("0.5", 0.5, "0.5"), (0.5, 0.5, "0.5"),
    (0, 0.0, "0"), ("0", 0.0, "0"), ("1e-2", 0.01, "0.01"),
])
def test_parse_eps(text: object, value: float, label: str) -> None:
    got, got_label = parse_eps(text)
    assert got == pytest.approx(value) and got_label == label


@pytest.mark.parametrize("bad", ["-1", "4/0", "abc", "4/255/2", -0.1, True, float("nan")])
def test_parse_eps_rejects(bad: object) -> None:
    with pytest.raises(UserError, match="bad epsilon"):
        parse_eps(bad)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_project_fixes_violations_only(norm: str) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(6, 3, 8, 8, generator=gen)
    inside = (x + 0.001 * torch.randn(x.shape, generator=gen)).clamp(0, 1)
    assert torch.equal(project(x, inside, 0.5, norm), inside)  # untouched
    outside = (x + torch.randn(x.shape, generator=gen)).clamp(0, 1)
    fixed = project(x, outside, 0.05, norm)
    assert (lp_norm(fixed - x, norm) <= 0.05 * (1 + 1e-5)).all()
    assert fixed.min() >= 0 and fixed.max() <= 1


def test_registry_names_and_aliases() -> None:
    assert ATTACKS.canonical("autoattack") == "autoattack-linf"
    assert ATTACKS.canonical("apgd-ce") == "apgd-ce-linf"
    with pytest.raises(UserError, match="did you mean"):
        ATTACKS.get("pgd-lnf")
    for name in ATTACKS.names():
        assert ATTACKS.get(name).name == name


def test_unknown_option_is_a_user_error() -> None:
    with pytest.raises(UserError, match="unknown option 'stepz'.*allowed: random_start, rel_stepsize, restarts, steps"):
        ATTACKS.get("pgd-linf")(stepz=3)
    with pytest.raises(UserError, match="must be an integer"):
        ATTACKS.get("pgd-linf")(steps="ten")
    with pytest.raises(UserError, match="unknown version"):
        ATTACKS.get("autoattack")(version="plus")


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_runs_within_budget_and_is_deterministic(name: str, model: ModelWrapper, batch) -> None:
    x, y = batch
    cls = ATTACKS.get(name)
    attack = cls(**cls.smoke_options)
    eps = EPS[attack.norm]
    rng_before = torch.get_rng_state()
    out = attack_batch(attack, model, x, y, [eps], seed=7)
    assert torch.equal(torch.get_rng_state(), rng_before), "attacks must not disturb the global RNG"
    assert out.n == 8 and out.clean == 6
    assert 0 <= out.robust[0] <= out.clean
    if attack.min_norm:
        assert len(out.norms) == out.clean
        found = [v for v in out.norms if math.isfinite(v)]
        # a point whose adversarial lies within eps cannot be robust at eps
        assert out.robust[0] <= out.clean - sum(v <= eps for v in found)
    again = attack_batch(attack, model, x, y, [eps], seed=7)
    assert again.robust == out.robust and again.norms == out.norms and again.extra == out.extra


@pytest.mark.parametrize("name", ATTACKS.names())
def test_every_attack_leaves_the_model_as_it_was(name: str, batch) -> None:
    net = tiny_cnn()
    model = wrapped(net).train()  # a model handed over in train mode stays in train mode afterwards
    cls = ATTACKS.get(name)
    attack = cls(**cls.smoke_options)
    attack_batch(attack, model, *batch, [EPS[attack.norm]], seed=0)
    assert model.training and all(p.requires_grad for p in model.parameters())
    assert all(p.grad is None for p in model.parameters())


class _OOMAbove(nn.Module):
    """A model that runs out of memory on batches larger than ``limit`` (like a GPU would)."""

    def __init__(self, inner: nn.Module, limit: int) -> None:
        super().__init__()
        self.inner, self.limit, self.sizes = inner, limit, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.sizes.append(len(x))
        if len(x) > self.limit:
            raise torch.OutOfMemoryError(f"CUDA out of memory: batch of {len(x)} > {self.limit}")
        return self.inner(x)


def test_out_of_memory_halves_the_batch(model: ModelWrapper, batch) -> None:
    x, y = batch
    ref = attack_batch(FGSM(), model, x, y, [8 / 255], seed=0)
    small = _OOMAbove(model, limit=2)
    out = attack_batch(FGSM(), small, x, y, [8 / 255], seed=0)
    assert out.robust == ref.robust and out.clean == ref.clean
    assert max(s for s in small.sizes if s <= 2) == 2


def test_min_norm_attack_reports_robust_accuracy_per_epsilon(model: ModelWrapper, batch) -> None:
    x, y = batch
    attack = ATTACKS.get("deepfool-l2")()
    out = attack_batch(attack, model, x, y, [0.0, 0.05, 0.5, 10.0], seed=0)
    assert out.robust[0] == out.clean  # eps 0: nothing can change
    assert out.robust == sorted(out.robust, reverse=True)  # clipped perturbations: monotone in eps
    assert out.robust[-1] == sum(1 for v in out.norms if not math.isfinite(v))
