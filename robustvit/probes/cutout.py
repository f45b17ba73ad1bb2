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

Option ``fractions`` (default ``[0.05, 0.1, 0.2, 0.5]``): area fractions in [0, 1].

Cells: ``f=<f>`` (``f=0.5``); metric ``top1`` (higher is better) with per-image outcomes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.probes.base import Probe, accuracy_cell, batches, per_image_rand, predict
from robustvit.probes.patch_drop import fraction_list
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext


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
    h, w = size
    rows = torch.arange(h, device=top.device)
    cols = torch.arange(w, device=top.device)
    in_rows = (rows >= top[:, None]) & (rows < top[:, None] + side)
    in_cols = (cols >= left[:, None]) & (cols < left[:, None] + side)
    return in_rows[:, :, None] & in_cols[:, None, :]


class Cutout(Probe):
    """Top-1 with one black square of area fraction ``f`` per image (see the module docstring).

    Options:
        fractions: Area fractions in [0, 1] (0 = no square).
    """

    name: ClassVar[str] = "cutout"
    options: ClassVar[dict[str, Any]] = {"fractions": [0.05, 0.1, 0.2, 0.5]}

    def validate(self) -> None:
        self.opts["fractions"] = fraction_list(self.name, "fractions", self.opts["fractions"])

    def cells(self) -> list[str]:
        return [f"f={f:g}" for f in self.opts["fractions"]]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        plan = {f"f={f:g}": f for f in self.opts["fractions"] if f"f={f:g}" in cells}
        correct: dict[str, list[torch.Tensor]] = {c: [] for c in cells}
        seen: list[torch.Tensor] = []
        for x, y, index in batches(ctx):
            size = (int(x.shape[-2]), int(x.shape[-1]))
            u = per_image_rand(ctx, index, (2,), self.name, "position")
            outcome: dict[int, torch.Tensor] = {}
            for cell, f in plan.items():
                side = square_side(f, size)
                if side not in outcome:
                    if side == 0:
                        images = x
                    else:
                        mask = square_mask(*square_corners(u, side, size), side, size)
                        images = x.masked_fill(mask[:, None], 0.0)
                    outcome[side] = predict(ctx, images).argmax(1) == y
                correct[cell].append(outcome[side])
            seen.append(index)
        index_all = torch.cat(seen) if seen else torch.empty(0, dtype=torch.long)
        for cell in cells:
            yield accuracy_cell(cell, torch.cat(correct[cell]) if seen else torch.empty(0, dtype=torch.bool), index_all)
