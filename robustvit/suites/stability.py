"""The stability suite: ImageNet-P style perturbation sequences, flip probability, top-5 distance, mFR, mT5D.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), section 4, as ``ImageNet-P/test.py`` computes it (conventions in
:mod:`robustvit.stability.metrics`); Paul & Chen (2022, "Vision Transformers are Robust Learners")
compare ViTs with CNNs on it.

Cells ``<perturbation>/<difficulty>`` (e.g. ``translate/1``), metrics per image averaged over images,
all lower-is-better: ``fp`` (flip probability), ``t5d`` (top-5 distance), ``zipf`` (Zipf distance).

Aggregates (:meth:`StabilitySuite.aggregate`, a function of the stored cells):

* ``<perturbation>``: ``fp``, ``t5d``, ``zipf`` (means over the difficulties); with a baseline,
  ``fr`` (flip rate, ``sum_d FP_d / sum_d FP_d^baseline``) and ``t5d_rate`` (the same for T5D);
* ``""``: ``mean_fp``, ``mean_t5d``, ``mean_zipf`` (unnormalised means over the test perturbations
  in the suite, or over all of them if it has none), and ``mfr`` / ``mt5d`` (mean flip rate and T5D
  rate over the 10 test perturbations), written only when the suite has all 10 and a baseline.

Options:

* ``preset``: ``auto`` (default: ``cifar10_p`` for data of at most 64 px, else ``imagenet_p``; a disk
  source's own), ``imagenet_p`` or ``cifar10_p`` (:mod:`robustvit.stability.presets`).
* ``perturbations``: ``test`` (the 10, default), ``validation`` (4), ``all`` or a list of names.
* ``difficulties``: list of 1-3 (default ``[1]``, what most reports use): the noise strength of noise
  sequences, the frame stride of the others.
* ``source``: ``generate`` (make the sequences of the evaluation images on the fly, on the model's
  device), ``imagenet_p_disk`` or ``cifar10_p_disk`` (the released sets under ``root``; the
  evaluation dataset then only sets the model's class check).
* ``root``: folder of the released sets (disk sources).
* ``baseline``: ``none`` (default) or the name of a model evaluated with the same suite options,
  whose flip probabilities and top-5 distances normalise FR and mFR (AlexNet's per-perturbation
  values are not published in a usable form); a model of the same run is evaluated first.

Each perturbation is one pass over the data (all its difficulties at once, except noise, whose
difficulties are separate sequences), and its cells are stored when the pass ends, so an interrupted
run resumes with the perturbations not yet stored. Random draws come from one generator per image,
seeded by (run seed, ``stability``, perturbation, noise difficulty, dataset index of the image).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite
from robustvit.suites.corruption_images import PerImage

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext

SOURCES = ("generate", "imagenet_p_disk", "cifar10_p_disk")
AUTO = "auto"
SMALL_IMAGES = 64  # data at most this many pixels on a side is CIFAR-like: the cifar10_p preset
METRICS = ("fp", "t5d", "zipf")
RATES = {"fp": "fr", "t5d": "t5d_rate"}  # per-perturbation metric -> its normalised form
MEANS = {"fp": "mean_fp", "t5d": "mean_t5d", "zipf": "mean_zipf"}
MEAN_RATES = {"fr": "mfr", "t5d_rate": "mt5d"}


class StabilitySuite(Suite):
    """Flip probability and top-5 distance along perturbation sequences; mFR / mT5D against a baseline."""

    kind: ClassVar[str] = "stability"
    version: ClassVar[str] = "1"
    label_options: ClassVar[tuple[str, ...]] = ("preset", "baseline")
    options: ClassVar[dict[str, Any]] = {
        "preset": "auto", "perturbations": "test", "difficulties": [1], "source": "generate", "root": None,
        "baseline": "none",
    }

    def validate(self) -> None:
        from robustvit.stability import list_perturbations
        from robustvit.stability.presets import PRESETS

        o = self.opts
        where = f"suite {self.name!r}"
        if o["preset"] not in (AUTO, *PRESETS):
            raise UserError(f"{where}: unknown preset {o['preset']!r} (allowed: {AUTO}, {', '.join(PRESETS)})")
        try:
            self.perturbations: list[str] = list_perturbations(o["perturbations"])
        except UserError as exc:
            raise UserError(f"{where}: {exc}") from None
        diff = o["difficulties"]
        if isinstance(diff, int) and not isinstance(diff, bool):
            diff = [diff]
        if not isinstance(diff, (list, tuple)) or not diff or any(
                isinstance(d, bool) or not isinstance(d, int) or not 1 <= d <= 3 for d in diff):
            raise UserError(f"{where}: difficulties must be a list of integers 1-3, got {o['difficulties']!r}")
        self.difficulties: list[int] = sorted(set(diff))
        if o["source"] not in SOURCES:
            raise UserError(f"{where}: unknown source {o['source']!r} (allowed: {', '.join(SOURCES)})")
        if o["source"] != "generate" and (not o["root"] or not isinstance(o["root"], str)):
            raise UserError(f"{where}: source {o['source']!r} needs root = <folder of the released files>")
        if not isinstance(o["baseline"], str) or not o["baseline"]:
            raise UserError(f"{where}: baseline must be 'none' or a model name, got {o['baseline']!r}")
        self.baseline: str = o["baseline"]
        self._resolve(None)

    def _resolve(self, image_size: int | None) -> None:
        preset = self.opts["preset"]
        if preset == AUTO:
            if self.opts["source"] != "generate":
                preset = self.opts["source"].removesuffix("_disk")
            else:
                preset = "cifar10_p" if image_size is not None and image_size <= SMALL_IMAGES else "imagenet_p"
        self.preset: str = preset

    def bind(self, source: Any) -> None:
        """Resolve ``preset = "auto"`` from the evaluation data's image size."""
        size = source.image_size() if hasattr(source, "image_size") else None
        self._resolve(min(size) if size else None)

    def config(self) -> dict[str, Any]:
        return {**self.opts, "preset": self.preset, "perturbations": list(self.perturbations),
                "difficulties": list(self.difficulties)}

    def needs_models(self) -> list[str]:
        return [] if self.baseline == "none" else [self.baseline]

    def cells(self) -> list[str]:
        return [f"{p}/{d}" for p in self.perturbations for d in self.difficulties]

    # -- running -------------------------------------------------------------------------------------
    def _passes(self, cells: list[str]) -> list[tuple[str, int, list[int]]]:
        """``(perturbation, sequence difficulty, difficulties scored)`` per pass over the data."""
        from robustvit.stability import NOISE

        wanted = set(cells)
        out: list[tuple[str, int, list[int]]] = []
        for name in self.perturbations:
            ds = [d for d in self.difficulties if f"{name}/{d}" in wanted]
            if name in NOISE:
                out.extend((name, d, [d]) for d in ds)
            elif ds:
                out.append((name, 1, ds))
        return out

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        if self.opts["source"] != "generate" and not Path(str(self.opts["root"])).expanduser().is_dir():
            raise UserError(f"suite {self.name!r}: root folder {str(self.opts['root'])!r} does not exist")
        for name, seq, scored in self._passes(cells):
            t0 = time.perf_counter()
            if self.opts["source"] == "generate":
                per_image, index = self._generate(ctx, name, seq, scored)
            else:
                per_image, index = self._disk(ctx, name, seq, scored)
            seconds = (time.perf_counter() - t0) / len(scored)
            for d in scored:
                result = _cell(f"{name}/{d}", per_image[d], index)
                result.seconds = seconds
                yield result

    def _generate(self, ctx: SuiteContext, name: str, seq: int, scored: list[int]) -> tuple[dict, list[int]]:
        from robustvit.context import derive_seed
        from robustvit.probes.base import batches
        from robustvit.stability import NOISE
        from robustvit.stability.sequences import RANDOM, sequence

        per_image: dict[int, list[dict[str, torch.Tensor]]] = {d: [] for d in scored}
        index: list[int] = []
        label = f"stability {name}" + (f"/{seq}" if name in NOISE else "")
        for x, _, idx in ctx.progress(batches(ctx), label, ctx.num_examples(), unit_scale=ctx.batch_size):
            gens = None
            if name in RANDOM:
                part = seq if name in NOISE else ""
                gens = [torch.Generator(device=ctx.device).manual_seed(derive_seed(ctx.seed, "stability", name, part, int(i)))
                        for i in idx]
            frames = sequence(x, name, preset=self.preset, difficulty=seq, generators=gens)
            self._score(_forward(ctx, frames, len(x)), name, scored, per_image)
            index.extend(int(i) for i in idx)
        return per_image, index

    def _disk(self, ctx: SuiteContext, name: str, seq: int, scored: list[int]) -> tuple[dict, list[int]]:
        from robustvit.context import subset_indices
        from robustvit.stability import disk, presets

        root = Path(str(self.opts["root"])).expanduser()
        source = self.opts["source"]
        indices = subset_indices(disk.count(source, root, name, seq), ctx.limit, ctx.seed)
        size = tuple(ctx.model.data_config["input_size"][-2:])
        videos = max(1, ctx.batch_size // presets.frame_count(name, self.preset))
        if source == "cifar10_p_disk":
            batches = disk.cifar10_p_batches(root, name, seq, indices=indices, videos=videos, size=size, device=ctx.device)
        else:
            batches = disk.imagenet_p_batches(root, name, seq, indices=indices, videos=videos, size=size,
                                              device=ctx.device, workers=ctx.workers)
        per_image: dict[int, list[dict[str, torch.Tensor]]] = {d: [] for d in scored}
        index: list[int] = []
        for frames, idx in ctx.progress(batches, f"stability {name} (disk)", len(indices), unit_scale=videos):
            n, t = frames.shape[:2]
            flat = frames.transpose(0, 1)  # frame-major, as generated sequences come
            self._score(_forward(ctx, (flat[i] for i in range(t)), n), name, scored, per_image)
            index.extend(idx)
        order = sorted(range(len(index)), key=index.__getitem__)  # sets of mixed frame counts come back grouped
        if order != list(range(len(index))):
            for d in scored:
                merged = {m: torch.cat([p[m] for p in per_image[d]])[order] for m in METRICS}
                per_image[d] = [merged]
            index = [index[i] for i in order]
        return per_image, index

    @staticmethod
    def _score(logits: torch.Tensor, name: str, scored: list[int], per_image: dict) -> None:
        from robustvit.stability import NOISE
        from robustvit.stability.metrics import sequence_metrics

        for d in scored:
            per_image[d].append(sequence_metrics(logits, d, noise=name in NOISE))

    # -- aggregation -----------------------------------------------------------------------------------
    def aggregate(self, records: pd.DataFrame, outcomes: Any = None, baseline: Any = None) -> list[CellResult]:
        """Per-perturbation means and rates, the suite's unnormalised means and mFR / mT5D.

        With the cells' per-image outcomes every aggregate also gets the per-image vector whose mean
        is its value (an image's values averaged over difficulties; for rates, summed over
        difficulties and divided by the baseline's summed values, which are taken as constants), so
        its interval and paired comparisons come from a bootstrap over images.
        """
        from robustvit.stability import TEST
        from robustvit.stability.metrics import normalised

        if records.empty:
            return []
        values, counts = _values(records), _counts(records)
        base = _values(baseline.get(self.baseline)) if baseline and baseline.get(self.baseline) is not None else {}
        vectors = PerImage(outcomes)
        out: list[CellResult] = []
        per: dict[str, dict[str, float]] = {}
        n = 0
        for name in self.perturbations:
            cells = [f"{name}/{d}" for d in self.difficulties]
            if not all(c in values and all(m in values[c] for m in METRICS) for c in cells):
                continue
            n = counts[cells[0]]
            result = CellResult(name)
            per[name] = {}
            for metric in METRICS:
                per[name][metric] = sum(values[c][metric] for c in cells) / len(cells)
                result.add(metric, per[name][metric], n, False)
                vectors.add(name, metric, vectors.sum(cells, metric), len(cells))
            for metric, rate in RATES.items():
                if not all(c in base and metric in base[c] for c in cells):
                    continue
                mine = {d: values[f"{name}/{d}"][metric] for d in self.difficulties}
                theirs = {d: base[f"{name}/{d}"][metric] for d in self.difficulties}
                per[name][rate] = normalised(mine, theirs)
                result.add(rate, per[name][rate], n, False)
                vectors.add(name, rate, vectors.sum(cells, metric), sum(theirs.values()))
            result.outcomes = vectors.outcomes(name)
            out.append(result)
        if len(per) < len(self.perturbations):
            return out  # suite-level numbers only once every cell is stored
        summary = CellResult("")
        over = [p for p in self.perturbations if p in TEST] or list(self.perturbations)
        for metric, mean in MEANS.items():
            summary.add(mean, sum(per[p][metric] for p in over) / len(over), n, False)
            vectors.mean("", mean, [(p, metric) for p in over])
        if all(p in per for p in TEST):
            for rate, mean in MEAN_RATES.items():
                if all(rate in per[p] for p in TEST):
                    summary.add(mean, sum(per[p][rate] for p in TEST) / len(TEST), n, False)
                    vectors.mean("", mean, [(p, rate) for p in TEST])
        summary.outcomes = vectors.outcomes("")
        out.append(summary)
        return out


def _forward(ctx: SuiteContext, frames: Iterable[torch.Tensor], n: int) -> torch.Tensor:
    """``(n, T, C)`` logits of a sequence given frame by frame; frames are batched to about ``batch_size``
    images per forward pass (every image's logits depend only on its own frame)."""
    from robustvit.probes.base import predict

    per = max(1, ctx.batch_size // max(n, 1))
    out: list[torch.Tensor] = []
    buf: list[torch.Tensor] = []
    for frame in frames:
        buf.append(frame)
        if len(buf) == per:
            out.append(predict(ctx, torch.cat(buf)).view(len(buf), n, -1))
            buf = []
    if buf:
        out.append(predict(ctx, torch.cat(buf)).view(len(buf), n, -1))
    return torch.cat(out).transpose(0, 1)


def _cell(cell: str, parts: list[dict[str, torch.Tensor]], index: list[int]) -> CellResult:
    """A cell's FP, T5D and Zipf distance (means over images) with the per-image values as outcomes."""
    from robustvit.results.outcomes import Outcomes

    result = CellResult(cell)
    result.outcomes = Outcomes().add_pool("images", index)
    for metric in METRICS:
        vec = torch.cat([p[metric] for p in parts]) if parts else torch.zeros(0, dtype=torch.float64)
        result.add(metric, float(vec.mean()) if len(vec) else math.nan, len(vec), False)
        result.outcomes.add(metric, vec.numpy())
    return result


def _values(records: pd.DataFrame | None) -> dict[str, dict[str, float]]:
    """Cell -> metric -> the latest stored value."""
    if records is None or records.empty:
        return {}
    rows = records.drop_duplicates(["cell", "metric"], keep="last")
    out: dict[str, dict[str, float]] = {}
    for cell, metric, value in zip(rows["cell"], rows["metric"], rows["value"]):
        out.setdefault(str(cell), {})[str(metric)] = float(value)
    return out


def _counts(records: pd.DataFrame) -> dict[str, int]:
    rows = records[records["metric"] == "fp"].drop_duplicates("cell", keep="last")
    return {str(c): int(v) for c, v in zip(rows["cell"], rows["n"])}
