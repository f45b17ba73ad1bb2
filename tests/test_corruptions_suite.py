"""The corruption suite through the real runner: cells, aggregates (mCE by hand), baselines, disk layouts."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from robustvit.cli import main
from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.corruptions import BENCHMARK, corrupt
from robustvit.errors import UserError
from robustvit.metrics.corruption import ALEXNET_CLEAN_ERROR, ALEXNET_ERRORS
from robustvit.runner import execute
from robustvit.store import Store


def _latest(df, cell: str, metric: str) -> float:
    rows = df[(df.cell == cell) & (df.metric == metric)]
    assert len(rows), f"no {cell}/{metric}"
    return float(rows["value"].iloc[-1])


def test_cli_eval_zoo_resnet_reproduces_mce_by_hand(store_path: Path) -> None:
    # digits default to the cifar10_c preset and no baseline; asked for explicitly, ImageNet-C and AlexNet
    code = main(["eval", "--model", "zoo_resnet", "--suite", "corruption", "--limit", "64", "--store", str(store_path),
                 "--device", "cpu", "--batch-size", "64", "-o", "severities=[3]", "-o", "preset=imagenet_c",
                 "-o", "baseline=alexnet", "--quiet"])
    assert code == 0
    with Store(store_path, readonly=True) as store:
        df = store.records(model="zoo_resnet", suite="corruption")
    cells = set(df.cell)
    assert {f"{c}/3" for c in BENCHMARK} | {"clean", ""} | set(BENCHMARK) <= cells
    per_cell = df[df.cell.str.contains("/")]
    assert set(per_cell.metric) == {"error", "top1"} and (per_cell.n == 64).all()
    for c in BENCHMARK:
        err = _latest(df, f"{c}/3", "error")
        assert err == pytest.approx(1 - _latest(df, f"{c}/3", "top1"))
        assert 0.0 <= err <= 1.0
        assert _latest(df, c, "error") == pytest.approx(err)
        assert _latest(df, c, "ce") == pytest.approx(err / ALEXNET_ERRORS[c][2])
    clean = _latest(df, "clean", "error")
    by_hand = np.mean([_latest(df, f"{c}/3", "error") / ALEXNET_ERRORS[c][2] for c in BENCHMARK])
    rel_by_hand = np.mean([(_latest(df, f"{c}/3", "error") - clean) / (ALEXNET_ERRORS[c][2] - ALEXNET_CLEAN_ERROR)
                           for c in BENCHMARK])
    assert _latest(df, "", "mce") == pytest.approx(by_hand)
    assert _latest(df, "", "relative_mce") == pytest.approx(rel_by_hand)
    assert _latest(df, "", "mean_error") == pytest.approx(np.mean([_latest(df, f"{c}/3", "error") for c in BENCHMARK]))
    assert not df[df.metric.isin(["error", "ce", "mce", "relative_mce", "mean_error"])].higher_is_better.any()
    # a second run reuses every cell and starts no new run
    assert main(["eval", "--model", "zoo_resnet", "--suite", "corruption", "--limit", "64", "--store",
                 str(store_path), "--device", "cpu", "--batch-size", "64", "-o", "severities=[3]", "-o",
                 "preset=imagenet_c", "-o", "baseline=alexnet", "--quiet"]) == 0
    with Store(store_path, readonly=True) as store:
        assert len(store.runs()) == 1


def test_preset_and_baseline_follow_the_data(store_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """32 px digits: the CIFAR-10-C preset and no AlexNet normalisation, said in the output."""
    assert main(["eval", "--model", "zoo_resnet", "--suite", "corruption", "--limit", "32", "--store", str(store_path),
                 "-o", "severities=[1]", "-o", "corruptions=[\"contrast\"]"]) == 0
    out = capsys.readouterr().out
    assert "preset=cifar10_c" in out and "baseline=none" in out
    with Store(store_path, readonly=True) as store:
        df = store.records(model="zoo_resnet", suite="corruption")
        spec = next(iter(store.protocols().values()))
    assert spec["options"]["preset"] == "cifar10_c" and spec["options"]["baseline"] == "none"
    assert "ce" not in set(df.metric) and "mce" not in set(df.metric)
    suite = build_suite("corruption", {}, "t").suite
    from robustvit.data import TensorSource

    big = TensorSource(torch.zeros(2, 3, 224, 224), torch.zeros(2, dtype=torch.long), num_classes=1000, name="x",
                       fingerprint="x")
    suite.bind(big)
    assert (suite.preset, suite.baseline) == ("imagenet_c", "alexnet")
    big.num_classes = 10  # ImageNet-size images, but not ImageNet's classes: no AlexNet normalisation
    suite.bind(big)
    assert (suite.preset, suite.baseline) == ("imagenet_c", "none")


def _run(store: Store, models: list[str], options: dict, limit: int = 48, data="digits") -> None:
    cfg = RunConfig(models=[ModelConfig(m) for m in models], suites=[build_suite("corruption", options, "test")],
                    data=data, limit=limit, batch_size=48, device="cpu", seed=0)
    execute(cfg, store, show_progress=False)


def test_stored_model_as_baseline(store_path: Path) -> None:
    opts = {"preset": "cifar10_c", "corruptions": ["contrast", "fog"], "severities": [4, 5], "baseline": "zoo_resnet"}
    with Store(store_path) as store:
        _run(store, ["zoo_vit", "zoo_resnet"], opts)  # the baseline listed second is evaluated first
        df = store.records(suite="corruption")
        assert list(dict.fromkeys(df.model)) == ["zoo_resnet", "zoo_vit"]
    base, vit = df[df.model == "zoo_resnet"], df[df.model == "zoo_vit"]
    for c in ("contrast", "fog"):
        eb = [_latest(base, f"{c}/{s}", "error") for s in (4, 5)]
        ev = [_latest(vit, f"{c}/{s}", "error") for s in (4, 5)]
        assert _latest(base, c, "ce") == pytest.approx(1.0)
        assert _latest(vit, c, "ce") == pytest.approx(sum(ev) / sum(eb))
        cb, cv = _latest(base, "clean", "error"), _latest(vit, "clean", "error")
        assert _latest(vit, c, "relative_ce") == pytest.approx((sum(ev) - 2 * cv) / (sum(eb) - 2 * cb))
    assert "mce" not in set(vit.metric)  # two corruptions are not the benchmark
    assert _latest(vit, "", "mean_error") == pytest.approx(np.mean([_latest(vit, c, "error") for c in ("contrast", "fog")]))


def test_models_of_a_run_share_corrupted_batches_with_the_same_numbers(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Sharing (the default) and making every batch again (budget 0) store the same errors; with
    sharing the second model reads the first model's batches (counted by a spy on ``corrupt``)."""
    import robustvit.corruptions as corruptions

    calls: list[str] = []
    real = corruptions.corrupt
    monkeypatch.setattr(corruptions, "corrupt", lambda *a, **k: calls.append(a[1]) or real(*a, **k))
    opts = {"preset": "cifar10_c", "corruptions": ["gaussian_noise", "snow", "jpeg_compression"], "severities": [2, 5]}
    errors, counts = {}, {}
    for budget in ("0", "1024"):
        monkeypatch.setenv("ROBUSTVIT_SHARE_MB", budget)
        calls.clear()
        with Store(tmp_path / f"{budget}.sqlite") as store:
            _run(store, ["zoo_resnet", "zoo_vit"], opts, limit=96)  # two batches of 48 per cell
            df = store.records(suite="corruption")
        rows = df[df.metric == "error"][["model", "cell", "value"]].itertuples(index=False)
        errors[budget] = {(m, c): v for m, c, v in rows}
        counts[budget] = len(calls)
    assert counts == {"0": 2 * 6 * 2, "1024": 6 * 2}  # models x cells x batches
    assert len(errors["0"]) == 2 * (1 + 6 + 3) and errors["0"] == errors["1024"]  # clean, cells, corruptions


def test_shared_inputs_budget_checksum_and_release() -> None:
    from robustvit.context import SharedInputs

    x = torch.rand(4, 3, 32, 32)
    made = []

    def make(v: float):
        return lambda: made.append(v) or torch.full((4, 3, 32, 32), v)

    s = SharedInputs(budget_bytes=x.numel() * 4, users=3)  # room for one batch, three models
    assert s.get("a", x, make(1.0)).max() == 1.0 and s.get("b", x, make(2.0)).max() == 2.0  # b over budget
    assert s.get("a", x, make(9.0)).max() == 1.0 and s.get("b", x, make(3.0)).max() == 3.0
    assert s.get("a", x * 0.5, make(4.0)).max() == 4.0, "another clean batch under the same key is made anew"
    assert made == [1.0, 2.0, 3.0, 4.0] and s.hits == 1
    s.get("a", x, make(5.0))  # the third model: the entry is released after it
    assert s.used == 0 and not s._entries
    assert SharedInputs(1 << 30, users=1).budget == 0, "one model: nothing to share"


def test_cifar10_c_preset_has_no_alexnet_normalisation(store_path: Path) -> None:
    with Store(store_path) as store:
        _run(store, ["zoo_resnet"], {"preset": "cifar10_c", "corruptions": ["gaussian_noise"], "severities": [5]},
             limit=16)
        df = store.records()
    assert "ce" not in set(df.metric) and "mean_error" in set(df.metric)


def _digits(count: int, limit: int) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The first ``count`` digits test images, labels, and the suite's seeded subset of ``limit`` of them."""
    from robustvit.context import subset_indices
    from robustvit.data.catalog import open_source

    src = open_source("digits", "test")
    x = torch.stack([src[i][0] for i in range(count)])
    y = torch.tensor([src[i][1] for i in range(count)])
    return x, y, subset_indices(count, limit, 0)


def _error(model: str, x: torch.Tensor, y: torch.Tensor) -> float:
    from robustvit.models import load_model

    m = load_model(model).eval()
    with torch.no_grad():
        return float((m(x).argmax(1) != y).float().mean())


def test_imagenet_c_folder_layout(tmp_path: Path, store_path: Path) -> None:
    x, y, sub = _digits(60, 40)
    root = tmp_path / "imagenet-c"
    expected = {}
    for name, sev in [("gaussian_noise", 5), ("contrast", 5)]:
        u8 = (corrupt(x, name, sev, preset="cifar10_c", generator=torch.Generator().manual_seed(1)) * 255).round()
        u8 = u8.to(torch.uint8).permute(0, 2, 3, 1).numpy()
        for i, (img, label) in enumerate(zip(u8, y.tolist())):
            folder = root / name / str(sev) / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(img).save(folder / f"img{i:04d}.png")
        # the folder's files sort by class, then name: the same subset rule applies to that order
        order = sorted(range(len(y)), key=lambda i: (int(y[i]), i))
        chosen = [order[j] for j in sub]
        expected[f"{name}/{sev}"] = _error("zoo_resnet", torch.from_numpy(u8[chosen]).permute(0, 3, 1, 2).float() / 255,
                                           y[chosen])
    with Store(store_path) as store:
        _run(store, ["zoo_resnet"], {"source": "imagenet_c_disk", "root": str(root),
                                     "corruptions": ["gaussian_noise", "contrast"], "severities": [5]}, limit=40)
        df = store.records()
    for cell in ("gaussian_noise/5", "contrast/5"):
        assert _latest(df, cell, "error") == pytest.approx(expected[cell])
    assert {"clean", "gaussian_noise", "contrast", ""} <= set(df.cell)


def test_cifar10_c_array_layout(tmp_path: Path, store_path: Path) -> None:
    x, y, sub = _digits(60, 40)
    root = tmp_path / "cifar-10-c"
    root.mkdir()
    expected = {}
    stacks = []
    for sev in range(1, 6):
        out = corrupt(x, "fog", sev, preset="cifar10_c", generator=torch.Generator().manual_seed(sev))
        u8 = (out * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
        stacks.append(u8)
        expected[sev] = _error("zoo_vit", torch.from_numpy(u8[sub]).permute(0, 3, 1, 2).float() / 255, y[sub])
    np.save(root / "fog.npy", np.concatenate(stacks))
    np.save(root / "labels.npy", np.concatenate([y.numpy().astype(np.uint8)] * 5))
    with Store(store_path) as store:
        _run(store, ["zoo_vit"], {"source": "cifar10_c_disk", "root": str(root), "corruptions": ["fog"],
                                  "severities": [2, 5], "preset": "cifar10_c"}, limit=40)
        df = store.records()
    assert _latest(df, "fog/2", "error") == pytest.approx(expected[2])
    assert _latest(df, "fog/5", "error") == pytest.approx(expected[5])
    assert _latest(df, "fog", "error") == pytest.approx((expected[2] + expected[5]) / 2)


@pytest.mark.parametrize(("options", "message"), [
    ({"corruptions": ["gausian_noise"]}, "did you mean"),
    ({"severities": [0, 3]}, "severities"),
    ({"preset": "imagenet"}, "preset"),
    ({"source": "imagenet_c_disk"}, "root"),
    ({"corruptions": 3}, "corruptions"),
    ({"colour": 1}, "unknown option"),
])
def test_bad_options_are_user_errors(options: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        build_suite("corruption", options, "test")


def test_missing_frost_textures_fail_before_any_work(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    from robustvit.corruptions import textures

    monkeypatch.setattr(textures, "_from_distribution", lambda: None)
    monkeypatch.delenv(textures.ENV_VAR, raising=False)
    with pytest.raises(UserError, match="frost"):
        build_suite("corruption", {"corruptions": ["frost"]}, "test")
    with pytest.raises(UserError, match="lacks frost texture"):
        build_suite("corruption", {"corruptions": ["frost"], "frost_dir": str(tmp_path)}, "test")
    suite = build_suite("corruption", {"corruptions": ["fog"]}, "test").suite  # no frost, no textures needed
    assert suite.cells() == ["clean"] + [f"fog/{s}" for s in range(1, 6)] and not math.isnan(suite.severities[0])


def test_missing_root_folder_is_a_user_error(store_path: Path) -> None:
    with Store(store_path) as store, pytest.raises(UserError, match="does not exist"):
        _run(store, ["zoo_resnet"], {"source": "cifar10_c_disk", "root": "/nonexistent/folder",
                                     "corruptions": ["fog"], "severities": [1]}, limit=8)


@pytest.mark.parametrize("path", ["suites/imagenet_c.toml", "suites/cifar10_c.toml"])
def test_shipped_suite_files_are_valid_corruption_suites(path: str) -> None:
    from robustvit._compat import tomllib

    file = Path(__file__).resolve().parents[1] / path
    doc = tomllib.loads(file.read_text())
    for name, table in doc["suites"].items():
        cfg = build_suite(name, table, path)
        assert cfg.suite.kind == "corruption" and len(cfg.suite.cells()) == 1 + 15 * 5
