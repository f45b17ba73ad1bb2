"""The backgrounds suite (ImageNet-9, Xiao et al. 2021): the IN-9 mapping, the released folder layout, the
BG-gap of models fitted on data whose label is in the background (large) or in the foreground (near 0), the
ImageNet-to-9 decision rule, the embedded digit benchmark, batch-size invariance, the runner on every zoo model
and timm's tiny models, and the report figure."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from torch import nn

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import SuiteContext
from robustvit.data.catalog import digits, open_source
from robustvit.data.imagenet9 import MASK_LEVEL, VARIANTS, digit_backgrounds, imagenet9_classes, variant_spec
from robustvit.errors import UserError
from robustvit.models import wrap
from robustvit.registries import MODELS
from robustvit.results.bootstrap import recompute
from robustvit.results.outcomes import Outcomes
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.backgrounds import BackgroundsSuite

pytestmark = pytest.mark.usefixtures("one_thread")

SIDE = 16
RAW = {"input_size": (3, SIDE, SIDE), "mean": (0.0, 0.0, 0.0), "std": (1.0, 1.0, 1.0), "interpolation": "bilinear",
       "crop_pct": 1.0, "crop_mode": "center"}
PALETTE = np.array([[230, 25, 75], [60, 180, 75], [255, 225, 25], [0, 130, 200], [245, 130, 48], [145, 30, 180],
                    [70, 240, 240], [240, 50, 230], [128, 128, 128]], dtype=np.uint8)
FOLDERS = ["00_dog", "01_bird", "02_wheeled vehicle", "03_reptile", "04_carnivore", "05_insect",
           "06_musical instrument", "07_primate", "08_fish"]


# -- the mapping -------------------------------------------------------------------------------------------
def test_imagenet9_mapping_is_the_released_one() -> None:
    classes = imagenet9_classes()
    assert [c["folder"] for c in classes] == FOLDERS
    assert [c["wnid"] for c in classes] == ["n02084071", "n01503061", "n04576211", "n01661091", "n02075296",
                                            "n02159955", "n03800933", "n02469914", "n02512053"]
    assert [len(c["indices"]) for c in classes] == [116, 52, 42, 36, 35, 27, 26, 20, 16]
    flat = [i for c in classes for i in c["indices"]]
    assert len(flat) == len(set(flat)) == 370 and 0 <= min(flat) and max(flat) < 1000
    assert 0 in classes[8]["indices"] and 999 not in flat  # tench is a fish; toilet tissue is in no class


# -- a synthetic benchmark in the released layout ------------------------------------------------------------
def scenes(labels: np.ndarray, informative: str, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Foreground and background colour indices of each image: the informative part has the class colour."""
    other = rng.integers(0, 9, size=(2, len(labels)))
    fg = labels if informative == "foreground" else other[0]
    bg = labels if informative == "background" else other[1]
    return fg, bg


def paint(fg: int | None, bg: int | None) -> np.ndarray:
    """A 16 px image: background colour around a centred 10 px foreground square (None: black)."""
    image = np.zeros((SIDE, SIDE, 3), dtype=np.uint8)
    if bg is not None:
        image[:] = PALETTE[bg]
    image[3:13, 3:13] = PALETTE[fg] if fg is not None else 0
    return image


def benchmark(root: Path, informative: str, per_class: int = 6, seed: int = 0) -> Path:
    """The seven variants of Xiao et al. (``<root>/<variant>/val/<nn_class>/``) for flat-colour images."""
    rng = np.random.default_rng(seed)
    labels = np.repeat(np.arange(9), per_class)
    fg, bg = scenes(labels, informative, rng)
    n = len(labels)
    same = np.array([rng.choice(np.flatnonzero((labels == labels[i]) & (np.arange(n) != i))) for i in range(n)])
    rand = rng.integers(0, n, size=n)
    nxt = np.array([rng.choice(np.flatnonzero(labels == (labels[i] + 1) % 9)) for i in range(n)])
    made = {"original": lambda i: paint(fg[i], bg[i]), "only_fg": lambda i: paint(fg[i], None),
            "mixed_same": lambda i: paint(fg[i], bg[same[i]]), "mixed_rand": lambda i: paint(fg[i], bg[rand[i]]),
            "mixed_next": lambda i: paint(fg[i], bg[nxt[i]]), "no_fg": lambda i: paint(None, bg[i]),
            "only_bg_t": lambda i: paint(bg[i], bg[i])}
    for variant, make in made.items():
        for i in range(n):
            folder = root / variant / "val" / FOLDERS[labels[i]]
            folder.mkdir(parents=True, exist_ok=True)
            Image.fromarray(make(i)).save(folder / f"n0000_{i:04d}.png")
    return root


class Centroids(nn.Module):
    """Nearest class mean over pixels, fitted on images of the original variant (9 logits, or 1000 with each
    class's logit at the first ImageNet class of its superclass)."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, imagenet: bool = False) -> None:
        super().__init__()
        x = torch.from_numpy(images).float().permute(0, 3, 1, 2).flatten(1) / 255
        self.register_buffer("means", torch.stack([x[torch.from_numpy(labels == c)].mean(0) for c in range(9)]))
        self.imagenet = imagenet

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        scores = -torch.cdist(x.flatten(1), self.means) ** 2
        if not self.imagenet:
            return scores
        out = torch.full((len(x), 1000), -1e4)
        out[:, [c["indices"][0] for c in imagenet9_classes()]] = scores
        return out


class Always(nn.Module):
    """Always answers one ImageNet class."""

    def __init__(self, index: int) -> None:
        super().__init__()
        self.index = index

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.one_hot(torch.full((len(x),), self.index), 1000).float()


def fitted(informative: str, imagenet: bool = False) -> Centroids:
    rng = np.random.default_rng(99)
    labels = np.repeat(np.arange(9), 300)
    fg, bg = scenes(labels, informative, rng)
    return Centroids(np.stack([paint(f, b) for f, b in zip(fg, bg, strict=True)]), labels, imagenet)


def run_suite(model: nn.Module, data, num_classes: int, batch_size: int = 16) -> dict:
    wrapper = wrap(model, name="m", family="cnn", data_config=RAW, num_classes=num_classes)
    ctx = SuiteContext(model=wrapper, suite="backgrounds", dataset=data, device=torch.device("cpu"),
                       batch_size=batch_size, show_progress=False)
    suite = BackgroundsSuite()
    suite.bind(ctx.source())
    cells = {r.cell: r for r in suite.run(ctx, suite.cells())}
    records = pd.DataFrame([{"cell": r.cell, "metric": m.metric, "value": m.value, "n": m.n}
                            for r in cells.values() for m in r.metrics])
    (gap,) = suite.aggregate(records, {c: r.outcomes for c, r in cells.items()})
    return {**{c: r.metrics[0].value for c, r in cells.items()}, "bg_gap": gap}


def test_bg_gap_is_large_when_the_label_is_in_the_background_and_near_0_in_the_foreground(tmp_path: Path) -> None:
    results = {}
    for informative in ("background", "foreground"):
        data = {"name": "imagenet9", "root": str(benchmark(tmp_path / informative, informative)), "space": "in9"}
        results[informative] = run_suite(fitted(informative), data, 9)
    bg, fg = results["background"], results["foreground"]
    assert bg["original"] == fg["original"] == 1.0
    gap = bg["bg_gap"].metrics[0]
    assert gap.metric == "bg_gap" and gap.value > 0.6 and gap.n == 54 and not gap.higher_is_better
    assert bg["mixed_same"] == 1.0 and bg["mixed_next"] == 0.0 and bg["only_bg_t"] == 1.0 and bg["only_fg"] < 0.5
    assert abs(fg["bg_gap"].metrics[0].value) <= 0.05 and fg["only_fg"] == fg["mixed_rand"] == fg["mixed_next"] == 1.0
    assert fg["only_bg_t"] < 0.5
    for res in (bg, fg):  # the variants hold the same images: per-image differences, a bootstrap interval
        out = res["bg_gap"].outcomes
        assert out is not None and recompute(out, "bg_gap") == pytest.approx(res["bg_gap"].metrics[0].value)


def test_imagenet_models_are_scored_by_their_top1_imagenet_class_mapped_to_the_nine(tmp_path: Path) -> None:
    data = {"name": "imagenet9", "root": str(benchmark(tmp_path / "b", "background"))}
    nine = run_suite(fitted("background"), {**data, "space": "in9"}, 9)
    thousand = run_suite(fitted("background", imagenet=True), data, 1000)
    assert {k: v for k, v in nine.items() if k != "bg_gap"} == {k: v for k, v in thousand.items() if k != "bg_gap"}
    assert run_suite(Always(999), data, 1000)["original"] == 0.0  # outside the nine: always wrong
    assert run_suite(Always(0), data, 1000)["original"] == pytest.approx(1 / 9)  # tench: a fish
    with pytest.raises(UserError, match="9 outputs"):
        run_suite(fitted("background"), data, 9)  # a 9-class model read as ImageNet


def test_aggregate_pairs_images_only_when_the_variants_hold_the_same_images() -> None:
    records = pd.DataFrame([{"cell": "mixed_same", "metric": "top1", "value": 0.75, "n": 4},
                            {"cell": "mixed_rand", "metric": "top1", "value": 0.25, "n": 4}])
    same = Outcomes().add_pool("images", range(4)).add("top1", np.array([1, 1, 1, 0], bool))
    rand = Outcomes().add_pool("images", range(4)).add("top1", np.array([0, 1, 0, 0], bool))
    same.meta["keys"] = rand.meta["keys"] = "abc"
    suite = BackgroundsSuite()
    (gap,) = suite.aggregate(records, {"mixed_same": same, "mixed_rand": rand})
    assert gap.metrics[0].value == 0.5 and gap.outcomes.arrays["bg_gap"].tolist() == [1.0, 0.0, 1.0, 0.0]
    rand.meta["keys"] = "xyz"
    (gap,) = suite.aggregate(records, {"mixed_same": same, "mixed_rand": rand})
    assert gap.metrics[0].value == 0.5 and gap.outcomes is None
    assert BackgroundsSuite(variants=["original", "mixed_same"]).aggregate(records, {}) == []


# -- the embedded digit benchmark --------------------------------------------------------------------------
def test_digit_backgrounds_are_deterministic_and_built_as_documented() -> None:
    images, labels = digit_backgrounds()
    again, _ = digit_backgrounds.__wrapped__(0)
    assert set(images) == set(VARIANTS) and all(torch.equal(images[v], again[v]) for v in VARIANTS)
    fg = digits("test").images
    assert torch.equal(labels, digits("test").labels) and torch.equal(images["only_fg"], fg)
    region = nn.functional.max_pool2d(fg[:, :1], 3, 1, 1).repeat(1, 3, 1, 1) >= MASK_LEVEL
    assert (images["no_fg"][region] == 0).all() and images["no_fg"][~region].max() > 0.3
    scene = images["only_bg_t"]
    assert torch.allclose(images["original"], fg + (1 - fg) * scene) and scene.max() <= 0.5 + 1e-6
    ink = fg > 0.99
    assert ink.sum() > 1000
    for v in ("mixed_same", "mixed_rand", "mixed_next"):  # the same foreground over other scenes
        assert torch.allclose(images[v][ink], fg[ink], atol=0.006) and not torch.equal(images[v], images["original"])
    src = open_source({"name": "backgrounds_digits", "variant": "mixed_next"})
    assert src.keys == open_source("backgrounds_digits").keys and src.variants == list(VARIANTS)


def test_user_errors(tmp_path: Path) -> None:
    with pytest.raises(UserError, match="needs an ImageNet-9 style dataset"):
        BackgroundsSuite().bind(open_source("digits"))
    with pytest.raises(UserError, match="variants must be"):
        build_suite("backgrounds", {"variants": ["mixed_weird"]}, "x")
    with pytest.raises(UserError, match="needs root"):
        open_source({"name": "imagenet9"})
    root = benchmark(tmp_path / "b", "background", per_class=2)
    with pytest.raises(UserError, match="unknown variant"):
        open_source({"name": "imagenet9", "root": str(root), "variant": "only_bg_b"})
    for folder in (root / "no_fg" / "val").iterdir():
        for f in folder.iterdir():
            f.unlink()
        folder.rmdir()
    (root / "no_fg" / "val").rmdir()
    (root / "no_fg").rmdir()
    with pytest.raises(UserError, match="no variant 'no_fg'"):
        BackgroundsSuite().bind(open_source({"name": "imagenet9", "root": str(root)}))
    BackgroundsSuite(variants=["original", "mixed_same", "mixed_rand"]).bind(open_source({"name": "imagenet9",
                                                                                        "root": str(root)}))
    (root / "original" / "val" / "dogs").mkdir()
    with pytest.raises(UserError, match="class folder 'dogs'"):
        open_source({"name": "imagenet9", "root": str(root)})
    with pytest.raises(UserError, match="plain folder"):
        variant_spec(str(root), "original")


# -- through the runner: every zoo model, timm's tiny models, batch sizes --------------------------------------
TINY = {"timm:test_vit": ModelConfig("timm:test_vit", pretrained=False, num_classes=10),
        "timm:test_resnet": ModelConfig("timm:test_resnet", pretrained=False, num_classes=10)}


def _records(tmp_path: Path, models: list[ModelConfig], data, batch_size: int, limit: int | None = None):
    suite = build_suite("backgrounds", {"data": data}, "backgrounds")
    cfg = RunConfig(models=models, suites=[suite], data="digits", batch_size=batch_size, limit=limit, device="cpu")
    with Store(tmp_path / f"s{batch_size}.sqlite") as store:
        execute(cfg, store, show_progress=False)
        return store.records()


@pytest.mark.parametrize("model", [*MODELS.names(), *TINY])
def test_every_zoo_and_tiny_timm_model_runs_on_the_embedded_set(tmp_path: Path, model: str) -> None:
    records = _records(tmp_path, [TINY.get(model, ModelConfig(model))], "backgrounds_digits", 64, limit=96)
    assert set(records["cell"]) == {"", *VARIANTS}
    top1 = records[records["metric"] == "top1"]
    assert (top1["n"] == 96).all() and (top1["ci_low"] <= top1["value"]).all() and (top1["value"] <= top1["ci_high"]).all()
    gap = records[records["metric"] == "bg_gap"].iloc[0]
    assert gap["ci_low"] <= gap["value"] <= gap["ci_high"]


def test_tiny_imagenet_timm_models_run_on_the_folder_layout(tmp_path: Path) -> None:
    data = {"name": "imagenet9", "root": str(benchmark(tmp_path / "b", "background", per_class=2))}
    models = [ModelConfig("timm:test_vit", pretrained=False), ModelConfig("timm:test_resnet", pretrained=False)]
    records = _records(tmp_path, models, data, 16)
    assert set(records["cell"]) == {"", *VARIANTS} and set(records["model"]) == {m.label for m in models}
    assert (records.loc[records["metric"] == "top1", "n"] == 18).all()


def test_batch_sizes_7_and_64_give_identical_records(tmp_path: Path) -> None:
    models = [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")]
    a = _records(tmp_path, models, "backgrounds_digits", 7, limit=150)
    b = _records(tmp_path, models, "backgrounds_digits", 64, limit=150)
    cols, key = ["model", "cell", "metric", "value", "n", "ci_low", "ci_high"], ["model", "cell", "metric"]
    left, right = a[cols].sort_values(key).reset_index(drop=True), b[cols].sort_values(key).reset_index(drop=True)
    assert len(left) == 2 * (len(VARIANTS) + 1) and left.equals(right)


def test_report_draws_variants_and_bg_gap(tmp_path: Path) -> None:
    from robustvit.report.backgrounds_figures import variant_bars
    from robustvit.report.figures import Style
    from robustvit.report.sections import build_section
    from robustvit.results.select import headline_paths, latest

    rows = latest(_records(tmp_path, [ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")], "backgrounds_digits", 256,
                           limit=64))
    families = {"zoo_vit": "vit", "zoo_resnet": "cnn"}
    figs = variant_bars(rows, Style(families))
    assert len(figs) == 1 and figs[0].png_base64 and "BG-gap" in figs[0].title
    assert any(f.title == figs[0].title for f in build_section(rows, "backgrounds", Style(families), families).figures)
    assert headline_paths(rows) == ["backgrounds/bg_gap", "backgrounds/original/top1", "backgrounds/mixed_rand/top1"]
    assert variant_bars(rows[rows["metric"] == "bg_gap"], Style(families)) == []
