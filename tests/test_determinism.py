"""Every random draw depends on the image, not on the batch, the shard or the worker.

* per-image counter-based streams (:mod:`robustvit.rng`): same key and position, same number; slices
  and chunked loops continue the parent's streams; uniform and normal numbers have the right moments;
* every corruption gives an image the same pixels whatever batch it is in;
* runs with batch sizes 11 and 64 store identical records (values, n, intervals) for the clean,
  corruption, adversarial, OOD and probe suites;
* cells computed piecewise on image shards and merged (:meth:`Suite.merge`) equal cells computed whole.
"""

from __future__ import annotations

import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from robustvit.config import ModelConfig, RunConfig, build_suite
from robustvit.corruptions import corrupt, list_corruptions
from robustvit.ray_executor import Task, Worker, _shards, make_tasks
from robustvit.rng import ImageStreams, mix32
from robustvit.runner import build_model, execute, ordered_models, plan_unit
from robustvit.store import Store

sys.path.insert(0, str(Path(__file__).resolve().parent))
from record_helpers import records  # noqa: E402

# -- the streams -----------------------------------------------------------------------------------


def test_streams_depend_on_image_and_position_only() -> None:
    a = ImageStreams.for_images(7, [3, 10, 11])
    b = ImageStreams.for_images(7, [10])
    first = a.uniform((3, 5))
    assert torch.equal(first[1], b.uniform((1, 5))[0])
    assert torch.equal(a.uniform((3, 2))[1], b.uniform((1, 2))[0])  # the cursor moved on alike
    assert not torch.equal(first[1], first[2])  # neighbouring images get other numbers
    c = ImageStreams.for_images(8, [3, 10, 11])
    assert not torch.equal(c.uniform((3, 5)), first)  # another seed, other numbers


def test_slices_continue_the_parent_streams() -> None:
    whole = ImageStreams.for_images(1, range(10))
    x = whole.normal((10, 4))
    after = whole.uniform((10, 3))
    parent = ImageStreams.for_images(1, range(10))
    pieces = [parent[a:a + 3].normal((len(range(10)[a:a + 3]), 4)) for a in range(0, 10, 3)]
    assert torch.equal(torch.cat(pieces), x)
    assert torch.equal(parent.uniform((10, 3)), after)


def test_uniform_and_normal_moments() -> None:
    s = ImageStreams.for_images(0, range(64))
    u = s.uniform((64, 4096)).flatten().double()
    assert 0.0 <= float(u.min()) and float(u.max()) < 1.0
    assert float(u.mean()) == pytest.approx(0.5, abs=3e-3)
    assert float(u.var()) == pytest.approx(1 / 12, abs=2e-3)
    counts = torch.histc(u.float(), bins=16, min=0, max=1)
    expected = len(u) / 16
    chi2 = float(((counts - expected) ** 2 / expected).sum())
    assert chi2 < 45.0  # 15 degrees of freedom: p < 1e-4 above this
    z = s.normal((64, 4096)).flatten().double()
    assert float(z.mean()) == pytest.approx(0.0, abs=0.01)
    assert float(z.std()) == pytest.approx(1.0, abs=0.01)
    assert float((z.abs() > 1.96).double().mean()) == pytest.approx(0.05, abs=0.004)
    d = s.uniform((64, 2), dtype=torch.float64)
    assert d.dtype == torch.float64 and float(d.min()) >= 0.0 and float(d.max()) < 1.0
    # consecutive positions and neighbouring images are uncorrelated
    v = s.uniform((64, 4096)) - 0.5
    lag = float((v[:, 1:] * v[:, :-1]).mean() / (v * v).mean())
    across = float((v[1:] * v[:-1]).mean() / (v * v).mean())
    assert abs(lag) < 0.01 and abs(across) < 0.01


def test_mix32_is_a_bijection_on_a_sample() -> None:
    x = torch.arange(1 << 20, dtype=torch.int64)
    y = mix32(x)
    assert int(y.min()) >= 0 and int(y.max()) < 1 << 32
    assert len(torch.unique(y)) == len(x)


@pytest.mark.parametrize("preset", ["cifar10_c", "imagenet_c"])
def test_each_corruption_depends_on_the_image_only(preset: str) -> None:
    x = torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    index = torch.arange(100, 140)
    for name in list_corruptions():
        whole = corrupt(x, name, 3, preset=preset, generator=ImageStreams.for_images(5, index))
        tail = corrupt(x[13:], name, 3, preset=preset, generator=ImageStreams.for_images(5, index[13:]))
        torch.testing.assert_close(tail, whole[13:], rtol=0, atol=1e-6, msg=name)
        assert not torch.equal(whole, corrupt(x, name, 3, preset=preset,
                                                generator=ImageStreams.for_images(6, index))) or name in (
            "defocus_blur", "zoom_blur", "brightness", "contrast", "pixelate", "jpeg_compression",
            "gaussian_blur", "saturate"), f"{name}: the seed changes nothing"


# -- runs ------------------------------------------------------------------------------------------

SUITES = {
    "clean": {},
    "corruption": {"preset": "cifar10_c", "corruptions": ["gaussian_noise", "glass_blur", "fog"], "severities": [5]},
    "adversarial": {"attacks": [{"attack": "pgd-linf", "eps": ["4/255"], "steps": 2}], "checks": False, "block": 8},
    "ood": {"detectors": ["msp", "knn"], "far": {"textures": "ood_textures"}},
    "probes": {"probes": ["patch_drop", "cutout"],
               "params": {"patch_drop": {"fractions": [0.5], "orderings": ["random"]}, "cutout": {"fractions": [0.25]}}},
}


def _cfg(batch_size: int, limit: int = 32, **extra) -> RunConfig:
    suites = [build_suite(name, dict(opts), name) for name, opts in SUITES.items()]
    return RunConfig(models=[ModelConfig(spec="zoo_vit"), ModelConfig(spec="zoo_resnet")], suites=suites,
                     batch_size=batch_size, limit=limit, device="cpu", **extra)


@pytest.fixture(scope="module")
def batch64(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("det") / "b64.sqlite"
    with Store(path) as store:
        execute(_cfg(64), store, show_progress=False)
    return path


def test_batch_size_changes_no_record(batch64: Path, tmp_path: Path) -> None:
    with Store(tmp_path / "b11.sqlite") as store:
        execute(_cfg(11), store, show_progress=False)
    a, b = records(batch64), records(tmp_path / "b11.sqlite")
    assert len(a) > 60 and set(a["suite"]) == set(SUITES)
    pd_equal(a, b)


def pd_equal(a, b) -> None:
    import pandas as pd

    pd.testing.assert_frame_equal(a, b, check_exact=True)


def test_shards_merge_to_the_whole_cell(tmp_path: Path) -> None:
    """The Ray executor's path without Ray: the tasks of a plan run by a worker body in this process,
    shards merged by image index, compared with the cells computed whole."""
    cfg = _cfg(8, limit=20, shard_images=8)
    with Store(tmp_path / "s.sqlite") as store:
        from robustvit.runner import preflight

        preflight(cfg, store)
        units, sizes = [], {}
        for mcfg in ordered_models(cfg):
            model = build_model(mcfg, cfg.seed)
            for si, scfg in enumerate(cfg.suites):
                unit, ctx = plan_unit(cfg, mcfg, scfg, model, store, False,
                                      {"device": torch.device("cpu"), "store": None, "show_progress": False})
                units.append(unit)
                sizes[si] = ctx.num_examples()
    tasks = make_tasks(cfg, units, 2, sizes)
    sharded = [t for t in tasks if t.shard is not None]
    assert {t.shard for t in sharded if cfg.suites[t.suite].name == "corruption"} == {(0, 8), (8, 16), (16, 20)}
    assert {t.shard for t in sharded if cfg.suites[t.suite].name == "adversarial"} == {(0, 8), (8, 16), (16, 20)}
    worker = Worker(cfg, None)
    parts: dict = {}
    for t in sharded:
        for model, result, _ in worker.run(t)[0]:
            parts.setdefault((t.suite, model, result.cell), []).append((t.shard, result))
    assert parts
    for (si, model, cell), pieces in parts.items():
        suite = cfg.suites[si].suite
        merged = suite.merge(cell, [r for _, r in sorted(pieces, key=lambda p: p[0])])
        whole = next(r for _, r, _ in worker.run(Task(si, {model: [cell]}, None, tasks[0].keys))[0] if r.cell == cell)
        assert [(m.metric, m.value, m.n) for m in merged.metrics] == [(m.metric, m.value, m.n) for m in whole.metrics]
        for name, arr in whole.outcomes.arrays.items():
            np.testing.assert_array_equal(merged.outcomes.arrays[name], arr, err_msg=f"{cell} {name}")


def test_shard_boundaries() -> None:
    assert _shards(100, 30, 8) == [(0, 24), (24, 48), (48, 72), (72, 96), (96, 100)]
    assert _shards(10, 4096, 128) == [(0, 10)]
    assert _shards(0, 16, 4) == [(0, 0)]
    assert all(b - a == 128 for a, b in _shards(1024, 100, 128))  # never below the unit
    assert math.lcm(64, 128) == 128
