"""OOD metrics: equal to scikit-learn's and to pytorch-ood's OODMetrics under the documented convention."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from sklearn.metrics import auc, precision_recall_curve, roc_auc_score, roc_curve

from robustvit.metrics.ood import aupr_in, aupr_out, auroc, average_precision, fpr_at_tpr, ood_metrics


def _cases() -> list[tuple[str, np.ndarray, np.ndarray]]:
    rng = np.random.default_rng(0)
    return [
        ("random", rng.normal(0, 1, 300), rng.normal(0.7, 1.3, 170)),
        ("tied", rng.integers(0, 5, 200).astype(float), rng.integers(2, 8, 90).astype(float)),
        ("constant", np.zeros(40), np.zeros(25)),
        ("separated", rng.uniform(0, 1, 50), rng.uniform(2, 3, 60)),
        ("reversed", rng.uniform(2, 3, 50), rng.uniform(0, 1, 60)),
        ("small-ties", np.array([0.1, 0.5, 0.5, 0.9]), np.array([0.5, 0.9, 0.9])),
    ]


CASES = _cases()
IDS = [c[0] for c in CASES]


@pytest.mark.parametrize(("name", "s_id", "s_ood"), CASES, ids=IDS)
def test_equals_sklearn(name: str, s_id: np.ndarray, s_ood: np.ndarray) -> None:
    y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
    s = np.r_[s_id, s_ood]
    assert auroc(s_id, s_ood) == pytest.approx(roc_auc_score(y, s), abs=1e-12)
    p, r, _ = precision_recall_curve(y, s)
    assert aupr_out(s_id, s_ood) == pytest.approx(auc(r, p), abs=1e-12)
    p, r, _ = precision_recall_curve(1 - y, -s)
    assert aupr_in(s_id, s_ood) == pytest.approx(auc(r, p), abs=1e-12)
    # FPR@95 as OpenOOD writes it, on the full curve
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(fpr[np.argmax(tpr >= 0.95)], abs=1e-12)
    together = ood_metrics(s_id, s_ood)
    assert together == {"auroc": auroc(s_id, s_ood), "aupr_in": aupr_in(s_id, s_ood),
                        "aupr_out": aupr_out(s_id, s_ood), "fpr95": fpr_at_tpr(s_id, s_ood)}


def _fpr95_brute(s_id: np.ndarray, s_ood: np.ndarray, tpr: float = 0.95) -> float:
    """The definition, threshold by threshold: highest t with P(ood >= t) >= tpr, then P(id >= t)."""
    for t in sorted(np.unique(np.r_[s_id, s_ood]), reverse=True):
        if np.mean(s_ood >= t) >= tpr:
            return float(np.mean(s_id >= t))
    raise AssertionError("unreachable: the lowest threshold flags every OOD image")


@pytest.mark.parametrize(("name", "s_id", "s_ood"), CASES, ids=IDS)
def test_fpr95_definition(name: str, s_id: np.ndarray, s_ood: np.ndarray) -> None:
    assert fpr_at_tpr(s_id, s_ood) == pytest.approx(_fpr95_brute(s_id, s_ood), abs=1e-12)
    assert fpr_at_tpr(s_id, s_ood, 0.5) == pytest.approx(_fpr95_brute(s_id, s_ood, 0.5), abs=1e-12)


@pytest.mark.filterwarnings("ignore:AUTC is undefined")  # pytorch-ood's AUTC, which we do not compare
@pytest.mark.parametrize(("name", "s_id", "s_ood"), CASES, ids=IDS)
def test_equals_pytorch_ood(name: str, s_id: np.ndarray, s_ood: np.ndarray) -> None:
    """pytorch-ood 0.4.0: labels < 0 are OOD (positive), scores higher = more OOD: same convention."""
    metrics_mod = pytest.importorskip("pytorch_ood.metrics")
    m = metrics_mod.OODMetrics()
    m.update(torch.from_numpy(np.r_[s_id, s_ood]), torch.from_numpy(np.r_[np.zeros(len(s_id)), -np.ones(len(s_ood))]).long())
    ref = m.compute()
    ours = ood_metrics(s_id, s_ood)
    assert ours["auroc"] == pytest.approx(float(ref["AUROC"]), abs=1e-12)
    assert ours["aupr_in"] == pytest.approx(float(ref["AUPR-IN"]), abs=1e-12)
    assert ours["aupr_out"] == pytest.approx(float(ref["AUPR-OUT"]), abs=1e-12)
    assert ours["fpr95"] == pytest.approx(float(ref["FPR95TPR"]), abs=1e-12)


def test_conversions() -> None:
    rng = np.random.default_rng(1)
    s_id, s_ood = rng.normal(0, 1, 200), rng.normal(1, 1, 150)
    # AUROC is symmetric under the ID-positive convention
    assert auroc(-s_ood, -s_id) == pytest.approx(auroc(s_id, s_ood))
    # ID-positive FPR@95: fraction of OOD accepted as ID when 95% of ID is accepted
    t = np.quantile(s_id, 0.95, method="inverted_cdf")
    assert fpr_at_tpr(-s_ood, -s_id) == pytest.approx(np.mean(s_ood <= t))
    # AUPR-In is AUPR-Out with the roles swapped
    assert aupr_in(s_id, s_ood) == pytest.approx(aupr_out(-s_ood, -s_id))
    # average precision is the step-wise area, close to the trapezoidal one
    assert abs(average_precision(s_id, s_ood) - aupr_out(s_id, s_ood)) < 0.02


def test_torch_inputs_and_non_finite() -> None:
    s_id = torch.tensor([0.0, 1.0, 2.0])
    s_ood = torch.tensor([float("inf"), 1.5, 3.0])
    assert auroc(s_id, s_ood) == pytest.approx(auroc(s_id.numpy(), np.array([1e300, 1.5, 3.0])))
    assert math.isnan(auroc(s_id, torch.tensor([float("nan"), 1.0])))
    assert all(math.isnan(v) for v in ood_metrics([0.0, float("nan")], [1.0]).values())
    with pytest.raises(ValueError):
        auroc([], [1.0])
    with pytest.raises(ValueError):
        fpr_at_tpr([0.0], [1.0], tpr=1.5)
