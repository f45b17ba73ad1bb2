"""Paul & Chen (2022) the paper's way: ImageNet-O over its 200 classes (Hendrycks et al.), the
``paul_chen`` protocols of the corruption, OOD and probes suites (CutOut on their 1,000 images with
albumentations' hole), A/R without the 200-class mask, and ``suites/paul_chen_2022.toml``.

The 1000-class model here is a colour oracle: class ``k`` has a colour code ``c_k`` on a 10 x 10 x 10
grid and its logit is ``-10 * ||mean colour - c_k||^2`` up to a per-image constant (a linear layer), so
a solid image of colour ``c_k`` is predicted as ``k`` and the tests know every prediction in advance.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score

from robustvit.config import ModelConfig, RunConfig, build_suite, load_suite_file
from robustvit.context import FeatureCache, SuiteContext
from robustvit.data.folder import wnid_list
from robustvit.data.transforms import build_transform
from robustvit.errors import UserError
from robustvit.metrics.ood import ood_metrics
from robustvit.models import load_model, wrap
from robustvit.probes.cutout import Cutout, albumentations_box, box_mask, paul_chen_images
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.clean import CleanSuite
from robustvit.suites.corruption import CorruptionSuite
from robustvit.suites.ood import OODSuite
from robustvit.suites.probes import ProbesSuite

ROOT = Path(__file__).resolve().parents[1]
WNIDS = wnid_list("imagenet_1k")
INDEX = {w: i for i, w in enumerate(WNIDS)}
ORACLE_CFG = {"input_size": (3, 16, 16), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0),
              "interpolation": "bilinear", "crop_pct": 1.0}

pytestmark = pytest.mark.usefixtures("one_thread")


def code(k: int) -> np.ndarray:
    """The colour code of ImageNet class ``k``: a point of the 10 x 10 x 10 grid in [0.1, 1.0]^3."""
    return (1 + np.array([k // 100, (k // 10) % 10, k % 10])) / 10


class ColourOracle(torch.nn.Module):
    """Mean colour -> 1000 logits ``2 x . c_k - ||c_k||^2`` (times ``scale``): the nearest colour code wins."""

    def __init__(self, scale: float = 10.0) -> None:
        super().__init__()
        codes = torch.tensor(np.stack([code(k) for k in range(1000)]), dtype=torch.float32)
        self.pool = torch.nn.AdaptiveAvgPool2d(1)
        self.fc = torch.nn.Linear(3, 1000)
        with torch.no_grad():
            self.fc.weight.copy_(2 * scale * codes)
            self.fc.bias.copy_(-scale * (codes ** 2).sum(1))
        self.num_classes = 1000

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pool(x).flatten(1))


def oracle(scale: float = 10.0) -> ColourOracle:
    """``python:`` model spec factory (the runner's tests)."""
    return ColourOracle(scale)


@pytest.fixture(scope="module")
def model():
    return wrap(ColourOracle(), name="oracle", family="cnn", data_config=ORACLE_CFG)


def stored(colour: np.ndarray) -> np.ndarray:
    """A colour as an 8-bit image holds it."""
    return np.round(colour * 255) / 255


def _save(path: Path, colour: np.ndarray, size: tuple[int, int] = (12, 16)) -> None:
    """A solid image, PNG content (lossless) whatever the file's suffix."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.broadcast_to(np.round(colour * 255).astype(np.uint8), (*size, 3))
    Image.fromarray(np.ascontiguousarray(pixels)).save(path, format="PNG")


def _ctx(model, dataset, *, batch_size: int = 64, limit: int | None = None) -> SuiteContext:
    return SuiteContext(model=model, suite="test", dataset=dataset, device=torch.device("cpu"), batch_size=batch_size,
                        limit=limit, feature_cache=FeatureCache(disk=False), show_progress=False)


# -- the ImageNet-O class list -------------------------------------------------------------------------
def test_imagenet_o_classes_are_hendrycks_200() -> None:
    o = wnid_list("imagenet_o")
    # hendrycks/natural-adv-examples eval_many_models.py imagenet_o_wnids: sorted, 200 ImageNet-1k classes,
    # another set than ImageNet-A's (59 shared)
    assert len(o) == len(set(o)) == 200 and o == sorted(o) and set(o) <= set(WNIDS)
    assert (o[0], o[1], o[-1]) == ("n01443537", "n01704323", "n13052670")
    assert len(set(o) & set(wnid_list("imagenet_a"))) == 59


def test_the_data_files_ship_with_the_package() -> None:
    from fnmatch import fnmatch

    from robustvit._compat import tomllib

    globs = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-data"]["robustvit"]
    for path in ("data/wnids/imagenet_o.txt", "data/mappings/paul_chen_2022_masking.json"):
        assert (ROOT / "robustvit" / path).is_file() and any(fnmatch(path, g) for g in globs), path


# -- ImageNet-O: logits restricted to the 200 classes, ID images of those classes --------------------------
@pytest.fixture(scope="module")
def imagenet_o(tmp_path_factory: pytest.TempPathFactory) -> dict:
    root = tmp_path_factory.mktemp("imagenet_o")
    o = wnid_list("imagenet_o")
    rng = np.random.default_rng(0)
    in_o, out_o = o[:3], [w for w in WNIDS if w not in set(o)][:2]
    for w in in_o + out_o:
        for i in range(4):  # every image near some class code, confidently or not
            _save(root / "val" / w / f"{i}.png", np.clip(code(INDEX[w]) + rng.normal(0, 0.03 * i, 3), 0.05, 1))
    for i in range(8):
        _save(root / "ood" / f"{i}.png", rng.uniform(0.05, 1, 3))
    return {"id": {"path": str(root / "val"), "classes": "imagenet_1k"}, "ood": str(root / "ood"),
            "in_o": in_o, "out_o": out_o, "root": root}


def _cells(model, data: dict, **opts) -> dict:
    suite = OODSuite(near=[], far={"o": data["ood"]}, sanity=[], **opts)
    return {r.cell: r for r in suite.run(_ctx(model, data["id"]), suite.cells())}


def _msp(logits: torch.Tensor) -> torch.Tensor:
    return -torch.softmax(logits.double(), 1).amax(1)


def test_class_subset_scores_a_1000_class_model_among_the_200_classes(model, imagenet_o: dict) -> None:
    ctx = _ctx(model, imagenet_o["id"])
    id_fs, ood_fs = ctx.features(), ctx.features({"path": imagenet_o["ood"], "unlabelled": True})
    cols = [INDEX[w] for w in wnid_list("imagenet_o")]
    kept = torch.tensor([WNIDS[int(y)] in set(imagenet_o["in_o"]) for y in id_fs.labels])
    assert int(kept.sum()) == 12 and len(kept) == 20

    full = _cells(model, imagenet_o, detectors=["msp"])["far/o/msp"]
    subset = _cells(model, imagenet_o, detectors=["msp"], class_subset="imagenet_o")["far/o/msp"]
    # standard: every ID image, MSP over the 1000 classes
    assert np.allclose(full.outcomes.arrays["id_score"], _msp(id_fs.logits).numpy(), atol=1e-6)
    # ImageNet-O: the 12 images of ImageNet-O classes, softmax over the 200 logits only
    sub_id, sub_ood = _msp(id_fs.logits[kept][:, cols]), _msp(ood_fs.logits[:, cols])
    assert np.allclose(subset.outcomes.arrays["id_score"], sub_id.numpy(), atol=1e-6)
    assert np.allclose(subset.outcomes.arrays["ood_score"], sub_ood.numpy(), atol=1e-6)
    assert list(subset.outcomes.index("id")) == [i for i, k in enumerate(kept.tolist()) if k]
    assert not np.allclose(subset.outcomes.arrays["ood_score"], full.outcomes.arrays["ood_score"], atol=1e-3)
    values = {m.metric: m for m in subset.metrics}
    assert {k: values[k].value for k in ood_metrics(sub_id, sub_ood)} == pytest.approx(ood_metrics(sub_id, sub_ood))
    assert values["auroc"].n == 12 + 8 and values["id_acc"].n == 12
    labels = torch.tensor([cols.index(int(y)) for y in id_fs.labels[kept]])
    assert values["id_acc"].value == pytest.approx(float((id_fs.logits[kept][:, cols].argmax(1) == labels).double().mean()))
    assert "ap_out" not in values  # the paper's AP comes with the paul_chen protocol


def test_paul_chen_protocol_adds_their_aupr_and_implies_the_subset(model, imagenet_o: dict) -> None:
    cell = _cells(model, imagenet_o, detectors=["msp"], protocol="paul_chen")["far/o/msp"]
    same = _cells(model, imagenet_o, detectors=["msp"], class_subset="imagenet_o")["far/o/msp"]
    s_id, s_ood = cell.outcomes.arrays["id_score"], cell.outcomes.arrays["ood_score"]
    assert np.array_equal(s_id, same.outcomes.arrays["id_score"]) and len(s_id) == 12
    values = {m.metric: m.value for m in cell.metrics}
    # calibration_tools.get_measures(out_score, in_score): OOD labelled 1, sklearn's average precision
    expected = average_precision_score(np.r_[np.ones(len(s_ood)), np.zeros(len(s_id))], np.r_[s_ood, s_id])
    assert values["ap_out"] == pytest.approx(expected)
    assert {k: v for k, v in values.items() if k != "ap_out"} == pytest.approx({m.metric: m.value for m in same.metrics})


def test_class_subset_for_fitted_head_and_image_detectors(model, imagenet_o: dict) -> None:
    root = imagenet_o["root"]
    cells = _cells(model, imagenet_o, detectors=["msp", "odin", "mahalanobis", "react"], class_subset="imagenet_o",
                   fit_data={"path": str(root / "val"), "classes": "imagenet_1k"}, fit_split="test",
                   params={"odin": {"temperature": 1.0, "epsilon": 0.0}})
    for cell in cells.values():
        assert {m.metric: m.n for m in cell.metrics}["auroc"] == 12 + 8
        assert np.isfinite(cell.outcomes.arrays["id_score"]).all()
    # ODIN at T = 1 without a perturbation is MSP: its own image pass is restricted the same way
    assert np.allclose(cells["far/o/odin"].outcomes.arrays["id_score"], cells["far/o/msp"].outcomes.arrays["id_score"],
                       atol=1e-5)
    assert np.allclose(cells["far/o/odin"].outcomes.arrays["ood_score"],
                       cells["far/o/msp"].outcomes.arrays["ood_score"], atol=1e-5)


def test_class_subset_needs_imagenet_logits_and_images_of_its_classes(model, imagenet_o: dict, tmp_path: Path) -> None:
    zoo = load_model("zoo_resnet")
    suite = OODSuite(detectors=["msp"], near=[], far={"noise": {"name": "ood_noise", "n": 8}}, sanity=[],
                     class_subset="imagenet_o")
    with pytest.raises(UserError, match="needs a model's 1000 ImageNet logits"):
        list(suite.run(_ctx(zoo, "digits", limit=8), suite.cells()))
    for w in imagenet_o["out_o"]:
        _save(tmp_path / w / "0.png", code(INDEX[w]))
    other = OODSuite(detectors=["msp"], near=[], far={"o": imagenet_o["ood"]}, sanity=[], class_subset="imagenet_o")
    with pytest.raises(UserError, match="no evaluation image is labelled with a class of 'imagenet_o'"):
        list(other.run(_ctx(model, {"path": str(tmp_path), "classes": "imagenet_1k"}), other.cells()))


@pytest.mark.parametrize(("opts", "message"), [
    ({"class_subset": "imagenet_a"}, "unknown class_subset 'imagenet_a' \\(allowed: imagenet_o\\)"),
    ({"protocol": "paper"}, "unknown protocol 'paper' \\(allowed: standard, paul_chen\\)"),
])
def test_ood_bad_protocol_options(opts: dict, message: str) -> None:
    with pytest.raises(UserError, match=message):
        OODSuite(**opts)


def test_ood_protocol_is_part_of_the_config_only_when_not_standard() -> None:
    standard = OODSuite().config()
    assert set(standard) == set(OODSuite.options) - {"class_subset", "protocol"}  # the config before the options
    assert OODSuite(protocol="standard").config() == standard
    paper = OODSuite(protocol="paul_chen").config()
    assert paper == {**standard, "class_subset": "imagenet_o", "protocol": "paul_chen"}
    assert OODSuite(class_subset="imagenet_o").config() == {**standard, "class_subset": "imagenet_o"}


# -- ImageNet-C: the unnormalised mean over all 19 -----------------------------------------------------------
def _corruption_records(errors: dict[str, float]) -> pd.DataFrame:
    return pd.DataFrame([{"cell": f"{c}/1", "metric": "error", "value": v, "n": 100} for c, v in errors.items()])


def test_paul_chen_mean_error_is_over_every_corruption() -> None:
    from robustvit.corruptions import BENCHMARK, list_corruptions

    names = list_corruptions("all")
    errors = {c: (0.2 if c in BENCHMARK else 0.8) + 0.001 * i for i, c in enumerate(names)}
    records = _corruption_records(errors)

    def mean_error(protocol: str) -> float:
        suite = CorruptionSuite(corruptions="all", severities=[1], baseline="none", protocol=protocol)
        (summary,) = [r for r in suite.aggregate(records) if r.cell == ""]
        return next(m.value for m in summary.metrics if m.metric == "mean_error")

    assert len(names) == 19 and len(BENCHMARK) == 15
    assert mean_error("standard") == pytest.approx(np.mean([errors[c] for c in BENCHMARK]))
    assert mean_error("paul_chen") == pytest.approx(np.mean(list(errors.values())))
    assert CorruptionSuite().config().get("protocol") is None
    assert CorruptionSuite(protocol="paul_chen").config()["protocol"] == "paul_chen"
    with pytest.raises(UserError, match="unknown protocol 'x'"):
        CorruptionSuite(protocol="x")


def test_corruption_protocols_are_separate_in_the_store(store_path: Path) -> None:
    opts = {"suite": "corruption", "corruptions": ["contrast", "spatter"], "severities": [5],
            "preset": "cifar10_c", "limit": 64}
    suites = [build_suite("std", dict(opts), "t"), build_suite("pc", {**opts, "protocol": "paul_chen"}, "t")]
    cfg = RunConfig(models=[ModelConfig("zoo_resnet")], suites=suites, batch_size=64, device="cpu")
    with Store(store_path) as store:
        execute(cfg, store, show_progress=False)
        df = store.records()
    err = {(s, c): v for s, c, m, v in zip(df["suite"], df["cell"], df["metric"], df["value"]) if m == "error"}
    mean = {s: v for s, c, m, v in zip(df["suite"], df["cell"], df["metric"], df["value"]) if m == "mean_error"}
    assert mean["std"] == pytest.approx(err[("std", "contrast")])  # the benchmark corruption only
    assert mean["pc"] == pytest.approx((err[("pc", "contrast")] + err[("pc", "spatter")]) / 2)
    assert err[("pc", "spatter")] != err[("pc", "contrast")]  # the two means differ
    assert df.groupby("suite")["protocol"].nunique().eq(1).all() and df["protocol"].nunique() == 2


# -- ImageNet-A / -R without the 200-class mask ------------------------------------------------------------
def test_natural_shift_without_the_mask_is_a_1000_way_argmax(model, tmp_path: Path) -> None:
    a = wnid_list("imagenet_a")
    a_cols = [INDEX[w] for w in a]
    solid = lambda c: torch.tensor(c, dtype=torch.float32).view(1, 3, 1, 1).expand(1, 3, 16, 16)  # noqa: E731
    picked = []
    for w in a:  # A classes w with a non-A class b whose colour (as stored) the 200-class mask maps back onto w
        near = sorted((k for k in range(1000) if k not in set(a_cols)), key=lambda k: np.abs(code(k) - code(INDEX[w])).sum())
        b = next((b for b in near[:6] if a_cols[int(model(solid(stored(code(b))))[:, a_cols].argmax())] == INDEX[w]), None)
        if b is not None:
            picked.append((w, b))
        if len(picked) == 6:
            break
    assert len(picked) == 6
    for w, b in picked:
        _save(tmp_path / "a" / w / "own.png", code(INDEX[w]))
        _save(tmp_path / "a" / w / "other.png", code(b))
    results = {}
    for name, spec in (("paper", {"path": str(tmp_path / "a"), "classes": "imagenet_1k"}),
                       ("mask", {"path": str(tmp_path / "a"), "subset": "imagenet_a"})):
        ctx = _ctx(model, spec)
        (cell,) = CleanSuite().run(ctx, [""])
        results[name] = (ctx, cell)
    paper_ctx, paper = results["paper"]
    mask_ctx, mask = results["mask"]
    assert paper_ctx.model.valid_labels is None and paper_ctx.source().num_classes == 1000
    assert mask_ctx.model.valid_labels == a_cols
    top1 = {k: next(m.value for m in c.metrics if m.metric == "top1") for k, (_, c) in results.items()}
    assert top1 == {"paper": 0.5, "mask": 1.0}  # the other-colour images are right only among the 200
    assert paper_ctx.source().fingerprint != mask_ctx.source().fingerprint  # two protocols


# -- CutOut the paper's way ------------------------------------------------------------------------------
def test_their_masking_images_are_shipped_in_their_order() -> None:
    names = paul_chen_images()
    assert len(names) == 1000 and len(set(names)) == 991
    assert names[0] == "n03857828/ILSVRC2012_val_00048946.JPEG" and names[-1] == "n02077923/ILSVRC2012_val_00026125.JPEG"
    assert all(re.fullmatch(r"n\d{8}/ILSVRC2012_val_\d{8}\.JPEG", n) and n.split("/")[0] in INDEX for n in names)


@pytest.mark.parametrize("side", [50, 71, 158])
def test_albumentations_hole(side: int) -> None:
    h = w = 224
    k = torch.arange(h + 1, dtype=torch.float64)
    u = torch.stack([(k + 0.5) / (h + 1), ((k * 7) % (w + 1) + 0.5) / (w + 1)], 1)
    top, bottom, left, right = albumentations_box(u, side, (h, w))
    # albumentations 0.5 Cutout: y = randint(0, H) (inclusive), y1 = clip(y - s // 2), y2 = clip(y + s // 2)
    cy, cx = k.long(), (k.long() * 7) % (w + 1)
    assert torch.equal(top, (cy - side // 2).clamp(0, h)) and torch.equal(bottom, (cy + side // 2).clamp(0, h))
    assert torch.equal(left, (cx - side // 2).clamp(0, w)) and torch.equal(right, (cx + side // 2).clamp(0, w))
    area = box_mask(top, bottom, left, right, (h, w)).sum((1, 2))
    full = 2 * (side // 2)  # an odd side loses a row and a column
    assert area.max() == full * full and area.min() == (full // 2) * (full // 2)  # a corner centre keeps a quarter
    assert torch.equal(area, (bottom - top) * (right - left))


@pytest.fixture(scope="module")
def masking_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The ImageNet validation folder as far as their list goes: every listed file, as a solid image of its
    class's colour code (even files) or of the next class's (odd files)."""
    root = tmp_path_factory.mktemp("imagenet") / "val"
    for i, name in enumerate(sorted(set(paul_chen_images()))):
        k = INDEX[name.split("/")[0]]
        _save(root / name, code(k if i % 2 == 0 else (k + 1) % 1000))
    return root


def _cutout(model, folder: Path, batch_size: int = 64, limit: int | None = None, fractions=(0.0, 0.05, 0.5)):
    ctx = _ctx(model, {"path": str(folder), "classes": "imagenet_1k"}, batch_size=batch_size, limit=limit)
    probe = Cutout(fractions=list(fractions), protocol="paul_chen")
    return ctx, {r.cell: r for r in probe.run(ctx, probe.cells())}


def test_paul_chen_cutout_reads_their_images_in_their_order(model, masking_folder: Path) -> None:
    names = paul_chen_images()
    transform = build_transform(ORACLE_CFG)
    x = torch.stack([transform(Image.open(masking_folder / n).convert("RGB")) for n in names])
    expected = model(x).argmax(1).numpy() == np.array([INDEX[n.split("/")[0]] for n in names])
    assert 0.3 < expected.mean() < 0.7  # right and wrong images both
    seen: list[torch.Tensor] = []
    handle = model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))
    try:
        _, cells = _cutout(model, masking_folder)
    finally:
        handle.remove()
    clean = cells["f=0"]
    assert clean.metrics[0].n == 1000 and np.array_equal(clean.outcomes.arrays["top1"], expected)
    assert list(clean.outcomes.index("images")) == list(range(1000))  # list positions (9 images appear twice)
    assert cells["f=0.5"].metrics[0].value < cells["f=0.05"].metrics[0].value <= clean.metrics[0].value + 0.01
    # the holes: black boxes of side int(sqrt(f * 16 * 16)), clipped at the edges (the solid images are never black)
    for k, f in ((1, 0.05), (2, 0.5)):  # per batch: f=0, f=0.05, f=0.5
        row = torch.cat(seen[k::3]).eq(0).all(1).sum((1, 2))
        side = int(math.sqrt(f * 256))
        assert row.max() == (2 * (side // 2)) ** 2 and row.min() < row.max() and row.min() >= (side // 2) ** 2


def test_paul_chen_cutout_batch_size_and_limit(model, masking_folder: Path) -> None:
    _, small = _cutout(model, masking_folder, batch_size=7, limit=120, fractions=(0.2,))
    _, large = _cutout(model, masking_folder, batch_size=64, limit=120, fractions=(0.2,))
    _, whole = _cutout(model, masking_folder, batch_size=64, fractions=(0.2,))
    a, b, c = (r["f=0.2"].outcomes.arrays["top1"] for r in (small, large, whole))
    assert np.array_equal(a, b) and np.array_equal(a, c[:120]) and len(a) == 120  # the first 120 of their list


def test_paul_chen_cutout_needs_the_imagenet_folder(model, masking_folder: Path, tmp_path: Path) -> None:
    zoo = load_model("zoo_resnet")
    probe = Cutout(fractions=[0.1], protocol="paul_chen")
    with pytest.raises(UserError, match="must be the ImageNet validation folder"):
        list(probe.run(_ctx(zoo, "digits", limit=8), probe.cells()))
    partial, names = tmp_path / "val", paul_chen_images()
    for name in names[:5]:
        _save(partial / name, code(INDEX[name.split("/")[0]]))
    first = next(n for n in names if n not in set(names[:5]))
    with pytest.raises(UserError, match=rf"{991 - len(set(names[:5]))} of its images are not in .* \(first: {re.escape(first)}\)"):
        list(probe.run(_ctx(model, {"path": str(partial), "classes": "imagenet_1k"}), probe.cells()))


def test_probes_suite_hands_its_protocol_to_cutout() -> None:
    suite = ProbesSuite(probes=["cutout", "patch_shuffle"], protocol="paul_chen")
    assert suite.config()["params"] == {"cutout": {"fractions": [0.05, 0.1, 0.2, 0.5], "protocol": "paul_chen"},
                                        "patch_shuffle": suite.probes[1].config()}
    assert ProbesSuite(probes=["cutout"]).config()["params"]["cutout"] == {"fractions": [0.05, 0.1, 0.2, 0.5]}
    own = ProbesSuite(probes=["cutout"], protocol="paul_chen", params={"cutout": {"protocol": "standard"}})
    assert own.probes[0].opts["protocol"] == "standard"
    with pytest.raises(UserError, match="protocol 'paul_chen' applies to none of patch_shuffle .*cutout"):
        ProbesSuite(probes=["patch_shuffle"], protocol="paul_chen")
    with pytest.raises(UserError, match="unknown protocol 'paper'"):
        ProbesSuite(probes=["cutout"], protocol="paper")


def test_runner_stores_the_paper_protocols_with_intervals(imagenet_o: dict, masking_folder: Path, store_path: Path) -> None:
    from robustvit.results import OutcomeSource, analyse

    models = [ModelConfig(f"python:{Path(__file__).resolve()}:oracle", name=f"oracle_{f}", family=f,
                          preprocess={"input_size": [3, 16, 16], "mean": [0, 0, 0], "std": [1, 1, 1], "crop_pct": 1.0},
                          kwargs={"scale": scale})
              for f, scale in (("vit", 10.0), ("cnn", 5.0))]  # other weights: other checkpoint hashes
    suites = [build_suite("imagenet_o", {"suite": "ood", "protocol": "paul_chen", "detectors": ["msp"], "near": [],
                                         "far": {"imagenet_o": imagenet_o["ood"]}, "sanity": [],
                                         "data": imagenet_o["id"]}, "t"),
              build_suite("masking", {"suite": "probes", "probes": ["cutout"], "protocol": "paul_chen",
                                      "params": {"cutout": {"fractions": [0.0, 0.2]}},
                                      "data": {"path": str(masking_folder), "classes": "imagenet_1k"}}, "t")]
    cfg = RunConfig(models=models, suites=suites, batch_size=64, device="cpu")
    with Store(store_path) as store:
        execute(cfg, store, show_progress=False)
        res = analyse(store.records(), OutcomeSource.from_store(store), store.protocols(), compare="all")
    rec = res.selected.set_index(["model", "path"])
    ood = rec.loc[("oracle_vit", "imagenet_o/far/imagenet_o/msp/auroc")]
    assert ood["n"] == 12 + 8 and ood["ci_low"] < ood["value"] < ood["ci_high"]
    ap = rec.loc[("oracle_vit", "imagenet_o/far/imagenet_o/msp/ap_out")]
    assert 0 < ap["value"] < 1 and not np.isfinite([ap["ci_low"], ap["ci_high"]]).any()  # no bootstrap for AP
    masked = rec.loc[("oracle_cnn", "masking/cutout/f=0.2/top1")]
    assert masked["n"] == 1000 and masked["ci_low"] < masked["value"] < masked["ci_high"]
    tie = res.comparisons.set_index("metric").loc["masking/cutout/f=0.2/top1"]
    assert tie["diff"] == 0 and tie["verdict"] == "tie"  # the same predictions on the same 1,000 draws


# -- the suite file --------------------------------------------------------------------------------------
def test_suite_file_validates_and_sets_every_protocol_difference(tmp_path: Path) -> None:
    text = (ROOT / "suites" / "paul_chen_2022.toml").read_text()
    local = tmp_path / "paul_chen_2022.toml"
    local.write_text(text.replace('"/data/', f'"{tmp_path}/data/'))
    with pytest.raises(UserError, match="does not exist"):
        load_suite_file(local)
    for folder in sorted(set(re.findall(r'"(/data/[^"]+)"', text))):
        (tmp_path / folder.lstrip("/")).mkdir(parents=True, exist_ok=True)
    cfg = load_suite_file(local)
    assert [m.spec for m in cfg.models] == ["timm:vit_large_patch16_224", "timm:resnetv2_101x3_bit.goog_in21k_ft_in1k"]
    assert cfg.models[1].preprocess["input_size"] == [3, 224, 224]
    suites = {s.name: s for s in cfg.suites}
    assert {n: s.suite.kind for n, s in suites.items()} == {
        "imagenet_c": "corruption", "imagenet_p": "stability", "imagenet_r": "clean", "imagenet_a": "clean",
        "imagenet_o": "ood", "imagenet_9": "backgrounds", "masking": "probes", "fourier": "probes",
        "spectrum": "probes", "pgd": "adversarial"}
    c = suites["imagenet_c"].suite
    assert c.config()["protocol"] == "paul_chen" and len(c.corruptions) == 19 and len(c.cells()) == 1 + 19 * 5
    for name in ("imagenet_r", "imagenet_a"):  # 1000-way argmax: no subset
        assert suites[name].data == {"path": f"{tmp_path}/data/{name.replace('_', '-')}", "classes": "imagenet_1k"}
    o = suites["imagenet_o"].suite
    assert o.class_subset == "imagenet_o" and o.cells() == ["far/imagenet_o/msp"]
    assert suites["masking"].suite.config()["params"]["cutout"]["protocol"] == "paul_chen"
    assert json.dumps(cfg.as_dict(), default=str)  # the run manifest holds it
