"""CutOut masking: top-1 accuracy when one black square covers a fraction of the image.

Paul & Chen, "Vision Transformers are Robust Learners", AAAI 2022 (masking with CutOut, after
DeVries & Taylor 2017): one square of area fraction ``f`` of the image, at a random position inside
the image, is filled with black (0 in [0, 1] RGB); top-1 accuracy per ``f``.

The square's side is ``round(sqrt(f * H * W))`` pixels (at most the shorter image side), so its area
matches ``f`` within rounding; its top-left corner is uniform over the positions that keep it inside
the image. Each image draws its position once (seeded by run seed, probe and dataset index) and every
fraction uses the same draw, scaled to its free range: the numbers do not depend on batch size, and
the fractions are compared on matched positions. ``f = 0`` is the unmodified image (its top-1 is the
clean top-1 of the same images).

Options: ``fractions`` (default ``[0.05, 0.1, 0.2, 0.5]``): area fractions in [0, 1]; ``protocol``:
``standard`` (default, the above) or ``paul_chen``, what the authors' notebooks (``analysis/masking/
CutOut_ViT.ipynb``, ``CutOut_BiT.ipynb`` of sayakpaul/robustness-vit) do where it differs:

* the images are their 1,000 ImageNet validation images, in their order
  (``robustvit/data/mappings/paul_chen_2022_masking.json``): drawn once with ``np.random.choice`` without a
  seed and with replacement (991 distinct), so the evaluation data must be the ImageNet validation folder;
  the run's ``limit`` takes the first ``limit`` of them, and the outcomes are indexed by list position;
* the hole is albumentations' ``Cutout(num_holes=1, max_h_size=s, max_w_size=s)`` (0.5): side
  ``s = int(sqrt(f * H * W))`` (floored), centre ``(cy, cx)`` uniform over the integers ``0..H`` and ``0..W``
  (Python's inclusive ``randint``), rows ``[cy - s//2, cy + s//2)`` and columns alike, clipped to the image:
  near an edge less than ``f`` is covered. Their centres were unseeded draws; here each listed image draws
  its centre from a generator seeded by (run seed, probe, list position), shared by the fractions.

They resized the images to 224 x 224 without keeping the aspect ratio; here the model's own preprocessing
applies (see the README, "Reproducing Paul & Chen (2022)"). The standard protocol is left out of the
probe's config, so its records keep their protocol.

Cells: ``f=<f>`` (``f=0.5``); metric ``top1`` (higher is better) with per-image outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.probes.base import Probe, accuracy_cell, batches, per_image_rand, predict
from robustvit.probes.patch_drop import fraction_list
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext

PROTOCOLS = ("standard", "paul_chen")
PAUL_CHEN_IMAGES = "paul_chen_2022_masking.json"


def square_side(fraction: float, size: tuple[int, int]) -> int:
    """Side in pixels of a square covering ``fraction`` of an ``(H, W)`` image (rounded, at most ``min(H, W)``)."""
    h, w = size
    return min(round(math.sqrt(fraction * h * w)), h, w)


def square_corners(u: torch.Tensor, side: int, size: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """(top, left) long tensors (B,) of squares inside the image from uniform draws ``u`` (B, 2) in [0, 1)."""
    h, w = size
    top = (u[:, 0] * (h - side + 1)).floor().long().clamp(0, h - side)
    left = (u[:, 1] * (w - side + 1)).floor().long().clamp(0, w - side)
    return top, left


def square_mask(top: torch.Tensor, left: torch.Tensor, side: int, size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) boolean masks of the squares ``[top, top + side) x [left, left + side)``."""
    return box_mask(top, top + side, left, left + side, size)


def box_mask(top: torch.Tensor, bottom: torch.Tensor, left: torch.Tensor, right: torch.Tensor,
             size: tuple[int, int]) -> torch.Tensor:
    """(B, H, W) boolean masks of the boxes ``[top, bottom) x [left, right)``."""
    h, w = size
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < bottom[:, None])
    in_cols = (cols >= left[:, None]) & (cols < right[:, None])
    return in_rows[:, :, None] & in_cols[:, None, :]


def albumentations_box(u: torch.Tensor, side: int, size: tuple[int, int]) -> tuple[torch.Tensor, ...]:
    """(top, bottom, left, right) of albumentations 0.5's ``Cutout`` hole of side ``side`` from uniform draws
    ``u`` (B, 2) in [0, 1): centre uniform over ``0..H`` x ``0..W``, ``[c - side//2, c + side//2)`` clipped."""
    h, w = size
    cy = (u[:, 0] * (h + 1)).floor().long().clamp(0, h)
    cx = (u[:, 1] * (w + 1)).floor().long().clamp(0, w)
    half = side // 2
    return (cy - half).clamp(0, h), (cy + half).clamp(0, h), (cx - half).clamp(0, w), (cx + half).clamp(0, w)


def paul_chen_images() -> list[str]:
    """Paul & Chen's 1,000 masking images (``<wnid>/<file>`` below the validation folder), in their order."""
    import json
    from importlib import resources

    text = resources.files("robustvit.data").joinpath("mappings", PAUL_CHEN_IMAGES).read_text()
    return list(json.loads(text)["images"])


def listed_batches(ctx: SuiteContext, names: list[str]) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, position)`` batches of the evaluation folder's images ``names`` (paths below it, repeats
    allowed), in list order; ``position`` = place in ``names`` (CPU, long)."""
    from torch.utils.data import DataLoader, Subset

    from robustvit.context import _collate
    from robustvit.data.transforms import build_transform

    source = ctx.source()
    root, samples = getattr(source, "root", None), getattr(source, "samples", None)
    if root is None or samples is None:
        raise UserError("cutout protocol 'paul_chen' reads Paul & Chen's ImageNet validation images: the evaluation "
                        "data must be the ImageNet validation folder (<root>/<wnid>/<image>, classes = \"imagenet_1k\")")
    where = {path.relative_to(root).as_posix(): i for i, (path, _) in enumerate(samples)}
    missing = [n for n in names if n not in where]
    if missing:
        raise UserError(f"cutout protocol 'paul_chen': {len(set(missing))} of its images are not in {str(root)!r} "
                        f"(first: {missing[0]}); the evaluation data must be the ImageNet validation folder")
    source.transform = build_transform(ctx.model.data_config)
    loader = DataLoader(Subset(source, [where[n] for n in names]), batch_size=ctx.batch_size, shuffle=False,
                        num_workers=ctx.workers, collate_fn=_collate)
    start = 0
    for x, y, skipped in loader:
        if skipped:
            raise UserError(f"cutout protocol 'paul_chen': an image among {names[start]} and the next "
                            f"{ctx.batch_size - 1} cannot be read")
        yield x.to(ctx.device), y.to(ctx.device), torch.arange(start, start + len(y))
        start += len(y)


class Cutout(Probe):
    """Top-1 with one black square of area fraction ``f`` per image (see the module docstring).

    Options:
        fractions: Area fractions in [0, 1] (0 = no square).
        protocol: ``standard`` or ``paul_chen`` (their images and hole geometry).
    """

    name: ClassVar[str] = "cutout"
    options: ClassVar[dict[str, Any]] = {"fractions": [0.05, 0.1, 0.2, 0.5], "protocol": "standard"}

    def validate(self) -> None:
        self.opts["fractions"] = fraction_list(self.name, "fractions", self.opts["fractions"])
        if self.opts["protocol"] not in PROTOCOLS:
            raise UserError(f"probe {self.name!r}: unknown protocol {self.opts['protocol']!r} "
                            f"(allowed: {', '.join(PROTOCOLS)})")

    def config(self) -> dict[str, Any]:
        return {k: v for k, v in self.opts.items() if (k, v) != ("protocol", "standard")}

    def cells(self) -> list[str]:
        return [f"f={f:g}" for f in self.opts["fractions"]]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        plan = {f"f={f:g}": f for f in self.opts["fractions"] if f"f={f:g}" in cells}
        correct: dict[str, list[torch.Tensor]] = {c: [] for c in cells}
        seen: list[torch.Tensor] = []
        paul_chen = self.opts["protocol"] == "paul_chen"
        if paul_chen:
            names = paul_chen_images()[:ctx.limit] if ctx.limit is not None else paul_chen_images()
            source = listed_batches(ctx, names)
        else:
            source = batches(ctx)
        for x, y, index in source:
            size = (int(x.shape[-2]), int(x.shape[-1]))
            u = per_image_rand(ctx, index, (2,), *((self.name, "paul_chen", "centre") if paul_chen else
                                                    (self.name, "position")))
            outcome: dict[int, torch.Tensor] = {}
            for cell, f in plan.items():
                side = int(math.sqrt(f * size[0] * size[1])) if paul_chen else square_side(f, size)
                if side not in outcome:
                    if side == 0:
                        images = x
                    else:
                        mask = (box_mask(*albumentations_box(u, side, size), size) if paul_chen else
                                square_mask(*square_corners(u, side, size), side, size))
                        images = x.masked_fill(mask[:, None], 0.0)
                    outcome[side] = predict(ctx, images).argmax(1) == y
                correct[cell].append(outcome[side])
            seen.append(index)
        index_all = torch.cat(seen) if seen else torch.empty(0, dtype=torch.long)
        for cell in cells:
            yield accuracy_cell(cell, torch.cat(correct[cell]) if seen else torch.empty(0, dtype=torch.bool), index_all)
