"""OOD detection: a dozen detectors on one shared forward pass, near- and far-OOD sets.

Every detector except ODIN reads the cached forward pass of :meth:`SuiteContext.features`
(logits and penultimate features): the ID training split (``fit_split``) to fit, the ID test set
and each OOD set to score; so the suite costs one forward pass per image, shared with every
other suite on the same data. ODIN (not in the default list) runs its own gradient pass.

Cells and metrics (OOD is the positive class; see :mod:`robustvit.metrics.ood`):

* ``<group>/<set>/<detector>``, with group ``near``, ``far`` or ``sanity``, e.g.
  ``far/faces/energy`` (metric path
  ``ood/far/faces/energy/auroc``): ``auroc``, ``aupr_in``, ``aupr_out`` and ``fpr95``
  (n = ID + OOD images) and ``id_acc``, the ID test top-1 accuracy (n = ID images).
* ``sanity/<detector>`` also holds ``flag_below_chance`` (1 when its mean sanity-set AUROC is
  below 0.5: the detector ranks uniform noise as more in-distribution than the ID test images, a
  broken detector for this model); it is a warning in the terminal summary and the report.
* Aggregates (:meth:`OODSuite.aggregate`): ``<group>/<detector>`` is the mean over the group's
  sets (``far/energy``), and ``<group>`` (``near``, ``far``, ``sanity``) the mean over its sets
  and all the suite's detectors, a detector-agnostic summary: ``ood/far/auroc`` is the mean
  far-OOD AUROC over sets and detectors, ``ood/far/energy/auroc`` the Energy detector's.

Options:

* ``detectors``: registered detector names (default: all built-ins but ``odin``).
* ``params``: per-detector hyper-parameters, e.g. ``{knn = {k = 10}, react = {percentile = 0.95}}``.
* ``near``, ``far``, ``sanity``: the OOD sets of each group, a list of specs (registered dataset
  names or folders; a set is named after the dataset or the folder's base name) or a table
  ``name = spec``; an empty list leaves the group out. Folder specs are read as unlabelled OOD
  data (any folder structure). Near-OOD shares low-level statistics with the ID data (new classes
  of the same kind of image); far-OOD is another kind of image; sanity sets (noise) are kept out
  of the far mean because softmax-based detectors are known to be overconfident on them.
  Defaults: the embedded sets of the digits zoo (near ``letters``; far ``faces``, ``textures``,
  ``photos``; sanity ``noise``).
* ``fit_split``: split of the ID dataset the detectors are fitted on (default ``train``), used
  whole: the run's ``limit`` applies to the ID test images only (a KNN or Mahalanobis fit on a
  few images per class means little).
* ``fit_data``: another dataset spec to fit on (e.g. a folder with a per-class subset of the
  ImageNet training set); default: the ID dataset.
* ``tpr``: the true positive rate of the FPR metric (default 0.95; the metric keeps the name ``fpr95``).
* ``class_subset``: ``"imagenet_o"`` scores a 1000-class ImageNet model as a classifier of the 200
  ImageNet-O classes, the protocol of Hendrycks et al. ("Natural Adversarial Examples", CVPR 2021,
  ``eval_many_models.py``) that Paul & Chen (2022) follow: every detector sees the logits of those 200
  classes only (MSP = the maximum of a softmax over the 200), the ID test images are those of the
  evaluation data labelled with one of the 200 classes (Hendrycks' ``imagenet_val_for_imagenet_o_ood``:
  their 10,000 ImageNet validation images), and detectors fitted on labelled data (``fit_data``) see
  only those classes' images. It needs the model's 1000 logits on data labelled in ImageNet-1k's order
  (``classes = "imagenet_1k"``, no ``subset``). Default: none (every logit, every ID image).
* ``protocol``: ``"standard"`` (default) or ``"paul_chen"``: ``class_subset = "imagenet_o"`` and, beside
  the standard metrics, ``ap_out``, the average precision with OOD positive
  (``sklearn.metrics.average_precision_score``, the "AUPR" of Hendrycks' ``calibration_tools.get_measures``
  that Paul & Chen report for ImageNet-O; ``aupr_out`` is the trapezoidal area). ``ap_out`` is stored
  without a bootstrap interval. The standard protocol leaves both options out of the suite's config, so
  its records keep their protocol.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterator, Mapping
from pathlib import PurePath
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import FeatureSet, SuiteContext
    from robustvit.ood.base import Detector

GROUPS = ("near", "far", "sanity")
DEFAULT_DETECTORS = ["msp", "maxlogit", "energy", "entropy", "gen", "mahalanobis", "rmd", "vim", "knn", "react", "ash"]
DEFAULT_NEAR = {"letters": "ood_letters"}
DEFAULT_FAR = {"faces": "ood_faces", "textures": "ood_textures", "photos": "ood_photos"}
DEFAULT_SANITY = {"noise": "ood_noise"}
CLASS_SUBSETS = ("imagenet_o",)
PROTOCOLS = ("standard", "paul_chen")


def _is_folder(spec: str) -> bool:
    """Whether a string spec names a folder rather than a registered dataset (the one parser decides)."""
    from robustvit.data.spec import is_folder

    return is_folder(spec)


def _set_name(spec: str | Mapping[str, Any]) -> str:
    """Cell-safe name of a set in a list: the dataset name or the folder's base name."""
    if isinstance(spec, Mapping):
        text = str(spec.get("name") or PurePath(str(spec.get("path", ""))).name)
    elif _is_folder(spec):
        text = PurePath(spec.removeprefix("folder:").rstrip("/")).name
    else:
        text = spec.partition(":")[0]
    return re.sub(r"[^A-Za-z0-9_.+-]+", "_", text) or "set"


def _dataset_spec(spec: Any, where: str) -> str | dict[str, Any]:
    """The spec handed to ``ctx.features``: registered names as they are, folders as unlabelled data."""
    from robustvit.data.spec import parse

    if not isinstance(spec, (str, Mapping)) or not spec:
        raise UserError(f"{where}: a set must be a dataset name, a folder path or a table, got {spec!r}")
    try:
        parsed = parse(spec, unlabelled=True)  # unknown name: did-you-mean error now, before any work
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if parsed.path is not None:
        return {"path": str(parsed.path), **parsed.options}
    return dict(spec) if isinstance(spec, Mapping) else spec


class OODSuite(Suite):
    """OOD detection metrics per (near/far set, detector); see the module docstring."""

    kind: ClassVar[str] = "ood"
    version: ClassVar[str] = "2"
    options: ClassVar[dict[str, Any]] = {
        "detectors": DEFAULT_DETECTORS,
        "params": {},
        "near": DEFAULT_NEAR,
        "far": DEFAULT_FAR,
        "sanity": DEFAULT_SANITY,
        "fit_split": "train",
        "fit_data": None,
        "tpr": 0.95,
        "class_subset": None,
        "protocol": "standard",
    }

    # -- options ---------------------------------------------------------------------------------
    def validate(self) -> None:
        from robustvit.registries import DETECTORS

        where = f"suite {self.name!r}"
        dets = self.opts["detectors"]
        if isinstance(dets, str) or not isinstance(dets, list) or not dets:
            raise UserError(f"{where}: 'detectors' must be a non-empty list of names (known: {', '.join(DETECTORS.names())})")
        self.detectors = list(dict.fromkeys(DETECTORS.canonical(str(d)) for d in dets))
        params = self.opts["params"]
        if not isinstance(params, Mapping):
            raise UserError(f"{where}: 'params' must be a table of detector name -> hyper-parameters")
        self.params: dict[str, dict[str, Any]] = {}
        for det, kw in params.items():
            canon = DETECTORS.canonical(str(det))
            if canon not in self.detectors:
                raise UserError(f"{where}: 'params' sets {det!r}, which is not in 'detectors' ({', '.join(self.detectors)})")
            if not isinstance(kw, Mapping):
                raise UserError(f"{where}: params.{det} must be a table of hyper-parameters")
            self.params[canon] = dict(kw)
        for det in self.detectors:
            self.make_detector(det)  # bad hyper-parameters fail now, before any work
        self.sets: dict[str, dict[str, str | dict[str, Any]]] = {}
        seen: set[str] = set()
        for group in GROUPS:
            raw = self.opts[group]
            if isinstance(raw, str):
                raw = [raw]
            if isinstance(raw, list):
                named = {_set_name(s): s for s in raw}
            elif isinstance(raw, Mapping):
                named = {re.sub(r"[^A-Za-z0-9_.+-]+", "_", str(k)): v for k, v in raw.items()}
            else:
                raise UserError(f"{where}: {group!r} must be a list of datasets/folders or a table name = spec")
            clash = seen & set(named)
            if clash or len(named) < len(raw):
                raise UserError(f"{where}: OOD set name {sorted(clash)[0] if clash else '?'!r} used twice; name the sets with a table")
            seen |= set(named)
            self.sets[group] = {k: _dataset_spec(v, f"{where}: {group}.{k}") for k, v in named.items()}
        if not seen:
            raise UserError(f"{where}: no OOD sets; list some under 'near', 'far' or 'sanity'")
        tpr = self.opts["tpr"]
        if isinstance(tpr, bool) or not isinstance(tpr, (int, float)) or not 0 < tpr <= 1:
            raise UserError(f"{where}: 'tpr' must be a number in (0, 1], got {tpr!r}")
        if not isinstance(self.opts["fit_split"], str):
            raise UserError(f"{where}: 'fit_split' must be a split name such as 'train'")
        fit_data = self.opts["fit_data"]
        if fit_data is not None and not isinstance(fit_data, (str, Mapping)):
            raise UserError(f"{where}: 'fit_data' must be a dataset name, a folder path or a table")
        if isinstance(fit_data, str):
            _is_folder(fit_data)  # an unknown name fails now
        if self.opts["protocol"] not in PROTOCOLS:
            raise UserError(f"{where}: unknown protocol {self.opts['protocol']!r} (allowed: {', '.join(PROTOCOLS)})")
        subset = self.opts["class_subset"]
        if subset is not None and subset not in CLASS_SUBSETS:
            raise UserError(f"{where}: unknown class_subset {subset!r} (allowed: {', '.join(CLASS_SUBSETS)})")
        self.class_subset: str | None = "imagenet_o" if self.opts["protocol"] == "paul_chen" and subset is None else subset

    def config(self) -> dict[str, Any]:
        """The options; the standard protocol and no class subset are left out (records keep their protocol)."""
        out = {k: v for k, v in self.opts.items() if k not in ("class_subset", "protocol")}
        if self.class_subset is not None:
            out["class_subset"] = self.class_subset
        if self.opts["protocol"] != "standard":
            out["protocol"] = self.opts["protocol"]
        return out

    def _columns(self, ctx: SuiteContext) -> list[int] | None:
        """The 1000-class logit indices of ``class_subset`` (None without one)."""
        if self.class_subset is None:
            return None
        from robustvit.data.folder import wnid_list

        model = ctx.model
        if model.valid_labels is not None or model.num_classes != 1000:
            raise UserError(f"suite {self.name!r}: class_subset {self.class_subset!r} needs a model's 1000 ImageNet "
                            f"logits on data labelled in ImageNet-1k order (classes = \"imagenet_1k\", no subset); "
                            f"{model.name!r} has {model.num_classes} outputs here")
        index = {w: i for i, w in enumerate(wnid_list("imagenet_1k"))}
        return [index[w] for w in wnid_list(self.class_subset)]

    @staticmethod
    def _restrict(fs: FeatureSet, cols: list[int] | None) -> tuple[torch.Tensor | None, FeatureSet]:
        """``(kept rows, features)`` with the logits cut to ``cols`` and labels renumbered to positions in it;
        labelled images of other classes are dropped, unlabelled ones (OOD sets) kept. Unchanged without ``cols``."""
        if cols is None:
            return None, fs
        from robustvit.context import FeatureSet

        idx = torch.as_tensor(cols)
        lut = torch.full((fs.logits.shape[1],), -1, dtype=torch.long)
        lut[idx] = torch.arange(len(cols))
        labelled = fs.labels >= 0
        labels = torch.where(labelled, lut[fs.labels.clamp(min=0)], fs.labels)
        keep = ~labelled | (labels >= 0)
        return keep, FeatureSet(fs.logits[keep][:, idx], fs.features[keep], labels[keep])

    def datasets(self, data: Any) -> list[tuple[Any, str]]:
        """Every OOD set, and the data the detectors are fitted on."""
        sets = [(spec, "test") for group in GROUPS for spec in self.sets[group].values()]
        fit = self.opts["fit_data"] or data
        return [*sets, (fit, self.opts["fit_split"])] if any(self.make_detector(d).needs_fit for d in self.detectors) \
            else sets

    def make_detector(self, name: str) -> Detector:
        """A fresh detector with this suite's hyper-parameters."""
        from robustvit.registries import DETECTORS

        kw = self.params.get(name, {})
        try:
            return DETECTORS.get(name)(**kw)
        except (TypeError, ValueError) as exc:
            cls = DETECTORS.get(name)
            allowed = ", ".join(k for k in cls.defaults() if k != "chunk_size") or "none"
            raise UserError(f"suite {self.name!r}: detector {name!r}: bad parameters {kw}: {exc} (allowed: {allowed})") from exc

    def cells(self) -> list[str]:
        return [f"{g}/{s}/{d}" for g in GROUPS for s in self.sets[g] for d in self.detectors]

    # -- computing -------------------------------------------------------------------------------
    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        from robustvit.metrics.classification import top1
        from robustvit.metrics.ood import average_precision, ood_metrics

        wanted = [c.split("/") for c in cells]
        needed_sets = list(dict.fromkeys((g, s) for g, s, _ in wanted))
        needed_dets = [d for d in self.detectors if any(w[2] == d for w in wanted)]
        for g, s in needed_sets:  # a missing folder fails before any forward pass
            ctx.source(self.sets[g][s])
        from robustvit.results.outcomes import Outcomes

        cols = self._columns(ctx)
        full = ctx.features()
        id_keep, id_fs = self._restrict(full, cols)
        if not len(id_fs.labels):
            raise UserError(f"suite {self.name!r}: no evaluation image is labelled with a class of {self.class_subset!r}")
        known = id_fs.labels >= 0
        id_acc = top1(id_fs.logits[known], id_fs.labels[known]) if bool(known.any()) else math.nan
        id_correct = id_fs.logits.argmax(1) == id_fs.labels
        id_index = _kept(ctx.image_index(len(full.labels)), id_keep)
        fitted = self._fit(ctx, needed_dets, cols)
        id_scores = {d: self._scores(ctx, det, None, id_fs, cols, id_keep) for d, det in fitted.items()}
        n_id = len(id_fs.labels)
        tpr = float(self.opts["tpr"])
        for g, s in needed_sets:
            spec = self.sets[g][s]
            ood_all = ctx.features(spec)
            ood_keep, ood_fs = self._restrict(ood_all, cols)
            ood_index = _kept(ctx.image_index(len(ood_all.labels), spec), ood_keep)
            for d in needed_dets:
                if [g, s, d] not in wanted:
                    continue
                scores = self._scores(ctx, fitted[d], spec, ood_fs, cols, ood_keep)
                result = CellResult(f"{g}/{s}/{d}")
                n = n_id + len(scores)
                for metric, value in ood_metrics(id_scores[d], scores, tpr).items():
                    result.add(metric, value, n, metric != "fpr95")
                if self.opts["protocol"] == "paul_chen":
                    result.add("ap_out", average_precision(id_scores[d], scores), n, True)
                result.add("id_acc", id_acc, n_id, True)
                pool = f"ood:{s}"
                out = Outcomes().add_pool("id", id_index).add_pool(pool, ood_index)
                out.add("id_score", id_scores[d].double(), "id").add("ood_score", scores.double(), pool)
                if bool(known.all()):
                    out.add("id_acc", id_correct, "id")
                out.meta["ood"] = {"id": "id_score", "ood": "ood_score", "tpr": tpr}
                result.outcomes = out
                yield result

    def _fit(self, ctx: SuiteContext, names: list[str], cols: list[int] | None = None) -> dict[str, Detector]:
        dets = {n: self.make_detector(n) for n in names}
        if not any(d.needs_fit for d in dets.values()):
            return dets
        _, train = self._restrict(ctx.features(self.opts["fit_data"] or ctx.dataset, split=self.opts["fit_split"]), cols)
        head = None
        if any(d.uses_head for d in dets.values()):
            from robustvit.ood.stats import LinearHead

            model = ctx.model
            head = LinearHead.from_model(model, train.features, train.logits,
                                         cols if cols is not None else getattr(model, "valid_labels", None))
            if head is None:
                head = LinearHead.from_data(train.features, train.logits)
        for det in dets.values():
            if det.needs_fit:
                det.fit(train.features, train.logits, train.labels, head=head)
        return dets

    @staticmethod
    def _scores(ctx: SuiteContext, det: Detector, spec: Any, fs: FeatureSet, cols: list[int] | None = None,
                keep: torch.Tensor | None = None) -> torch.Tensor:
        """Scores of one dataset (None = the ID test set): from the shared features, or images for ODIN (on the
        logits of ``cols``, rows ``keep`` of the pass, with a class subset)."""
        if not det.needs_images:
            return det.score(fs.features, fs.logits).cpu()
        model = ctx.model if cols is None else ctx.model.with_valid_labels(cols)
        out = []
        for x, _ in ctx.progress(ctx.loader(spec), f"{det.name} scores", ctx.num_examples(spec), ctx.batch_size):
            with ctx.autocast():
                out.append(det.score_images(model, x).float().cpu())
        scores = torch.cat(out)
        return scores if keep is None else scores[keep]

    # -- aggregates -------------------------------------------------------------------------------
    def aggregate(self, records: pd.DataFrame, outcomes: Any = None, baseline: Any = None) -> list[CellResult]:
        """Means over each group's sets, per detector (``far/energy``) and over detectors (``far``).

        An aggregate is written only when every cell it averages is stored; NaN values propagate. Its
        outcomes name the cells it averages (``mean_of``): its interval bootstraps the ID images and
        each set's OOD images once per resample, shared by all the cells.
        """
        from robustvit.metrics.ood import HIGHER_IS_BETTER

        if records.empty:
            return []
        latest = records.drop_duplicates(["cell", "metric"], keep="last").set_index(["cell", "metric"])
        metrics = [*HIGHER_IS_BETTER, "id_acc"]
        out = []
        for g in GROUPS:
            per_det: dict[str, dict[str, list[tuple[float, int]]]] = {}
            for d in self.detectors:
                cells = [f"{g}/{s}/{d}" for s in self.sets[g]]
                if not cells or not all((c, m) in latest.index for c in cells for m in metrics):
                    per_det = {}
                    break
                per_det[d] = {m: [(float(latest.loc[(c, m), "value"]), int(latest.loc[(c, m), "n"])) for c in cells]
                              for m in metrics}
            if not per_det:
                continue
            for d, vals in per_det.items():
                cell = _mean_cell(f"{g}/{d}", vals, cells=[f"{g}/{s}/{d}" for s in self.sets[g]])
                if g == "sanity":  # a detector below chance on noise is broken for this model: say so
                    auroc = next(m.value for m in cell.metrics if m.metric == "auroc")
                    cell.add("flag_below_chance", float(auroc < 0.5), cell.metrics[0].n, False)
                out.append(cell)
            pooled = {m: [v for vals in per_det.values() for v in vals[m]] for m in metrics}
            out.append(_mean_cell(g, pooled, n_from=next(iter(per_det.values())),
                                  cells=[f"{g}/{s}/{d}" for d in per_det for s in self.sets[g]]))
        return out


def _kept(index: list[int], keep: torch.Tensor | None) -> list[int]:
    """The pool index of the rows a class subset kept (all of them without one)."""
    return index if keep is None else [i for i, k in zip(index, keep.tolist()) if k]


def _mean_cell(cell: str, values: dict[str, list[tuple[float, int]]],
               n_from: dict[str, list[tuple[float, int]]] | None = None, cells: list[str] | None = None) -> CellResult:
    """A cell of means over ``cells``; n = the images behind one detector's cells (ID counted once)."""
    from robustvit.metrics.ood import HIGHER_IS_BETTER
    from robustvit.results.outcomes import Outcomes

    result = CellResult(cell)
    if cells:
        result.outcomes = Outcomes(meta={"mean_of": dict.fromkeys(values, cells)})
    counts = n_from or values
    n_id = counts["id_acc"][0][1]
    n_all = sum(n for _, n in counts["auroc"])
    n = n_all - n_id * (len(counts["auroc"]) - 1)
    for metric, pairs in values.items():
        mean = sum(v for v, _ in pairs) / len(pairs)
        hib = HIGHER_IS_BETTER.get(metric, True)
        result.add(metric, mean, n_id if metric == "id_acc" else n, hib)
    return result
