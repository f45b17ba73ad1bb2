"""The corruption suite: ImageNet-C style common corruptions, CE, mCE and relative mCE.

Cells (per-cell metrics ``error`` = top-1 error, lower is better, and ``top1``):

* ``clean``: the evaluation dataset as it is, from the shared forward pass (the clean error that
  relative CE needs, and a baseline model's clean error when it serves as baseline);
* ``<corruption>/<severity>``, e.g. ``gaussian_noise/3``.

Aggregates (:meth:`CorruptionSuite.aggregate`, a function of the stored cells):

* ``<corruption>`` (``corruption/gaussian_noise/ce``): ``error`` (mean over the severities), ``ce``
  and ``relative_ce`` (when there is a baseline with errors for that corruption);
* ``""`` (``corruption/mce``): ``mean_error`` (unnormalised mean over the benchmark corruptions in
  the suite, or over all of them if it has none or with ``protocol = "paul_chen"``), and ``mce`` /
  ``relative_mce`` over the 15 benchmark corruptions, written only when the suite has all 15 (a partial
  mCE would not compare).

Options:

* ``preset``: ``auto`` (default: ``cifar10_c`` for data of at most 64 px, CIFAR-like; else
  ``imagenet_c``; a disk source's own), ``imagenet_c`` (imagecorruptions 1.1.2) or ``cifar10_c``
  (the CIFAR-10-C generator).
* ``corruptions``: ``benchmark`` (the 15, default), ``all`` (19), ``extra``, a family, or a list of names.
* ``severities``: list of 1-5 (default all five).
* ``source``: ``generate`` (corrupt the evaluation images on the fly, on the model's device),
  ``imagenet_c_disk`` or ``cifar10_c_disk`` (the released files under ``root``; the evaluation
  dataset is then the clean counterpart, e.g. the ImageNet validation folder).
* ``root``: folder of the released files (disk sources).
* ``classes``: class list of ImageNet-C folders (default: ``imagenet_1k`` for 1000-class models,
  else the sorted folder names).
* ``baseline``: ``auto`` (AlexNet's published errors for the imagenet_c preset on ImageNet-class data,
  i.e. 1,000 classes or an ImageNet class subset; else none), ``alexnet``, ``none``, or the
  name of a stored model evaluated with the same suite options, whose errors normalise CE (when it
  is one of the run's models, the runner evaluates it first).
* ``frost_dir``: folder of the frost textures (default: the installed ``imagecorruptions`` data files).
* ``protocol``: ``standard`` (default) or ``paul_chen``: ``mean_error`` is the unnormalised mean over every
  corruption of the suite, as Paul & Chen (2022) report "mCE (unnormalized)" over all 19 with
  ``corruptions = "all"`` (their ``imagenet_c/test.py``: ``np.mean`` of the 19 per-corruption mean errors);
  the standard ``mean_error`` averages the benchmark corruptions only. Nothing else changes (CE / mCE stay
  over the 15). The standard protocol is left out of the suite's config, so its records keep their protocol.

In ``generate`` mode the clean images are read once and every requested cell is computed on each
batch; every random number image ``i`` gets for cell ``(c, s)`` comes from its own stream, keyed by
(run seed, c, s, dataset index of ``i``) (:class:`robustvit.rng.ImageStreams`), so batch size, sharding
and an interrupted run resuming from its saved progress never change a number. With several models in a
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

from robustvit.context import derive_seed
from robustvit.data.catalog import spec_label
from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.results.outcomes import bits_to_text, text_to_bits
from robustvit.rng import ImageStreams
from robustvit.suites.base import Suite
from robustvit.suites.corruption_images import PerImage

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext

SOURCES = ("generate", "imagenet_c_disk", "cifar10_c_disk")
AUTO = "auto"
SMALL_IMAGES = 64  # data at most this many pixels on a side is CIFAR-like: the cifar10_c preset
PROTOCOLS = ("standard", "paul_chen")
CLEAN = "clean"
_SAVE_EVERY_S = 1.0  # progress of the generate mode is saved after a batch at most this often
_STATE_VERSION = 3  # partial state: per-image correctness as packed bits


class CorruptionSuite(Suite):
    """Top-1 error under each (corruption, severity), CE / mCE / relative mCE against a baseline."""

    kind: ClassVar[str] = "corruption"
    version: ClassVar[str] = "3"  # 3: per-image random streams (batch size and sharding change nothing)
    label_options: ClassVar[tuple[str, ...]] = ("preset", "baseline")  # which baseline normalised the mCE
    options: ClassVar[dict[str, Any]] = {
        "preset": "auto", "corruptions": "benchmark", "severities": [1, 2, 3, 4, 5], "source": "generate",
        "root": None, "classes": None, "baseline": "auto", "frost_dir": None, "protocol": "standard",
    }

    def validate(self) -> None:
        from robustvit.corruptions import BENCHMARK, list_corruptions
        from robustvit.corruptions.presets import PRESETS
        from robustvit.registries import CORRUPTIONS

        o = self.opts
        if o["preset"] not in (AUTO, *PRESETS):
            raise UserError(f"suite {self.name!r}: unknown preset {o['preset']!r} (allowed: {AUTO}, {', '.join(PRESETS)})")
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
        if o["protocol"] not in PROTOCOLS:
            raise UserError(f"suite {self.name!r}: unknown protocol {o['protocol']!r} (allowed: {', '.join(PROTOCOLS)})")
        base = o["baseline"]
        if not isinstance(base, str) or not base:
            raise UserError(f"suite {self.name!r}: baseline must be 'auto', 'alexnet', 'none' or a model name")
        self.benchmark_complete = all(c in self.corruptions for c in BENCHMARK)
        # data-dependent defaults, until bind() sees the data: ImageNet-C and AlexNet
        self._resolve(image_size=None, imagenet_classes=True)

    def _resolve(self, image_size: int | None, imagenet_classes: bool) -> None:
        """``preset = "auto"``: from the source, else from the image size (<= 64 px: CIFAR-10-C);
        ``baseline = "auto"``: AlexNet's published errors only for ImageNet-C on ImageNet-class data."""
        o = self.opts
        preset = o["preset"]
        if preset == AUTO:
            if o["source"] != "generate":
                preset = o["source"].removesuffix("_disk")
            else:
                preset = "cifar10_c" if image_size is not None and image_size <= SMALL_IMAGES else "imagenet_c"
        self.preset: str = preset
        base = o["baseline"]
        if base == AUTO:
            base = "alexnet" if preset == "imagenet_c" and imagenet_classes else "none"
        self.baseline: str = base

    def bind(self, source: Any) -> None:
        """Resolve the ``auto`` preset and baseline from the evaluation data (see :meth:`_resolve`)."""
        size = source.image_size() if hasattr(source, "image_size") else None
        imagenet = source.num_classes == 1000 or source.valid_labels is not None
        self._resolve(min(size) if size else None, imagenet)

    def config(self) -> dict[str, Any]:
        """The options that define the numbers (``auto`` resolved); where the frost textures are read from does not."""
        out = {k: v for k, v in self.opts.items() if k != "frost_dir" and (k, v) != ("protocol", "standard")}
        return {**out, "preset": self.preset, "baseline": self.baseline}

    def needs_models(self) -> list[str]:
        return [] if self.baseline in ("alexnet", "none") else [self.baseline]

    def cells(self) -> list[str]:
        return [CLEAN] + [f"{c}/{s}" for c in self.corruptions for s in self.severities]

    # -- running -------------------------------------------------------------------------------------
    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        if CLEAN in cells:
            fs = ctx.features()
            yield _cell(CLEAN, fs.logits.argmax(1) == fs.labels, ctx.image_index(len(fs.labels)))
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

    def shardable(self, cell: str) -> bool:
        return self.opts["source"] == "generate"  # corrupted on the fly from per-image streams

    def finish(self, cell: str, outcomes: Any) -> CellResult:
        return _cell(cell, torch.from_numpy(outcomes.arrays["top1"]), outcomes.index("images"))

    def _predict_correct(self, ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Per image: classified correctly (bool, on the device)."""
        with torch.no_grad(), ctx.autocast():
            logits = ctx.model(x)
        return logits.argmax(1) == y

    def _run_generate(self, ctx: SuiteContext, todo: list[str]) -> Iterator[CellResult]:
        from robustvit.corruptions import corrupt

        pairs = [(cell, *_parse(cell)) for cell in todo]
        hits: list[list[torch.Tensor]] = [[] for _ in pairs]  # per cell, per batch: correct or not per image
        seconds = [0.0] * len(pairs)  # per cell (on the device, timings include the wait for its result)
        n, start = 0, 0
        saved = ctx.partial_get(todo[0])
        if saved:
            state = json.loads(saved.decode())
            if state.get("todo") == todo and state.get("v") == _STATE_VERSION:
                start, n = int(state["batches"]), int(state["n"])
                done = text_to_bits(state["correct"], len(pairs) * n).reshape(len(pairs), n)
                hits = [[torch.from_numpy(row).to(ctx.device)] for row in done]
        last_save = time.monotonic()
        preset = self.preset
        total = ctx.num_examples()
        # what a batch's pixels depend on besides the corruption (checked by checksum on reuse too)
        data = json.dumps([self.name, self.opts, spec_label(ctx.dataset), ctx.limit, ctx.seed, ctx.batch_size,
                           ctx.shard, ctx.model.data_config], sort_keys=True, default=str)
        seeds = {(name, sev): derive_seed(ctx.seed, "corruption", name, sev) for _, name, sev in pairs}
        for b, (x, y, index) in enumerate(ctx.progress(ctx.indexed_loader(), f"corruption {len(pairs)} cells", total,
                                                       unit_scale=ctx.batch_size)):
            if b < start:
                continue
            for i, (_, name, sev) in enumerate(pairs):
                t0 = time.perf_counter()
                extra = {"frost_dir": self.opts["frost_dir"]} if name == "frost" and self.opts["frost_dir"] else {}
                streams = ImageStreams.for_images(seeds[(name, sev)], index, x.device)
                make = partial(corrupt, x, name, sev, preset=preset, generator=streams, **extra)
                xc = ctx.shared.get((data, name, sev, b), x, make)
                hits[i].append(self._predict_correct(ctx, xc, y))
                seconds[i] += time.perf_counter() - t0
            n += len(y)
            if time.monotonic() - last_save > _SAVE_EVERY_S:
                state = {"v": _STATE_VERSION, "todo": todo, "batches": b + 1, "n": n,
                         "correct": bits_to_text(torch.stack([torch.cat(h) for h in hits]).cpu())}
                ctx.partial_put(todo[0], json.dumps(state).encode())
                last_save = time.monotonic()
        index = ctx.image_index(n)
        for (cell, _, _), h, sec in zip(pairs, hits, seconds):
            result = _cell(cell, torch.cat(h) if h else torch.zeros(0, dtype=torch.bool), index)
            result.seconds = sec  # corrupting and predicting this cell's images; reading them is shared
            yield result

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
            hits = [torch.zeros(0, dtype=torch.bool, device=ctx.device)]
            for x, y in ctx.progress(batches, f"corruption {cell}", len(indices), unit_scale=ctx.batch_size):
                hits.append(self._predict_correct(ctx, x, y))
            correct = torch.cat(hits)
            yield _cell(cell, correct, indices if len(indices) == len(correct) else range(len(correct)))

    # -- aggregation -----------------------------------------------------------------------------------
    def aggregate(self, records: pd.DataFrame, outcomes: Any = None, baseline: Any = None) -> list[CellResult]:
        """Per-corruption error / CE / relative CE and the suite's mean error, mCE, relative mCE.

        With the cells' per-image outcomes, every aggregate also gets a per-image vector whose mean is
        its value (the errors of an image averaged over severities, scaled by the baseline's summed
        errors for CE), so its interval and paired comparisons come from a bootstrap over images; the
        baseline's errors are taken as fixed constants.
        """
        from robustvit.corruptions import BENCHMARK
        from robustvit.metrics import corruption as m

        if records.empty:
            return []
        errors = _errors(records)
        counts = _counts(records)
        base_errors, base_clean = self._baseline(baseline)
        clean = errors.get(CLEAN, math.nan)
        per_image = PerImage(outcomes)
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
            summed = per_image.sum(cells)  # per image: its errors over the severities
            per_image.add(name, "error", summed, len(cells))
            base = base_errors(name)
            if base is not None:
                per_ce[name] = m.corruption_error(errs, base)
                result.add("ce", per_ce[name], n, False)
                per_image.add(name, "ce", summed, sum(base[s] for s in self.severities))
                if not math.isnan(clean) and base_clean is not None:
                    per_rce[name] = m.relative_corruption_error(errs, clean, base, base_clean)
                    result.add("relative_ce", per_rce[name], n, False)
                    per_image.add(name, "relative_ce", per_image.less(summed, CLEAN, len(cells)),
                                  sum(base[s] - base_clean for s in self.severities))
            result.outcomes = per_image.outcomes(name)
            out.append(result)
        if len(per_error) < len(self.corruptions):
            return out  # suite-level numbers only once every cell is stored
        summary = CellResult("")
        bench = [c for c in self.corruptions if c in BENCHMARK] or list(self.corruptions)
        if self.opts["protocol"] == "paul_chen":  # every corruption of the suite (all 19 in the paper)
            bench = list(self.corruptions)
        summary.add("mean_error", m.mean(per_error[c] for c in bench), n, False)
        per_image.mean("", "mean_error", [(c, "error") for c in bench])
        if self.benchmark_complete and all(c in per_ce for c in BENCHMARK):
            summary.add("mce", m.mean(per_ce[c] for c in BENCHMARK), n, False)
            per_image.mean("", "mce", [(c, "ce") for c in BENCHMARK])
            if all(c in per_rce for c in BENCHMARK):
                summary.add("relative_mce", m.mean(per_rce[c] for c in BENCHMARK), n, False)
                per_image.mean("", "relative_mce", [(c, "relative_ce") for c in BENCHMARK])
        summary.outcomes = per_image.outcomes("")
        out.append(summary)
        return out

    def _baseline(self, baseline: Any) -> tuple[Any, float | None]:
        """``(errors_of(corruption) -> {severity: error} | None, clean error | None)`` of the baseline."""
        from robustvit.metrics import corruption as m

        if self.baseline == "none":
            return (lambda _name: None), None
        if self.baseline == "alexnet":
            return m.alexnet_baseline, m.ALEXNET_CLEAN_ERROR
        stored = (baseline or {}).get(self.baseline)
        if stored is None or stored.empty:
            return (lambda _name: None), None
        errors = _errors(stored)

        def of(name: str) -> dict[int, float] | None:
            vals = {s: errors[f"{name}/{s}"] for s in self.severities if f"{name}/{s}" in errors}
            return vals if len(vals) == len(self.severities) else None

        return of, errors.get(CLEAN)


def _parse(cell: str) -> tuple[str, int]:
    name, _, sev = cell.rpartition("/")
    return name, int(sev)


def _cell(cell: str, correct: torch.Tensor, index: Any) -> CellResult:
    """A cell's error and top-1 from per-image correctness, with those outcomes attached."""
    from robustvit.results.outcomes import Outcomes

    correct = correct.detach().to("cpu", torch.bool)
    n = len(correct)
    accuracy = int(correct.sum()) / n if n else math.nan  # exact: the mean of its outcomes
    result = CellResult(cell).add("error", 1.0 - accuracy, n, False).add("top1", accuracy, n, True)
    result.outcomes = Outcomes().add_pool("images", list(index)).add("error", ~correct).add("top1", correct)
    return result


def _latest(records: pd.DataFrame, metric: str) -> pd.DataFrame:
    rows = records[records["metric"] == metric]
    return rows.drop_duplicates("cell", keep="last")


def _errors(records: pd.DataFrame) -> dict[str, float]:
    rows = _latest(records, "error")
    return {str(c): float(v) for c, v in zip(rows["cell"], rows["value"])}


def _counts(records: pd.DataFrame) -> dict[str, int]:
    rows = _latest(records, "error")
    return {str(c): int(v) for c, v in zip(rows["cell"], rows["n"])}
