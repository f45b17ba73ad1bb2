"""The OOD suite: options, cell names, one shared forward pass, ODIN, folders, aggregates."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import FeatureCache, SuiteContext
from robustvit.errors import UserError
from robustvit.metrics.ood import ood_metrics
from robustvit.models import load_model
from robustvit.registries import DETECTORS
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.ood import DEFAULT_DETECTORS, OODSuite

SMALL = {
    "near": {"letters": {"name": "ood_letters", "n": 40}},
    "far": {"noise2": {"name": "ood_noise", "n": 30, "seed": 1}},
    "sanity": {"noise": {"name": "ood_noise", "n": 30}},
    # fitting on the whole 540-image test split shares its forward pass with the ID scores (no limit)
    "fit_split": "test",
}


pytestmark = pytest.mark.usefixtures("one_thread")


# -- options ---------------------------------------------------------------------------------------
def test_defaults_cover_the_embedded_sets_and_all_detectors_but_odin() -> None:
    suite = OODSuite()
    assert set(DEFAULT_DETECTORS) == set(DETECTORS.names()) - {"odin"}
    assert suite.sets == {"near": {"letters": "ood_letters"},
                          "far": {"faces": "ood_faces", "textures": "ood_textures", "photos": "ood_photos"},
                          "sanity": {"noise": "ood_noise"}}
    assert len(suite.cells()) == 5 * len(DEFAULT_DETECTORS)
    assert "far/faces/energy" in suite.cells() and "sanity/noise/knn" in suite.cells()


def test_set_names_from_lists_folders_and_tables(tmp_path: Path) -> None:
    suite = OODSuite(detectors=["softmax", "mds"], near=["ood_letters", "folder:/data/ninco/"],
                     far={"Open Images O": "~/oi"}, sanity=[])
    assert suite.detectors == ["msp", "mahalanobis"]  # aliases resolved
    assert suite.cells() == ["near/ood_letters/msp", "near/ood_letters/mahalanobis", "near/ninco/msp",
                             "near/ninco/mahalanobis", "far/Open_Images_O/msp", "far/Open_Images_O/mahalanobis"]
    assert suite.sets["near"]["ninco"] == {"path": "/data/ninco", "unlabelled": True}
    assert suite.sets["far"]["Open_Images_O"]["path"] == str(Path("~/oi").expanduser())


@pytest.mark.parametrize(
    ("opts", "message"),
    [
        ({"detectors": ["enrgy"]}, "did you mean 'energy'"),
        ({"detectors": "energy"}, "non-empty list"),
        ({"params": {"knn": {"kk": 3}}}, "detector 'knn': bad parameters.*allowed: k"),
        ({"params": {"ash": {"variant": "x"}}}, "detector 'ash': bad parameters"),
        ({"detectors": ["msp"], "params": {"knn": {"k": 3}}}, "not in 'detectors'"),
        ({"near": ["ood_leters"]}, "did you mean 'ood_letters'"),
        ({"near": [], "far": [], "sanity": []}, "no OOD sets"),
        ({"near": ["ood_noise"], "far": ["ood_noise"]}, "used twice"),
        ({"tpr": 0}, "'tpr' must be"),
        ({"far": {"x": {"name": "ood_facez"}}}, "did you mean 'ood_faces'"),
        ({"fit_data": "digitz"}, "did you mean 'digits'"),
        ({"bogus": 1}, "unknown option 'bogus'"),
    ],
)
def test_bad_options_are_one_line_user_errors(opts: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        OODSuite(**opts)
    assert "\n" not in str(info.value)


# -- running ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def resnet():
    return load_model("zoo_resnet")


def _ctx(model, cache: FeatureCache, limit: int | None = None) -> SuiteContext:
    return SuiteContext(model=model, suite="ood", dataset="digits", device=torch.device("cpu"), batch_size=64,
                        limit=limit, feature_cache=cache, show_progress=False)


def test_one_forward_pass_per_dataset_shared_by_all_detectors(resnet) -> None:
    cache = FeatureCache(disk=False)
    suite = OODSuite(**SMALL)
    calls = []
    handle = resnet.model.conv1.register_forward_hook(lambda *_: calls.append(1))  # the stem: once per batch
    try:
        results = list(suite.run(_ctx(resnet, cache), suite.cells()))
        # the ID test set (scored and fitted on) and three OOD sets: one forward pass each (batches of 64)
        assert cache.misses == 4
        expected_batches = -(-540 // 64) + 1 + 1 + 1
        assert len(calls) == expected_batches
        # a second suite over the same data does no forward pass at all
        again = list(OODSuite(**SMALL, detectors=["energy"]).run(_ctx(resnet, cache), ["far/noise2/energy"]))
        assert len(calls) == expected_batches and len(again) == 1
    finally:
        handle.remove()
    assert [r.cell for r in results] == suite.cells()
    for r in results:
        values = {m.metric: m for m in r.metrics}
        assert set(values) == {"auroc", "aupr_in", "aupr_out", "fpr95", "id_acc"}
        assert values["fpr95"].higher_is_better is False and values["auroc"].higher_is_better is True
        assert values["id_acc"].n == 540 and values["auroc"].n == 540 + (40 if r.cell.startswith("near") else 30)
    energy = next(r for r in results if r.cell == "far/noise2/energy")
    assert energy.metrics[0].value == pytest.approx(again[0].metrics[0].value)


def test_cell_metrics_equal_direct_computation(resnet) -> None:
    cache = FeatureCache(disk=False)
    ctx = _ctx(resnet, cache)
    suite = OODSuite(**SMALL, detectors=["knn"], params={"knn": {"k": 5}})
    (result,) = list(suite.run(ctx, ["near/letters/knn"]))
    train, test, ood = ctx.features("digits", split="test"), ctx.features(), ctx.features(SMALL["near"]["letters"])
    det = DETECTORS.get("knn")(k=5).fit(train.features, train.logits, train.labels)
    expected = ood_metrics(det.score(test.features, test.logits), det.score(ood.features, ood.logits))
    assert {m.metric: m.value for m in result.metrics if m.metric != "id_acc"} == pytest.approx(expected)


def test_odin_scores_images_with_its_own_gradient_pass(resnet) -> None:
    suite = OODSuite(detectors=["odin", "msp"], params={"odin": {"temperature": 1.0, "epsilon": 0.0}},
                     near=[], far={"noise": {"name": "ood_noise", "n": 20}}, sanity=[], fit_split="test")
    by_cell = {r.cell: r for r in suite.run(_ctx(resnet, FeatureCache(disk=False)), suite.cells())}
    # with T = 1 and no perturbation ODIN is MSP: same numbers from the image pass and the shared pass
    odin = {m.metric: m.value for m in by_cell["far/noise/odin"].metrics}
    msp = {m.metric: m.value for m in by_cell["far/noise/msp"].metrics}
    assert odin == pytest.approx(msp, abs=1e-6)
    perturbed = OODSuite(detectors=["odin"], near=[], far={"noise": {"name": "ood_noise", "n": 20}}, sanity=[], fit_split="test")
    (cell,) = list(perturbed.run(_ctx(resnet, FeatureCache(disk=False), limit=40), perturbed.cells()))
    assert 0.0 <= cell.metrics[0].value <= 1.0


def test_folder_of_images_as_ood_set(resnet, tmp_path: Path) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    folder = tmp_path / "my_ood" / "nested"
    folder.mkdir(parents=True)
    for i in range(12):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    suite = OODSuite(detectors=["energy"], near=[], far=[str(tmp_path / "my_ood")], sanity=[])
    assert suite.cells() == ["far/my_ood/energy"]
    (cell,) = list(suite.run(_ctx(resnet, FeatureCache(disk=False), limit=30), suite.cells()))
    assert cell.metrics[0].n == 30 + 12  # energy needs no fit: no pass over the training split


def test_missing_folder_fails_before_any_forward_pass(resnet, tmp_path: Path) -> None:
    suite = OODSuite(detectors=["energy"], near=[], far=[str(tmp_path / "absent")], sanity=[])
    cache = FeatureCache(disk=False)
    with pytest.raises(UserError, match="does not exist"):
        list(suite.run(_ctx(resnet, cache), suite.cells()))
    assert cache.misses == 0


# -- aggregates ------------------------------------------------------------------------------------
def _records(suite: OODSuite, skip: str | None = None) -> pd.DataFrame:
    rows = []
    rng = np.random.default_rng(0)
    for cell in suite.cells():
        if cell == skip:
            continue
        for metric in ("auroc", "aupr_in", "aupr_out", "fpr95"):
            rows.append({"cell": cell, "metric": metric, "value": float(rng.uniform()), "n": 100 + 10 * len(cell)})
        rows.append({"cell": cell, "metric": "id_acc", "value": 0.9, "n": 100})
    return pd.DataFrame(rows)


def test_aggregates_are_means_over_sets_and_detectors() -> None:
    suite = OODSuite(detectors=["msp", "energy"], near=["ood_letters"], far=["ood_faces", "ood_photos"], sanity=[])
    df = _records(suite)
    out = {r.cell: {m.metric: m for m in r.metrics} for r in suite.aggregate(df, None)}
    assert set(out) == {"near/msp", "near/energy", "near", "far/msp", "far/energy", "far"}

    def value(cell: str, metric: str) -> float:
        return float(df[(df.cell == cell) & (df.metric == metric)]["value"].item())

    far_energy = np.mean([value("far/ood_faces/energy", "auroc"), value("far/ood_photos/energy", "auroc")])
    assert out["far/energy"]["auroc"].value == pytest.approx(far_energy)
    far_all = np.mean([value(f"far/{s}/{d}", "fpr95") for s in ("ood_faces", "ood_photos") for d in ("msp", "energy")])
    assert out["far"]["fpr95"].value == pytest.approx(far_all)
    assert out["far"]["fpr95"].higher_is_better is False and out["far"]["id_acc"].value == pytest.approx(0.9)
    # n: ID images once plus every OOD image of the group
    n_faces, n_photos = (100 + 10 * len("far/ood_faces/msp")), (100 + 10 * len("far/ood_photos/msp"))
    assert out["far/msp"]["auroc"].n == n_faces + n_photos - 100
    # a later record of a cell replaces the earlier one; a missing cell drops its group's aggregates
    newer = pd.concat([df, pd.DataFrame([{"cell": "far/ood_faces/energy", "metric": "auroc", "value": 1.0, "n": 1}])])
    out2 = {r.cell: r for r in suite.aggregate(newer, None)}
    assert out2["far/energy"].metrics[0].value == pytest.approx((1.0 + value("far/ood_photos/energy", "auroc")) / 2)
    partial = {r.cell for r in suite.aggregate(_records(suite, skip="far/ood_faces/msp"), None)}
    assert partial == {"near/msp", "near/energy", "near"}
    assert suite.aggregate(df.iloc[0:0], None) == []


def test_nan_propagates_into_aggregates() -> None:
    suite = OODSuite(detectors=["msp"], near=[], far=["ood_faces", "ood_photos"], sanity=[])
    df = _records(suite)
    df.loc[(df.cell == "far/ood_faces/msp") & (df.metric == "auroc"), "value"] = math.nan
    out = {r.cell: {m.metric: m.value for m in r.metrics} for r in suite.aggregate(df, None)}
    assert math.isnan(out["far"]["auroc"]) and not math.isnan(out["far"]["fpr95"])


def test_runner_stores_cells_and_aggregates(store_path: Path) -> None:
    opts = {**SMALL, "detectors": ["energy", "vim"]}
    cfg = RunConfig(models=[ModelConfig("zoo_vit")], suites=[build_suite("ood", opts, "ood")], batch_size=64,
                    device="cpu")
    with Store(store_path) as store:
        summary = execute(cfg, store, show_progress=False)
        assert summary.computed == 6
        df = store.records()
        paths = set(df["suite"] + "/" + df["cell"] + "/" + df["metric"])
        assert {"ood/far/noise2/energy/auroc", "ood/far/energy/auroc", "ood/far/auroc", "ood/near/vim/fpr95",
                "ood/sanity/auroc"} <= paths
        assert execute(cfg, store, show_progress=False).computed == 0


@pytest.mark.parametrize("path", ["suites/ood_imagenet.toml", "suites/ood_cifar10.toml"])
def test_shipped_suite_files_are_valid_ood_suites(path: str) -> None:
    from robustvit._compat import tomllib

    file = Path(__file__).resolve().parents[1] / path
    doc = tomllib.loads(file.read_text())
    for name, table in doc["suites"].items():
        cfg = build_suite(name, table, path)
        assert cfg.suite.kind == "ood" and cfg.suite.cells()
        assert all(isinstance(spec, dict) and spec["unlabelled"] for g in cfg.suite.sets.values() for spec in g.values())
