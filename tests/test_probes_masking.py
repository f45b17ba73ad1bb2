"""Masking probes: patch drop, patch shuffle and CutOut (Naseer et al. 2021; Paul & Chen 2022)."""

from __future__ import annotations

import copy
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.context import SuiteContext
from robustvit.errors import UserError
from robustvit.models import load_model
from robustvit.probes.base import batches, patch_masks
from robustvit.probes.cutout import square_corners, square_mask, square_side
from robustvit.probes.patch_drop import drop_patches, patch_ids
from robustvit.probes.patch_shuffle import shuffle_patches
from robustvit.registries import PROBES
from robustvit.runner import execute
from robustvit.store import Store
from robustvit.suites.clean import CleanSuite
from robustvit.suites.probes import ProbesSuite

MASKING = ("patch_drop", "patch_shuffle", "cutout")
ZERO_CELLS = {"patch_drop": ["random/f=0", "salient_first/f=0", "least_salient_first/f=0"],
              "patch_shuffle": ["g=1"], "cutout": ["f=0"]}
ZERO_OPTS = {"patch_drop": {}, "patch_shuffle": {}, "cutout": {"fractions": [0.0, 0.5]}}

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def zoo() -> dict:
    return {spec: load_model(spec) for spec in ("zoo_vit", "zoo_resnet")}


def _ctx(model, batch_size: int = 64, limit: int | None = 64) -> SuiteContext:
    return SuiteContext(model=model, suite="probes", dataset="digits", device=torch.device("cpu"),
                        batch_size=batch_size, limit=limit, seed=0, show_progress=False)


def _run(name: str, ctx: SuiteContext, **opts) -> dict:
    probe = PROBES.get(name)(**opts)
    return {r.cell: r for r in probe.run(ctx, probe.cells())}


def _top1(result) -> tuple[float, np.ndarray]:
    return result.metrics[0].value, result.outcomes.arrays["top1"]


def _clean(ctx: SuiteContext) -> tuple[float, np.ndarray]:
    fs = ctx.features()
    (clean,) = CleanSuite().run(ctx, [""])
    return next(m.value for m in clean.metrics if m.metric == "top1"), (fs.logits.argmax(1) == fs.labels).numpy()


def _capture(model) -> tuple[list[torch.Tensor], object]:
    """Inputs the wrapper is called with (the probes' predictions; not the cached clean pass)."""
    seen: list[torch.Tensor] = []
    return seen, model.register_forward_pre_hook(lambda _m, args: seen.append(args[0].detach().clone()))


# -- registry, cells, options --------------------------------------------------------------------------
def test_registered_with_their_default_cells() -> None:
    assert set(MASKING) <= set(PROBES.names())
    cells = {name: PROBES.get(name)().cells() for name in MASKING}
    assert len(cells["patch_drop"]) == 30 and cells["patch_drop"][:3] == ["random/f=0", "random/f=0.1", "random/f=0.2"]
    assert cells["patch_drop"][-1] == "least_salient_first/f=0.9"
    assert cells["patch_shuffle"] == ["g=1", "g=2", "g=4", "g=8", "g=model"]
    assert cells["cutout"] == ["f=0.05", "f=0.1", "f=0.2", "f=0.5"]
    assert ProbesSuite(probes=list(MASKING)).cells()[0] == "patch_drop/random/f=0"


@pytest.mark.parametrize(
    ("name", "opts", "message"),
    [
        ("patch_drop", {"grid": 0}, r"'grid'.*allowed: \"auto\" or a positive integer"),
        ("patch_drop", {"grid": True}, r"'grid'.*allowed"),
        ("patch_drop", {"fractions": [0.5, 1.5]}, r"'fractions'.*allowed: numbers 0 <= f <= 1"),
        ("patch_drop", {"fractions": []}, r"'fractions'.*allowed"),
        ("patch_drop", {"fill": "grey"}, r"'fill'.*allowed: black, mean, noise"),
        ("patch_drop", {"orderings": ["rnd"]}, r"'orderings'.*allowed: .*random, salient_first"),
        ("patch_drop", {"saliency": "attn"}, r"'saliency'.*allowed: auto, gradxinput, rollout"),
        ("patch_drop", {"ratio": 0.5}, r"unknown option 'ratio'.*allowed: fill, fractions, grid"),
        ("patch_shuffle", {"grids": [0, 2]}, r"'grids'.*allowed: a non-empty list of positive integers and 'model'"),
        ("patch_shuffle", {"grids": ["modle"]}, r"'grids'.*allowed"),
        ("patch_shuffle", {"grids": 4}, r"'grids'.*allowed"),
        ("cutout", {"fractions": [-0.1]}, r"'fractions'.*allowed: numbers 0 <= f <= 1"),
        ("cutout", {"fractions": [True]}, r"'fractions'.*allowed"),
    ],
)
def test_bad_options_are_one_line_user_errors(name: str, opts: dict, message: str) -> None:
    with pytest.raises(UserError, match=message) as info:
        PROBES.get(name)(**opts)
    assert "\n" not in str(info.value)
    with pytest.raises(UserError, match=f"suite 'probes': probe '{name}'"):
        ProbesSuite(probes=[name], params={name: opts})


def test_duplicate_values_give_one_cell_each() -> None:
    assert PROBES.get("cutout")(fractions=[0.5, 0.50, 0]).cells() == ["f=0.5", "f=0"]
    assert PROBES.get("patch_shuffle")(grids=[2, 2, "model"]).cells() == ["g=2", "g=model"]


# -- optional saliency / interaction sources (other modules, replaced here by stand-ins) ----------------
def _stand_in(monkeypatch: pytest.MonkeyPatch, module: str, **attrs) -> None:
    fake = types.ModuleType(module) if attrs else None
    for key, value in attrs.items():
        setattr(fake, key, value)
    monkeypatch.setitem(sys.modules, module, fake)  # None: "import" raises ImportError


def test_missing_sources_fail_at_validation_only_when_requested(monkeypatch: pytest.MonkeyPatch, zoo: dict) -> None:
    _stand_in(monkeypatch, "robustvit.probes.interaction")
    _stand_in(monkeypatch, "robustvit.probes.attention")
    with pytest.raises(UserError, match="least_interaction_first.*not available.*allowed orderings"):
        PROBES.get("patch_drop")(orderings=["random", "least_interaction_first"])
    with pytest.raises(UserError, match="'rollout'.*not available.*allowed here: auto, gradxinput"):
        PROBES.get("patch_drop")(saliency="rollout")
    PROBES.get("patch_drop")(saliency="rollout", orderings=["random"])  # not used: fine
    auto = PROBES.get("patch_drop")()
    assert auto.saliency_method(zoo["zoo_vit"]) == "gradxinput"  # rollout unavailable: gradient x input
    ctx = _ctx(zoo["zoo_vit"], limit=32)
    grad = PROBES.get("patch_drop")(saliency="gradxinput", orderings=["salient_first"], fractions=[0.3])
    (a,), (b,) = auto.run(ctx, ["salient_first/f=0.3"]), grad.run(ctx, grad.cells())
    assert a.metrics == b.metrics and (a.outcomes.arrays["top1"] == b.outcomes.arrays["top1"]).all()


def test_stand_in_sources_decide_the_drop_order(monkeypatch: pytest.MonkeyPatch, zoo: dict) -> None:
    # rollout saliency = patch index (the last patch most salient); interaction mass = minus the patch index
    _stand_in(monkeypatch, "robustvit.probes.attention",
              rollout_saliency=lambda model, x, grid: torch.arange(grid * grid, dtype=torch.float).expand(len(x), -1))
    _stand_in(monkeypatch, "robustvit.probes.interaction",
              interaction_mass=lambda ctx, x, y, grid: -torch.arange(grid * grid, dtype=torch.float).expand(len(x), -1))
    probe = PROBES.get("patch_drop")(orderings=["salient_first", "least_interaction_first"], fractions=[0.25])
    vit, resnet = zoo["zoo_vit"], zoo["zoo_resnet"]
    assert probe.saliency_method(vit) == "rollout" and probe.saliency_method(resnet) == "gradxinput"
    ctx = _ctx(vit, limit=32)
    out = {r.cell: r for r in probe.run(ctx, probe.cells())}
    # both drop the last 4 of the 16 patches (the bottom row): the same images as a direct computation
    x, y, _ = next(iter(batches(ctx)))
    drop = torch.zeros(len(x), 16, dtype=torch.bool)
    drop[:, 12:] = True
    expected = (vit(drop_patches(x, drop, patch_ids((32, 32), 4), 0.0)).argmax(1) == y).numpy()
    for cell in ("salient_first/f=0.25", "least_interaction_first/f=0.25"):
        assert (out[cell].outcomes.arrays["top1"] == expected).all()
    # an explicit rollout cannot read a CNN: the probe is skipped with a note
    explicit = ProbesSuite(probes=["patch_drop"], params={"patch_drop": {"saliency": "rollout"}})
    assert explicit.cells_for(resnet) == [] and "ViT models only" in explicit.notes_for(resnet)[0]
    assert explicit.cells_for(vit) == explicit.cells()


# -- invariants ------------------------------------------------------------------------------------------
def _weakened(model):
    """A copy of a zoo model with seeded noise on its weights: about half of the digits wrong."""
    weak = copy.deepcopy(model)
    weak.sha = f"{model.sha}-weakened"
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for p in weak.model.parameters():
            if p.dim() > 1:
                p.add_(torch.randn(p.shape, generator=gen) * p.std() * 0.4)
    return weak


@pytest.mark.parametrize("spec", ["zoo_vit", "zoo_resnet", "weakened zoo_resnet"])
def test_nothing_masked_is_the_clean_top1_of_the_same_images(spec: str, zoo: dict) -> None:
    model = _weakened(zoo["zoo_resnet"]) if spec.startswith("weakened") else zoo[spec]
    ctx = _ctx(model, batch_size=32, limit=540 if spec in zoo else 96)
    top1, correct = _clean(ctx)
    if model is not zoo.get(spec):
        assert 0.3 < top1 < 0.8  # many wrong images: equal per-image outcomes say more than equal means
    for name in MASKING:
        probe = PROBES.get(name)(**ZERO_OPTS[name])
        for result in probe.run(ctx, ZERO_CELLS[name]):
            value, outcomes = _top1(result)
            assert value == top1, (name, result.cell)
            assert (outcomes == correct).all() and result.metrics[0].n == len(correct)
            assert (result.outcomes.index("images") == ctx.image_index(len(correct))).all()


@pytest.mark.parametrize("spec", ["zoo_vit", "zoo_resnet"])
@pytest.mark.parametrize(("name", "opts"), [("patch_drop", {"fill": "noise"}), ("patch_drop", {"fill": "mean"}),
                                            ("patch_shuffle", {}), ("cutout", {})])
def test_numbers_do_not_depend_on_batch_size(spec: str, name: str, opts: dict, zoo: dict) -> None:
    small, large = (_run(name, _ctx(zoo[spec], batch_size=b), **opts) for b in (7, 64))
    assert list(small) == list(large)
    for cell in small:
        assert small[cell].metrics == large[cell].metrics
        assert (small[cell].outcomes.arrays["top1"] == large[cell].outcomes.arrays["top1"]).all()


def _dropped(images: torch.Tensor, clean: torch.Tensor, grid: int) -> torch.Tensor:
    """(B, P) which patches differ from the clean image."""
    masks = patch_masks(tuple(clean.shape[-2:]), grid).flatten(1).float()
    return ((images != clean).any(1).flatten(1).float() @ masks.T) > 0


def test_random_drop_sets_are_nested_across_fractions(zoo: dict) -> None:
    model = zoo["zoo_vit"]
    ctx = _ctx(model, limit=64)
    clean = next(iter(ctx.loader()))[0]
    fractions = [0.0, 0.1, 0.2, 0.3, 0.5, 0.7, 0.9, 1.0]
    seen, handle = _capture(model)
    try:
        list(PROBES.get("patch_drop")(orderings=["random"], fractions=fractions, fill="noise").run(
            ctx, [f"random/f={f:g}" for f in fractions]))
    finally:
        handle.remove()
    assert len(seen) == len(fractions)  # one batch, one forward pass per fraction
    sets = [_dropped(images, clean, 4) for images in seen]
    for f, dropped in zip(fractions, sets):
        assert (dropped.sum(1) == round(f * 16)).all()  # noise differs from every pixel: changed = dropped
    for smaller, larger in zip(sets, sets[1:]):
        assert (larger | ~smaller).all()
    assert not (sets[3] == sets[3][0]).all()  # per-image sets, not one set for the batch


@pytest.fixture(scope="module")
def zoo_curves(zoo: dict) -> dict:
    return {spec: {name: _run(name, _ctx(model, limit=128), **opts) for name, opts in
                   (("patch_drop", {"orderings": ["random"]}), ("cutout", {"fractions": [0.0, 0.05, 0.1, 0.2, 0.5]}))}
            for spec, model in zoo.items()}


@pytest.mark.parametrize("name", ["patch_drop", "cutout"])
def test_accuracy_falls_as_more_is_masked(name: str, zoo_curves: dict) -> None:
    curves = np.array([[r.metrics[0].value for r in zoo_curves[spec][name].values()] for spec in zoo_curves])
    mean = curves.mean(0)
    assert (np.diff(mean) <= 0.02).all(), mean  # weakly falling on average over the zoo models
    assert (curves[:, -1] < curves[:, 0] - 0.3).all(), curves


@pytest.fixture(scope="module")
def four_models(zoo: dict) -> dict:
    return {**zoo, **{spec: load_model(spec, pretrained=False, num_classes=10) for spec in ("timm:test_vit", "timm:test_resnet")}}


@pytest.mark.parametrize("name", [n for n in PROBES.names() if n in MASKING])
def test_runs_on_zoo_and_timm_models_of_both_families(name: str, four_models: dict) -> None:
    for spec, model in four_models.items():
        ctx = _ctx(model, batch_size=6, limit=6 if spec.startswith("timm") else 16)
        suite = ProbesSuite(probes=[name])
        cells = suite.cells_for(model)
        results = list(suite.run(ctx, cells))
        assert [r.cell for r in results] == cells and cells[0].startswith(f"{name}/")
        for r in results:
            assert [m.metric for m in r.metrics] == ["top1"] and r.metrics[0].higher_is_better
            assert 0.0 <= r.metrics[0].value <= 1.0 and r.metrics[0].n == ctx.num_examples()


# -- geometry --------------------------------------------------------------------------------------------
@pytest.mark.parametrize("size", [(32, 32), (160, 160), (37, 50)])
def test_cutout_squares_have_the_area_and_lie_inside(size: tuple[int, int]) -> None:
    h, w = size
    u = torch.cat([torch.tensor([[0.0, 0.0], [0.999999, 0.999999], [0.5, 0.5]]), torch.rand(50, 2)])
    for f in (0.0, 0.05, 0.1, 0.2, 0.5, 0.9, 1.0):
        side = square_side(f, size)
        if side < min(size):
            assert abs(side * side - f * h * w) <= 2 * side + 1  # |side - sqrt(f h w)| <= 0.5
        top, left = square_corners(u, side, size)
        assert (top >= 0).all() and (left >= 0).all() and (top + side <= h).all() and (left + side <= w).all()
        mask = square_mask(top, left, side, size)
        assert (mask.flatten(1).sum(1) == side * side).all()
        if side:
            assert (mask[0, :side, :side]).all() and mask[1, h - 1, w - 1]


def test_cutout_blacks_out_one_square_in_the_run(zoo: dict) -> None:
    model = zoo["zoo_resnet"]
    ctx = _ctx(model, limit=16)
    clean = next(iter(ctx.loader()))[0]
    seen, handle = _capture(model)
    try:
        list(PROBES.get("cutout")(fractions=[0.5]).run(ctx, ["f=0.5"]))
    finally:
        handle.remove()
    side = square_side(0.5, (32, 32))
    changed = seen[0] != clean
    assert (seen[0][changed] == 0).all()
    rows, cols = changed.any(1).any(2), changed.any(1).any(1)
    for r, c in zip(rows, cols):  # the changed pixels fit in one side x side square
        idx_r, idx_c = r.nonzero().flatten(), c.nonzero().flatten()
        assert idx_r.numel() == 0 or (idx_r.max() - idx_r.min() < side and idx_c.max() - idx_c.min() < side)


@pytest.mark.parametrize(("size", "grid"), [((32, 32), 2), ((35, 33), 4)])
def test_shuffle_moves_whole_patches(size: tuple[int, int], grid: int) -> None:
    h, w = size
    x = torch.rand(3, 3, h, w)
    perm = torch.stack([torch.randperm(grid * grid, generator=torch.Generator().manual_seed(i)) for i in range(3)])
    out = shuffle_patches(x, perm, grid)
    ph, pw = h // grid, w // grid

    def tiles(t: torch.Tensor) -> list[torch.Tensor]:
        return [t[:, i * ph:(i + 1) * ph, j * pw:(j + 1) * pw] for i in range(grid) for j in range(grid)]

    for b in range(3):
        before, after = tiles(x[b]), tiles(out[b])
        for k in range(grid * grid):
            assert torch.equal(after[k], before[int(perm[b, k])])
        as_bytes = sorted(t.numpy().tobytes() for t in before)
        assert sorted(t.numpy().tobytes() for t in after) == as_bytes  # the multiset of patches is unchanged
    assert torch.equal(out[:, :, grid * ph:], x[:, :, grid * ph:]) and torch.equal(out[:, :, :, grid * pw:], x[:, :, :, grid * pw:])
    with pytest.raises(UserError, match="finer than"):
        shuffle_patches(x, torch.zeros(3, 40 * 40, dtype=torch.long), 40)


def test_shuffle_in_the_run_keeps_each_images_patches(zoo: dict) -> None:
    model = zoo["zoo_vit"]
    ctx = _ctx(model, limit=16)
    clean = next(iter(ctx.loader()))[0]
    seen, handle = _capture(model)
    try:
        results = list(PROBES.get("patch_shuffle")(grids=[2, "model", 4]).run(ctx, ["g=2", "g=model", "g=4"]))
    finally:
        handle.remove()
    assert len(seen) == 2  # "model" is the zoo ViT's 4 x 4 grid: computed once, reported under both names
    assert results[1].metrics == results[2].metrics and results[1].cell == "g=model"
    for images, grid in zip(seen, (2, 4)):
        p = 32 // grid
        for b in range(len(clean)):
            split = [sorted(t[:, i * p:(i + 1) * p, j * p:(j + 1) * p].numpy().tobytes()
                            for i in range(grid) for j in range(grid)) for t in (clean[b], images[b])]
            assert sorted(split[0]) == sorted(split[1])


# -- through the runner ------------------------------------------------------------------------------------
def test_runner_stores_probe_cells_beside_clean(tmp_path: Path) -> None:
    params = {"patch_drop": {"orderings": ["random"], "fractions": [0.0, 0.5]}, "patch_shuffle": {"grids": [1, "model"]},
              "cutout": {"fractions": [0.0, 0.5]}}
    cfg = RunConfig(models=[ModelConfig("zoo_vit"), ModelConfig("zoo_resnet")],
                    suites=[build_suite("probes", {"probes": list(MASKING), "params": params}, "probes"),
                            build_suite("clean", {}, "clean")], batch_size=64, limit=64, device="cpu")
    with Store(tmp_path / "s.sqlite") as store:
        execute(cfg, store, show_progress=False)
        df = store.records()
    paths = df["model"] + ":" + df["suite"] + "/" + df["cell"] + "/" + df["metric"]
    values = dict(zip(paths.str.replace("//", "/"), df["value"]))
    for model in ("zoo_vit", "zoo_resnet"):
        clean = values[f"{model}:clean/top1"]
        for path in ("probes/patch_drop/random/f=0/top1", "probes/patch_shuffle/g=1/top1", "probes/cutout/f=0/top1"):
            assert values[f"{model}:{path}"] == clean
        assert f"{model}:probes/patch_drop/random/f=0.5/top1" in values
        assert f"{model}:probes/patch_shuffle/g=model/top1" in values
