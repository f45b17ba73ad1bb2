"""The Ray executor: a run's cells computed by worker processes of a Ray cluster.

The driver (the ``robustvit run`` process) plans as the local executor does: it builds each model
once to key its records, asks the store which cells are missing, and turns them into tasks. A task is
(suite, cells, image shard, models): cells a suite can split (:meth:`Suite.shardable`) are cut into
shards of ``shard_images`` images on boundaries that are multiples of the batch size and of the
suite's :meth:`Suite.shard_unit`, so every batch and attack block is the one a single process would
see; the other cells of a suite are dealt out whole. Each task carries every model that needs its
cells, so a worker corrupts a batch once for all of them.

Workers are Ray actors, one per GPU of the cluster (``num_gpus=1``) or one per CPU (one torch thread
each). A worker builds a model the first time a task names it and keeps it for the rest of the run.
It returns per-image outcomes and never touches the store: the driver merges the shards of a cell by
image index, computes the cell's metrics once (:meth:`Suite.merge`), its intervals, writes the cell
in one transaction and runs the aggregates, exactly as the local executor does. A worker that dies
(its process killed, its node lost) is restarted by Ray and its task run again; as tasks are pure
functions of their inputs, the records equal those of an uninterrupted run and nothing is stored
twice. An interrupted driver resumes from the store like a local run.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from robustvit.config import RunConfig
from robustvit.errors import UserError
from robustvit.runner import Event, Unit, _Writer, build_model, ordered_models, plan_unit, resolve_device
from robustvit.store import Store


@dataclass
class Task:
    """Cells of one suite on one image shard (``None``: all images) for several models."""

    suite: int  # index into cfg.suites
    cells: dict[str, list[str]]  # model label -> its cells to compute
    shard: tuple[int, int] | None = None
    keys: dict[str, dict] = field(default_factory=dict)  # model label -> record key


class Worker:
    """The actor body: models built on first use and kept; each task's cells computed, outcomes returned."""

    def __init__(self, cfg: RunConfig, threads: int | None) -> None:
        import torch

        from robustvit.context import FeatureCache

        if threads:
            torch.set_num_threads(threads)
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.models: dict[str, Any] = {}
        self.cache = FeatureCache()

    def pid(self) -> int:
        return os.getpid()

    def _model(self, label: str) -> Any:
        if label not in self.models:
            mcfg = next(m for m in self.cfg.models if m.label == label)
            self.models[label] = build_model(mcfg, self.cfg.seed)
        return self.models[label]

    def run(self, task: Task) -> tuple[list[tuple[str, Any, float]], float]:
        """``(model label, CellResult, seconds)`` for every cell of the task, and the task's seconds here."""
        from robustvit.context import SharedInputs, SuiteContext

        start = time.perf_counter()

        scfg = self.cfg.suites[task.suite]
        shared = SharedInputs.for_run(len(task.cells))
        data = scfg.data if scfg.data is not None else self.cfg.data
        limit = scfg.limit if scfg.limit is not None else self.cfg.limit
        out = []
        for label, cells in task.cells.items():
            ctx = SuiteContext(model=self._model(label), suite=scfg.name, dataset=data, device=self.device,
                               batch_size=scfg.batch_size or self.cfg.batch_size, seed=self.cfg.seed, limit=limit,
                               amp=self.cfg.amp, workers=self.cfg.workers, key=task.keys[label],
                               feature_cache=self.cache, shared=shared, show_progress=False, shard=task.shard)
            t0 = time.perf_counter()
            for result in scfg.suite.run(ctx, cells):
                took = time.perf_counter() - t0 if result.seconds is None else result.seconds
                out.append((label, result, took))
                t0 = time.perf_counter()
        return out, time.perf_counter() - start


def _ray():
    try:
        import ray
    except ImportError:
        raise UserError("executor 'ray' needs Ray: pip install 'robustvit[ray]'") from None
    return ray


def _connect(ray: Any, address: str | None) -> bool:
    """Join ``address`` (or start a local cluster when None); True when this call started Ray."""
    if ray.is_initialized():
        return False
    import logging

    env = {"env_vars": {"OMP_NUM_THREADS": "1"}}
    try:
        if address:
            ray.init(address=address, logging_level=logging.WARNING, runtime_env=env)
        else:
            ray.init(include_dashboard=False, logging_level=logging.WARNING, runtime_env=env)
    except ConnectionError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {str(exc).splitlines()[0]}") from None
    return True


def _probe(address: str | None) -> None:
    """A ``host:port`` cluster address must accept connections (Ray itself retries for minutes)."""
    import socket

    if not address or "://" in address or ":" not in address:
        return
    host, _, port = address.rpartition(":")
    try:
        with socket.create_connection((host, int(port)), timeout=10):
            return
    except ValueError:
        raise UserError(f"Ray address {address!r} must be host:port, auto or ray://host:port") from None
    except OSError as exc:
        raise UserError(f"cannot reach the Ray cluster at {address!r}: {exc.strerror or exc}") from None


def _workers(ray: Any, wanted: int | None) -> tuple[int, dict]:
    """Number of worker actors and the resources of each: a GPU each where the cluster has GPUs."""
    res = ray.cluster_resources()
    gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 1))
    if gpus:
        return (wanted or gpus), {"num_gpus": 1, "num_cpus": max(1, cpus // max(gpus, 1) // 2)}
    return (wanted or max(1, cpus)), {"num_cpus": 1}


def _shards(n: int, size: int, unit: int) -> list[tuple[int, int]]:
    """Consecutive ``[start, stop)`` ranges of about ``size`` images, boundaries on multiples of ``unit``."""
    step = max(unit, (size // unit) * unit)
    return [(a, min(a + step, n)) for a in range(0, n, step)] or [(0, 0)]


def make_tasks(cfg: RunConfig, units: list[Unit], workers: int, sizes: dict[int, int]) -> list[Task]:
    """The tasks of a plan: per suite, shardable cells cut by image shards (all models in each task),
    the other cells dealt into about ``2 * workers`` groups; ``sizes``: suite index -> its image count."""
    tasks: list[Task] = []
    for si, scfg in enumerate(cfg.suites):
        mine = [u for u in units if u.scfg is scfg and u.todo]
        if not mine:
            continue
        suite = scfg.suite
        keys = {u.key["model"]: u.key for u in mine}
        order = list(dict.fromkeys(c for u in mine for c in u.todo))
        split = [c for c in order if suite.shardable(c)]
        whole = [c for c in order if not suite.shardable(c)]
        batch = scfg.batch_size or cfg.batch_size
        unit = math.lcm(batch, suite.shard_unit())
        shards = _shards(sizes[si], cfg.shard_images, unit) if split else []
        groups = max(1, min(len(split), math.ceil(2 * workers / max(len(shards), 1)))) if split else 0
        for shard in shards:
            for g in range(groups):
                cells = split[g::groups]
                tasks.append(Task(si, {u.key["model"]: [c for c in cells if c in u.todo] for u in mine}, shard, keys))
        if whole:
            groups = max(1, min(len(whole), 2 * workers))
            for g in range(groups):
                cells = whole[g::groups]
                tasks.append(Task(si, {u.key["model"]: [c for c in cells if c in u.todo] for u in mine}, None, keys))
    for t in tasks:
        t.cells = {m: c for m, c in t.cells.items() if c}
    return [t for t in tasks if t.cells]


def _unwrap(exc: BaseException) -> BaseException:
    """The user-facing error inside a Ray task failure (a UserError raised in a worker stays one)."""
    cause = getattr(exc, "cause", None)
    if isinstance(cause, UserError):
        return UserError(str(cause))
    text = str(exc)
    if "UserError:" in text:
        return UserError(text.rsplit("UserError:", 1)[1].strip().splitlines()[0])
    return exc


def run_on_ray(cfg: RunConfig, store: Store, writer: _Writer, emit: Callable[[Event], None], *, force: bool) -> None:
    """Plan on the driver, compute on the cluster, merge and write here (see the module docstring)."""
    ray = _ray()
    _probe(cfg.ray_address)  # before any planning: a wrong address fails at once
    summary = writer.summary
    units: list[Unit] = []
    sizes: dict[int, int] = {}
    ctx_args = {"device": writer.device, "store": None, "show_progress": False}
    for mcfg in ordered_models(cfg):  # keys and cells to compute: each model built once here, then released
        t0 = time.perf_counter()
        model = build_model(mcfg, cfg.seed)
        emit(Event("model", model.name, detail=f"{model.family}, {model.params:,} params, sha {model.sha}",
                   seconds=time.perf_counter() - t0))
        for si, scfg in enumerate(cfg.suites):
            unit, ctx = plan_unit(cfg, mcfg, scfg, model, store, force, ctx_args)
            sizes[si] = ctx.num_examples()
            units.append(unit)
            summary.keys.append(unit.key)
            cells = scfg.suite.cells_for(model)
            for note in scfg.suite.notes_for(model):
                emit(Event("skipped", model.name, scfg.name, detail=note))
            summary.cached += len(cells) - len(unit.todo)
            emit(Event("plan", model.name, scfg.name,
                       detail=f"{len(unit.todo)} to compute, {len(cells) - len(unit.todo)} stored"))
        del model
    if any(u.todo for u in units):
        started = _connect(ray, cfg.ray_address)
        try:
            _compute(ray, cfg, units, sizes, writer, emit)
        finally:
            if started:
                ray.shutdown()
    for unit in units:  # baselines first (the order of the plan), every cell stored by now
        writer.aggregate(unit, emit)


def _compute(ray: Any, cfg: RunConfig, units: list[Unit], sizes: dict[int, int], writer: _Writer,
             emit: Callable[[Event], None]) -> None:
    count, resources = _workers(ray, cfg.ray_workers)
    tasks = make_tasks(cfg, units, count, sizes)
    count = min(count, len(tasks))
    actor = ray.remote(max_restarts=-1, max_task_retries=-1, **resources)(Worker)
    threads = None if "num_gpus" in resources else 1
    t0 = time.perf_counter()
    pool = [actor.remote(cfg, threads) for _ in range(count)]
    try:
        ray.get([w.pid.remote() for w in pool])  # every worker up (its interpreter, torch and robustvit loaded)
    except Exception as exc:  # noqa: BLE001 - e.g. robustvit missing on a node
        raise _unwrap(exc) from None
    emit(Event("cluster", "", seconds=time.perf_counter() - t0,
               detail=f"{count} workers started in {time.perf_counter() - t0:.1f}s"))
    by_key = {(u.scfg.name, u.key["model"]): u for u in units}
    # shards expected per (suite, model, cell), and the parts received so far
    expected: dict[tuple[str, str, str], int] = {}
    for t in tasks:
        for model, cells in t.cells.items():
            for cell in cells:
                if t.shard is not None:
                    k = (cfg.suites[t.suite].name, model, cell)
                    expected[k] = expected.get(k, 0) + 1
    parts: dict[tuple[str, str, str], list[tuple[tuple[int, int], Any]]] = {}
    queue = list(range(len(tasks)))
    running: dict[Any, tuple[int, Any]] = {}
    idle = list(pool)
    emit(Event("cluster", "", detail=f"{len(tasks)} tasks on {count} workers"))
    finished, cells, overhead = 0, 0, 0.0
    submitted: dict[int, float] = {}
    try:
        while queue or running:
            while queue and idle:
                i, w = queue.pop(0), idle.pop()
                running[w.run.remote(tasks[i])] = (i, w)
                submitted[i] = time.perf_counter()
            ready, _ = ray.wait(list(running), num_returns=1)
            i, w = running.pop(ready[0])
            idle.append(w)
            task = tasks[i]
            scfg = cfg.suites[task.suite]
            try:
                results, worked = ray.get(ready[0])
            except Exception as exc:  # noqa: BLE001 - a task's own error, re-raised as the user should see it
                raise _unwrap(exc) from None
            overhead += max(0.0, time.perf_counter() - submitted[i] - worked)
            cells += len(results)
            finished += 1
            shard = f", images {task.shard[0]}-{task.shard[1]}" if task.shard else ""
            emit(Event("cluster", "", scfg.name, detail=f"task {finished}/{len(tasks)} done ({scfg.name}, "
                                                        f"{len(results)} cell results{shard})"))
            for model, result, took in results:
                unit = by_key[(scfg.name, model)]
                if task.shard is None:
                    _store(writer, unit, result, took, emit)
                    continue
                k = (scfg.name, model, result.cell)
                parts.setdefault(k, []).append((task.shard, result))
                if len(parts[k]) == expected[k]:
                    pieces = [r for _, r in sorted(parts.pop(k), key=lambda p: p[0])]
                    merged = scfg.suite.merge(result.cell, pieces)
                    _store(writer, unit, merged, merged.seconds or 0.0, emit)
    finally:
        for w in pool:
            ray.kill(w)
    # a retried task counts its lost attempt as overhead: the figure is what the cluster costs per cell
    emit(Event("cluster", "", seconds=overhead / max(cells, 1),
               detail=f"{cells} cell results from {len(tasks)} tasks; overhead {1000 * overhead / max(cells, 1):.1f} ms "
                      f"per cell (a task's round trip minus its time in the worker)"))


def _store(writer: _Writer, unit: Unit, result: Any, took: float, emit: Callable[[Event], None]) -> None:
    writer.write(unit, result)
    writer.summary.computed += 1
    emit(Event("cell", unit.key["model"], unit.scfg.name, result.cell, seconds=took))
