"""The Fourier heat map and perturbation-spectrum probes: bases, mirroring, bands, seeding, DCT, suite runs."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import scipy.fft
import torch
from torch import nn

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import SuiteContext
from robustvit.errors import UserError
from robustvit.models import load_model, wrap
from robustvit.probes.fourier import (
    FourierHeatMap,
    auto_eps,
    auto_stride,
    basis,
    canonical,
    frequencies,
    half_plane,
    heatmap,
    mirror,
    sample_batches,
)
from robustvit.probes.spectrum import PerturbationSpectrum, dct2, energy_sum, high_mask, pooled
from robustvit.registries import PROBES
from robustvit.runner import execute
from robustvit.store import Store

pytestmark = pytest.mark.usefixtures("one_thread")


def _ctx(model, batch_size: int = 64) -> SuiteContext:
    return SuiteContext(model=model, suite="probes", dataset="digits", device=torch.device("cpu"),
                        batch_size=batch_size, show_progress=False)


def _values(results) -> dict[str, dict[str, float]]:
    return {r.cell: {m.metric: m.value for m in r.metrics} for r in results}


# -- the grid and the basis -------------------------------------------------------------------------------
def test_grid_and_auto_options() -> None:
    assert frequencies(32) == list(range(-16, 16))
    assert len(half_plane(32, 32)) == 32 * 17
    assert (auto_eps(32), auto_eps(224), auto_stride(32), auto_stride(64), auto_stride(224)) == (4.0, 15.7, 1, 1, 7)
    assert len(frequencies(224, 7)) <= 32 and len(frequencies(160, auto_stride(160))) <= 32
    for n, s in [(32, 1), (33, 1), (224, 7), (100, 4)]:
        grid = set(frequencies(n, s))
        assert {mirror((i, 0), n, n)[0] for i in grid} == grid  # closed under mirroring
    probe = FourierHeatMap()
    assert probe.cells_for_size(32, 32)[:2] == ["i=-16,j=-16", "i=-16,j=-15"] and probe.cells()[-1] == "bands"
    assert len(probe.cells_for_size(224, 224)) == 32 * 17 + 1
    assert PROBES.get("fourier") is FourierHeatMap and PROBES.get("spectrum") is PerturbationSpectrum


@pytest.mark.parametrize("opts", [{"eps": -1}, {"eps": "big"}, {"stride": 0}, {"stride": 1.5}, {"images": 0},
                                  {"images": "some"}, {"epsilon": 4}])
def test_bad_options(opts: dict) -> None:
    with pytest.raises(UserError):
        FourierHeatMap(**opts)


@pytest.mark.parametrize("opts", [{"images": 0}, {"steps": -1}, {"overshoot": "a"}, {"eps": 1}])
def test_bad_spectrum_options(opts: dict) -> None:
    with pytest.raises(UserError, match="probe 'spectrum'"):
        PerturbationSpectrum(**opts)


def test_basis_unit_norm_orthogonal_and_two_point_spectrum() -> None:
    h = w = 32
    reps = sorted({canonical(f, h, w) for f in half_plane(h, w)})
    assert len(reps) == (h * w - 4) // 2 + 4  # 4 self-mirrored frequencies: (0|-16, 0|-16)
    u = basis(reps, h, w).double()
    assert torch.allclose(u.flatten(1).norm(dim=1), torch.ones(len(reps), dtype=torch.float64), atol=1e-6)
    gram = u.flatten(1) @ u.flatten(1).T
    assert torch.allclose(gram, torch.eye(len(reps), dtype=torch.float64), atol=1e-5)  # distinct pairs: orthogonal
    for f in [(3, -5), (-16, 7), (0, -16), (5, 0)]:
        spec = torch.fft.fft2(basis([f], h, w)[0].double()).abs()
        support = {(int(a), int(b)) for a, b in (spec > 1e-6).nonzero()}
        assert support == {(f[0] % h, f[1] % w), (-f[0] % h, -f[1] % w)}


def test_mirror_basis_is_the_same_image() -> None:
    for h, w in [(32, 32), (33, 31), (224, 224)]:
        fs = [(1, -2), (-h // 2, -3), (5, -(w // 2)), (0, -7)]
        a = basis(fs, h, w)
        b = basis([mirror(f, h, w) for f in fs], h, w)
        assert torch.allclose(a, b, atol=1e-6)  # U_-i,-j = +U_ij (cosines are even)


def test_heatmap_fill_is_symmetric() -> None:
    values = {f"i={i},j={j}": float(i * i + 2 * j * j) for i, j in half_plane(8, 8)}
    full = heatmap(values, 8, 8)
    grid = frequencies(8)
    for r, i in enumerate(grid):
        for c, j in enumerate(grid):
            mi, mj = mirror((i, j), 8, 8)
            assert full[r, c] == full[grid.index(mi), grid.index(mj)]


# -- the probe on models -------------------------------------------------------------------------------
class LowPass(nn.Module):
    """Keeps the Fourier coefficients with |i|, |j| <= k (a brick-wall low-pass; commutes with normalisation)."""

    def __init__(self, k: int) -> None:
        super().__init__()
        self.k = k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        fi = torch.fft.fftfreq(h, 1 / h).abs() <= self.k
        fj = torch.fft.fftfreq(w, 1 / w).abs() <= self.k
        return torch.fft.ifft2(torch.fft.fft2(x) * (fi[:, None] & fj[None, :])).real


@pytest.fixture(scope="module")
def resnet():
    return load_model("zoo_resnet")


def test_low_pass_model_ignores_high_frequencies(resnet) -> None:
    from robustvit.models.zoo import DATA_CONFIG

    model = wrap(nn.Sequential(LowPass(5), resnet.model), name="lowpass", family="cnn", data_config=DATA_CONFIG)
    ctx = _ctx(model)
    # eps 10 (the zoo ResNet shrugs off the default 4, and nearly 8, at every frequency), a 16 x 16 grid (stride 2)
    probe = FourierHeatMap(images=32, stride=2, eps=10.0)
    out = _values(probe.run(ctx, probe.cells_for(model)))
    plain = _values(probe.run(_ctx(resnet), probe.cells_for(resnet)))
    x, y, _ = next(iter(sample_batches(ctx, 32)))
    with torch.no_grad():
        clean_error = float((model(x).argmax(1) != y).float().mean())
    bands = out["bands"]
    # the filter removes high frequencies: what is left is the clean error plus a small leak from clipping
    # at 0 and 1 (the digits' background is 0), whose harmonics alias to low frequencies
    assert bands["high"] <= clean_error + 0.05
    assert bands["high"] < plain["bands"]["high"] - 0.03  # the same network without the filter
    assert bands["low"] > bands["high"] + 0.08
    assert out["i=-2,j=-2"]["error"] > out["i=-16,j=-16"]["error"]


def test_same_numbers_for_any_batch_size(resnet) -> None:
    probe = FourierHeatMap(images=32, stride=4, eps=8.0)
    cells = probe.cells_for(resnet)
    a, b = list(probe.run(_ctx(resnet, 16), cells)), list(probe.run(_ctx(resnet, 64), cells))
    assert _values(a) == _values(b)
    for ra, rb in zip(a, b):
        assert ra.outcomes.arrays.keys() == rb.outcomes.arrays.keys()
        assert all(np.array_equal(ra.outcomes.arrays[k], rb.outcomes.arrays[k]) for k in ra.outcomes.arrays)
    assert len(a) == len(cells) and a[0].outcomes.index("images").tolist() == sorted(a[0].outcomes.index("images"))
    assert a[0].metrics[0].higher_is_better is False and a[0].outcomes.arrays["error"].dtype == np.bool_


# -- the DCT spectrum ----------------------------------------------------------------------------------
def test_dct_matches_scipy_and_parseval() -> None:
    x = torch.rand(2, 3, 12, 10, dtype=torch.float64)
    assert np.allclose(dct2(x).numpy(), scipy.fft.dctn(x.numpy(), axes=(-2, -1), norm="ortho"))
    assert torch.allclose(energy_sum(x).sum(), x.pow(2).sum())


def test_constant_perturbation_has_all_energy_at_zero() -> None:
    s = energy_sum(torch.full((4, 3, 32, 32), 0.01))
    assert s[0, 0] > 0 and torch.allclose(s[0, 0], s.sum()) and float(s.sum() - s[0, 0]) < 1e-12


def test_checkerboard_is_high_frequency() -> None:
    n = 32
    board = ((torch.arange(n)[:, None] + torch.arange(n)[None, :]) % 2 * 2 - 1).double() * 0.01
    s = energy_sum(board.expand(2, 3, n, n))
    share = float(s[high_mask(n, n)].sum() / s.sum())
    assert share > 0.95
    assert int(high_mask(n, n).sum()) == n * (n - 1) // 2  # strictly beyond the anti-diagonal
    assert pooled(s).shape == (16, 16) and pooled(s[:8, :8]).shape == (8, 8)


# -- through the suite and the runner ----------------------------------------------------------------------
PARAMS = {"fourier": {"images": 32}, "spectrum": {"images": 16}}


def _cfg(models: list[ModelConfig], params: dict) -> RunConfig:
    suite = build_suite("probes", {"probes": ["fourier", "spectrum"], "params": params}, "test")
    return RunConfig(models=models, suites=[suite], batch_size=64, device="cpu", seed=0)


def test_suite_on_zoo_models(store_path: Path) -> None:
    cfg = _cfg([ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")], PARAMS)
    with Store(store_path) as store:
        summary = execute(cfg, store, show_progress=False)
        assert summary.computed == 2 * (32 * 17 + 1 + 2)
        assert execute(cfg, store, show_progress=False).computed == 0  # every cell stored under its planned name
        df = store.records(suite="probes")
    for model in ("zoo_vit", "zoo_resnet"):
        rows = df[df.model == model]
        errors = rows[rows.cell.str.startswith("fourier/i=")].set_index("cell")["value"]
        assert len(errors) == 544 and errors.between(0, 1).all()
        values = {c.removeprefix("fourier/"): v for c, v in errors.items()}
        for cell, v in values.items():  # half-plane cells that are each other's mirrors agree exactly
            i, j = (int(p.split("=")[1]) for p in cell.split(","))
            mi, mj = mirror((i, j), 32, 32)
            assert values.get(f"i={mi},j={mj}", v) == v
        full = heatmap(values, 32, 32)
        assert torch.equal(full, full.flip(0, 1).roll((1, 1), (0, 1)))  # M[-i,-j] == M[i,j]
        bands = rows[rows.cell == "fourier/bands"].set_index("metric")["value"]
        assert set(bands.index) == {"low", "mid", "high", "mean"} and bands.between(0, 1).all()
        assert not rows[rows.cell == "fourier/bands"].higher_is_better.any()
        dct = rows[rows.cell == "spectrum/dct"]
        assert len(dct) == 256 and set(dct.metric) >= {"u=0,v=0", "u=15,v=15"}
        energy = rows[rows.cell == "spectrum/energy"].set_index("metric")["value"]
        assert energy["n_found"] >= 1 and math.isclose(energy["high_share"] + energy["low_share"], 1.0)


def test_suite_on_timm_vit_at_160px_beside_a_32px_model(store_path: Path) -> None:
    model = ModelConfig("timm:test_vit", pretrained=False, num_classes=10)
    cfg = _cfg([model, ModelConfig("zoo_resnet")], {"fourier": {"images": 2}, "spectrum": {"images": 16}})
    with Store(store_path) as store:
        execute(cfg, store, show_progress=False)
        assert execute(cfg, store, show_progress=False).computed == 0
        df = store.records(suite="probes")
    vit = set(df[df.model == "timm:test_vit"].cell)
    assert "fourier/i=-80,j=-80" in vit and "fourier/i=75,j=0" in vit  # stride 5 at 160 px: 32 x 17
    assert len([c for c in vit if c.startswith("fourier/i=")]) == 32 * 17
    assert len(df[(df.model == "timm:test_vit") & (df.cell == "spectrum/dct")]) == 256
    resnet = set(df[df.model == "zoo_resnet"].cell)
    assert "fourier/i=-16,j=-16" in resnet and len([c for c in resnet if c.startswith("fourier/i=")]) == 32 * 17
