"""Weighted (bootstrap-replicate) OOD metrics against the np.repeat computation with ood_metrics."""

from __future__ import annotations

import math

import numpy as np
import pytest

from robustvit.metrics.ood import METRICS, ood_metrics
from robustvit.results.ood_bootstrap import ood_bootstrap, weighted_ood_metrics


def _scores(rng: np.random.Generator, n_id: int, n_ood: int, tied: bool) -> tuple[np.ndarray, np.ndarray]:
    if tied:
        return rng.integers(0, 6, n_id).astype(float), rng.integers(1, 7, n_ood).astype(float)
    return rng.normal(0.0, 1.0, n_id), rng.normal(1.0, 1.0, n_ood)


def _assert_rows_match(s_id, s_ood, c_id, c_ood, tpr: float, **kwargs) -> None:
    got = weighted_ood_metrics(s_id, s_ood, c_id, c_ood, tpr=tpr, **kwargs)
    for b in range(c_id.shape[0]):
        want = ood_metrics(np.repeat(s_id, c_id[b]), np.repeat(s_ood, c_ood[b]), tpr)
        for name in METRICS:
            assert got[name][b] == pytest.approx(want[name], abs=1e-9, rel=0), (name, b)


@pytest.mark.parametrize("case", ["random", "tied", "inf"])
def test_unit_weights_equal_ood_metrics(case: str) -> None:
    rng = np.random.default_rng(1)
    s_id, s_ood = _scores(rng, 40, 30, tied=case == "tied")
    if case == "inf":
        s_id[:2], s_ood[:3], s_ood[-1] = np.inf, np.inf, -np.inf
        s_ood[3] = np.finfo(np.float64).max  # ties with +inf, as in ood_metrics
    got = weighted_ood_metrics(s_id, s_ood, np.ones((1, s_id.size)), np.ones((1, s_ood.size)))
    want = ood_metrics(s_id, s_ood)
    for name in METRICS:
        assert got[name].shape == (1,)
        assert got[name][0] == pytest.approx(want[name], abs=1e-12, rel=0), name


@pytest.mark.parametrize("tied", [False, True])
@pytest.mark.parametrize("tpr", [0.95, 0.5, 1.0])
def test_multinomial_counts_match_repeat(tied: bool, tpr: float) -> None:
    rng = np.random.default_rng(2)
    n_id, n_ood = 37, 23
    s_id, s_ood = _scores(rng, n_id, n_ood, tied)
    c_id = rng.multinomial(n_id, np.full(n_id, 1 / n_id), size=50)
    c_ood = rng.multinomial(n_ood, np.full(n_ood, 1 / n_ood), size=50)
    _assert_rows_match(s_id, s_ood, c_id, c_ood, tpr)


def test_sparse_counts_leave_whole_tie_groups_empty() -> None:
    # few draws from many tie groups: leading, trailing and inner groups get zero weight
    rng = np.random.default_rng(3)
    s_id, s_ood = rng.integers(0, 12, 30).astype(float), rng.integers(0, 12, 20).astype(float)
    c_id = rng.multinomial(4, np.full(30, 1 / 30), size=60)
    c_ood = rng.multinomial(3, np.full(20, 1 / 20), size=60)
    for tpr in (0.95, 0.5, 0.0, 1.0):
        _assert_rows_match(s_id, s_ood, c_id, c_ood, tpr)


def test_empty_side_row_is_nan_and_nan_score_is_all_nan() -> None:
    s_id, s_ood = np.array([0.1, 0.2, 0.3]), np.array([0.5, 0.6])
    c_id = np.array([[1, 1, 1], [0, 0, 0], [2, 0, 1]])
    c_ood = np.array([[1, 1], [1, 1], [0, 0]])
    got = weighted_ood_metrics(s_id, s_ood, c_id, c_ood)
    for name in METRICS:
        assert not math.isnan(got[name][0])
        assert np.isnan(got[name][1:]).all()
    nan_scores = weighted_ood_metrics(np.array([0.1, np.nan, 0.3]), s_ood, c_id, np.ones((3, 2)))
    for name in METRICS:
        assert nan_scores[name].shape == (3,) and np.isnan(nan_scores[name]).all()


def test_chunking_does_not_change_results() -> None:
    rng = np.random.default_rng(4)
    s_id, s_ood = _scores(rng, 50, 30, tied=True)
    c_id = rng.multinomial(50, np.full(50, 1 / 50), size=25)
    c_ood = rng.multinomial(30, np.full(30, 1 / 30), size=25)
    big = weighted_ood_metrics(s_id, s_ood, c_id, c_ood)
    for max_elements in (1, 200):  # one row per chunk; two rows per chunk, last chunk partial
        small = weighted_ood_metrics(s_id, s_ood, c_id, c_ood, max_elements=max_elements)
        for name in METRICS:
            np.testing.assert_array_equal(small[name], big[name])


def test_bad_counts_are_rejected() -> None:
    with pytest.raises(ValueError, match="shape"):
        weighted_ood_metrics([0.1, 0.2], [0.3], np.ones((2, 3)), np.ones((2, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        weighted_ood_metrics([0.1, 0.2], [0.3], [[1, -1]], [[1]])
    with pytest.raises(ValueError, match="tpr"):
        weighted_ood_metrics([0.1, 0.2], [0.3], [[1, 1]], [[1]], tpr=1.5)


def test_ood_bootstrap_intervals() -> None:
    rng = np.random.default_rng(5)
    s_id, s_ood = rng.normal(0.0, 1.0, 120), rng.normal(1.5, 1.0, 80)
    first = ood_bootstrap(s_id, s_ood, n_boot=300, seed=7)
    assert first == ood_bootstrap(s_id, s_ood, n_boot=300, seed=7)
    assert first != ood_bootstrap(s_id, s_ood, n_boot=300, seed=8)
    point = ood_metrics(s_id, s_ood)
    for name in METRICS:
        low, high = first[name]
        assert low <= point[name] <= high, name
        assert low < high, name
    separated = ood_bootstrap(s_id, s_ood + 10.0, n_boot=200, seed=0)
    assert separated["auroc"][0] >= 0.99
    assert separated["fpr95"][1] <= 0.05
    nan_case = ood_bootstrap([0.1, np.nan], [0.5], n_boot=10)
    assert all(np.isnan(v).all() for v in nan_case.values())
