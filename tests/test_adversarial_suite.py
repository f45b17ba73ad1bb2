"""The adversarial suite with the real context and store: options, cells, metrics, resume, aggregate."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch

from robustvit.attacks.engine import attack_batch
from robustvit.context import SuiteContext
from robustvit.errors import UserError
from robustvit.models import load_model
from robustvit.registries import SUITES
from robustvit.store import Store
from robustvit.suites.adversarial import AdversarialSuite, _bits, _seed

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def resnet():
    return load_model("zoo_resnet")


def _ctx(model, store: Store | None = None, limit: int = 24, batch_size: int = 8) -> SuiteContext:
    key = {"model_sha": model.sha, "suite": "adversarial", "suite_version": "1", "config_key": "test"}
    return SuiteContext(model=model, suite="adversarial", dataset="digits", device=torch.device("cpu"),
                        batch_size=batch_size, limit=limit, store=store, key=key, show_progress=False)


def _as_frame(results) -> pd.DataFrame:
    return pd.DataFrame([{"cell": r.cell, "metric": m.metric, "value": m.value, "n": m.n}
                         for r in results for m in r.metrics])


def test_registered_and_cells() -> None:
    assert SUITES.get("adversarial") is AdversarialSuite
    suite = AdversarialSuite(attacks=[
        {"attack": "pgd-linf", "eps": ["1/255", "2/255", "4/255", "8/255"]},
        {"attack": "pgd-l2"},
        {"attack": "autoattack", "version": "fast", "eps": "8/255"},
        {"attack": "pgd", "steps": 50, "label": "pgd50-linf", "eps": ["8/255"]},
        "deepfool",
    ])
    assert suite.cells() == [
        "checks", "pgd-linf/eps=1/255", "pgd-linf/eps=2/255", "pgd-linf/eps=4/255", "pgd-linf/eps=8/255",
        "pgd-l2/eps=0.5", "autoattack-fast-linf/eps=8/255", "pgd50-linf/eps=8/255", "deepfool-l2/eps=0.5",
    ]
    assert suite.checks_eps == pytest.approx(8 / 255)
    assert AdversarialSuite(eps=["2/255"], checks=False).cells() == ["pgd-linf/eps=2/255"]


@pytest.mark.parametrize(("opts", "message"), [
    ({"attacks": ["pgd-lnf"]}, "unknown attack 'pgd-lnf'; did you mean 'pgd-linf'"),
    ({"attacks": [{"attack": "pgd-linf", "stepz": 3}]}, "unknown option 'stepz'"),
    ({"attacks": [{"eps": ["1/255"]}]}, "has no 'attack' name"),
    ({"attacks": [{"attack": "pgd-linf", "eps": ["4/0"]}]}, "bad epsilon '4/0'"),
    ({"attacks": ["pgd-linf", "pgd"]}, "appears twice"),
    ({"attacks": []}, "non-empty list"),
    ({"checks": "yes"}, "must be true or false"),
    ({"attacks": [{"attack": "autoattack", "version": "plus"}]}, "unknown version 'plus'"),
    ({"epsilon": 3}, "unknown option 'epsilon'"),
])
def test_bad_options_are_one_line_user_errors(opts: dict, message: str) -> None:
    with pytest.raises(UserError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
        AdversarialSuite(**opts)
    assert "\n" not in str(info.value)


def test_run_metrics_on_the_zoo_resnet(resnet) -> None:
    suite = AdversarialSuite(attacks=[
        {"attack": "pgd-linf", "eps": ["0", "2/255", "8/255"]},
        {"attack": "deepfool-l2", "eps": [0.5, 2.0]},
        {"attack": "autoattack", "version": "fast", "steps": 10, "n_target_classes": 3, "eps": ["8/255"]},
    ], checks_n=8)
    results = {r.cell: {m.metric: m for m in r.metrics} for r in suite.run(_ctx(resnet), suite.cells())}
    assert set(results) == set(suite.cells())
    for cell, metrics in results.items():
        if cell == "checks":
            assert metrics["flag_gradient_masking"].value == 0.0 and not metrics["flag_gradient_masking"].higher_is_better
            continue
        assert metrics["clean_acc"].value == 1.0 and metrics["clean_acc"].n == 24
        assert metrics["robust_acc"].higher_is_better and not metrics["success_rate"].higher_is_better
    pgd = [results[f"pgd-linf/eps={e}"]["robust_acc"].value for e in ("0", "2/255", "8/255")]
    assert pgd[0] == 1.0 and pgd[0] >= pgd[1] >= pgd[2] and pgd[2] < 1.0
    df = results["deepfool-l2/eps=0.5"]
    assert 0 < df["median_norm"].value < 2.0 and df["found_rate"].value == 1.0
    assert results["deepfool-l2/eps=2"]["robust_acc"].value <= df["robust_acc"].value
    aa = results["autoattack-fast-linf/eps=8/255"]
    assert aa["robust_acc"].value <= aa["robust_acc_apgd-ce"].value
    assert aa["robust_acc"].value == aa["robust_acc_apgd-t"].value
    (agg,) = suite.aggregate(_results_as_cells(results), None)
    assert {m.metric: m.value for m in agg.metrics} == {
        "flag_nonmonotonic": 0.0, "flag_square_beats_gradient": 0.0, "flag_eps0": 0.0, "flag_gradient_masking": 0.0}


def _results_as_cells(results: dict) -> pd.DataFrame:
    return pd.DataFrame([{"cell": c, "metric": k, "value": m.value, "n": m.n}
                         for c, ms in results.items() for k, m in ms.items()])


def test_aggregate_flags_from_records() -> None:
    suite = AdversarialSuite(attacks=[{"attack": "pgd-linf", "eps": ["2/255", "8/255"]},
                                      {"attack": "square", "eps": ["8/255"]}])
    rows = [("checks", "flag_gradient_masking", 0.0, 8),
            ("pgd-linf/eps=2/255", "robust_acc", 0.5, 100), ("pgd-linf/eps=2/255", "clean_acc", 0.9, 100),
            ("pgd-linf/eps=8/255", "robust_acc", 0.2, 100), ("pgd-linf/eps=8/255", "clean_acc", 0.9, 100),
            ("square-linf/eps=8/255", "robust_acc", 0.3, 100), ("square-linf/eps=8/255", "clean_acc", 0.9, 100)]
    frame = pd.DataFrame(rows, columns=["cell", "metric", "value", "n"])
    (res,) = suite.aggregate(frame, None)
    values = {m.metric: m.value for m in res.metrics}
    assert res.cell == "" and values["flag_gradient_masking"] == 0.0
    frame.loc[frame.cell.eq("square-linf/eps=8/255") & frame.metric.eq("robust_acc"), "value"] = 0.1
    (res,) = suite.aggregate(frame, None)
    values = {m.metric: m.value for m in res.metrics}
    assert values["flag_square_beats_gradient"] == 1.0 and values["flag_gradient_masking"] == 1.0
    frame.loc[frame.cell.eq("checks"), "value"] = 1.0  # a probe flag alone also raises it
    frame.loc[frame.cell.eq("square-linf/eps=8/255") & frame.metric.eq("robust_acc"), "value"] = 0.3
    (res,) = suite.aggregate(frame, None)
    assert {m.metric: m.value for m in res.metrics}["flag_gradient_masking"] == 1.0
    assert suite.aggregate(frame.iloc[:0], None) == []


def test_resumes_from_saved_partial_state(resnet, tmp_path) -> None:
    suite = AdversarialSuite(attacks=[{"attack": "pgd-linf", "eps": ["8/255"], "steps": 3},
                                      {"attack": "deepfool-l2", "eps": [0.5, 1.0]}], checks=False, block=8)
    cells = suite.cells()
    store = Store(tmp_path / "s.sqlite")
    ctx = _ctx(resnet, store)
    assert len(list(suite.run(ctx, cells))) == 3
    # after every block the counts so far are saved: the last state holds all three blocks of 8
    state = json.loads(store.get_partial(ctx.key, "pgd-linf/eps=8/255"))
    assert state["batches"] == 3 and state["n"] == 24
    assert store.get_partial(ctx.key, "deepfool-l2/eps=0.5") == store.get_partial(ctx.key, "deepfool-l2/eps=1")

    # a state "after 2 batches" with made-up counts: the run must continue from it, not redo them
    fresh = Store(tmp_path / "t.sqlite")
    ctx2 = _ctx(resnet, fresh)
    marked = {"v": 3, "batches": 2, "n": 16, "clean": 16, "robust": {"8/255": 16}, "norms": [], "extra": {},
              "correct": _bits([True] * 16), "robust_points": {"8/255": _bits([True] * 16)}, "point_extra": {}}
    fresh.put_partial(ctx2.key, "pgd-linf/eps=8/255", json.dumps(marked).encode())
    (res,) = suite.run(ctx2, ["pgd-linf/eps=8/255"])
    values = {m.metric: (m.value, m.n) for m in res.metrics}
    x, y = list(ctx2.loader())[2]
    spec = suite.specs[0]
    first = ctx2.image_index(24)[16]  # a block's seed: from the dataset index of its first image
    third = attack_batch(spec.attack, ctx2.model, x, y, [8 / 255], _seed(ctx2, spec.label, "8/255", "block", first))
    assert values["robust_acc"] == (pytest.approx((16 + third.robust[0]) / 24), 24)
    assert values["clean_acc"][0] == pytest.approx((16 + third.clean) / 24)
