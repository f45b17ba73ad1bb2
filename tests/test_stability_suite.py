"""The stability suite (ImageNet-P style) through the real runner: every zoo and timm tiny model, per-image
seeding (batch size never changes a number), aggregates and flip rates by hand, baselines, the released
ImageNet-P videos and CIFAR-10-P arrays, option errors and the report figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from robustvit.cli import main
from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import SuiteContext, derive_seed, subset_indices
from robustvit.errors import UserError
from robustvit.models import load_model, wrap
from robustvit.probes.base import batches
from robustvit.results.outcomes import Outcomes
from robustvit.runner import execute
from robustvit.stability import ALL, TEST
from robustvit.stability.metrics import sequence_metrics
from robustvit.stability.sequences import sequence
from robustvit.store import Store
from robustvit.suites.stability import StabilitySuite

pytestmark = pytest.mark.usefixtures("one_thread")

CPU = torch.device("cpu")
CFG = {"input_size": (3, 32, 32), "mean": (0.0,) * 3, "std": (1.0,) * 3, "interpolation": "bilinear",
       "crop_pct": 1.0, "crop_mode": "center"}
MODELS = [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet"),
          ModelConfig("timm:test_vit", pretrained=False, num_classes=10),
          ModelConfig("timm:test_resnet", pretrained=False, num_classes=10)]


class Constant(nn.Module):
    """The same logits whatever the image."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.linspace(1.0, 0.0, 10).expand(x.shape[0], 10)


@pytest.fixture(scope="module")
def zoo() -> dict:
    return {spec: load_model(spec) for spec in ("zoo_vit", "zoo_resnet")}


def _ctx(model, batch_size: int = 64, limit: int | None = 16) -> SuiteContext:
    return SuiteContext(model=model, suite="stability", dataset="digits", device=CPU, batch_size=batch_size,
                        limit=limit, seed=0, show_progress=False)


def _run(suite: StabilitySuite, ctx: SuiteContext) -> dict:
    suite.bind(ctx.source())
    return {r.cell: r for r in suite.run(ctx, suite.cells())}


def _value(result, metric: str) -> float:
    return next(m.value for m in result.metrics if m.metric == metric)


@pytest.mark.parametrize("mcfg", MODELS, ids=[m.label for m in MODELS])
def test_runs_on_every_zoo_and_timm_model(mcfg: ModelConfig, tmp_path: Path) -> None:
    small = mcfg.spec.startswith("timm:")  # 160 px models: two perturbations; the zoo models run all 14
    opts = {"perturbations": ["gaussian_noise", "translate"] if small else "all"}
    suite = build_suite("stability", opts, "stability")
    cfg = RunConfig(models=[mcfg], suites=[suite], data="digits", limit=2 if small else 4, batch_size=64, device="cpu")
    with Store(tmp_path / "s.sqlite") as store:
        execute(cfg, store, show_progress=False)
        df = store.records()
    assert suite.suite.preset == "cifar10_p"  # 32 px digits
    cells = df[df.cell.str.contains("/")]
    assert set(cells.cell) == set(suite.suite.cells()) and set(cells.metric) == {"fp", "t5d", "zipf"}
    assert (cells.n == cfg.limit).all() and not cells.higher_is_better.any()
    fp = cells[cells.metric == "fp"]
    assert fp.value.between(0, 1).all() and cells.ci_low.notna().all()
    summary = df[df.cell == ""]
    assert set(summary.metric) == {"mean_fp", "mean_t5d", "mean_zipf"}  # no baseline: no mFR
    over = [p for p in suite.suite.perturbations if p in TEST]
    per = df[(df.metric == "fp") & df.cell.isin(over)]
    assert float(summary[summary.metric == "mean_fp"].value.iloc[0]) == pytest.approx(per.value.mean())


@pytest.mark.parametrize("spec", ["zoo_vit", "zoo_resnet"])
def test_numbers_do_not_depend_on_batch_size(spec: str, zoo: dict) -> None:
    opts = {"perturbations": ["shot_noise", "snow", "spatter"], "difficulties": [1, 2]}  # noise and layers: random
    small, large = (_run(StabilitySuite(**opts), _ctx(zoo[spec], batch_size=b, limit=10)) for b in (7, 64))
    assert list(small) == list(large) == StabilitySuite(**opts).cells()
    for cell, result in small.items():
        assert result.metrics == large[cell].metrics, cell
        for metric in ("fp", "t5d", "zipf"):
            assert np.array_equal(result.outcomes.arrays[metric], large[cell].outcomes.arrays[metric])
        assert np.array_equal(result.outcomes.index("images"), _ctx(zoo[spec], limit=10).image_index(10))


def test_a_constant_model_is_perfectly_stable() -> None:
    model = wrap(Constant(), name="constant", family="cnn", data_config=CFG, num_classes=10)
    results = _run(StabilitySuite(perturbations="all", difficulties=[1, 3]), _ctx(model, limit=3))
    assert len(results) == 28
    for result in results.values():
        assert [(m.metric, m.value) for m in result.metrics] == [("fp", 0.0), ("t5d", 0.0), ("zipf", 0.0)]


def test_cells_are_the_metrics_of_each_images_sequence(zoo: dict) -> None:
    model = zoo["zoo_resnet"]
    ctx = _ctx(model, limit=6)
    results = _run(StabilitySuite(perturbations=["snow", "shot_noise", "translate"], difficulties=[1, 2]), ctx)
    x, _, index = next(batches(ctx))
    for name, difficulty, noise in (("snow", 1, False), ("shot_noise", 2, True), ("translate", 1, False)):
        part = difficulty if noise else ""  # the documented seeds: (run seed, stability, name, noise difficulty, index)
        gens = [torch.Generator().manual_seed(derive_seed(0, "stability", name, part, int(i))) for i in index]
        with torch.no_grad():  # frame by frame, one image at a time: nothing shared with the suite's batches
            logits = torch.stack([torch.cat([model(f[i:i + 1]) for i in range(len(f))])
                                  for f in sequence(x, name, preset="cifar10_p", difficulty=difficulty,
                                                    generators=gens)], 1)
        for d in ((difficulty,) if noise else (1, 2)):
            expected = sequence_metrics(logits, d, noise)
            arrays = results[f"{name}/{d}"].outcomes.arrays
            for metric in ("fp", "t5d", "zipf"):
                np.testing.assert_allclose(arrays[metric], expected[metric].numpy(), atol=1e-12)


def _records(values: dict[str, dict[str, float]], n: int) -> pd.DataFrame:
    return pd.DataFrame([{"cell": c, "metric": m, "value": v, "n": n} for c, ms in values.items() for m, v in ms.items()])


def test_aggregates_and_flip_rates_by_hand() -> None:
    suite = StabilitySuite(perturbations="all", difficulties=[1, 2], baseline="alexnet_like")
    rng = np.random.default_rng(0)
    arrays, values, base = {}, {}, {}
    for cell in suite.cells():
        arrays[cell] = {m: rng.random(5) * (1 if m == "fp" else 4) for m in ("fp", "t5d", "zipf")}
        values[cell] = {m: float(a.mean()) for m, a in arrays[cell].items()}
        base[cell] = {m: float(rng.random() + 0.5) for m in ("fp", "t5d", "zipf")}
    outcomes = {c: Outcomes().add_pool("images", [3, 5, 8, 13, 21]).add("fp", a["fp"]).add("t5d", a["t5d"])
                .add("zipf", a["zipf"]) for c, a in arrays.items()}
    out = {r.cell: r for r in suite.aggregate(_records(values, 5), outcomes, {"alexnet_like": _records(base, 5)})}
    assert set(out) == {*ALL, ""}
    fr = {}
    for p in ALL:
        cells = [f"{p}/1", f"{p}/2"]
        assert _value(out[p], "fp") == pytest.approx(np.mean([values[c]["fp"] for c in cells]))
        fr[p] = sum(values[c]["fp"] for c in cells) / sum(base[c]["fp"] for c in cells)
        assert _value(out[p], "fr") == pytest.approx(fr[p])
        assert out[p].outcomes.arrays["fr"].mean() == pytest.approx(fr[p])  # per-image vectors average to the value
        assert list(out[p].outcomes.index("images")) == [3, 5, 8, 13, 21]
    t5d_rate = {p: _value(out[p], "t5d_rate") for p in ALL}
    summary = out[""]
    assert _value(summary, "mfr") == pytest.approx(np.mean([fr[p] for p in TEST]))  # the 10 test perturbations only
    assert _value(summary, "mt5d") == pytest.approx(np.mean([t5d_rate[p] for p in TEST]))
    assert _value(summary, "mean_fp") == pytest.approx(np.mean([_value(out[p], "fp") for p in TEST]))
    assert summary.outcomes.arrays["mfr"].mean() == pytest.approx(_value(summary, "mfr"))
    assert all(not m.higher_is_better for r in out.values() for m in r.metrics)
    # no baseline: no rates; a cell missing: no suite-level numbers; a baseline that never flips: FR undefined
    plain = {r.cell: r for r in suite.aggregate(_records(values, 5), outcomes, None)}
    assert {m.metric for m in plain[""].metrics} == {"mean_fp", "mean_t5d", "mean_zipf"}
    partial = {c: v for c, v in values.items() if c != "tilt/2"}
    assert "" not in {r.cell for r in suite.aggregate(_records(partial, 5), outcomes, None)}
    base["snow/1"]["fp"] = base["snow/2"]["fp"] = 0.0
    still = {r.cell: r for r in suite.aggregate(_records(values, 5), None, {"alexnet_like": _records(base, 5)})}
    assert math.isnan(_value(still["snow"], "fr")) and math.isnan(_value(still[""], "mfr"))
    assert still["snow"].outcomes is None


def test_flip_rates_against_a_baseline_model_and_the_report(tmp_path: Path) -> None:
    opts = {"perturbations": ["translate", "scale"], "baseline": "zoo_resnet"}
    cfg = RunConfig(models=[ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")],
                    suites=[build_suite("stability", opts, "stability")], data="digits", limit=48, batch_size=128,
                    device="cpu")
    store_path = tmp_path / "s.sqlite"
    with Store(store_path) as store:
        execute(cfg, store, show_progress=False)
        df = store.records()
        assert execute(cfg, store, show_progress=False).computed == 0  # a second run reuses every cell
    def value(model: str, cell: str, metric: str) -> float:
        rows = df[(df.model == model) & (df.cell == cell) & (df.metric == metric)]
        return float(rows.value.iloc[-1])

    for p in ("translate", "scale"):
        base = value("zoo_resnet", p, "fp")
        assert base > 0
        assert value("zoo_resnet", p, "fr") == pytest.approx(1.0)
        assert value("zoo_vit", p, "fr") == pytest.approx(value("zoo_vit", p, "fp") / base)
        assert value("zoo_vit", p, "t5d_rate") == pytest.approx(value("zoo_vit", p, "t5d") / value("zoo_resnet", p, "t5d"))
    assert "mfr" not in set(df.metric)  # mFR needs all 10 test perturbations
    out = tmp_path / "report"
    assert main(["report", "--store", str(store_path), "--out", str(out)]) == 0
    html = (out / "index.html").read_text()
    assert "Stability along ImageNet-P perturbation sequences" in html and "stability/mean_fp" in html


def test_difficulty_figure_only_with_several_difficulties() -> None:
    from robustvit.report.figures import Style
    from robustvit.report.stability_figures import by_difficulty, per_perturbation

    rows = pd.DataFrame([{"model": m, "cell": f"snow/{d}", "metric": "fp", "value": 0.1 * d, "ci_low": 0.0,
                          "ci_high": 0.5} for m in ("a", "b") for d in (1, 2, 3)])
    style = Style({"a": "vit", "b": "cnn"})
    assert len(by_difficulty(rows, style)) == 1 and not by_difficulty(rows[rows.cell == "snow/1"], style)
    assert not per_perturbation(rows, style)  # no per-perturbation aggregates in these rows


def test_released_imagenet_p_videos(tmp_path: Path, zoo: dict) -> None:
    pytest.importorskip("av")
    from test_stability_sequences import write_video  # tests/ is on the path, as for resume_helpers

    ctx = _ctx(zoo["zoo_vit"], limit=3)
    x, _, _ = next(batches(ctx))
    clips = (torch.stack(list(sequence(x, "translate", preset="cifar10_p")), 1) * 255).round().byte()  # (3, 16, ...)
    for k, clip in enumerate(clips):
        write_video(tmp_path / "translate" / f"n0{k % 2}" / f"v{k}.mp4", clip.permute(0, 2, 3, 1).numpy())
    suite = StabilitySuite(source="imagenet_p_disk", root=str(tmp_path), perturbations=["translate"],
                           difficulties=[1, 2])
    results = _run(suite, _ctx(zoo["zoo_vit"], batch_size=32, limit=None))
    assert suite.preset == "imagenet_p"
    from robustvit.stability.disk import list_videos, read_video

    videos = list_videos(tmp_path, "translate")  # n00/v0, n00/v2, n01/v1
    with torch.no_grad():
        logits = torch.stack([zoo["zoo_vit"](read_video(v).float() / 255) for v in videos])
    for d in (1, 2):
        arrays = results[f"translate/{d}"].outcomes.arrays
        assert list(results[f"translate/{d}"].outcomes.index("images")) == [0, 1, 2]
        for metric, expected in sequence_metrics(logits, d).items():
            np.testing.assert_allclose(arrays[metric], expected.numpy(), atol=1e-12)
    with pytest.raises(UserError, match="does not exist"):
        _run(StabilitySuite(source="imagenet_p_disk", root=str(tmp_path / "nowhere")), _ctx(zoo["zoo_vit"]))


def test_released_cifar10_p_arrays(tmp_path: Path, zoo: dict) -> None:
    rng = np.random.default_rng(1)
    sets = {"gaussian_noise": rng.integers(0, 256, (5, 6, 32, 32, 3), dtype=np.uint8),
            "gaussian_noise_2": rng.integers(0, 256, (5, 6, 32, 32, 3), dtype=np.uint8),
            "translate": rng.integers(0, 256, (5, 9, 32, 32, 3), dtype=np.uint8)}
    for name, array in sets.items():
        np.save(tmp_path / f"{name}.npy", array)
    suite = StabilitySuite(source="cifar10_p_disk", root=str(tmp_path), perturbations=["gaussian_noise", "translate"],
                           difficulties=[1, 2])
    results = _run(suite, _ctx(zoo["zoo_resnet"], batch_size=16, limit=3))
    rows = subset_indices(5, 3, 0)
    for cell, name, d, noise in (("gaussian_noise/1", "gaussian_noise", 1, True), ("gaussian_noise/2", "gaussian_noise_2", 1, True),
                                 ("translate/2", "translate", 2, False)):
        frames = torch.from_numpy(sets[name][rows]).permute(0, 1, 4, 2, 3).float() / 255
        with torch.no_grad():
            logits = torch.stack([zoo["zoo_resnet"](f) for f in frames])
        expected = sequence_metrics(logits, d, noise)
        assert list(results[cell].outcomes.index("images")) == rows
        np.testing.assert_allclose(results[cell].outcomes.arrays["fp"], expected["fp"].numpy(), atol=1e-12)
        np.testing.assert_allclose(results[cell].outcomes.arrays["t5d"], expected["t5d"].numpy(), atol=1e-12)


@pytest.mark.parametrize(("opts", "message"), [
    ({"preset": "imagenet_c"}, "unknown preset"),
    ({"perturbations": ["fog"]}, "unknown perturbation 'fog'"),
    ({"difficulties": [0, 1]}, "difficulties must be"),
    ({"difficulties": "hard"}, "difficulties must be"),
    ({"source": "imagenet_p_disk"}, "needs root"),
    ({"source": "youtube"}, "unknown source"),
    ({"baseline": ""}, "baseline must be"),
    ({"frames": 3}, "unknown option 'frames'"),
])
def test_bad_options_are_user_errors(opts: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        StabilitySuite(**opts)


def test_cli_user_errors_exit_2(store_path: Path) -> None:
    base = ["eval", "--model", "zoo_vit", "--suite", "stability", "--limit", "2", "--store", str(store_path),
            "--device", "cpu", "--quiet"]
    assert main([*base, "-o", 'perturbations=["fog"]']) == 2
    assert main([*base, "-o", "baseline=ghost"]) == 2  # neither in the run nor stored
    if store_path.exists():
        with Store(store_path, readonly=True) as store:
            assert store.records().empty


def test_quickstart_runs_the_stability_suite() -> None:
    from robustvit.config import load_suite_file

    cfg = load_suite_file(Path(__file__).resolve().parents[1] / "suites" / "quickstart.toml")
    (stability,) = [s for s in cfg.suites if s.suite.kind == "stability"]
    assert stability.limit and stability.limit <= 64 and stability.suite.perturbations == list(TEST)
