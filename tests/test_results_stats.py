"""Intervals, tests and error consistency against statsmodels / scipy / scikit-learn and by hand;
paired verdicts on known cases."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from robustvit.results.bootstrap import Resampler, cell_intervals, recompute
from robustvit.results.compare import OutcomeSource, compare_families, consistency, verdict
from robustvit.results.outcomes import Outcomes, decode, encode
from robustvit.results.stats import bootstrap_p_value, error_consistency, mcnemar_exact, percentile_interval, wilson


@pytest.mark.parametrize("k, n", [(0, 10), (1, 10), (5, 20), (537, 540), (540, 540), (60, 540), (3, 16)])
def test_wilson_matches_statsmodels_and_scipy(k: int, n: int) -> None:
    from scipy.stats import binomtest
    from statsmodels.stats.proportion import proportion_confint

    low, high = wilson(k, n)
    ref = proportion_confint(k, n, alpha=0.05, method="wilson")
    assert (float(low), float(high)) == pytest.approx(ref, abs=1e-12)
    ci = binomtest(k, n).proportion_ci(method="wilson")
    assert (float(low), float(high)) == pytest.approx((ci.low, ci.high), abs=1e-9)


def test_wilson_vectorised_and_empty() -> None:
    low, high = wilson(np.array([1, 2, 3]), np.array([10, 10, 0]))
    assert np.isnan(low[2]) and np.isnan(high[2]) and low[0] < 0.1 < high[0]


def test_percentile_bootstrap_agrees_with_scipy() -> None:
    from scipy.stats import bootstrap

    rng = np.random.default_rng(3)
    data = rng.gamma(2.0, 1.0, size=400)
    reps = Resampler(n_boot=4000, seed=1).means("x", data)
    ours = percentile_interval(reps)
    ref = bootstrap((data,), np.mean, n_resamples=4000, method="percentile", random_state=2).confidence_interval
    assert ours[0] == pytest.approx(ref.low, abs=0.02) and ours[1] == pytest.approx(ref.high, abs=0.02)
    assert reps.mean() == pytest.approx(data.mean(), abs=0.01)


def test_resamples_are_seeded_by_pool_not_by_caller() -> None:
    a, b = Resampler(n_boot=50), Resampler(n_boot=50)
    assert np.array_equal(a.counts("images", 30), b.counts("images", 30))
    assert not np.array_equal(a.counts("images", 30), a.counts("ood:faces", 30))
    assert (a.counts("images", 30).sum(axis=1) == 30).all()


def test_mcnemar_matches_statsmodels() -> None:
    from statsmodels.stats.contingency_tables import mcnemar

    rng = np.random.default_rng(0)
    a = rng.random(300) < 0.8
    b = np.where(rng.random(300) < 0.1, ~a, a)
    table = [[np.sum(a & b), np.sum(a & ~b)], [np.sum(~a & b), np.sum(~a & ~b)]]
    assert mcnemar_exact(a, b) == pytest.approx(mcnemar(table, exact=True).pvalue, rel=1e-9)
    assert mcnemar_exact(a, a) == 1.0


def test_error_consistency_by_hand_and_against_sklearn() -> None:
    from sklearn.metrics import cohen_kappa_score

    a = np.array([1, 1, 1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    b = np.array([1, 1, 1, 1, 0, 0, 1, 0, 0, 0], dtype=bool)
    # agree on 4 (both right) + 3 (both wrong) = 7 of 10; p_a = 0.6, p_b = 0.5
    ec = error_consistency(a, b)
    assert ec["c_obs"] == pytest.approx(0.7)
    assert ec["c_exp"] == pytest.approx(0.6 * 0.5 + 0.4 * 0.5)
    assert ec["kappa"] == pytest.approx((0.7 - 0.5) / (1 - 0.5))
    assert ec["kappa"] == pytest.approx(cohen_kappa_score(a, b))
    many = error_consistency(np.stack([a, b]), np.stack([b, a, a]))
    assert many["kappa"].shape == (2, 3) and many["kappa"][0, 1] == pytest.approx(1.0)


def test_bootstrap_p_value_and_verdict_rule() -> None:
    assert bootstrap_p_value(np.full(100, 0.3)) == 0.0
    assert bootstrap_p_value(np.linspace(-1, 1, 101)) == pytest.approx(1.0)
    assert verdict(0.01, 0.05, True) == "vit" and verdict(0.01, 0.05, False) == "cnn"
    assert verdict(-0.05, -0.01, False) == "vit" and verdict(-0.01, 0.02, True) == "tie"
    assert verdict(math.nan, math.nan, True) == "tie"


def test_outcomes_blob_round_trip() -> None:
    out = Outcomes().add_pool("images", [2, 5, 9]).add("top1", np.array([True, False, True]))
    out.add("nll", np.array([0.1, 0.2, 0.3], dtype=np.float32)).add("score", np.array([1e-12, 2.0, -3.0]))
    out.meta["ece"] = {"conf": "nll", "correct": "top1", "bins": 15}
    back = decode(encode(out))
    assert back.pools == out.pools and back.meta == out.meta
    for name, arr in out.arrays.items():
        assert back.arrays[name].dtype == arr.dtype and np.array_equal(back.arrays[name], arr)


# -- paired comparisons on known cases -------------------------------------------------------------------
def _store(correct: dict[str, tuple[str, np.ndarray]], metric: str = "top1", hib: bool = True,
           protocol: str = "p") -> tuple[pd.DataFrame, OutcomeSource]:
    rows, blobs = [], {}
    for model, (family, arr) in correct.items():
        values = arr if metric == "top1" else ~arr
        rows.append({"model": model, "family": family, "protocol": protocol, "suite": "clean", "cell": "",
                     "metric": metric, "path": f"clean/{metric}", "value": float(values.mean()), "n": len(arr),
                     "higher_is_better": hib, "model_sha": model, "suite_version": "2", "config_key": "k"})
        blobs[(model, "clean", "2", "k", "")] = Outcomes().add_pool("images", range(len(arr))).add(metric, values)
    source = OutcomeSource(lambda key, cell: blobs.get((*key, cell)))
    return pd.DataFrame(rows), source


def test_identical_models_tie() -> None:
    arr = np.random.default_rng(1).random(540) < 0.9
    sel, source = _store({"v": ("vit", arr), "c": ("cnn", arr.copy())})
    (row,) = compare_families(sel, source).to_dict(orient="records")
    assert row["diff"] == 0 and row["verdict"] == "tie" and row["p_value"] == 1.0
    assert row["ci_low"] == 0 and row["ci_high"] == 0 and row["n"] == 540


@pytest.mark.parametrize("metric, hib", [("top1", True), ("error", False)])
def test_better_on_60_of_540_paired_images_is_significant(metric: str, hib: bool) -> None:
    cnn = np.ones(540, dtype=bool)
    cnn[:100] = False  # 440 / 540
    vit = cnn.copy()
    vit[:60] = True  # right on 60 images the CNN gets wrong, the same elsewhere: 500 / 540
    sel, source = _store({"v": ("vit", vit), "c": ("cnn", cnn)}, metric, hib)
    (row,) = compare_families(sel, source).to_dict(orient="records")
    sign = 1 if metric == "top1" else -1
    assert row["diff"] == pytest.approx(sign * 60 / 540)
    assert row["verdict"] == "vit"
    assert row["p_value"] == pytest.approx(2 * 0.5 ** 60)  # McNemar: 60 discordant pairs, all one way
    lo, hi = sorted((sign * row["ci_low"], sign * row["ci_high"]))
    assert 0 < lo < 60 / 540 < hi


def test_a_few_images_apart_is_a_tie() -> None:
    cnn = np.ones(540, dtype=bool)
    cnn[:10] = False
    vit = cnn.copy()
    vit[:2] = True  # 2 images of 540
    sel, source = _store({"v": ("vit", vit), "c": ("cnn", cnn)})
    (row,) = compare_families(sel, source).to_dict(orient="records")
    assert row["diff"] > 0 and row["verdict"] == "tie" and row["ci_low"] <= 0


def test_family_comparison_with_several_models_bootstraps_images() -> None:
    rng = np.random.default_rng(5)
    base = rng.random(400) < 0.7
    vits = {f"v{i}": ("vit", base | (rng.random(400) < 0.3)) for i in range(3)}
    cnns = {f"c{i}": ("cnn", base & (rng.random(400) < 0.95)) for i in range(2)}
    sel, source = _store({**vits, **cnns})
    (row,) = compare_families(sel, source).to_dict(orient="records")
    assert row["vit_models"] == 3 and row["cnn_models"] == 2
    assert row["diff"] == pytest.approx(np.mean([v.mean() for _, v in vits.values()])
                                        - np.mean([c.mean() for _, c in cnns.values()]))
    assert row["verdict"] == "vit" and row["ci_low"] > 0
    ec = consistency(sel, source)
    assert len(ec) == 6 and ec["kappa"].between(-1, 1).all()


def test_models_without_outcomes_are_never_declared_better() -> None:
    sel, _ = _store({"v": ("vit", np.ones(100, bool)), "c": ("cnn", np.zeros(100, bool))})
    (row,) = compare_families(sel, OutcomeSource.empty()).to_dict(orient="records")
    assert row["diff"] == 1.0 and row["verdict"] == "tie" and math.isnan(row["ci_low"])


def test_cell_intervals_rule() -> None:
    out = Outcomes().add_pool("images", range(200)).add("top1", np.arange(200) % 4 != 0)
    out.add("mce", np.linspace(0.5, 1.5, 200))
    res = Resampler(n_boot=500)
    ci = cell_intervals(["top1", "mce", "median_norm"], out, res)
    assert ci["top1"] == pytest.approx(tuple(float(x) for x in wilson(150, 200)))
    assert ci["mce"][0] < 1.0 < ci["mce"][1] and "median_norm" not in ci
    assert recompute(out, "mce") == pytest.approx(1.0) and recompute(out, "top1") == 0.75
    assert cell_intervals(["top1"], None, res) == {}
