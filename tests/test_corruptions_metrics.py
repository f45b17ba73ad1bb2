"""CE, mCE and relative CE (Hendrycks & Dietterich, 2019) and their AlexNet constants."""

from __future__ import annotations

import math

import pytest

from robustvit.corruptions import BENCHMARK
from robustvit.metrics import corruption as m


def test_alexnet_tables_match_the_published_means() -> None:
    assert set(m.ALEXNET_ERRORS) == set(BENCHMARK) == set(m.ALEXNET_MEAN_ERRORS)
    for name, row in m.ALEXNET_ERRORS.items():
        assert sum(row) / 5 == pytest.approx(m.ALEXNET_MEAN_ERRORS[name], abs=2e-6), name
    assert m.ALEXNET_CLEAN_ERROR == pytest.approx(0.43478)


def test_ce_and_relative_ce_by_hand() -> None:
    errors = {1: 0.2, 3: 0.4}
    base = {1: 0.5, 2: 0.6, 3: 0.7}
    assert m.corruption_error(errors, base) == pytest.approx(0.6 / 1.2)
    assert m.relative_corruption_error(errors, 0.1, base, 0.3) == pytest.approx((0.1 + 0.3) / (0.2 + 0.4))
    assert math.isnan(m.corruption_error({4: 0.1}, base))  # no baseline for severity 4
    assert math.isnan(m.relative_corruption_error(errors, math.nan, base, 0.3))
    assert m.mean([1.0, 2.0, 4.0]) == pytest.approx(7 / 3) and math.isnan(m.mean([]))


def test_alexnet_itself_scores_100_percent() -> None:
    ces = [m.corruption_error(m.alexnet_baseline(c), m.alexnet_baseline(c)) for c in BENCHMARK]
    rces = [m.relative_corruption_error(m.alexnet_baseline(c), m.ALEXNET_CLEAN_ERROR, m.alexnet_baseline(c),
                                        m.ALEXNET_CLEAN_ERROR) for c in BENCHMARK]
    assert m.mean(ces) == pytest.approx(1.0) and m.mean(rces) == pytest.approx(1.0)
    assert m.alexnet_baseline("spatter") is None
