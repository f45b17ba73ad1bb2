"""The shape-bias suite: does a model decide by shape or by texture? The cue-conflict protocol of
Geirhos et al. (ICLR 2019, "ImageNet-trained CNNs are biased towards texture") as model-vs-human
(Geirhos et al., NeurIPS 2021) computes it.

Data: the evaluation dataset is a cue-conflict set (:mod:`robustvit.data.cue_conflict`): the
released model-vs-human folder (``data = { name = "cue_conflict", root = "..." }``, its 16
categories) or the embedded ``cue_conflict_digits`` (the digits zoo's class space).

Decision: a 1000-class ImageNet model's softmax probabilities are averaged over each category's
ImageNet classes (``robustvit/data/mappings/imagenet16.json``) and the category with the highest
mean wins (model-vs-human's ``ImageNetProbabilitiesTo16ClassesMapping``, aggregation ``np.mean``);
a model whose outputs are the categories themselves decides by its top-1 output. A decision is a
*shape* decision when it names the image's shape category, a *texture* decision when it names its
texture category. Images whose shape and texture categories are the same carry no conflict and
are left out, as model-vs-human's ``ShapeBias`` analysis does; the others are the conflict images.

Cells and metrics (metric paths ``shape_bias/shape_bias``, ``shape_bias/<category>/shape_bias``):

* ``""``: ``shape_bias`` = shape decisions / (shape + texture decisions) (n = those decisions;
  1 = always by shape, 0 = always by texture; humans: 0.96 in Geirhos et al. 2019, so higher is
  better); ``top1`` = shape decisions / conflict images (accuracy against the shape label, the
  per-image correctness that error consistency, Geirhos et al. 2020, is computed from) and
  ``texture_top1`` = texture decisions / conflict images (model-vs-human's fraction-correct-shape
  and fraction-correct-texture).
* ``<category>``: ``shape_bias`` over the conflict images of that shape category (the per-category
  points of model-vs-human's shape-bias plot).

Per-image outcomes (pool ``images``: the conflict images, by dataset position): ``shape_bias`` is 1
for a shape decision, 0 for a texture decision and NaN otherwise, so its mean over the non-NaN
images is the metric and the bootstrap resamples images and recomputes the ratio; ``top1`` and
``texture_top1`` are booleans (Wilson intervals). The suite draws nothing at random.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.records import CellResult
from robustvit.suites.base import Suite

if TYPE_CHECKING:
    from robustvit.context import SuiteContext

HINT = ("cue_conflict_digits (embedded, for the digits zoo) or "
        "{ name = \"cue_conflict\", root = \"<model-vs-human cue-conflict folder>\" }")


def check_class_space(source: Any, model: Any, what: str) -> None:
    """The model's outputs must be what the source's ``class_map`` reads (ImageNet classes or the categories)."""
    if source.class_map is None:
        if model.num_classes != len(source.categories):
            raise UserError(f"{what}: model {model.name!r} has {model.num_classes} outputs but the data's "
                            f"{len(source.categories)} categories are read as its classes")
    elif model.num_classes <= max(i for idx in source.class_map for i in idx):
        raise UserError(f"{what}: model {model.name!r} has {model.num_classes} outputs; the category mapping needs "
                        f"1000 ImageNet classes")


def category_matrix(class_map: list[list[int]], outputs: int, device: torch.device) -> torch.Tensor:
    """(outputs, categories) matrix whose product with probabilities gives each category's mean probability."""
    w = torch.zeros(outputs, len(class_map), device=device)
    for c, idx in enumerate(class_map):
        w[torch.as_tensor(idx, device=device), c] = 1.0 / len(idx)
    return w


class ShapeBiasSuite(Suite):
    """Shape bias on cue-conflict images, overall and per shape category; see the module docstring."""

    kind: ClassVar[str] = "shape_bias"
    version: ClassVar[str] = "1"
    options: ClassVar[dict[str, Any]] = {}

    def validate(self) -> None:
        self.categories: list[str] = []  # shape categories with conflict images, known once bind() sees the data

    def bind(self, source: Any) -> None:
        """Check that the data is a cue-conflict set and list its shape categories (the cells)."""
        from robustvit.data.cue_conflict import is_cue_conflict

        if not is_cue_conflict(source):
            raise UserError(f"suite {self.name!r} needs a cue-conflict dataset, got {source.name or 'another dataset'!r}: "
                            f"use {HINT} (--data, or data = ... in [suites.{self.name}])")
        labels = [label for _, label in source.samples] if hasattr(source, "samples") else source.labels.tolist()
        present = {s for s, t in zip(labels, source.textures.tolist(), strict=True) if s != t}
        if not present:
            raise UserError(f"suite {self.name!r}: dataset {source.name!r} has no image whose shape and texture differ")
        self.categories = [c for i, c in enumerate(source.categories) if i in present]

    def cells(self) -> list[str]:
        return ["", *self.categories]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        from robustvit.probes.base import predict

        source = ctx.source()
        check_class_space(source, ctx.model, f"suite {self.name!r}")
        weights = None
        if source.class_map is not None:
            weights = category_matrix(source.class_map, ctx.model.num_classes, ctx.device)
        decided, shapes = [], []
        total = ctx.num_examples()
        for x, y in ctx.progress(ctx.loader(), "shape bias", total, unit_scale=ctx.batch_size):
            logits = predict(ctx, x)
            decided.append((logits.argmax(1) if weights is None else (logits.softmax(1) @ weights).argmax(1)).cpu())
            shapes.append(y.cpu())
        decision, shape = torch.cat(decided), torch.cat(shapes)
        if len(decision) != total:  # registered cue-conflict sets never skip images
            raise UserError(f"suite {self.name!r}: {total - len(decision)} images could not be read")
        positions = torch.tensor(ctx.image_index(len(decision)), dtype=torch.long)
        texture = source.textures[positions]
        conflict = shape != texture
        index, decision, shape, texture = positions[conflict], decision[conflict], shape[conflict], texture[conflict]
        wanted = set(cells)
        if "" in wanted:
            yield _cell("", index, decision == shape, decision == texture, totals=True)
        for c, name in enumerate(source.categories):  # from the data, not from bind(): a worker may not have bound
            if name in wanted:
                mine = shape == c
                yield _cell(name, index[mine], (decision == shape)[mine], (decision == texture)[mine])


def _cell(cell: str, index: torch.Tensor, by_shape: torch.Tensor, by_texture: torch.Tensor,
          totals: bool = False) -> CellResult:
    """A cell's shape bias (and, with ``totals``, its shape / texture decision rates) with per-image outcomes."""
    from robustvit.results.outcomes import Outcomes

    shape_n, texture_n, n = int(by_shape.sum()), int(by_texture.sum()), len(index)
    decided = shape_n + texture_n
    result = CellResult(cell).add("shape_bias", shape_n / decided if decided else math.nan, decided, True)
    per_image = torch.full((n,), math.nan, dtype=torch.float64)
    per_image[by_shape] = 1.0
    per_image[by_texture & ~by_shape] = 0.0
    out = Outcomes().add_pool("images", index.tolist()).add("shape_bias", per_image)
    if totals:
        result.add("top1", shape_n / n if n else math.nan, n, True)
        result.add("texture_top1", texture_n / n if n else math.nan, n, False)
        out.add("top1", by_shape).add("texture_top1", by_texture)
    result.outcomes = out
    return result
