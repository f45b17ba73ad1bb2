"""Attack cost, measured side by side in one run (``tox -e bench`` or
``pytest tests/benchmarks/test_bench_attacks.py -o addopts="" --benchmark-only -s``).

* PGD-k: robustvit's whole per-batch cell work (clean forward, attack, re-prediction) against k bare
  forward+backward passes of the same model and batch (``loss.backward()`` as in a training step),
  with torchattacks' and foolbox's PGD timed in the same interleaved rounds. A stricter baseline
  (input gradient only, ``torch.autograd.grad`` with frozen weights) is reported too.
* AutoAttack standard: robustvit's cascade against torchattacks' ``AutoAttack`` on the same model
  and points. torchattacks' version ships 10 iterations and ``resc_schedule=True``; it is also run
  configured to the original's settings (100 iterations, 9 target classes, ``resc_schedule=False``),
  where both must reach the same robust accuracy.

Ratios are printed and stored in the benchmark's ``extra_info``.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable

import foolbox as fb
import pytest
import torch
import torchattacks
from torch import nn

from robustvit.attacks.base import frozen
from robustvit.attacks.engine import attack_batch
from robustvit.data.catalog import digits
from robustvit.models import load_model
from robustvit.registries import ATTACKS

DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")
K, EPS, BATCH, ROUNDS = 10, 8 / 255, 64, 7
AA_POINTS = 8  # at 8/255 three of them survive all four attacks, so every member (and Square's 5000 queries) runs


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    before = torch.get_num_threads()
    if DEVICE.type == "cpu":
        torch.set_num_threads(1)  # stable timings on a small, shared CPU
    yield
    torch.set_num_threads(before)


def _sync() -> None:
    if DEVICE.type == "cuda":
        torch.cuda.synchronize()


def _data(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    source = digits("test")
    return source.images[:n].to(DEVICE), source.labels[:n].to(DEVICE)


# CPU: the process's CPU time (one thread), which other processes on a shared machine barely disturb;
# CUDA: wall time with synchronisation.
TIMER = time.perf_counter if DEVICE.type == "cuda" else time.process_time


def _interleaved(fns: dict[str, Callable[[], object]], rounds: int,
                 warmups: dict[str, Callable[[], object]] | None = None) -> dict[str, float]:
    """Median seconds of each function, timed in interleaved rounds whose order alternates (shared
    drift and the order hit all alike), after a warm-up call of each (``warmups``: cheaper stand-ins)."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for fn in (warmups or fns).values():
        fn()
    names = list(fns)
    for r in range(rounds):
        for name in names if r % 2 == 0 else names[::-1]:
            _sync()
            t0 = TIMER()
            fns[name]()
            _sync()
            times[name].append(TIMER() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


@pytest.mark.parametrize("name", ["zoo_resnet", "zoo_vit"])
def test_pgd_cost_vs_bare_passes(benchmark, name: str) -> None:
    model = load_model(name).to(DEVICE).eval()
    x, y = _data(BATCH)
    loss_fn = nn.CrossEntropyLoss()
    alpha = EPS / 4

    def bare() -> None:  # k forward+backward passes, as in a training step
        for _ in range(K):
            xx = x.clone().requires_grad_(True)
            loss_fn(model(xx), y).backward()
        model.zero_grad(set_to_none=True)

    def bare_input_grad() -> None:  # k passes computing the input gradient only
        with frozen(model):
            for _ in range(K):
                xx = x.clone().requires_grad_(True)
                torch.autograd.grad(loss_fn(model(xx), y), xx)

    pgd = ATTACKS.get("pgd-linf")(steps=K)
    ta = torchattacks.PGD(model, eps=EPS, alpha=alpha, steps=K, random_start=True)
    fmodel = fb.PyTorchModel(model, bounds=(0, 1), device=DEVICE)
    fpgd = fb.attacks.LinfPGD(steps=K, abs_stepsize=alpha, random_start=True)

    fns = {
        "bare": bare,
        "bare_input_grad": bare_input_grad,
        "robustvit": lambda: attack_batch(pgd, model, x, y, [EPS], seed=0),
        "torchattacks": lambda: ta(x, y),
        "foolbox": lambda: fpgd(fmodel, x, y, epsilons=EPS),
    }
    medians = _interleaved(fns, ROUNDS)
    ratios = {k: medians[k] / medians["bare"] for k in ("robustvit", "torchattacks", "foolbox", "bare_input_grad")}
    strict = medians["robustvit"] / medians["bare_input_grad"]
    benchmark.extra_info.update({f"ratio_{k}": round(v, 3) for k, v in ratios.items()})
    benchmark.extra_info["ratio_robustvit_vs_input_grad"] = round(strict, 3)
    print(f"\n[{name}] PGD-{K}, batch {BATCH}, {DEVICE}: cost / {K} bare fwd+bwd: "
          + ", ".join(f"{k} {v:.3f}x" for k, v in ratios.items()) + f"; robustvit / input-grad-only {strict:.3f}x")
    benchmark.pedantic(fns["robustvit"], rounds=3, iterations=1)
    assert ratios["robustvit"] <= 1.05


def test_autoattack_standard_vs_torchattacks(benchmark) -> None:
    model = load_model("zoo_resnet").to(DEVICE).eval()
    x, y = _data(AA_POINTS)
    seed = 0
    ours = ATTACKS.get("autoattack")()

    def theirs(original_settings: bool, steps: int = 100, n_queries: int = 5000) -> torchattacks.AutoAttack:
        atk = torchattacks.AutoAttack(model, norm="Linf", eps=EPS, version="standard", n_classes=10, seed=seed)
        if original_settings:
            for member in atk._autoattack.attacks:
                if hasattr(member, "steps"):
                    member.steps = steps
                if hasattr(member, "n_target_classes"):
                    member.n_target_classes = 9
                if hasattr(member, "rescale_schedule"):
                    member.rescale_schedule = False
                    member.n_queries = n_queries
        return atk

    def robust_of(adv: torch.Tensor) -> int:
        with torch.no_grad():
            return int((model(adv).argmax(1) == y).sum())

    results: dict[str, int] = {}

    def run_ours() -> None:
        results["robustvit"] = attack_batch(ours, model, x, y, [EPS], seed).robust[0]

    def run_theirs_original() -> None:
        torch.manual_seed(seed)
        results["torchattacks_original"] = robust_of(theirs(True)(x, y))

    def run_theirs_shipped() -> None:
        torch.manual_seed(seed)
        results["torchattacks_shipped"] = robust_of(theirs(False)(x, y))

    warmups = {"robustvit": lambda: attack_batch(ATTACKS.get("autoattack")(steps=2, n_queries=5), model, x, y, [EPS], 1),
               "torchattacks": lambda: theirs(True, steps=2, n_queries=5)(x, y)}
    medians = _interleaved({"robustvit": run_ours, "torchattacks_original": run_theirs_original}, rounds=2,
                           warmups=warmups)
    medians.update(_interleaved({"torchattacks_shipped": run_theirs_shipped}, rounds=1, warmups={}))
    ratio = medians["robustvit"] / medians["torchattacks_original"]
    benchmark.extra_info.update({"ratio_vs_torchattacks_original": round(ratio, 3),
                                 "ratio_vs_torchattacks_shipped": round(medians["robustvit"] / medians["torchattacks_shipped"], 3),
                                 **{f"robust_{k}": v for k, v in results.items()}})
    print(f"\n[zoo_resnet] AutoAttack standard, {AA_POINTS} points, eps 8/255, {DEVICE}: seconds "
          + ", ".join(f"{k} {v:.2f}" for k, v in medians.items())
          + f"; robust points {results}; robustvit / torchattacks (original settings) {ratio:.3f}x")
    benchmark.pedantic(run_ours, rounds=1, iterations=1)
    assert results["robustvit"] == results["torchattacks_original"]
    assert ratio <= 1.05
