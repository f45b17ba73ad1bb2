"""Speed and memory of the OOD suite.

1. The whole OOD suite costs at most 1.2x one forward pass over the same images (ODIN excluded).

Per zoo model, one pytest-benchmark run times, in alternating rounds on a fresh feature cache:

* the forward pass: :meth:`SuiteContext.features` over every image the suite touches (the ID
  training split it fits on, the ID test split and the five embedded OOD sets: 3,397 images);
* the whole suite: :meth:`OODSuite.run` over all its cells (11 detectors x 5 sets), which does
  that same forward pass, then fits every detector, scores every set and computes the metrics.

The ratio of the best suite round to the best forward round goes to ``extra_info`` and must be
<= 1.2. Run with ``tox -e bench`` (or ``pytest tests/benchmarks/test_bench_ood.py
-o addopts="" --benchmark-only``). Timed with one intra-op thread, which on a shared CPU is the
fastest and steadiest setting for these tiny models (the ratio is what is compared).

2. Fitting stays within a small multiple of the feature matrix at ImageNet scale: each fitted
detector is fitted, in a fresh process, on synthetic features N x D (float32) of C classes
(default 50,000 x 2,048, 1,000 classes: ``ROBUSTVIT_OOD_MEM="N,D,C"`` overrides), then scores
10,000 rows; the peak resident memory above the level before fitting (``VmHWM``, reset through
``/proc/self/clear_refs``; Linux only) must stay below ``MAX_EXTRA`` times the feature matrix
(plus ``SLACK_MB`` for allocator noise, which dominates only at small overridden sizes). The
figures go to ``extra_info`` (``extra_x`` = extra peak / feature bytes).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from robustvit.context import FeatureCache, SuiteContext
from robustvit.models import load_model
from robustvit.suites.ood import OODSuite

ROUNDS = 5
MAX_RATIO = 1.2


pytestmark = pytest.mark.usefixtures("single_thread")


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


MAX_EXTRA = 2.5
SLACK_MB = 32
_MEMORY_SCRIPT = r"""
import json, os, sys, time
import torch
torch.set_num_threads(1)
from robustvit.ood.stats import LinearHead
from robustvit.registries import DETECTORS

name, with_head, n, d, c = sys.argv[1], sys.argv[2] == "1", *map(int, sys.argv[3:6])


def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1]) * 1024


g = torch.Generator().manual_seed(0)
labels = torch.randint(0, c, (n,), generator=g)
centers = torch.randn(c, d, generator=g)
w, b = torch.randn(c, d, generator=g) / d**0.5, torch.randn(c, generator=g)
feats, logits = torch.empty(n, d), torch.empty(n, c)
for i in range(0, n, 4096):  # built in chunks, so that making them leaves no higher peak
    rows = slice(i, i + 4096)
    feats[rows] = (torch.randn(len(labels[rows]), d, generator=g) + centers[labels[rows]]).relu_()
    logits[rows] = torch.addmm(b, feats[rows], w.T)
del centers
head = LinearHead(w, b) if with_head else None
# a dry run on a few rows first, so that lazily imported code is not counted as fitting memory
DETECTORS.get(name)().fit(feats[:2000], logits[:2000], labels[:2000], head=head).score(feats[:10], logits[:10])
det = DETECTORS.get(name)()
open("/proc/self/clear_refs", "w").write("5")  # reset the peak (VmHWM) to the current RSS
before = status("VmRSS")
start = time.perf_counter()
det.fit(feats, logits, labels, head=head)
fit_s = time.perf_counter() - start
det.score(feats[:10000], logits[:10000])
peak = status("VmHWM")
print(json.dumps({"feature_mb": feats.numel() * 4 / 2**20, "before_mb": before / 2**20, "peak_mb": peak / 2**20,
                  "extra_mb": (peak - before) / 2**20, "extra_x": (peak - before) / (feats.numel() * 4),
                  "fit_s": round(fit_s, 2)}))
"""


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="needs Linux /proc to reset the peak RSS")
@pytest.mark.parametrize(("detector", "with_head"), [("mahalanobis", True), ("rmd", True), ("vim", True),
                                                     ("knn", True), ("react", True), ("react", False), ("ash", True)],
                         ids=["mahalanobis", "rmd", "vim", "knn", "react", "react-head-from-data", "ash"])
def test_bench_ood_fit_memory(benchmark, detector: str, with_head: bool) -> None:
    n, d, c = (int(v) for v in os.environ.get("ROBUSTVIT_OOD_MEM", "50000,2048,1000").split(","))
    root = Path(__file__).resolve().parents[2]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")])}

    def fit_in_fresh_process() -> dict:
        out = subprocess.run([sys.executable, "-c", _MEMORY_SCRIPT, detector, str(int(with_head)), str(n), str(d), str(c)],
                             capture_output=True, text=True, check=True, env=env)
        return json.loads(out.stdout.strip().splitlines()[-1])

    result = benchmark.pedantic(fit_in_fresh_process, rounds=1, iterations=1)
    benchmark.extra_info.update({"n": n, "d": d, "classes": c, **{k: round(v, 3) for k, v in result.items()}})
    allowed = MAX_EXTRA * result["feature_mb"] + SLACK_MB
    assert result["extra_mb"] <= allowed, f"{detector}: fitting needed {result['extra_x']:.2f}x the feature matrix"
