"""The patch-interaction probe on models with known interactions, its summaries and options, and both
attention and interaction probes through the probes suite and the runner on the zoo models."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from torch import nn

from robustvit.config import ModelConfig, RunConfig
from robustvit.context import SuiteContext
from robustvit.errors import UserError
from robustvit.models import load_model, wrap
from robustvit.probes.attention import attention_maps
from robustvit.probes.interaction import (
    InteractionProbe,
    attention_grid,
    auto_grid,
    chebyshev,
    field_sizes,
    interaction_mass,
    interaction_matrix,
)
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.probes import ProbesSuite

pytestmark = pytest.mark.usefixtures("one_thread")
CFG = {"input_size": (3, 32, 32), "mean": (0.0,) * 3, "std": (1.0,) * 3, "interpolation": "bilinear",
       "crop_pct": 1.0, "crop_mode": "center"}


class PatchMeans(nn.Module):
    """Logits from the mean intensity of the 4x4 grid's 8x8 patches: linear (``W @ means``), or with the
    first class's logit the product of patches ``a`` and ``b``."""

    def __init__(self, pair: tuple[int, int] | None = None) -> None:
        super().__init__()
        self.pair = pair
        self.weight = nn.Parameter(torch.randn(10, 16, generator=torch.Generator().manual_seed(0)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        means = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8).flatten(1)  # (B, 16), row-major
        if self.pair is None:
            return means @ self.weight.T
        a, b = self.pair
        return torch.cat([(means[:, a] * means[:, b]).unsqueeze(1), torch.zeros(len(x), 9)], 1)


def _ctx(model, batch_size: int = 64) -> SuiteContext:
    return SuiteContext(model=model, suite="probes", dataset="digits", device=torch.device("cpu"),
                        batch_size=batch_size, show_progress=False)


def _images(n: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.2 + 0.8 * torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0)), torch.zeros(n, dtype=torch.long)


def test_an_additive_model_has_no_interactions() -> None:
    ctx = _ctx(wrap(PatchMeans(), name="additive", family="cnn", data_config=CFG, num_classes=10))
    x, y = _images()
    inter = interaction_matrix(ctx, x, y, 4, score="logit")
    assert inter.shape == (3, 16, 16)
    assert inter.abs().max() < 1e-5
    assert interaction_matrix(ctx, x, y, 4, score="log_prob").abs().max() > 1e-3  # the softmax couples patches


def test_a_product_of_two_patches_interacts_only_between_them() -> None:
    ctx = _ctx(wrap(PatchMeans(pair=(1, 10)), name="product", family="cnn", data_config=CFG, num_classes=10))
    x, y = _images()
    inter = interaction_matrix(ctx, x, y, 4, score="logit")
    means = nn.functional.avg_pool2d(x.mean(1, keepdim=True), 8).flatten(1)
    torch.testing.assert_close(inter[:, 1, 10], means[:, 1] * means[:, 10])  # v({}) - 0 - 0 + 0
    torch.testing.assert_close(inter, inter.transpose(1, 2))
    inter[:, 1, 10] = inter[:, 10, 1] = 0
    assert inter.abs().max() < 1e-6
    mass = interaction_mass(ctx, x, y, 4, score="logit")
    assert mass.shape == (3, 16) and set(mass[0].nonzero().flatten().tolist()) == {1, 10}
    small = interaction_matrix(_ctx(ctx.model, batch_size=7), x, y, 4, fill="gray")  # chunking changes nothing
    torch.testing.assert_close(small, interaction_matrix(ctx, x, y, 4, fill="gray"))


def test_grid_distances_and_field_sizes() -> None:
    assert (auto_grid(32), auto_grid(224), auto_grid(128)) == (4, 7, 7)
    d = chebyshev(3)
    assert d[0].tolist() == [0, 1, 2, 1, 1, 2, 2, 2, 2] and torch.equal(d, d.T)
    inter = torch.zeros(1, 5, 5)
    inter[0, 0, 1] = inter[0, 1, 0] = 3.0  # patch 0 and 1: one partner holds all their mass
    inter[0, 2:, 2:] = 1.0 - torch.eye(3)  # patches 2..4: two equal partners each; half needs one
    sizes = field_sizes(inter, 0.5)
    assert sizes[0].tolist() == [0.25, 0.25, 0.25, 0.25, 0.25]
    assert field_sizes(inter, 1.0)[0, 2:].tolist() == [0.5, 0.5, 0.5]
    assert field_sizes(torch.zeros(1, 4, 4), 0.5).abs().sum() == 0  # no interaction: empty field


def test_attention_on_the_coarse_grid() -> None:
    vit = load_model("zoo_vit")
    x, _ = _images(2)
    grid = attention_grid(vit, x, 4)  # the zoo ViT's own 4x4 grid: no pooling
    patch = torch.stack([m[:, :, 1:, 1:] / m[:, :, 1:, 1:].sum(-1, keepdim=True) for m in attention_maps(vit, x)])
    want = patch.mean((0, 2))
    torch.testing.assert_close(grid, 0.5 * (want + want.transpose(1, 2)))
    assert attention_grid(vit, x, 2).shape == (2, 4, 4)
    assert attention_grid(vit, x, 5) is None  # the coarse grid is finer than the model's
    assert attention_grid(load_model("zoo_resnet"), x, 4) is None


def test_options_are_validated() -> None:
    assert InteractionProbe().cells() == ["scope", "field", "attention"]
    for key, bad in (("grid", 1), ("grid", 17), ("grid", "7"), ("images", 0), ("fill", "white"), ("score", "prob"),
                     ("mass", 0), ("mass", 1.5)):
        with pytest.raises(UserError, match=key):
            InteractionProbe(**{key: bad})
    with pytest.raises(UserError, match="allowed: fill, grid, images, mass, score"):
        InteractionProbe(grids=4)


def _value(df, model: str, cell: str, metric: str) -> float:
    row = df[(df.model == model) & (df.cell == cell) & (df.metric == metric)]
    assert len(row) == 1, (model, cell, metric)
    return float(row.value.iloc[0])


def test_both_probes_run_through_the_suite_and_the_runner(store_path: Path) -> None:
    suite = ProbesSuite(name="probes", probes=["attention", "interaction"],
                        params={"attention": {"samples": 2}, "interaction": {"images": 4}})
    cfg = RunConfig(models=[ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")], limit=24, batch_size=256,
                    device="cpu", suites=[_suite_config(suite)])
    events = []
    with Store(store_path) as store:
        execute(cfg, store, show_progress=False, on_event=events.append)
        df = store.records(suite="probes")
        assert execute(cfg, store, show_progress=False).computed == 0  # every planned cell was stored
    assert any(e.kind == "skipped" and e.model == "zoo_resnet" and "attention" in e.detail for e in events)
    vit, cnn = set(df[df.model == "zoo_vit"].cell), set(df[df.model == "zoo_resnet"].cell)
    layers = {f"attention/distance/layer={k}" for k in range(4)}
    assert layers | {"attention/distance", "attention/rollout/sample=0", "attention/rollout/sample=1"} <= vit
    assert not any(c.startswith("attention/") for c in cnn)
    for model in ("zoo_vit", "zoo_resnet"):
        assert {"interaction/scope", "interaction/field", "interaction/attention"} <= set(df[df.model == model].cell)
        assert _value(df, model, "interaction/scope", "d=1") > 0
        assert 0 < _value(df, model, "interaction/field", "size_mean") <= 1
    for k in range(4):
        heads = [_value(df, "zoo_vit", f"attention/distance/layer={k}", f"head={h}") for h in range(4)]
        assert all(0 <= d <= 32 * math.sqrt(2) for d in heads)
        assert _value(df, "zoo_vit", f"attention/distance/layer={k}", "mean") == pytest.approx(sum(heads) / 4)
    rollout = df[(df.model == "zoo_vit") & (df.cell == "attention/rollout/sample=0")]
    assert len(rollout) == 16 and rollout.value.sum() == pytest.approx(1.0)
    assert -1 <= _value(df, "zoo_vit", "interaction/attention", "corr") <= 1
    assert math.isnan(_value(df, "zoo_resnet", "interaction/attention", "corr"))
    layer0 = df[(df.model == "zoo_vit") & (df.cell == "attention/distance/layer=0") & (df.metric == "mean")]
    assert (layer0.n == 24).all() and (layer0.ci_low <= layer0.value).all()  # intervals from per-image outcomes


def _suite_config(suite: ProbesSuite):
    from robustvit.config import SuiteConfig

    return SuiteConfig(name="probes", suite=suite)
