"""Each probe costs at most 1.2x the forward (and backward) passes it needs.

Per probe and zoo model, one pytest-benchmark run, in alternating rounds on one thread:

* the probe through :meth:`ProbesSuite.run` (with its quickstart-size settings), with the model wrapped
  by a counter of the images it forwards in each batch shape and of the backward passes through it;
* the bare passes: the same number of forward passes of random images in the same batch shapes (and
  the same backward passes), through the same model.

The ratio of the best probe round to the best bare round goes to ``extra_info`` and must be <= 1.2.
Run with ``tox -e bench`` or ``pytest tests/benchmarks/test_bench_probes.py -o addopts="" --benchmark-only -s``.
The attack inside ``spectrum`` (DeepFool, foolbox) is measured the same way: its own forward and
backward passes are what it needs.
"""

from __future__ import annotations

import time
from collections import Counter

import pytest
import torch

from robustvit.context import FeatureCache, SuiteContext
from robustvit.models import load_model
from robustvit.suites.probes import ProbesSuite

ROUNDS = 3
MAX_RATIO = 1.2
SETTINGS = {
    "patch_drop": {"fractions": [0.0, 0.25, 0.5, 0.75]},
    "patch_shuffle": {},
    "cutout": {},
    "fourier": {"images": 32},
    "attention": {"samples": 2},
    "interaction": {"images": 8},
    "spectrum": {"images": 16, "steps": 20},
}


class Counting(torch.nn.Module):
    """The wrapped model, counting forward batch shapes and backward passes (gradients to the input)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.shapes: Counter = Counter()
        self.backward = Counter()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.shapes[tuple(x.shape)] += 1
        if x.requires_grad:
            self.backward[tuple(x.shape)] += 1
        return self.inner(x)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self.inner, name)


def _bare(model: torch.nn.Module, shapes: Counter, backward: Counter) -> float:
    gen = torch.Generator().manual_seed(0)
    t0 = time.perf_counter()
    for shape, count in shapes.items():
        x = torch.rand(shape, generator=gen)
        grads = backward.get(shape, 0)
        for k in range(count):
            if k < grads:
                xg = x.clone().requires_grad_(True)
                model(xg).sum().backward()
            else:
                with torch.no_grad():
                    model(x)
    return time.perf_counter() - t0


pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.mark.parametrize("model_name", ["zoo_vit", "zoo_resnet"])
@pytest.mark.parametrize("probe", list(SETTINGS))
def test_probe_against_its_passes(benchmark, probe: str, model_name: str) -> None:
    wrapper = load_model(model_name)
    suite = ProbesSuite(probes=[probe], params={probe: SETTINGS[probe]})
    if suite.probes[0].skip_reason(wrapper) is not None:
        pytest.skip(f"{probe} does not apply to {model_name}")
    times: dict[str, list[float]] = {"probe": [], "bare": []}
    counted: dict[str, Counter] = {}

    def probe_round() -> None:
        ctx = SuiteContext(model=wrapper, suite="probes", dataset="digits", device=torch.device("cpu"),
                           batch_size=256, seed=0, limit=256, feature_cache=FeatureCache(disk=False),
                           show_progress=False)
        inner = ctx.model.model
        counter = Counting(inner)
        ctx.model.model = counter
        try:
            t0 = time.perf_counter()
            for _ in suite.run(ctx, suite.cells_for(ctx.model)):
                pass
            times["probe"].append(time.perf_counter() - t0)
        finally:
            ctx.model.model = inner
        counted["shapes"], counted["backward"] = counter.shapes, counter.backward

    def rounds() -> None:
        for _ in range(ROUNDS):
            probe_round()
            times["bare"].append(_bare(wrapper.eval(), counted["shapes"], counted["backward"]))

    benchmark.pedantic(rounds, rounds=1, iterations=1)
    ratio = min(times["probe"]) / min(times["bare"])
    images = sum(shape[0] * n for shape, n in counted["shapes"].items())
    benchmark.extra_info.update({"probe_s": min(times["probe"]), "bare_s": min(times["bare"]), "ratio": ratio,
                                 "images_forwarded": images, "backward_batches": sum(counted["backward"].values())})
    print(f"\n{probe} on {model_name}: {min(times['probe']):.2f}s vs bare passes {min(times['bare']):.2f}s "
          f"({images} images forwarded): {ratio:.2f}x (goal <= {MAX_RATIO})")
    assert ratio <= MAX_RATIO, f"{probe} on {model_name} costs {ratio:.2f}x its forward/backward passes"
