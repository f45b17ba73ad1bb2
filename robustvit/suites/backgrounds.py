"""The backgrounds suite: how much does a model lean on image backgrounds? ImageNet-9 and its
background variants (Xiao et al., ICLR 2021, "Noise or Signal: The Role of Image Backgrounds in
Object Recognition"; MadryLab/backgrounds_challenge).

Data: the evaluation dataset is one variant of a background benchmark
(:mod:`robustvit.data.imagenet9`): the released test sets (``data = { name = "imagenet9", root =
"<folder of the variants>" }``) or the embedded ``backgrounds_digits`` (the digits zoo's class
space); the suite reads the benchmark's other variants itself, with the same image subset.

Decision: a 1000-class ImageNet model's top-1 ImageNet class mapped onto the nine superclasses
(``robustvit/data/mappings/imagenet9.json``, the released ``in_to_in9.json``; a class outside the
nine is a wrong answer), as the released ``in9_eval.py`` scores it; a model whose outputs are the
classes themselves (a 9-class ImageNet-9 model, the digits zoo) by its top-1 output.

Cells and metrics:

* ``<variant>`` (``backgrounds/mixed_rand/top1``): ``top1``, the accuracy on that variant. The
  variants (option ``variants``, default all seven): ``original``, ``only_fg`` (foreground on
  black), ``mixed_same`` / ``mixed_rand`` / ``mixed_next`` (the foreground on the background of
  another image of the same class / of a random class / of the next class), ``no_fg`` (foreground
  region blacked out) and ``only_bg_t`` (background only, the foreground region filled with tiles
  of the background).
* ``""`` (:meth:`BackgroundsSuite.aggregate`): ``bg_gap`` = top-1 on ``mixed_same`` minus top-1 on
  ``mixed_rand`` (Xiao et al.'s BG-gap: what changing the background to one of another class costs
  when the right foreground is there; lower means less reliance on backgrounds), stored when both
  variants are.

Per-image outcomes: each variant cell holds ``top1`` per image (pool ``images``, by position in
the variant, and the digest of the image keys in ``meta["keys"]``). The variants of a benchmark
hold the same images in the same order, so when the two digests agree ``bg_gap`` gets the per-image
difference (-1, 0 or 1) as its outcomes: a bootstrap interval and paired ViT-vs-CNN comparisons;
otherwise it is stored without an interval. The suite draws nothing at random.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext
    from robustvit.results.outcomes import Outcomes

HINT = ("backgrounds_digits (embedded, for the digits zoo) or "
        "{ name = \"imagenet9\", root = \"<folder of the released variants>\" }")
SAME, RAND = "mixed_same", "mixed_rand"


class BackgroundsSuite(Suite):
    """Accuracy per ImageNet-9 background variant and the BG-gap; see the module docstring."""

    kind: ClassVar[str] = "backgrounds"
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, Any]] = {"variants": "all"}

    def validate(self) -> None:
        from robustvit.data.imagenet9 import VARIANTS

        names = self.opts["variants"]
        names = list(VARIANTS) if names == "all" else names
        if isinstance(names, str) or not isinstance(names, list) or not names or any(v not in VARIANTS for v in names):
            raise UserError(f"suite {self.name!r}: variants must be \"all\" or a non-empty list of "
                            f"{', '.join(VARIANTS)}, got {self.opts['variants']!r}")
        self.variants: list[str] = [v for v in VARIANTS if v in names]

    def config(self) -> dict[str, Any]:
        return {"variants": self.variants}

    def bind(self, source: Any) -> None:
        """Check that the data is a background benchmark holding every requested variant."""
        from robustvit.data.imagenet9 import is_imagenet9

        if not is_imagenet9(source):
            raise UserError(f"suite {self.name!r} needs an ImageNet-9 style dataset, got "
                            f"{source.name or 'another dataset'!r}: use {HINT} (--data, or data = ... in [suites.{self.name}])")
        missing = [v for v in self.variants if v not in source.variants]
        if missing:
            raise UserError(f"suite {self.name!r}: the benchmark of {source.name!r} has no variant {missing[0]!r} "
                            f"(it has {', '.join(source.variants)}; set variants = [...] to the ones you have)")

    def cells(self) -> list[str]:
        return list(self.variants)

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        from robustvit.context import subset_indices
        from robustvit.data.imagenet9 import variant_spec
        from robustvit.probes.base import predict
        from robustvit.results.outcomes import Outcomes
        from robustvit.suites.shape_bias import check_class_space

        for variant in [v for v in self.variants if v in set(cells)]:
            spec = variant_spec(ctx.dataset, variant)
            source = ctx.source(spec)
            check_class_space(source, ctx.model, f"suite {self.name!r}")
            lookup = None
            if source.class_map is not None:
                lookup = torch.full((ctx.model.num_classes,), -1, dtype=torch.long, device=ctx.device)
                for c, idx in enumerate(source.class_map):
                    lookup[torch.as_tensor(idx, device=ctx.device)] = c
            positions = subset_indices(len(source), ctx.limit, ctx.seed)
            hits = [torch.zeros(0, dtype=torch.bool)]
            for x, y in ctx.progress(ctx.loader(spec, limit=ctx.limit), f"backgrounds {variant}", len(positions),
                                     unit_scale=ctx.batch_size):
                top = predict(ctx, x).argmax(1)
                hits.append(((top if lookup is None else lookup[top]) == y).cpu())
            correct = torch.cat(hits)
            index = positions if len(positions) == len(correct) else list(range(len(correct)))
            keys = "\n".join(source.keys[i] for i in index) if len(index) == len(positions) else f"unpaired:{variant}"
            n = len(correct)
            result = CellResult(variant).add("top1", correct.float().mean().item() if n else math.nan, n, True)
            out = Outcomes().add_pool("images", index).add("top1", correct)
            out.meta["keys"] = hashlib.sha256(keys.encode()).hexdigest()[:16]
            result.outcomes = out
            yield result

    def aggregate(self, records: pd.DataFrame, outcomes: Mapping[str, Outcomes] | None = None,
                  baseline: Any = None) -> list[CellResult]:
        """``bg_gap`` (cell ``""``) from the stored ``mixed_same`` and ``mixed_rand`` cells; per-image
        differences as its outcomes when the two cells hold the same images (see the module docstring)."""
        if records.empty:
            return []
        rows = records[records["metric"] == "top1"].drop_duplicates("cell", keep="last").set_index("cell")
        if SAME not in self.variants or RAND not in self.variants or SAME not in rows.index or RAND not in rows.index:
            return []
        same, rand = rows.loc[SAME], rows.loc[RAND]
        result = CellResult("").add("bg_gap", float(same["value"]) - float(rand["value"]),
                                    min(int(same["n"]), int(rand["n"])), False)
        a = outcomes.get(SAME) if outcomes is not None else None
        b = outcomes.get(RAND) if outcomes is not None else None
        if a is not None and b is not None and "top1" in a.arrays and "top1" in b.arrays \
                and a.meta.get("keys") == b.meta.get("keys") \
                and len(a.index("images")) == len(b.index("images")) and (a.index("images") == b.index("images")).all():
            from robustvit.results.outcomes import Outcomes

            gap = a.arrays["top1"].astype("float64") - b.arrays["top1"].astype("float64")
            result.outcomes = Outcomes().add_pool("images", a.index("images")).add("bg_gap", gap)
        return [result]
