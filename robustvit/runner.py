"""Plan model x suite x cell, skip what the store already has, run the rest, store each cell.

The runner neither prints nor writes files: it reports progress through an ``on_event`` callback
and writes only through :class:`~robustvit.store.Store`, one transaction per finished cell, so
an interrupted run resumes with the missing cells only.
"""

from __future__ import annotations

import hashlib
import json
import platform
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from robustvit.config import ModelConfig, RunConfig
from robustvit.context import FeatureCache, SharedInputs, SuiteContext
from robustvit.data.catalog import open_source, spec_label
from robustvit.errors import UserError
from robustvit.models import ModelWrapper, load_model
from robustvit.results.bootstrap import Resampler, cell_intervals
from robustvit.store import Store

if TYPE_CHECKING:
    import pandas as pd

VERSIONED_PACKAGES = ("robustvit", "torch", "torchvision", "timm", "torchattacks", "foolbox", "scikit-learn",
                      "numpy", "pandas")


@dataclass
class Event:
    """Progress of a run: ``model`` loaded, ``plan`` of a suite, ``cell`` stored, ``aggregate`` stored,
    ``suite`` finished, ``skipped`` unreadable images (when the dataset asks to skip them), ``cluster``
    (the Ray executor's tasks)."""

    kind: str
    model: str
    suite: str = ""
    cell: str = ""
    detail: str = ""
    seconds: float = 0.0


@dataclass
class RunSummary:
    run_id: str | None  # None when everything was already stored
    computed: int = 0
    cached: int = 0
    keys: list[dict] = field(default_factory=list)
    seconds: float = 0.0


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA when present; asking for CUDA without it is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("device 'cuda' asked for, but no CUDA device is available (use --device cpu or auto)")
    return torch.device(name)


def package_versions() -> dict[str, str]:
    versions = {"python": platform.python_version()}
    for pkg in VERSIONED_PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            continue
    return versions


def git_commit() -> str | None:
    """The commit of the robustvit checkout when run from one, else ``None``."""
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=5,
                             cwd=Path(__file__).resolve().parent)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def config_key(suite_kind: str, suite_version: str, options: dict, dataset: str, limit: int | None, seed: int,
               batch_size: int, amp: str | None) -> str:
    """Hash of everything besides the weights that defines a suite's numbers."""
    doc = {"suite": suite_kind, "version": suite_version, "options": options, "dataset": dataset, "limit": limit,
           "seed": seed, "batch_size": batch_size, "amp": amp}
    return hashlib.sha256(json.dumps(doc, sort_keys=True, default=str).encode()).hexdigest()[:16]


def protocol_spec(suite_kind: str, suite_version: str, options: dict, dataset: str, fingerprint: str,
                  limit: int | None, seed: int, shown: tuple[str, ...] = ()) -> dict:
    """What makes two numbers comparable: the suite kind and version, the options that define its numbers,
    the dataset (spec and content fingerprint) and the image subset (limit and seed). Batch size,
    device, workers and autocast are how a run is executed, not what it measures. ``shown``: options
    every label of the protocol names (not part of its identity)."""
    return {"kind": suite_kind, "version": suite_version, "options": options, "dataset": dataset,
            "fingerprint": fingerprint, "limit": limit, "seed": seed, "shown": list(shown)}


def protocol_id(spec: dict) -> str:
    """``<kind>-<10 hex>``: the protocol's identity in records."""
    text = json.dumps({k: v for k, v in spec.items() if k != "shown"}, sort_keys=True, default=str)
    return f"{spec['kind']}-{hashlib.sha256(text.encode()).hexdigest()[:10]}"


def _baseline_records(store: Store, key: dict, model: str) -> pd.DataFrame | None:
    """A baseline model's stored records of this suite: same protocol, else same config, else same dataset."""
    for filters in ({"protocol": key["protocol"]}, {"config_key": key["config_key"]}, {"dataset": key["dataset"]}):
        rows = store.records(model=model, suite=key["suite"], **filters)
        if not rows.empty:
            return rows
    return None


class _CellOutcomes(dict):
    """Outcomes of a model's stored cells of one suite, read from the store on first use (a lookup)."""

    def __init__(self, store: Store, key: dict) -> None:
        super().__init__()
        self.store, self.key = store, key

    def __missing__(self, cell: str):
        self[cell] = self.store.outcomes(self.key, cell)
        return self[cell]

    def get(self, cell: str, default=None):  # type: ignore[override]
        return self[cell] if self[cell] is not None else default


def check_classes(model: ModelWrapper, source, data_label: str) -> None:
    """The dataset's labels must index the model's outputs (or a class subset map onto them)."""
    classes = int(getattr(source, "num_classes", 0) or 0)
    if classes == 0:  # unlabelled data (OOD sets)
        return
    valid = getattr(source, "valid_labels", None)
    outputs = model.num_classes
    if valid is not None:
        if max(valid) < outputs:
            return
        problem = f"its class subset indexes output {max(valid)}"
    elif classes == outputs:
        return
    else:
        problem = f"{classes} classes"
    raise UserError(
        f"model {model.name!r} has {outputs} outputs but dataset {data_label!r} has {problem}: map the dataset onto "
        f"the model's classes (classes = \"imagenet_1k\" or a class-list file for folders named by class, subset = "
        f"\"imagenet_r\" or \"imagenet_a\" for a 200-class subset), or rebuild the head for a checkpoint trained on "
        f"these classes (num_classes = {classes} in [[models]], --num-classes {classes})")


def preflight(cfg: RunConfig, store: Store) -> None:
    """Everything a run names is opened and checked before the first cell: every dataset (class lists
    and folders included) and OOD set, data-dependent suite defaults, baseline models, and each model's
    class space against the data (models are built once here and released)."""
    evaluation = []
    for scfg in cfg.suites:
        data = scfg.data if scfg.data is not None else cfg.data
        source = open_source(data)
        scfg.suite.bind(source)
        evaluation.append((spec_label(data), source))
        for spec, split in scfg.suite.datasets(data):
            open_source(spec, split)
    labels = {m.label for m in cfg.models}
    for scfg in cfg.suites:
        for name in scfg.suite.needs_models():
            if name not in labels and store.records(model=name, suite=scfg.name).empty:
                raise UserError(f"suite {scfg.name!r}: baseline model {name!r} is neither in this run nor stored "
                                f"(add it to [[models]], evaluate it first, or set baseline = \"none\")")
    for mcfg in cfg.models:
        model = build_model(mcfg, cfg.seed)
        for label, source in evaluation:
            check_classes(model, source, label)
        del model


def build_model(m: ModelConfig, seed: int = 0) -> ModelWrapper:
    """The wrapped model of a config; random initialisation (``pretrained = false``) is seeded by the run seed."""
    return load_model(m.spec, checkpoint=m.checkpoint, family=m.family, pretrained=m.pretrained,
                      unsafe_pickle=m.unsafe_pickle, name=m.label, num_classes=m.num_classes,
                      preprocess=m.preprocess, model_kwargs=m.kwargs, seed=seed)


@dataclass
class Unit:
    """One (model, suite) of a run's plan: its record key, the cells to compute and those stored."""

    mcfg: ModelConfig
    scfg: Any
    key: dict
    todo: list[str]
    done: set[str]
    data: Any
    limit: int | None
    batch_size: int
    outcomes: Any = None


class _Writer:
    """The one place results reach the store: intervals from the outcomes, then the cell whole."""

    def __init__(self, cfg: RunConfig, store: Store, device: torch.device, summary: RunSummary) -> None:
        self.cfg, self.store, self.device, self.summary = cfg, store, device, summary
        self.resampler = Resampler()

    def write(self, unit: Unit, result) -> None:
        if result.outcomes:
            unit.outcomes[result.cell] = result.outcomes
        result.with_intervals(cell_intervals([m.metric for m in result.metrics], result.outcomes, self.resampler,
                                             unit.outcomes.get))
        if self.summary.run_id is None:  # the manifest goes with the first cell
            self.summary.run_id = self.store.start_run(self.cfg.as_dict(), package_versions(), str(self.device),
                                                       self.cfg.seed, git_commit())
        self.store.write_cell(self.summary.run_id, unit.key, result)

    def aggregate(self, unit: Unit, emit: Callable[[Event], None]) -> None:
        """The suite's aggregates from the stored cells (after every cell of the unit is stored)."""
        suite = unit.scfg.suite
        baseline = {name: _baseline_records(self.store, unit.key, name) for name in suite.needs_models()}
        for result in suite.aggregate(self.store.cell_records(unit.key), unit.outcomes, baseline):
            if unit.todo or result.cell not in unit.done:
                self.write(unit, result)
                emit(Event("aggregate", unit.key["model"], unit.scfg.name, result.cell))


def plan_unit(cfg: RunConfig, mcfg: ModelConfig, scfg, model: ModelWrapper, store: Store, force: bool,
              ctx_args: dict) -> tuple[Unit, SuiteContext]:
    """The key, context and cells to compute of one model and suite."""
    suite = scfg.suite
    data = scfg.data if scfg.data is not None else cfg.data
    limit = scfg.limit if scfg.limit is not None else cfg.limit
    batch_size = scfg.batch_size or cfg.batch_size
    key = {"model": model.name, "model_sha": model.sha, "family": model.family, "params": model.params,
           "suite": scfg.name, "kind": suite.kind, "suite_version": suite.version, "dataset": spec_label(data),
           "config_key": config_key(suite.kind, suite.version, suite.config(), spec_label(data), limit,
                                    cfg.seed, batch_size, cfg.amp)}
    ctx = SuiteContext(model=model, suite=suite.name, dataset=data, batch_size=batch_size, seed=cfg.seed, limit=limit,
                       amp=cfg.amp, workers=cfg.workers, key=key, **ctx_args)
    key["protocol_spec"] = protocol_spec(suite.kind, suite.version, suite.config(), spec_label(data),
                                         ctx.source().fingerprint, limit, cfg.seed, suite.label_options)
    key["protocol"] = protocol_id(key["protocol_spec"])
    ctx.key = dict(key)
    done = store.done_cells(key)
    cells = suite.cells_for(model)
    todo = list(cells) if force else [c for c in cells if c not in done]
    unit = Unit(mcfg, scfg, key, todo, done, data, limit, batch_size)
    unit.outcomes = _CellOutcomes(store, key)
    return unit, ctx


def ordered_models(cfg: RunConfig) -> list[ModelConfig]:
    """The run's models, those whose results a suite's aggregates read (e.g. a corruption baseline) first."""
    needed = {name for scfg in cfg.suites for name in scfg.suite.needs_models()}
    return sorted(cfg.models, key=lambda m: m.label not in needed)


def execute(cfg: RunConfig, store: Store, *, force: bool = False, on_event: Callable[[Event], None] | None = None,
            feature_cache: FeatureCache | None = None, show_progress: bool = True) -> RunSummary:
    """Run every (model, suite) of ``cfg``; cells already stored are skipped unless ``force``.

    ``cfg.executor`` says where cells are computed: ``local`` (this process) or ``ray`` (a Ray cluster,
    :mod:`robustvit.ray_executor`). Either way this process plans, merges image shards, computes
    intervals and aggregates, and is the only writer of the store.
    """
    emit = on_event or (lambda _e: None)
    device = resolve_device(cfg.device) if cfg.executor == "local" else _driver_device(cfg.device)
    preflight(cfg, store)
    start = time.perf_counter()
    summary = RunSummary(run_id=None)
    writer = _Writer(cfg, store, device, summary)
    if cfg.executor == "ray":
        from robustvit.ray_executor import run_on_ray

        run_on_ray(cfg, store, writer, emit, force=force)
    else:
        _run_local(cfg, store, writer, emit, force=force, feature_cache=feature_cache or FeatureCache(),
                   show_progress=show_progress)
    summary.seconds = time.perf_counter() - start
    return summary


def _driver_device(name: str) -> torch.device:
    """Where the driver of a cluster run builds models to key them: CUDA is the workers' business."""
    return torch.device("cpu") if name in ("auto", "cuda") else torch.device(name)


def _run_local(cfg: RunConfig, store: Store, writer: _Writer, emit: Callable[[Event], None], *, force: bool,
               feature_cache: FeatureCache, show_progress: bool) -> None:
    """Every unit in this process, model by model (a run's later models reuse the first one's corrupted inputs)."""
    summary = writer.summary
    shared = SharedInputs.for_run(len(cfg.models))
    ctx_args = {"device": writer.device, "store": store, "feature_cache": feature_cache, "shared": shared,
                "show_progress": show_progress}
    for mcfg in ordered_models(cfg):
        t0 = time.perf_counter()
        model = build_model(mcfg, cfg.seed)
        emit(Event("model", model.name, detail=f"{model.family}, {model.params:,} params, sha {model.sha}",
                   seconds=time.perf_counter() - t0))
        for scfg in cfg.suites:
            unit, ctx = plan_unit(cfg, mcfg, scfg, model, store, force, ctx_args)
            suite = scfg.suite
            summary.keys.append(unit.key)
            for note in suite.notes_for(model):
                emit(Event("skipped", model.name, suite.name, detail=note))
            cells = len(unit.todo) + len([c for c in suite.cells_for(model) if c not in unit.todo])
            summary.cached += cells - len(unit.todo)
            emit(Event("plan", model.name, suite.name, detail=f"{len(unit.todo)} to compute, "
                                                                f"{cells - len(unit.todo)} stored"))
            t0 = suite_start = time.perf_counter()
            cell_seconds = 0.0
            for result in suite.run(ctx, unit.todo) if unit.todo else ():
                took = time.perf_counter() - t0 if result.seconds is None else result.seconds
                writer.write(unit, result)
                summary.computed += 1
                cell_seconds += took
                emit(Event("cell", model.name, suite.name, result.cell, seconds=took))
                t0 = time.perf_counter()
            if unit.todo:
                total = time.perf_counter() - suite_start
                split = (f" ({cell_seconds:.1f}s in the cells + {total - cell_seconds:.1f}s shared: reading data, "
                         "forward passes, storing)") if total - cell_seconds >= 1.0 else ""
                emit(Event("suite", model.name, suite.name, seconds=total,
                           detail=f"{len(unit.todo)} cell{'s' if len(unit.todo) != 1 else ''} done in {total:.1f}s{split}"))
            if ctx.skipped:
                emit(Event("skipped", model.name, suite.name, detail=f"{ctx.skipped} unreadable images skipped"))
            writer.aggregate(unit, emit)
