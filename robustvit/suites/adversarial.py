"""Adversarial robustness: robust accuracy per (attack, threat model, epsilon), and sanity checks.

Cells are ``<attack label>/eps=<eps>`` (``pgd-linf/eps=4/255``, ``autoattack-linf/eps=8/255``) plus
``checks``. Per attack cell (``n`` = evaluated images):

* ``clean_acc``: accuracy without attack (higher is better);
* ``robust_acc``: fraction classified correctly after the attack, re-predicted through the model;
  only initially correct points are attacked (higher is better);
* ``success_rate``: fraction of the initially correct points the attack fooled (higher = less robust);
* minimum-norm attacks (DeepFool, CW, FAB-T, HopSkipJump) also ``median_norm`` (median perturbation
  norm over the initially correct points, unfound adversarials counting as infinite; NaN when more
  than half resisted) and ``found_rate`` (fraction with an adversarial at any norm); their
  ``robust_acc`` is with the found perturbation clipped to the cell's epsilon and re-predicted;
* AutoAttack: ``robust_acc_<member>`` after each member of the cascade and ``square_gain`` (robust
  accuracy Square removed after the gradient attacks; > 0 hints at gradient masking).

The ``checks`` cell holds the model probes of :func:`robustvit.attacks.checks.run_checks`
(``flag_*`` metrics, 1 = suspicious). :meth:`AdversarialSuite.aggregate` adds cell ``""`` with the
flags computed from the stored cells and ``flag_gradient_masking`` (any flag raised).

Attacks run on blocks of ``block`` consecutive images of the evaluation subset (whatever the run's
batch size). A library attack draws its random numbers (random starts, Square's proposals) for the
whole block from one seed, derived from (run seed, attack label, epsilon, dataset index of the block's
first image): batch size and sharding (on block boundaries) never change a number. Cells resume at
block granularity: after every block the counts so far go to ``ctx.partial_put``; a killed run
continues from the last finished block with the numbers of an uninterrupted one.
"""

from __future__ import annotations

import json
import math
import statistics
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.attacks.base import parse_eps
from robustvit.attacks.checks import CellStat, record_flags, run_checks
from robustvit.attacks.engine import attack_batch
from robustvit.attacks.spec import AttackSpec, parse_specs
from robustvit.errors import UserError
from robustvit.records import CellResult, finite_or_nan
from robustvit.results.outcomes import bits_to_text as _bits
from robustvit.results.outcomes import text_to_bits
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext

CHECKS_CELL = "checks"
_STATE_VERSION = 3


def _seed(ctx: SuiteContext, *parts: object) -> int:
    gen = ctx.generator("adversarial", *parts)
    return int(torch.randint(0, 2**62, (1,), generator=gen, device=gen.device).item())


def _blocks(batches: Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
            size: int) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """The ``(x, y, index)`` batches regrouped into blocks of ``size`` consecutive images (the last may be short)."""
    xs: list[torch.Tensor] = []
    ys: list[torch.Tensor] = []
    idx: list[torch.Tensor] = []
    have = 0
    for x, y, index in batches:
        xs.append(x), ys.append(y), idx.append(index)
        have += len(y)
        while have >= size:
            x_all, y_all, i_all = torch.cat(xs), torch.cat(ys), torch.cat(idx)
            yield x_all[:size], y_all[:size], i_all[:size]
            xs, ys, idx = [x_all[size:]], [y_all[size:]], [i_all[size:]]
            have -= size
    if have:
        yield torch.cat(xs), torch.cat(ys), torch.cat(idx)


class _Tally:
    """Counts of one cell (or one minimum-norm job) summed over batches; JSON-able partial state."""

    def __init__(self, eps_labels: list[str], state: bytes | None = None) -> None:
        self.batches = self.n = self.clean = 0
        self.robust = dict.fromkeys(eps_labels, 0)
        self.norms: list[float] = []
        self.extra: dict[str, float] = {}
        # per image, in dataset order: correct without attack, robust per epsilon, per-member robust
        self.correct: list[bool] = []
        self.robust_points: dict[str, list[bool]] = {k: [] for k in eps_labels}
        self.point_extra: dict[str, list[bool]] = {}
        if state:
            data = json.loads(state)
            if data.get("v") == _STATE_VERSION and set(eps_labels) <= set(data["robust"]):
                self.batches, self.n, self.clean = data["batches"], data["n"], data["clean"]
                self.robust = {k: data["robust"][k] for k in eps_labels}
                self.norms = [math.inf if v is None else v for v in data["norms"]]
                self.extra = data["extra"]
                self.correct = text_to_bits(data["correct"], self.n).tolist()
                self.robust_points = {k: text_to_bits(data["robust_points"][k], self.n).tolist() for k in eps_labels}
                self.point_extra = {k: text_to_bits(v, self.n).tolist() for k, v in data["point_extra"].items()}

    def add(self, outcome: Any, eps_labels: list[str]) -> None:
        self.batches += 1
        self.n += outcome.n
        self.clean += outcome.clean
        for label, count in zip(eps_labels, outcome.robust, strict=True):
            self.robust[label] += count
        self.norms.extend(outcome.norms)
        for key, value in outcome.extra.items():
            self.extra[key] = self.extra.get(key, 0.0) + value
        self.correct.extend(outcome.correct.tolist())
        for label, mask in zip(eps_labels, outcome.robust_masks, strict=True):
            self.robust_points[label].extend(mask.tolist())
        for key, mask in outcome.point_extra.items():
            self.point_extra.setdefault(key.removeprefix("point:"), []).extend(mask.tolist())

    def state(self) -> bytes:
        norms = [None if math.isinf(v) else v for v in self.norms]
        return json.dumps({"v": _STATE_VERSION, "batches": self.batches, "n": self.n, "clean": self.clean,
                           "robust": self.robust, "norms": norms, "extra": self.extra,
                           "correct": _bits(self.correct),
                           "robust_points": {k: _bits(v) for k, v in self.robust_points.items()},
                           "point_extra": {k: _bits(v) for k, v in self.point_extra.items()}}).encode()

    def outcomes(self, spec: AttackSpec, eps_label: str, index: list[int]) -> Any:
        """Per image: ``clean_acc``, ``robust_acc``, ``success_rate`` (NaN where not initially correct),
        minimum-norm ``found_rate``, AutoAttack ``robust_acc_<member>``."""
        import numpy as np

        from robustvit.results.outcomes import Outcomes

        correct = np.asarray(self.correct, dtype=bool)
        robust = np.asarray(self.robust_points[eps_label], dtype=bool)
        out = Outcomes().add_pool("images", index).add("clean_acc", correct).add("robust_acc", robust)
        out.add("success_rate", np.where(correct, (~robust).astype(float), np.nan))
        if spec.attack.min_norm and len(self.norms) == int(correct.sum()):
            found = np.full(len(correct), np.nan)
            found[correct] = np.isfinite(np.asarray(self.norms, dtype=float))
            out.add("found_rate", found)
        for key, mask in self.point_extra.items():
            out.add(f"robust_acc_{key.removeprefix('robust_after_')}", np.asarray(mask, dtype=bool))
        return out

    def result(self, spec: AttackSpec, eps_label: str, index: list[int] | None = None) -> CellResult:
        n = self.n
        res = CellResult(spec.cell(eps_label))
        if index is not None and len(self.correct) == n:
            res.outcomes = self.outcomes(spec, eps_label, index)
        robust = self.robust[eps_label]
        res.add("clean_acc", self.clean / n if n else math.nan, n, True)
        res.add("robust_acc", robust / n if n else math.nan, n, True)
        res.add("success_rate", (self.clean - robust) / self.clean if self.clean else math.nan, self.clean, False)
        if spec.attack.min_norm:
            median = statistics.median(self.norms) if self.norms else math.nan
            res.add("median_norm", finite_or_nan(median), self.clean, True)
            found = sum(1 for v in self.norms if math.isfinite(v))
            res.add("found_rate", found / self.clean if self.clean else math.nan, self.clean, False)
        members = [k.removeprefix("robust_after_") for k in self.extra if k.startswith("robust_after_")]
        for member in members:
            res.add(f"robust_acc_{member}", self.extra[f"robust_after_{member}"] / n if n else math.nan, n, True)
        if "fab-t" in members and "square" in members:
            gain = self.extra["robust_after_fab-t"] - self.extra["robust_after_square"]
            res.add("square_gain", gain / n if n else math.nan, n, False)
        return res


class AdversarialSuite(Suite):
    """Robust accuracy under torchattacks / foolbox attacks and AutoAttack; see the module docstring.

    Options:
        attacks: Attack names or tables (``{attack = "pgd-l2", eps = [0.5], steps = 20}``);
            see :mod:`robustvit.attacks.spec`.
        eps: Epsilons for entries without their own (``["1/255", "4/255"]``); default 4/255 (Linf),
            0.5 (L2).
        checks: Run the model probes (cell ``checks``).
        checks_n: Number of images the probes use.
        checks_eps: Linf epsilon of the PGD-vs-Square probe; default the largest Linf epsilon
            evaluated, else 8/255.
        amp: Run attacks under the run's autocast dtype (default: fp32, whatever the run's ``amp``).
        block: Images per attack call (the unit of the attack's random streams; see the module
            docstring). Lower it when a block does not fit in GPU memory (a block that runs out of
            memory is split in halves, which changes its random draws).
    """

    kind: ClassVar[str] = "adversarial"
    version: ClassVar[str] = "3"  # 3: attack seeds per block of images, not per batch
    options: ClassVar[dict[str, Any]] = {
        "attacks": ["pgd-linf"], "eps": None, "checks": True, "checks_n": 64, "checks_eps": None, "amp": False,
        "block": 128,
    }

    def validate(self) -> None:
        o = self.opts
        for key in ("checks", "amp"):
            if not isinstance(o[key], bool):
                raise UserError(f"suite {self.name!r}: option {key!r} must be true or false, got {o[key]!r}")
        for key in ("checks_n", "block"):
            if isinstance(o[key], bool) or not isinstance(o[key], int) or o[key] < 1:
                raise UserError(f"suite {self.name!r}: option {key!r} must be an integer >= 1, got {o[key]!r}")
        self.specs = parse_specs(o["attacks"], o["eps"])
        linf = [value for spec in self.specs if spec.attack.norm == "linf" for value, _ in spec.eps]
        if o["checks_eps"] is not None:
            self.checks_eps = parse_eps(o["checks_eps"])[0]
        else:
            self.checks_eps = max(linf) if linf and max(linf) > 0 else 8 / 255

    def cells(self) -> list[str]:
        cells = [cell for spec in self.specs for cell in spec.cells]
        return ([CHECKS_CELL] if self.opts["checks"] else []) + cells

    def config(self) -> dict[str, Any]:
        o = {k: v for k, v in self.opts.items() if k not in ("attacks", "eps")}
        return {**o, "checks_eps": self.checks_eps, "attacks": [spec.config() for spec in self.specs]}

    # -- running -----------------------------------------------------------------------------------
    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        todo = set(cells)
        autocast = ctx.autocast if self.opts["amp"] else None
        for spec in self.specs:  # fail before any work if an attack cannot run on this model
            if todo & set(spec.cells):
                spec.attack.check_model(ctx.model.num_classes)
        if CHECKS_CELL in todo:
            yield self._checks(ctx, autocast)
        for spec in self.specs:
            wanted = [(value, text) for value, text in spec.eps if spec.cell(text) in todo]
            if not wanted:
                continue
            if spec.attack.min_norm:  # one search, evaluated at every epsilon
                yield from self._job(ctx, spec, wanted, ("min-norm",), autocast)
            else:
                for value, text in wanted:
                    yield from self._job(ctx, spec, [(value, text)], (text,), autocast)

    def _job(self, ctx: SuiteContext, spec: AttackSpec, eps: list[tuple[float, str]], seed_parts: tuple,
             autocast: Any) -> Iterator[CellResult]:
        labels = [text for _, text in eps]
        cells = [spec.cell(text) for text in labels]
        tally = _Tally(labels, ctx.partial_get(cells[0]))
        block = self.opts["block"]
        blocks = _blocks(ctx.indexed_loader(), block)
        total = ctx.num_examples()
        desc = f"{spec.label} eps={','.join(labels)}"
        for b, (x, y, index) in enumerate(ctx.progress(blocks, desc, total, unit_scale=block)):
            if b < tally.batches:
                continue  # finished before an interruption
            seed = _seed(ctx, spec.label, *seed_parts, "block", int(index[0]))
            outcome = attack_batch(spec.attack, ctx.model, x, y, [value for value, _ in eps], seed, autocast=autocast)
            tally.add(outcome, labels)
            state = tally.state()
            for cell in cells:
                ctx.partial_put(cell, state)
        index = ctx.image_index(tally.n)
        for text in labels:
            yield tally.result(spec, text, index)

    # -- image shards ---------------------------------------------------------------------------------
    def shardable(self, cell: str) -> bool:
        spec = next((sp for sp in self.specs if cell in sp.cells), None)
        return spec is not None and not spec.attack.min_norm  # a median norm is not a per-image mean

    def shard_unit(self) -> int:
        return int(self.opts["block"])

    def finish(self, cell: str, outcomes: Any) -> CellResult:
        """The cell from its per-image outcomes: the counts of the blocks rebuilt, then :meth:`_Tally.result`."""
        import numpy as np

        spec = next(sp for sp in self.specs if cell in sp.cells)
        label = next(text for _, text in spec.eps if spec.cell(text) == cell)
        a = outcomes.arrays
        tally = _Tally([label])
        tally.correct = a["clean_acc"].tolist()
        tally.n, tally.clean = len(tally.correct), int(np.sum(a["clean_acc"]))
        tally.robust_points[label] = a["robust_acc"].tolist()
        tally.robust[label] = int(np.sum(a["robust_acc"]))
        for name in a:
            if name.startswith("robust_acc_"):
                key = "robust_after_" + name.removeprefix("robust_acc_")
                tally.point_extra[key] = a[name].tolist()
                tally.extra[key] = float(np.sum(a[name]))
        return tally.result(spec, label, outcomes.index("images").tolist())

    def _checks(self, ctx: SuiteContext, autocast: Any) -> CellResult:
        xs, ys, have = [], [], 0
        for x, y in ctx.loader():
            xs.append(x)
            ys.append(y)
            have += len(x)
            if have >= self.opts["checks_n"]:
                break
        if not xs:
            raise UserError(f"suite {self.name!r}: the evaluation dataset yielded no images")
        x, y = torch.cat(xs)[: self.opts["checks_n"]], torch.cat(ys)[: self.opts["checks_n"]]
        values = run_checks(ctx.model, x, y, eps=self.checks_eps, seed=_seed(ctx, CHECKS_CELL), autocast=autocast)
        res = CellResult(CHECKS_CELL)
        for key, value in values.items():
            res.add(key, value, len(x), key in ("clean_acc", "pgd_robust_acc"))
        return res

    # -- aggregation ----------------------------------------------------------------------------------
    def aggregate(self, records: pd.DataFrame, outcomes: Any = None, baseline: Any = None) -> list[CellResult]:
        """Cell ``""``: flags from the stored cells (:func:`robustvit.attacks.checks.record_flags`) and
        ``flag_gradient_masking`` = any raised flag, the ``checks`` cell's included."""
        if records is None or len(records) == 0:
            return []
        values = {(c, m): (v, n) for c, m, v, n in zip(records["cell"], records["metric"], records["value"],
                                                       records["n"], strict=True)}
        stats = []
        for spec in self.specs:
            for value, text in spec.eps:
                cell = spec.cell(text)
                if (cell, "robust_acc") not in values:
                    continue
                robust, n = values[(cell, "robust_acc")]
                stats.append(CellStat(
                    label=spec.label, norm=spec.attack.norm, eps=value, kind=spec.attack.check_kind,
                    robust_acc=float(robust), clean_acc=float(values[(cell, "clean_acc")][0]), n=int(n),
                    square_gain=finite_or_nan(values.get((cell, "square_gain"), (0.0, 0))[0]),
                ))
        flags = record_flags(stats) if stats else {}
        probe = values.get((CHECKS_CELL, "flag_gradient_masking"))
        if not flags and probe is None:
            return []
        res = CellResult("")
        for key, value in flags.items():
            res.add(key, value, len(stats), False)
        masking = any(v > 0 for v in flags.values()) or (probe is not None and probe[0] > 0)
        res.add("flag_gradient_masking", float(masking), len(stats), False)
        return [res]
