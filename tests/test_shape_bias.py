"""The shape-bias suite: the 16-category mapping, model-vs-human's decision and exclusion rules, shape bias 1
for a model that reads the shape and 0 for one that reads the texture, the embedded digit cue-conflict set,
batch-size invariance, the runner on every zoo model and timm's tiny models, and the report figure."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import SuiteContext
from robustvit.data.catalog import digits, open_source
from robustvit.data.cue_conflict import SHAPE_THRESHOLD, digit_cue_conflict, imagenet16, texture_name
from robustvit.data.folder import wnid_list
from robustvit.errors import UserError
from robustvit.models import wrap
from robustvit.registries import MODELS
from robustvit.results.bootstrap import recompute
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.shape_bias import ShapeBiasSuite, category_matrix

pytestmark = pytest.mark.usefixtures("one_thread")

RAW = {"input_size": (3, 32, 32), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": "bilinear",
       "crop_pct": 1.0, "crop_mode": "center"}
#: model-vs-human's helper/human_categories.py: ImageNet classes per category
COUNTS = {"airplane": 1, "bear": 4, "bicycle": 2, "bird": 49, "boat": 5, "bottle": 7, "car": 3, "cat": 6, "chair": 4,
          "clock": 3, "dog": 109, "elephant": 2, "keyboard": 2, "knife": 1, "oven": 1, "truck": 8}


# -- the mapping and the decision rule -------------------------------------------------------------------
def test_16_category_mapping_covers_exactly_the_documented_imagenet_classes() -> None:
    doc = json.loads(resources.files("robustvit.data").joinpath("mappings", "imagenet16.json").read_text())["categories"]
    mapping = imagenet16()
    assert list(mapping) == sorted(COUNTS)  # model-vs-human's sorted category order
    assert {c: len(v) for c, v in mapping.items()} == COUNTS
    wnids = wnid_list("imagenet_1k")
    for category, entry in doc.items():
        # the indices are exactly the ImageNet-1k classes whose WordNet id the authors put in the category
        assert sorted(mapping[category]) == [i for i in range(1000) if wnids[i] in set(entry["wnids"])], category
    flat = [i for v in mapping.values() for i in v]
    assert len(flat) == len(set(flat)) == 207


def test_the_mapping_files_ship_with_the_package() -> None:
    """pyproject's package-data must list them, or an installed (non-editable) robustvit cannot read them."""
    from fnmatch import fnmatch

    from robustvit._compat import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
    globs = pyproject["tool"]["setuptools"]["package-data"]["robustvit"]
    for name in ("imagenet16.json", "imagenet9.json"):
        assert resources.files("robustvit.data").joinpath("mappings", name).is_file()
        assert any(fnmatch(f"data/mappings/{name}", g) for g in globs), f"add \"data/mappings/*.json\" to {globs}"


def test_decision_averages_probabilities_over_each_categorys_classes() -> None:
    mapping = imagenet16()
    cats = list(mapping)
    probs = torch.zeros(1, 1000)
    probs[0, mapping["dog"]] = 0.6 / len(mapping["dog"])  # most of the mass on dog, spread over 109 classes
    probs[0, mapping["knife"]] = 0.4  # the one knife class
    w = category_matrix([mapping[c] for c in cats], 1000, torch.device("cpu"))
    means = probs @ w
    assert torch.allclose(means[0, cats.index("dog")], torch.tensor(0.6 / 109))
    assert cats[int(means.argmax())] == "knife"  # the mean (model-vs-human), not the sum, decides


def test_texture_names_read_like_model_vs_human() -> None:
    assert texture_name("airplane1-bicycle2.png") == "bicycle"
    assert texture_name("XXX_dog10-bird2.png") == "bird"  # the example of model-vs-human's ShapeBias
    assert texture_name("cat3-cat5.png") == "cat"


# -- synthetic data and models that read one cue -----------------------------------------------------------
def cue_folder(root: Path, per_pair: int = 1) -> Path:
    """Model-vs-human's layout, each image one flat colour: red = its shape category, green = its texture."""
    cats = list(imagenet16())
    for s, shape in enumerate(cats):
        (root / shape).mkdir(parents=True)
        for t in (s, (s + 1) % 16, (s + 5) % 16):
            for k in range(per_pair):
                colour = (int((s + 0.5) * 16), int((t + 0.5) * 16), 128)
                Image.new("RGB", (24, 24), colour).save(root / shape / f"{shape}{k}-{cats[t]}{k + 1}.png")
    return root


class ColourReader(nn.Module):
    """Reads a category from one colour channel and answers an ImageNet class of it (1000 logits)."""

    def __init__(self, channel: int) -> None:
        super().__init__()
        self.channel = channel
        self.register_buffer("first", torch.tensor([v[0] for v in imagenet16().values()]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        category = (x[:, self.channel].mean((1, 2)) * 16).floor().long().clamp(0, 15)
        logits = torch.full((len(x), 1000), -10.0)
        logits[torch.arange(len(x)), self.first[category]] = 10.0
        return logits


class Lookup(nn.Module):
    """Answers the stored answer of the nearest stored image (a memorising classifier, 10 classes)."""

    def __init__(self, images: torch.Tensor, answers: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("images", images.flatten(1))
        self.register_buffer("answers", answers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        nearest = torch.cdist(x.flatten(1), self.images).argmin(1)
        return nn.functional.one_hot(self.answers[nearest], 10).float() * 10


def run_suite(model: nn.Module, data, name: str, batch_size: int = 16, num_classes: int = 1000):
    wrapper = wrap(model, name=name, family="cnn", data_config=RAW, num_classes=num_classes)
    ctx = SuiteContext(model=wrapper, suite="shape_bias", dataset=data, device=torch.device("cpu"),
                       batch_size=batch_size, show_progress=False)
    suite = ShapeBiasSuite()
    suite.bind(ctx.source())
    return {r.cell: r for r in suite.run(ctx, suite.cells())}


@pytest.mark.parametrize(("channel", "expected"), [(0, 1.0), (1, 0.0)])
def test_shape_bias_is_1_for_shape_answers_and_0_for_texture_answers(tmp_path: Path, channel: int,
                                                                     expected: float) -> None:
    data = {"name": "cue_conflict", "root": str(cue_folder(tmp_path / "cue-conflict"))}
    cells = run_suite(ColourReader(channel), data, f"reader{channel}")
    overall = cells[""]
    values = {m.metric: m for m in overall.metrics}
    assert values["shape_bias"].value == expected and values["shape_bias"].n == 32  # the 16 same-cue images left out
    assert values["top1"].value == expected and values["texture_top1"].value == 1 - expected
    assert len(overall.outcomes.index("images")) == 32
    assert set(cells) == {"", *imagenet16()}
    for cat in imagenet16():
        assert cells[cat].metrics[0].value == expected and cells[cat].metrics[0].n == 2
    assert recompute(overall.outcomes, "shape_bias") == expected


def test_embedded_digit_set_scores_shape_and_texture_readers(tmp_path: Path) -> None:
    images, shapes, textures = digit_cue_conflict()
    for answers, expected in ((shapes, 1.0), (textures, 0.0)):
        cells = run_suite(Lookup(images, answers), "cue_conflict_digits", "lookup", num_classes=10)
        assert cells[""].metrics[0].value == expected and cells[""].metrics[0].n == 720
        assert [c for c in cells if c] == [str(d) for d in range(10)]


def test_mixed_answers_give_the_ratio_and_leave_other_decisions_out() -> None:
    images, shapes, textures = digit_cue_conflict()
    other = torch.where((shapes + 1) % 10 == textures, (shapes + 2) % 10, (shapes + 1) % 10)  # neither cue
    turn = torch.arange(len(shapes)) % 7
    answers = torch.where(turn < 2, textures, torch.where(turn < 6, shapes, other))
    cells = run_suite(Lookup(images, answers), "cue_conflict_digits", "mixed", num_classes=10)
    conflict = shapes != textures
    s = int(((answers == shapes) & conflict).sum())
    t = int(((answers == textures) & conflict).sum())
    metrics = {m.metric: m for m in cells[""].metrics}
    assert metrics["shape_bias"].value == pytest.approx(s / (s + t)) and metrics["shape_bias"].n == s + t < 720
    assert metrics["top1"].value == pytest.approx(s / 720) and metrics["texture_top1"].value == pytest.approx(t / 720)
    assert recompute(cells[""].outcomes, "shape_bias") == pytest.approx(s / (s + t))
    three = (shapes == 3) & conflict
    s3, t3 = int(((answers == shapes) & three).sum()), int(((answers == textures) & three).sum())
    assert cells["3"].metrics[0].value == pytest.approx(s3 / (s3 + t3))


# -- the embedded set ------------------------------------------------------------------------------------
def test_digit_cue_conflict_is_deterministic_and_built_as_documented() -> None:
    images, shapes, textures = digit_cue_conflict()
    again = digit_cue_conflict()
    assert torch.equal(images, again[0]) and torch.equal(textures, again[2])
    assert images.shape == (800, 3, 32, 32) and images.min() >= 0 and images.max() <= 1
    assert torch.bincount(shapes * 10 + textures).tolist() == [8] * 100
    assert not torch.equal(images, digit_cue_conflict(seed=1)[0])
    # ink only inside some test digit's silhouette, and it is a wallpaper: 8 px periodic where the silhouette is
    test = digits("test").images[:, 0]
    silhouettes = test > SHAPE_THRESHOLD
    for i in (0, 123, 799):
        ink = images[i, 0] > 0
        holders = (silhouettes | ~ink).all(dim=(1, 2))  # test digits whose silhouette holds all the ink
        assert holders.any() and (digits("test").labels[holders] == shapes[i]).any()
        both = ink[:, 8:] & ink[:, :-8]
        assert both.sum() >= 10
        assert torch.allclose(images[i, 0, :, 8:][both], images[i, 0, :, :-8][both])
    source = open_source("cue_conflict_digits")
    assert source.num_classes == 10 and source.class_map is None and source.fingerprint == open_source("cue_conflict_digits").fingerprint


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs a cue-conflict dataset"):
        ShapeBiasSuite().bind(open_source("digits"))
    with pytest.raises(UserError, match="needs root"):
        open_source({"name": "cue_conflict"})
    root = cue_folder(tmp_path / "cc")
    (root / "dinosaur").mkdir()
    with pytest.raises(UserError, match="shape folder 'dinosaur'"):
        open_source({"name": "cue_conflict", "root": str(root)})
    (root / "dinosaur").rmdir()
    Image.new("RGB", (4, 4)).save(root / "cat" / "cat1-zebra1.png")
    with pytest.raises(UserError, match="texture 'zebra'"):
        open_source({"name": "cue_conflict", "root": str(root)})
    with pytest.raises(UserError, match="unknown option"):
        build_suite("shape_bias", {"limit_categories": 3}, "x")


def test_a_digits_model_on_the_imagenet_set_is_refused_before_any_work(tmp_path: Path) -> None:
    data = {"name": "cue_conflict", "root": str(cue_folder(tmp_path / "cc"))}
    cfg = RunConfig(models=[ModelConfig("zoo_vit")], suites=[build_suite("shape_bias", {"data": data}, "x")],
                    device="cpu")
    with Store(tmp_path / "s.sqlite") as store, pytest.raises(UserError, match="1000 outputs|10 outputs"):
        execute(cfg, store, show_progress=False)
    with Store(tmp_path / "s.sqlite") as store:
        assert store.records().empty


# -- through the runner: every zoo model, timm's tiny models, batch sizes --------------------------------------
TINY = {"timm:test_vit": ModelConfig("timm:test_vit", pretrained=False, num_classes=10),
        "timm:test_resnet": ModelConfig("timm:test_resnet", pretrained=False, num_classes=10)}


def _records(tmp_path: Path, models: list[ModelConfig], data, batch_size: int, limit: int | None = None):
    suite = build_suite("shape_bias", {"data": data}, "shape_bias")
    cfg = RunConfig(models=models, suites=[suite], data="digits", batch_size=batch_size, limit=limit, device="cpu")
    path = tmp_path / f"s{batch_size}.sqlite"
    with Store(path) as store:
        execute(cfg, store, show_progress=False)
        return store.records(), suite.suite


@pytest.mark.parametrize("model", [*MODELS.names(), *TINY])
def test_every_zoo_and_tiny_timm_model_runs_on_the_embedded_set(tmp_path: Path, model: str) -> None:
    records, _ = _records(tmp_path, [TINY.get(model, ModelConfig(model))], "cue_conflict_digits", 64, limit=200)
    assert set(records["cell"]) == {"", *map(str, range(10))}
    bias = records[(records["cell"] == "") & (records["metric"] == "shape_bias")].iloc[0]
    assert 0 <= bias["value"] <= 1 and bias["ci_low"] <= bias["value"] <= bias["ci_high"]
    top1 = records[records["metric"] == "top1"].iloc[0]
    assert top1["n"] < 200 and top1["ci_low"] <= top1["value"] <= top1["ci_high"]  # conflict images only


def test_tiny_imagenet_timm_models_run_on_the_folder_layout(tmp_path: Path) -> None:
    data = {"name": "cue_conflict", "root": str(cue_folder(tmp_path / "cc"))}
    models = [ModelConfig("timm:test_vit", pretrained=False), ModelConfig("timm:test_resnet", pretrained=False)]
    records, _ = _records(tmp_path, models, data, 16)
    assert set(records["cell"]) == {"", *imagenet16()} and set(records["model"]) == {m.label for m in models}
    overall = records[(records["cell"] == "") & (records["metric"] == "top1")]
    assert (overall["n"] == 32).all()


def test_batch_sizes_7_and_64_give_identical_records(tmp_path: Path) -> None:
    models = [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")]
    a, _ = _records(tmp_path, models, "cue_conflict_digits", 7)
    b, _ = _records(tmp_path, models, "cue_conflict_digits", 64)
    cols = ["model", "cell", "metric", "value", "n", "ci_low", "ci_high"]
    key = ["model", "cell", "metric"]
    left, right = a[cols].sort_values(key).reset_index(drop=True), b[cols].sort_values(key).reset_index(drop=True)
    assert len(left) == 2 * (3 + 10)
    assert left.equals(right)


# -- the report ------------------------------------------------------------------------------------------------
def test_report_draws_the_shape_bias_plot(tmp_path: Path) -> None:
    from robustvit.report.figures import Style
    from robustvit.report.sections import build_section
    from robustvit.report.shape_figures import shape_bias_plot
    from robustvit.results.select import headline_paths, latest

    records, _ = _records(tmp_path, [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")], "cue_conflict_digits", 256)
    rows = latest(records)
    style = Style({"zoo_vit": "vit", "zoo_resnet": "cnn"})
    figs = shape_bias_plot(rows, style)
    assert len(figs) == 1 and figs[0].png_base64 and "Shape bias" in figs[0].title
    section = build_section(rows, "shape_bias", style, {"zoo_vit": "vit", "zoo_resnet": "cnn"})
    assert any(f.title == figs[0].title for f in section.figures)
    assert headline_paths(rows) == ["shape_bias/shape_bias"]
    assert shape_bias_plot(rows[rows["cell"] == ""], style) == []  # no category cells: no plot
    assert np.isfinite(rows["value"]).all()
