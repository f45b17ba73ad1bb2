"""Corruption cost (``tox -e bench`` or
``pytest tests/benchmarks/test_bench_corruptions.py -o addopts="" --benchmark-only -s``).

* Every registered corruption at severity 3 on a batch of 64 images at 224 px (``imagenet_c``
  preset) and at 32 px (``cifar10_c`` preset), on CPU; ms per image goes to ``extra_info``.
* The corruption suite on the zoo models (``cifar10_c`` preset at 32 px, the quickstart's setting):
  its wall time (the benchmarked call) against the bare forward passes over the same images (one
  per cell), measured before each round; the ratio goes to ``extra_info`` and the test fails, saying
  by how much, when it misses the goal of at most ``SUITE_GOAL``.

Side by side with imagecorruptions 1.1.2 itself: ``tests/benchmarks/reference_env.sh``.
Threads: set ``ROBUSTVIT_BENCH_THREADS`` (default: torch's default) to compare like with like.
"""

from __future__ import annotations

import itertools
import os
import time

import pytest
import torch

from robustvit.corruptions import corrupt, list_corruptions

if os.environ.get("ROBUSTVIT_BENCH_THREADS"):
    torch.set_num_threads(int(os.environ["ROBUSTVIT_BENCH_THREADS"]))

BATCH = 64
#: goal for the corruption suite's wall time over the bare forward passes it needs
SUITE_GOAL = 1.3


def _images(size: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    base = torch.rand(BATCH, 3, size // 8, size // 8, generator=g)
    return torch.nn.functional.interpolate(base, size=(size, size), mode="bicubic", align_corners=False).clamp(0, 1)


@pytest.mark.parametrize(("size", "preset"), [(224, "imagenet_c"), (32, "cifar10_c")])
@pytest.mark.parametrize("name", list_corruptions())
def test_bench_corruption(benchmark, name: str, size: int, preset: str) -> None:
    x = _images(size)
    corrupt(x[:2], name, 3, preset=preset, generator=torch.Generator().manual_seed(0))  # warm caches
    g = torch.Generator().manual_seed(0)
    rounds = 1 if (size == 224 and name == "glass_blur") else 3
    benchmark.pedantic(lambda: corrupt(x, name, 3, preset=preset, generator=g), rounds=rounds, iterations=1)
    benchmark.extra_info["ms_per_image"] = benchmark.stats.stats.min * 1000 / BATCH
    benchmark.extra_info["threads"] = torch.get_num_threads()


def test_bench_suite_against_bare_forward(benchmark, tmp_path) -> None:
    from robustvit.config import ModelConfig, RunConfig, build_suite
    from robustvit.context import FeatureCache
    from robustvit.data.catalog import open_source
    from robustvit.models import load_model
    from robustvit.runner import execute
    from robustvit.store import Store

    models = ["zoo_vit", "zoo_resnet"]
    batch = 256
    src = open_source("digits", "test")
    x = torch.stack([src[i][0] for i in range(len(src))])
    suite = build_suite("corruption", {"preset": "cifar10_c"}, "bench").suite
    n_cells = len(suite.cells()) - 1  # "clean" reuses the shared forward pass

    def bare() -> float:
        start = time.perf_counter()
        for spec in models:
            m = load_model(spec).eval()
            with torch.no_grad():
                for _ in range(n_cells):
                    for i in range(0, len(x), batch):
                        m(x[i:i + batch]).argmax(1)
        return time.perf_counter() - start

    def run_suite(k: int) -> float:
        cfg = RunConfig(models=[ModelConfig(s) for s in models], suites=[build_suite("corruption", {"preset": "cifar10_c"},
                        "bench")], batch_size=batch, device="cpu", seed=k)
        start = time.perf_counter()
        with Store(tmp_path / f"bench{k}.sqlite") as store:
            execute(cfg, store, feature_cache=FeatureCache(disk=False), show_progress=False)
        return time.perf_counter() - start

    bare()  # warm up
    times_bare: list[float] = []
    rounds = itertools.count()

    def before_round() -> tuple[tuple[int], dict]:
        times_bare.append(bare())  # interleaved with the suite's rounds, so that load hits both
        return (next(rounds),), {}

    benchmark.pedantic(run_suite, setup=before_round, rounds=2, iterations=1)
    suite_s, bare_s = benchmark.stats.stats.min, min(times_bare)
    ratio = suite_s / bare_s
    benchmark.extra_info.update({"suite_s": suite_s, "bare_forward_s": bare_s, "ratio": ratio, "goal": SUITE_GOAL,
                                 "cells": n_cells, "images": len(x), "threads": torch.get_num_threads()})
    summary = (f"corruption suite on {', '.join(models)} ({n_cells} cells x {len(x)} images, 32 px): {suite_s:.1f} s; "
               f"bare forward passes: {bare_s:.1f} s; ratio {ratio:.2f} (goal <= {SUITE_GOAL})")
    print("\n" + summary)
    assert ratio <= SUITE_GOAL, f"goal missed by {ratio / SUITE_GOAL - 1:.0%}: {summary}"
