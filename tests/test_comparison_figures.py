"""Comparison figures: dot plot, forest plot and error-consistency heat maps, with 2 and 50 models."""

from __future__ import annotations

import base64
import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from robustvit.report.comparison_figures import consistency_matrix, dot_plot, forest_plot
from robustvit.report.figures import Figure, Style


def _models(n: int) -> dict[str, str]:
    half = n // 2
    vit = {f"vit_$b{i}_patch16$" if i == 0 else f"_vit_{i}": "vit" for i in range(half)}
    cnn = {f"resnet_{i}$x" if i == 0 else f"cnn_model_{i}": "cnn" for i in range(n - half)}
    return {**vit, **cnn}


def _values(families: dict[str, str], panels: tuple[str, ...] = ("clean/top1 · val", "ood/auroc · ssb")
            ) -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for p in panels:
        for model, fam in families.items():
            v = float(rng.uniform(0.3, 0.9))
            rows.append({"model": model, "family": fam, "metric": p.split(" ")[0], "panel": p, "value": v,
                         "ci_low": v - 0.02, "ci_high": v + 0.02, "n": 1000, "higher_is_better": True})
    rows[0]["ci_low"] = rows[0]["ci_high"] = np.nan
    return pd.DataFrame(rows)


def _size(fig: Figure) -> tuple[int, int]:
    img = Image.open(io.BytesIO(base64.b64decode(fig.png_base64)))
    img.load()
    return img.size


def _check(small: Figure | None, big: Figure | None) -> None:
    assert small is not None and big is not None
    (w1, h1), (w2, h2) = _size(small), _size(big)
    assert min(w1, h1, w2, h2) > 100
    assert h2 > h1
    assert small.alt and big.alt and small.src.startswith("data:image/png;base64,")


def test_dot_plot_sizes_and_limits() -> None:
    small, big = _models(2), _models(50)
    limits: list = []
    _check(dot_plot(_values(small), Style(small), title="Dot $x$"),
           dot_plot(_values(big), Style(big), title="Dot", _limits=limits))
    assert len(limits) == 2
    assert all(0.0 <= lo < hi <= 1.0 for lo, hi in limits)


def test_dot_plot_not_magnified_near_one() -> None:
    fams = _models(2)
    df = pd.DataFrame([{"model": m, "family": f, "metric": "clean/top1", "panel": "top1", "value": v,
                        "ci_low": 0.98, "ci_high": 1.0, "n": 500, "higher_is_better": True}
                       for (m, f), v in zip(fams.items(), (0.995, 0.997), strict=True)])
    limits: list = []
    assert dot_plot(df, Style(fams), title="t", _limits=limits) is not None
    (lo, hi), = limits
    assert 0.0 <= lo and hi <= 1.0 and hi - lo >= 0.04 - 1e-9
    df["ci_low"] = df["ci_high"] = np.nan  # values only: still a readable window
    limits.clear()
    dot_plot(df, Style(fams), title="t", _limits=limits)
    (lo, hi), = limits
    assert 0.0 <= lo and hi <= 1.0 and hi - lo >= 0.04


def test_dot_plot_unbounded_metric_and_many_panels() -> None:
    fams = _models(4)
    panels = tuple(f"corruption/mce · p{i}" for i in range(30))
    df = _values(fams, panels)
    df["value"] *= 100
    df["ci_low"] *= 100
    df["ci_high"] *= 100
    df["higher_is_better"] = False
    limits: list = []
    fig = dot_plot(df, Style(fams), title="many", _limits=limits)
    assert fig is not None and "6 more panels" in fig.title
    assert len(limits) == 24 and all(hi > 1.0 for _, hi in limits)


def test_empty_inputs_give_none() -> None:
    cols = ["model", "family", "metric", "panel", "value", "ci_low", "ci_high", "n", "higher_is_better"]
    assert dot_plot(pd.DataFrame(columns=cols), Style({}), title="t") is None
    assert forest_plot(pd.DataFrame(columns=["metric", "protocol_label", "diff", "ci_low", "ci_high", "verdict",
                                             "higher_is_better", "n"]), title="t") is None
    assert consistency_matrix(pd.DataFrame(columns=["panel", "vit_model", "cnn_model", "kappa", "n"]),
                              title="t") is None


def _comparisons(n: int) -> pd.DataFrame:
    rng = np.random.default_rng(1)
    rows = []
    for i in range(n):
        d = float(rng.normal(0, 0.05))
        rows.append({"metric": f"ood/auroc_{i}", "protocol_label": f"proto $_{i}", "diff": d, "ci_low": d - 0.03,
                     "ci_high": d + 0.03, "verdict": ("vit", "cnn", "tie")[i % 3], "higher_is_better": i % 2 == 0,
                     "n": 10})
    return pd.DataFrame(rows)


def test_forest_plot_sizes_and_orientation() -> None:
    _check(forest_plot(_comparisons(2), title="F"), forest_plot(_comparisons(50), title="F"))
    df = pd.DataFrame([
        {"metric": "corruption/mce", "protocol_label": "imagenet-c", "diff": 0.1, "ci_low": 0.05, "ci_high": 0.2,
         "verdict": "cnn", "higher_is_better": False, "n": 5},
        {"metric": "clean/top1", "protocol_label": "val", "diff": 0.1, "ci_low": 0.05, "ci_high": 0.2,
         "verdict": "vit", "higher_is_better": True, "n": 5},
        {"metric": "ood/fpr95", "protocol_label": "x", "diff": np.nan, "ci_low": np.nan, "ci_high": np.nan,
         "verdict": "tie", "higher_is_better": False, "n": 5},
        {"metric": "ood/auroc", "protocol_label": "y", "diff": 0.01, "ci_low": np.nan, "ci_high": np.nan,
         "verdict": "tie", "higher_is_better": True, "n": 5},
    ])
    pos: list = []
    assert forest_plot(df, title="F", _positions=pos) is not None
    assert len(pos) == 3  # NaN diff skipped
    row, x, lo, hi = pos[0]
    assert row.startswith("corruption/mce") and x == pytest.approx(-0.1)
    assert (lo, hi) == (pytest.approx(-0.2), pytest.approx(-0.05))
    assert pos[1][1:] == (pytest.approx(0.1), pytest.approx(0.05), pytest.approx(0.2))
    assert np.isnan(pos[2][2]) and np.isnan(pos[2][3])
    assert forest_plot(df.iloc[[2]], title="F") is None


def _pairs(n: int, panels: int = 2) -> pd.DataFrame:
    fams = _models(n)
    vits = [m for m, f in fams.items() if f == "vit"]
    cnns = [m for m, f in fams.items() if f == "cnn"]
    rng = np.random.default_rng(2)
    rows = [{"panel": f"corruption · p{p}", "vit_model": v, "cnn_model": c, "kappa": float(rng.uniform(-1, 1)),
             "n": 100} for p in range(panels) for v in vits for c in cnns]
    if len(rows) > 1:
        rows[0]["kappa"] = np.nan
    return pd.DataFrame(rows)


def test_consistency_matrix() -> None:
    _check(consistency_matrix(_pairs(2, panels=1), title="K"), consistency_matrix(_pairs(50), title="K $x$"))
    fig = consistency_matrix(_pairs(4, panels=8), title="K")
    assert fig is not None and "2 more panels" in fig.title
    nan_only = _pairs(2)
    nan_only["kappa"] = np.nan
    assert consistency_matrix(nan_only, title="K") is None
