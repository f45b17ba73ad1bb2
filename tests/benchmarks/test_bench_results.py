"""Speed and memory of the results layer, and the cost of storing per-image outcomes.

1. Intervals and comparisons at scale: a store of 100 models (50 ViT, 50 CNN) x 300 accuracy cells x
   10,000 images of synthetic per-image outcomes (``ROBUSTVIT_RESULTS_BENCH="models,cells,images"``
   overrides). Timed in a fresh process: (a) the intervals of every cell recomputed from its stored
   outcomes (what the runner does when it writes a cell), (b) :func:`robustvit.results.load_results`
   with every metric path compared (600 paired family comparisons with 1,000 bootstrap resamples,
   error consistency of all 2,500 ViT-CNN pairs over 300 cells). Goal: (a) + (b) under 10 s, and the
   peak resident memory above the level after the imports under 1 GB (``VmHWM`` after resetting it
   through ``/proc/self/clear_refs``; Linux only). The figures go to ``extra_info``.

2. Writing outcomes: the clean and corruption suites (cifar10_c preset, 75 cells, 256 images) on the
   zoo ResNet with outcomes and intervals, against the same run with the outcome blobs and interval
   computation switched off, in alternating rounds. Goal: at most 5% more wall time.

Run with ``tox -e bench`` or ``pytest tests/benchmarks/test_bench_results.py -o addopts="" --benchmark-only -s``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

MAX_SECONDS = 10.0
MAX_EXTRA_MB = 1024.0
MAX_WRITE_OVERHEAD = 1.05


def _shape() -> tuple[int, int, int]:
    text = os.environ.get("ROBUSTVIT_RESULTS_BENCH", "100,300,10000")
    models, cells, images = (int(x) for x in text.split(","))
    return models, cells, images


def build_store(path: Path, models: int, cells: int, images: int, seed: int = 0) -> None:
    """Synthetic records and outcomes: correctness drawn per (model, cell, image) around a per-image
    difficulty shared by all models (so models err on related images, as real ones do)."""
    from robustvit.records import CellResult
    from robustvit.results.bootstrap import Resampler, cell_intervals
    from robustvit.results.outcomes import Outcomes
    from robustvit.store import Store

    rng = np.random.default_rng(seed)
    index = np.arange(images)
    resampler = Resampler()
    with Store(path) as store:
        store._conn.execute("PRAGMA synchronous=OFF")
        run = store.start_run({}, {}, "cpu", 0, None)
        difficulty = rng.random((cells, images))
        for m in range(models):
            family = "vit" if m < models // 2 else "cnn"
            skill = 0.75 + 0.1 * rng.random()
            key = {"model": f"{family}_{m}", "model_sha": f"{m:016x}", "family": family, "params": 1000,
                   "suite": "corruption", "kind": "corruption", "suite_version": "2", "config_key": "k",
                   "dataset": "synthetic", "protocol": "corruption-bench", "protocol_spec": {"kind": "corruption"}}
            correct = difficulty < skill + 0.1 * rng.standard_normal((cells, images)).clip(-2, 2)
            for c in range(cells):
                ok = correct[c]
                acc = float(ok.mean())
                result = CellResult(f"c{c // 5}/{c % 5 + 1}").add("error", 1 - acc, images, False)
                result.add("top1", acc, images, True)
                result.outcomes = Outcomes().add_pool("images", index).add("error", ~ok).add("top1", ok)
                result.with_intervals(cell_intervals(["error", "top1"], result.outcomes, resampler))
                store.write_cell(run, key, result)


MEASURE = textwrap.dedent("""
    import json, sys, time
    from pathlib import Path

    def status(field):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
        return float("nan")

    import numpy, pandas, scipy.stats  # noqa: F401  (imports outside the measurement)
    from robustvit.results import load_results
    from robustvit.results.bootstrap import Resampler, cell_intervals
    from robustvit.results.outcomes import decode
    from robustvit.store import Store

    path = sys.argv[1]
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        pass
    base = status("VmRSS")
    t0 = time.perf_counter()
    resampler = Resampler()
    with Store(path, readonly=True) as store:
        cells = 0
        for _key, _cell, blob in store.outcome_blobs(
                store._conn.execute("SELECT DISTINCT model_sha, suite, suite_version, config_key FROM outcomes")):
            cell_intervals(["error", "top1"], decode(blob), resampler)
            cells += 1
    t1 = time.perf_counter()
    res = load_results(path, compare="all")
    t2 = time.perf_counter()
    print(json.dumps({"cells": cells, "intervals_s": t1 - t0, "compare_s": t2 - t1, "total_s": t2 - t0,
                      "comparisons": len(res.comparisons), "pairs": len(res.consistency),
                      "verdicts": res.comparisons["verdict"].value_counts().to_dict(),
                      "extra_peak_mb": status("VmHWM") - base}))
""")


@pytest.fixture(scope="module")
def big_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("bench") / "big.sqlite"
    t0 = time.perf_counter()
    build_store(path, *_shape())
    print(f"\nsynthetic store {_shape()} built in {time.perf_counter() - t0:.1f}s, "
          f"{path.stat().st_size / 2**20:.0f} MiB")
    return path


def test_intervals_and_comparisons_at_scale(benchmark, big_store: Path) -> None:
    def measure() -> dict:
        out = subprocess.run([sys.executable, "-c", MEASURE, str(big_store)], capture_output=True, text=True,
                             check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    figures = benchmark.pedantic(measure, rounds=1, iterations=1)
    benchmark.extra_info.update(figures)
    print(f"\nresults layer on {_shape()}: {json.dumps(figures)}")
    models, cells, _ = _shape()
    assert figures["cells"] == models * cells
    assert figures["comparisons"] == 2 * cells and figures["pairs"] == (models // 2) * (models - models // 2)
    assert figures["total_s"] < MAX_SECONDS
    if figures["extra_peak_mb"] == figures["extra_peak_mb"]:  # NaN off Linux
        assert figures["extra_peak_mb"] < MAX_EXTRA_MB


def test_writing_outcomes_costs_little(benchmark, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import torch

    from robustvit import runner
    from robustvit.config import ModelConfig, RunConfig, build_suite
    from robustvit.context import FeatureCache
    from robustvit.store import Store

    torch.set_num_threads(1)
    cfg = RunConfig(models=[ModelConfig("zoo_resnet")], limit=256, batch_size=256, device="cpu",
                    suites=[build_suite("clean", {}, "clean"),
                            build_suite("corruption", {"preset": "cifar10_c"}, "corruption")])
    real_write = Store.write_cell
    real_intervals = runner.cell_intervals

    def bare_write(self, run_id, key, result):  # the same records, no outcome blob
        result.outcomes = None
        return real_write(self, run_id, key, result)

    times: dict[str, list[float]] = {"with": [], "without": []}

    def one(mode: str, i: int) -> None:
        if mode == "without":
            monkeypatch.setattr(Store, "write_cell", bare_write)
            monkeypatch.setattr(runner, "cell_intervals", lambda *a, **k: {})
        else:
            monkeypatch.setattr(Store, "write_cell", real_write)
            monkeypatch.setattr(runner, "cell_intervals", real_intervals)
        cache = FeatureCache(disk=False)
        with Store(tmp_path / f"{mode}{i}.sqlite") as store:
            t0 = time.perf_counter()
            runner.execute(cfg, store, show_progress=False, feature_cache=cache)
            times[mode].append(time.perf_counter() - t0)

    def rounds() -> None:
        for i in range(3):
            for mode in (("with", "without") if i % 2 else ("without", "with")):
                one(mode, i)

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratio = min(times["with"]) / min(times["without"])
    benchmark.extra_info.update({"with_s": min(times["with"]), "without_s": min(times["without"]), "ratio": ratio})
    print(f"\nclean + corruption (75 cells x 256 images), zoo_resnet: with outcomes {min(times['with']):.2f}s, "
          f"without {min(times['without']):.2f}s, ratio {ratio:.3f}")
    assert ratio <= MAX_WRITE_OVERHEAD
