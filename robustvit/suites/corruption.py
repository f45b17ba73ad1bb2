"""The corruption suite: ImageNet-C style common corruptions, CE, mCE and relative mCE.

Cells (per-cell metrics ``error`` = top-1 error, lower is better, and ``top1``):

* ``clean``: the evaluation dataset as it is, from the shared forward pass (the clean error that
  relative CE needs, and a baseline model's clean error when it serves as baseline);
* ``<corruption>/<severity>``, e.g. ``gaussian_noise/3``.

Aggregates (:meth:`CorruptionSuite.aggregate`, a function of the stored cells):

* ``<corruption>`` (``corruption/gaussian_noise/ce``): ``error`` (mean over the severities), ``ce``
  and ``relative_ce`` (when there is a baseline with errors for that corruption);
* ``""`` (``corruption/mce``): ``mean_error`` (unnormalised mean over the benchmark corruptions in
  the suite, or over all of them if it has none), and ``mce`` / ``relative_mce`` over the 15 benchmark
  corruptions, written only when the suite has all 15 (a partial mCE would not compare).

Options:

* ``preset``: ``imagenet_c`` (imagecorruptions 1.1.2, default) or ``cifar10_c`` (CIFAR-10-C generator).
* ``corruptions``: ``benchmark`` (the 15, default), ``all`` (19), ``extra``, a family, or a list of names.
* ``severities``: list of 1-5 (default all five).
* ``source``: ``generate`` (corrupt the evaluation images on the fly, on the model's device),
  ``imagenet_c_disk`` or ``cifar10_c_disk`` (the released files under ``root``; the evaluation
  dataset is then the clean counterpart, e.g. the ImageNet validation folder).
* ``root``: folder of the released files (disk sources).
* ``classes``: class list of ImageNet-C folders (default: ``imagenet_1k`` for 1000-class models,
  else the sorted folder names).
* ``baseline``: ``auto`` (AlexNet for ImageNet-C, none for CIFAR-10-C), ``alexnet``, ``none``, or the
  name of a stored model evaluated with the same suite options, whose errors normalise CE (when it
  is one of the run's models, the runner evaluates it first).
* ``frost_dir``: folder of the frost textures (default: the installed ``imagecorruptions`` data files).

In ``generate`` mode the clean images are read once and every requested cell is computed on each
batch; the images of batch ``b`` for cell ``(c, s)`` come from ``ctx.generator(c, s, b)``, so an
interrupted run resumes (from its saved progress) with the same numbers. With several models in a
run on the CPU, each corrupted batch is made once and reused by the other models that read the
same batches (:class:`robustvit.context.SharedInputs`, within ``$ROBUSTVIT_SHARE_MB``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.data.catalog import spec_label
from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext

SOURCES = ("generate", "imagenet_c_disk", "cifar10_c_disk")
CLEAN = "clean"
_SAVE_EVERY_S = 1.0  # progress of the generate mode is saved after a batch at most this often


class CorruptionSuite(Suite):
    """Top-1 error under each (corruption, severity), CE / mCE / relative mCE against a baseline."""

    kind: ClassVar[str] = "corruption"
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, Any]] = {
        "preset": "imagenet_c", "corruptions": "benchmark", "severities": [1, 2, 3, 4, 5], "source": "generate",
        "root": None, "classes": None, "baseline": "auto", "frost_dir": None,
    }

    def validate(self) -> None:
        from robustvit.corruptions import BENCHMARK, list_corruptions
        from robustvit.corruptions.presets import PRESETS
        from robustvit.registries import CORRUPTIONS

        o = self.opts
        if o["preset"] not in PRESETS:
            raise UserError(f"suite {self.name!r}: unknown preset {o['preset']!r} (allowed: {', '.join(PRESETS)})")
        spec = o["corruptions"]
        if isinstance(spec, str):
            names = list_corruptions(spec) if spec in ("all", "benchmark", "extra", "noise", "blur", "weather",
                                                        "digital") else [CORRUPTIONS.canonical(spec)]
        elif isinstance(spec, (list, tuple)) and spec and all(isinstance(n, str) for n in spec):
            names = [CORRUPTIONS.canonical(n) for n in spec]
        else:
            raise UserError(f"suite {self.name!r}: corruptions must be 'benchmark', 'all', 'extra', a family or a "
                            f"list of names, got {spec!r}")
        self.corruptions: list[str] = list(dict.fromkeys(names))
        sev = o["severities"]
        if isinstance(sev, int) and not isinstance(sev, bool):
            sev = [sev]
        if not isinstance(sev, (list, tuple)) or not sev or any(
                isinstance(s, bool) or not isinstance(s, int) or not 1 <= s <= 5 for s in sev):
            raise UserError(f"suite {self.name!r}: severities must be a list of integers 1-5, got {o['severities']!r}")
        self.severities: list[int] = sorted(set(sev))
        if o["source"] not in SOURCES:
            raise UserError(f"suite {self.name!r}: unknown source {o['source']!r} (allowed: {', '.join(SOURCES)})")
        if o["source"] != "generate":
            if not o["root"] or not isinstance(o["root"], str):
                raise UserError(f"suite {self.name!r}: source {o['source']!r} needs root = <folder of the released files>")
        elif "frost" in self.corruptions:
            from robustvit.corruptions.textures import frost_dir

            frost_dir(o["frost_dir"])  # a missing texture folder is reported before any work
        base = o["baseline"]
        if not isinstance(base, str) or not base:
            raise UserError(f"suite {self.name!r}: baseline must be 'auto', 'alexnet', 'none' or a model name")
        if base == "auto":
            imagenet = o["source"] == "imagenet_c_disk" or (o["source"] == "generate" and o["preset"] == "imagenet_c")
            base = "alexnet" if imagenet else "none"
        self.baseline: str = base
        self.benchmark_complete = all(c in self.corruptions for c in BENCHMARK)

    def config(self) -> dict[str, Any]:
        """The options that define the numbers: where the frost textures are read from does not."""
        return {k: v for k, v in self.opts.items() if k != "frost_dir"}

    def needs_models(self) -> list[str]:
        return [] if self.baseline in ("alexnet", "none") else [self.baseline]

    def cells(self) -> list[str]:
        return [CLEAN] + [f"{c}/{s}" for c in self.corruptions for s in self.severities]

    # -- running -------------------------------------------------------------------------------------
    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        if CLEAN in cells:
            fs = ctx.features()
            acc = (fs.logits.argmax(1) == fs.labels).float().mean().item() if len(fs.labels) else math.nan
            yield _cell(CLEAN, acc, len(fs.labels))
        todo = [c for c in cells if c != CLEAN]
        if not todo:
            return
        root = self.opts["root"]
        if self.opts["source"] != "generate" and not Path(str(root)).expanduser().is_dir():
            raise UserError(f"suite {self.name!r}: root folder {str(root)!r} does not exist")
        if self.opts["source"] == "generate":
            yield from self._run_generate(ctx, todo)
        else:
            yield from self._run_disk(ctx, todo)

    def _predict_correct(self, ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad(), ctx.autocast():
            logits = ctx.model(x)
        return (logits.argmax(1) == y).sum()

    def _run_generate(self, ctx: SuiteContext, todo: list[str]) -> Iterator[CellResult]:
        from robustvit.corruptions import corrupt

        pairs = [(cell, *_parse(cell)) for cell in todo]
        correct = torch.zeros(len(pairs), dtype=torch.long, device=ctx.device)
        n, start = 0, 0
        saved = ctx.partial_get(todo[0])
        if saved:
            state = json.loads(saved.decode())
            if state.get("todo") == todo:
                start, n = int(state["batches"]), int(state["n"])
                correct += torch.tensor(state["correct"], dtype=torch.long, device=ctx.device)
        last_save = time.monotonic()
        preset = self.opts["preset"]
        total = ctx.num_examples()
        # what a batch's pixels depend on besides the corruption (checked by checksum on reuse too)
        data = json.dumps([self.name, self.opts, spec_label(ctx.dataset), ctx.limit, ctx.seed, ctx.batch_size,
                           ctx.model.data_config], sort_keys=True, default=str)
        for b, (x, y) in enumerate(ctx.progress(ctx.loader(), f"corruption {len(pairs)} cells", total,
                                                unit_scale=ctx.batch_size)):
            if b < start:
                continue
            for i, (_, name, sev) in enumerate(pairs):
                extra = {"frost_dir": self.opts["frost_dir"]} if name == "frost" and self.opts["frost_dir"] else {}
                make = partial(corrupt, x, name, sev, preset=preset, generator=ctx.generator(name, sev, b), **extra)
                xc = ctx.shared.get((data, name, sev, b), x, make)
                correct[i] += self._predict_correct(ctx, xc, y)
            n += len(y)
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                state = {"todo": todo, "batches": b + 1, "n": n, "correct": correct.tolist()}
                ctx.partial_put(todo[0], json.dumps(state).encode())
                last_save = time.monotonic()
        for (cell, _, _), c in zip(pairs, correct.tolist()):
            yield _cell(cell, c / n if n else math.nan, n)

    def _run_disk(self, ctx: SuiteContext, todo: list[str]) -> Iterator[CellResult]:
        from robustvit.context import subset_indices
        from robustvit.corruptions import disk

        root = Path(str(self.opts["root"])).expanduser()
        size = tuple(ctx.model.data_config["input_size"][-2:])
        classes = self.opts["classes"]
        if classes is None and ctx.model.num_classes == 1000:
            classes = "imagenet_1k"
        for cell in todo:
            name, sev = _parse(cell)
            if self.opts["source"] == "cifar10_c_disk":
                count = disk.cifar10_c_count(root, name)
                indices = subset_indices(count, ctx.limit, ctx.seed)
                batches = disk.cifar10_c_batches(root, name, sev, indices=indices, batch_size=ctx.batch_size,
                                                 size=size, device=ctx.device)
            else:
                from robustvit.data.folder import ImageFolderSource

                count = len(ImageFolderSource(disk.imagenet_c_folder(root, name, sev), classes=classes))
                indices = subset_indices(count, ctx.limit, ctx.seed)
                batches = disk.imagenet_c_batches(root, name, sev, indices=indices, batch_size=ctx.batch_size,
                                                  size=size, classes=classes, workers=ctx.workers, device=ctx.device)
            correct = torch.zeros((), dtype=torch.long, device=ctx.device)
            n = 0
            for x, y in ctx.progress(batches, f"corruption {cell}", len(indices), unit_scale=ctx.batch_size):
                correct += self._predict_correct(ctx, x, y)
                n += len(y)
            yield _cell(cell, correct.item() / n if n else math.nan, n)

    # -- aggregation -----------------------------------------------------------------------------------
    def aggregate(self, records: pd.DataFrame, ctx: SuiteContext) -> list[CellResult]:
        """Per-corruption error / CE / relative CE and the suite's mean error, mCE, relative mCE."""
        from robustvit.corruptions import BENCHMARK
        from robustvit.metrics import corruption as m

        if records.empty:
            return []
        errors = _errors(records)
        counts = _counts(records)
        base_errors, base_clean = self._baseline(ctx)
        clean = errors.get(CLEAN, math.nan)
        out: list[CellResult] = []
        per_error: dict[str, float] = {}
        per_ce: dict[str, float] = {}
        per_rce: dict[str, float] = {}
        n = 0
        for name in self.corruptions:
            cells = [f"{name}/{s}" for s in self.severities]
            if not all(c in errors for c in cells):
                continue
            n = counts[cells[0]]
            errs = {s: errors[f"{name}/{s}"] for s in self.severities}
            result = CellResult(name).add("error", m.mean(errs.values()), n, False)
            per_error[name] = m.mean(errs.values())
            base = base_errors(name)
            if base is not None:
                per_ce[name] = m.corruption_error(errs, base)
                result.add("ce", per_ce[name], n, False)
                if not math.isnan(clean) and base_clean is not None:
                    per_rce[name] = m.relative_corruption_error(errs, clean, base, base_clean)
                    result.add("relative_ce", per_rce[name], n, False)
            out.append(result)
        if len(per_error) < len(self.corruptions):
            return out  # suite-level numbers only once every cell is stored
        summary = CellResult("")
        bench = [c for c in self.corruptions if c in BENCHMARK] or list(self.corruptions)
        summary.add("mean_error", m.mean(per_error[c] for c in bench), n, False)
        if self.benchmark_complete and all(c in per_ce for c in BENCHMARK):
            summary.add("mce", m.mean(per_ce[c] for c in BENCHMARK), n, False)
            if all(c in per_rce for c in BENCHMARK):
                summary.add("relative_mce", m.mean(per_rce[c] for c in BENCHMARK), n, False)
        out.append(summary)
        return out

    def _baseline(self, ctx: SuiteContext) -> tuple[Any, float | None]:
        """``(errors_of(corruption) -> {severity: error} | None, clean error | None)`` of the baseline."""
        from robustvit.metrics import corruption as m

        if self.baseline == "none":
            return (lambda _name: None), None
        if self.baseline == "alexnet":
            return m.alexnet_baseline, m.ALEXNET_CLEAN_ERROR
        stored = _baseline_records(ctx, self.baseline)
        if stored is None:
            return (lambda _name: None), None
        errors = _errors(stored)

        def of(name: str) -> dict[int, float] | None:
            vals = {s: errors[f"{name}/{s}"] for s in self.severities if f"{name}/{s}" in errors}
            return vals if len(vals) == len(self.severities) else None

        return of, errors.get(CLEAN)


def _parse(cell: str) -> tuple[str, int]:
    name, _, sev = cell.rpartition("/")
    return name, int(sev)


def _cell(cell: str, accuracy: float, n: int) -> CellResult:
    return CellResult(cell).add("error", 1.0 - accuracy, n, False).add("top1", accuracy, n, True)


def _latest(records: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = records[records["metric"] == metric]
    return rows.drop_duplicates("cell", keep="last")


def _errors(records: pd.DataFrame) -> dict[str, float]:
    rows = _latest(records, "error")
    return {str(c): float(v) for c, v in zip(rows["cell"], rows["value"])}


def _counts(records: pd.DataFrame) -> dict[str, int]:
    rows = _latest(records, "error")
    return {str(c): int(v) for c, v in zip(rows["cell"], rows["n"])}


def _baseline_records(ctx: SuiteContext, model: str) -> pd.DataFrame | None:
    """The baseline model's stored records of this suite: same config if stored, else same dataset."""
    if ctx.store is None:
        return None
    key = ctx.key
    rows = ctx.records(model=model, suite=key.get("suite"), config_key=key.get("config_key"))
    if rows.empty:
        rows = ctx.records(model=model, suite=key.get("suite"), dataset=key.get("dataset"))
    return None if rows.empty else rows
