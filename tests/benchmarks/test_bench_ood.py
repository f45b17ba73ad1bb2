"""The whole OOD suite costs at most 1.2x one forward pass over the same images (ODIN excluded).

Per zoo model, one pytest-benchmark run times, in alternating rounds on a fresh feature cache:

* the forward pass: :meth:`SuiteContext.features` over every image the suite touches (the ID
  training split it fits on, the ID test split and the five embedded OOD sets: 3,397 images);
* the whole suite: :meth:`OODSuite.run` over all its cells (11 detectors x 5 sets), which does
  that same forward pass, then fits every detector, scores every set and computes the metrics.

The ratio of the best suite round to the best forward round goes to ``extra_info`` and must be
<= 1.2. Run with ``tox -e bench`` (or ``pytest tests/benchmarks/test_bench_ood.py
-o addopts="" --benchmark-only``). Timed with one intra-op thread, which on a shared CPU is the
fastest and steadiest setting for these tiny models (the ratio is what is compared).
"""

from __future__ import annotations

import time

import pytest
import torch

from robustvit.context import FeatureCache, SuiteContext
from robustvit.models import load_model
from robustvit.suites.ood import OODSuite

ROUNDS = 5
MAX_RATIO = 1.2


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("model_name", ["zoo_resnet", "zoo_vit"])
def test_bench_ood_suite_vs_forward(benchmark, model_name: str) -> None:
    model = load_model(model_name)
    suite = OODSuite()  # defaults: every detector but ODIN, the embedded near/far/sanity sets
    specs = [("digits", "train"), ("digits", "test")] + [(s, "test") for g in suite.sets.values() for s in g.values()]

    def context() -> SuiteContext:
        return SuiteContext(model=model, suite="ood", dataset="digits", device=torch.device("cpu"), batch_size=256,
                            feature_cache=FeatureCache(disk=False), show_progress=False)

    forward_times: list[float] = []
    suite_times: list[float] = []

    def forward_only() -> None:
        ctx = context()
        start = time.perf_counter()
        for spec, split in specs:
            ctx.features(spec, split=split)
        forward_times.append(time.perf_counter() - start)

    def whole_suite() -> int:
        ctx = context()
        start = time.perf_counter()
        cells = list(suite.run(ctx, suite.cells()))
        suite_times.append(time.perf_counter() - start)
        return len(cells)

    forward_only(), whole_suite()  # warm-up: imports, embedded sets built once per process
    forward_times.clear(), suite_times.clear()
    n_cells = benchmark.pedantic(whole_suite, setup=forward_only, rounds=ROUNDS, iterations=1)
    assert n_cells == len(suite.cells()) == 55

    n_images = sum(len(context().source(spec, split)) for spec, split in specs)
    ratio = min(suite_times) / min(forward_times)
    benchmark.extra_info.update({
        "images": n_images, "forward_s": round(min(forward_times), 4), "suite_s": round(min(suite_times), 4),
        "ratio": round(ratio, 4),
    })
    assert ratio <= MAX_RATIO, f"{model_name}: OOD suite {min(suite_times):.2f}s vs forward {min(forward_times):.2f}s"
