"""Each detector against a direct reimplementation (numpy / scikit-learn, written from the papers'
reference code), batch-size invariance, and registry-wide checks."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import logsumexp, softmax
from sklearn.covariance import EmpiricalCovariance

from robustvit.errors import UserError
from robustvit.ood.stats import LinearHead
from robustvit.registries import DETECTORS

N_TRAIN, N_TEST, D, C = 120, 40, 12, 4


@pytest.fixture(scope="module")
def data() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    w = rng.normal(size=(C, D))
    b = rng.normal(size=C)
    y = rng.integers(0, C, N_TRAIN)
    centers = rng.normal(0, 2, size=(C, D))
    f_train = np.maximum(centers[y] + rng.normal(size=(N_TRAIN, D)), 0)
    f_test = np.maximum(rng.normal(0.5, 2, size=(N_TEST, D)), 0)
    return {
        "w": w, "b": b, "y": y, "f_train": f_train, "f_test": f_test,
        "l_train": f_train @ w.T + b, "l_test": f_test @ w.T + b,
    }  # fmt: skip


def _fit_score(name: str, data: dict[str, np.ndarray], **kw: object) -> np.ndarray:
    det = DETECTORS.get(name)(**kw)
    t = {k: torch.from_numpy(v) for k, v in data.items()}
    head = LinearHead(t["w"], t["b"])
    det.fit(t["f_train"].float(), t["l_train"].float(), t["y"], head=head)
    return det.score(t["f_test"].float(), t["l_test"].float()).double().numpy()


def _f32(x: np.ndarray) -> np.ndarray:
    return x.astype(np.float32).astype(np.float64)


# -- direct reimplementations ----------------------------------------------------------------------
def ref_msp(d: dict) -> np.ndarray:
    return -softmax(_f32(d["l_test"]), axis=1).max(1)


def ref_maxlogit(d: dict) -> np.ndarray:
    return -_f32(d["l_test"]).max(1)


def ref_energy(d: dict, t: float = 1.0) -> np.ndarray:
    return -t * logsumexp(_f32(d["l_test"]) / t, axis=1)


def ref_entropy(d: dict) -> np.ndarray:
    p = softmax(_f32(d["l_test"]), axis=1)
    return -(p * np.log(p)).sum(1)


def ref_gen(d: dict, gamma: float = 0.1, m: int = 100) -> np.ndarray:
    p = np.sort(softmax(_f32(d["l_test"]), axis=1), axis=1)[:, ::-1][:, :m].clip(1e-7, 1 - 1e-7)
    return (p**gamma * (1 - p) ** gamma).sum(1)


def ref_odin0(d: dict, t: float = 1000.0) -> np.ndarray:
    return -softmax(_f32(d["l_test"]) / t, axis=1).max(1)


def _class_gaussian(d: dict) -> tuple[np.ndarray, np.ndarray]:
    """As OpenOOD's MDS postprocessor: class means, EmpiricalCovariance of class-centred features."""
    f, y = _f32(d["f_train"]), d["y"]
    means = np.stack([f[y == c].mean(0) for c in range(C)])
    prec = EmpiricalCovariance(assume_centered=False).fit(f - means[y]).precision_
    return means, prec


def _md(x: np.ndarray, means: np.ndarray, prec: np.ndarray) -> np.ndarray:
    diff = x[:, None, :] - means[None]
    return np.einsum("ncd,de,nce->nc", diff, prec, diff)


def ref_mahalanobis(d: dict) -> np.ndarray:
    return _md(_f32(d["f_test"]), *_class_gaussian(d)).min(1)


def ref_rmd(d: dict) -> np.ndarray:
    f = _f32(d["f_train"])
    bg = EmpiricalCovariance().fit(f)
    md0 = _md(_f32(d["f_test"]), bg.location_[None], bg.precision_)[:, 0]
    return (_md(_f32(d["f_test"]), *_class_gaussian(d)) - md0[:, None]).min(1)


def ref_knn(d: dict, k: int = 50) -> np.ndarray:
    def norm(x: np.ndarray) -> np.ndarray:
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    dist = np.linalg.norm(norm(_f32(d["f_test"]))[:, None] - norm(_f32(d["f_train"]))[None], axis=2)
    return np.sort(dist, axis=1)[:, k - 1]


def ref_vim(d: dict, dim: int | None = None) -> np.ndarray:
    """The authors' code (haoqiwang/vim, benchmark.py), with the feature-size rule for DIM."""
    w, b = d["w"], d["b"]
    dim = dim or D // 2
    u = -np.linalg.pinv(w) @ b
    ec = EmpiricalCovariance(assume_centered=True).fit(_f32(d["f_train"]) - u)
    eig_vals, eigen_vectors = np.linalg.eig(ec.covariance_)
    ns = np.ascontiguousarray((eigen_vectors.T[np.argsort(eig_vals * -1)[dim:]]).T)
    vlogit_train = np.linalg.norm((_f32(d["f_train"]) - u) @ ns, axis=-1)
    alpha = _f32(d["l_train"]).max(axis=-1).mean() / vlogit_train.mean()
    vlogit = np.linalg.norm((_f32(d["f_test"]) - u) @ ns, axis=-1) * alpha
    return -(-vlogit + logsumexp(_f32(d["l_test"]), axis=-1))


def ref_react(d: dict, p: float = 90) -> np.ndarray:
    thr = np.percentile(_f32(d["f_train"]).flatten(), p)
    logits = np.clip(_f32(d["f_test"]), None, thr) @ d["w"].T + d["b"]
    return -logsumexp(logits, axis=1)


def ref_ash(d: dict, percentile: float = 65) -> np.ndarray:
    """ASH-S from the authors' code (andrijazz/ash), on (N, D) activations."""
    x = _f32(d["f_test"]).copy()
    s1 = x.sum(1)
    n = x.shape[1]
    k = n - int(np.round(n * percentile / 100.0))
    keep = np.argsort(-x, axis=1, kind="stable")[:, :k]
    pruned = np.zeros_like(x)
    np.put_along_axis(pruned, keep, np.take_along_axis(x, keep, 1), 1)
    x = pruned * np.exp(s1 / pruned.sum(1))[:, None]
    return -logsumexp(x @ d["w"].T + d["b"], axis=1)


REFERENCES = {
    "msp": (ref_msp, {}),
    "maxlogit": (ref_maxlogit, {}),
    "energy": (ref_energy, {}),
    "entropy": (ref_entropy, {}),
    "gen": (ref_gen, {}),
    "odin": (ref_odin0, {"epsilon": 0.0}),
    "mahalanobis": (ref_mahalanobis, {}),
    "rmd": (ref_rmd, {}),
    "knn": (ref_knn, {"k": 7}),
    "vim": (ref_vim, {}),
    "react": (ref_react, {}),
    "ash": (ref_ash, {}),
}


def test_every_builtin_detector_has_a_reference() -> None:
    from robustvit.ood import BUILTINS

    assert set(BUILTINS) == set(REFERENCES)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_matches_reference(name: str, data: dict) -> None:
    ref, kw = REFERENCES[name]
    ref_kw = {"k": kw["k"]} if name == "knn" else {}
    expected = ref(data, **ref_kw)
    got = _fit_score(name, data, **kw)
    assert got.shape == (N_TEST,)
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * (1 + np.abs(expected).max()))


def test_energy_temperature(data: dict) -> None:
    np.testing.assert_allclose(_fit_score("energy", data, temperature=3.0), ref_energy(data, 3.0), rtol=1e-5)


@pytest.mark.parametrize("name", sorted(REFERENCES))
def test_batch_size_invariance(name: str, data: dict) -> None:
    kw = REFERENCES[name][1]
    big = _fit_score(name, data, **kw)
    small = _fit_score(name, data, **kw, chunk_size=7)
    np.testing.assert_allclose(small, big, rtol=1e-5, atol=1e-6)
    if name == "knn":  # the search is also chunked over the stored features
        np.testing.assert_allclose(_fit_score(name, data, **kw, bank_chunk=5), big, rtol=1e-5, atol=1e-6)
    det = DETECTORS.get(name)(**kw)
    t = {k: torch.from_numpy(v).float() for k, v in data.items()}
    det.fit(t["f_train"], t["l_train"], t["y"].long(), head=LinearHead(t["w"], t["b"]))
    whole = det.score(t["f_test"], t["l_test"])
    parts = torch.cat([det.score(t["f_test"][i : i + 3], t["l_test"][i : i + 3]) for i in range(0, N_TEST, 3)])
    torch.testing.assert_close(parts, whole)


@pytest.mark.parametrize("name", ["react", "ash", "vim"])
def test_head_recovered_from_features_and_logits(name: str, data: dict) -> None:
    kw = REFERENCES[name][1]
    t = {k: torch.from_numpy(v).float() for k, v in data.items()}
    det = DETECTORS.get(name)(**kw).fit(t["f_train"], t["l_train"], t["y"].long())  # no head given
    np.testing.assert_allclose(det.score(t["f_test"], t["l_test"]).double().numpy(), _fit_score(name, data, **kw), rtol=1e-3, atol=1e-3)


def test_nonlinear_head_is_refused(data: dict) -> None:
    t = {k: torch.from_numpy(v).float() for k, v in data.items()}
    with pytest.raises(UserError, match="not a linear function"):
        DETECTORS.get("react")().fit(t["f_train"], t["l_train"] ** 2, t["y"].long())


def test_head_from_model_finds_the_last_linear_layer(data: dict) -> None:
    t = {k: torch.from_numpy(v).float() for k, v in data.items()}
    model = torch.nn.Sequential(torch.nn.Linear(3, D), torch.nn.ReLU(), torch.nn.Linear(D, C))
    with torch.no_grad():
        model[2].weight.copy_(t["w"])
        model[2].bias.copy_(t["b"])
    head = LinearHead.from_model(model, t["f_train"], t["l_train"])
    assert head is not None
    torch.testing.assert_close(head.weight, t["w"].double())
    assert LinearHead.from_model(model, t["f_train"], t["l_train"] + 5) is None


def test_odin_perturbation_matches_analytic_gradient() -> None:
    """For a linear model the gradient of CE(Ax/T, y) is A^T (softmax(Ax/T) - onehot(y)) / T."""
    torch.manual_seed(0)
    lin = torch.nn.Linear(5, 3).double()
    x = torch.rand(9, 5, dtype=torch.double)
    det = DETECTORS.get("odin")(temperature=10.0, epsilon=0.05)
    got = det.score_images(lin, x)
    a, c = lin.weight.detach(), lin.bias.detach()
    logits = x @ a.T + c
    p = torch.softmax(logits / 10.0, 1)
    onehot = torch.nn.functional.one_hot(logits.argmax(1), 3).double()
    grad = (p - onehot) @ a / 10.0
    x2 = x - 0.05 * grad.sign()
    expected = -torch.softmax((x2 @ a.T + c) / 10.0, 1).amax(1)
    torch.testing.assert_close(got.double(), expected.double())
    # one image at a time gives the same scores
    torch.testing.assert_close(torch.cat([det.score_images(lin, x[i : i + 1]) for i in range(9)]), got)


@pytest.mark.parametrize("name", DETECTORS.names())
def test_registry_contract(name: str, data: dict) -> None:
    """Every registered detector (plugins too): documented, fit/score shapes, OOD rows ignored in fit."""
    import importlib

    cls = DETECTORS.get(name)
    assert isinstance(cls.defaults(), dict) and cls.__doc__
    assert "Paper:" in (importlib.import_module(cls.__module__).__doc__ or "")
    det = cls(**{"epsilon": 0.0} if "epsilon" in cls.defaults() else {})  # ODIN: its logit-only setting
    t = {k: torch.from_numpy(v).float() for k, v in data.items()}
    if det.needs_fit:
        with pytest.raises(RuntimeError, match="fitted"):
            det.score(t["f_test"], t["l_test"])
    # labels < 0 (OOD rows mixed into the fit data) are ignored
    mixed_y = torch.cat([torch.from_numpy(data["y"]), -torch.ones(5, dtype=torch.long)])
    det.fit(torch.cat([t["f_train"], t["f_test"][:5]]), torch.cat([t["l_train"], t["l_test"][:5]]), mixed_y)
    s = det.score(t["f_test"], t["l_test"])
    assert s.shape == (N_TEST,) and torch.isfinite(s).all()
    assert det.score(t["f_test"][:0], t["l_test"][:0]).shape == (0,)
