"""Patch shuffle: top-1 accuracy when an image's patches are randomly permuted.

Naseer et al., "Intriguing Properties of Vision Transformers", NeurIPS 2021 (section 3.3, "Are ViTs
sensitive to spatial structure?"): the image is cut into a ``g x g`` grid of patches which are
shuffled; ViTs keep much of their accuracy when ``g`` matches their own patch grid, CNNs lose it.
``g = 1`` is the unmodified image (its top-1 is the clean top-1 of the same images).

Each image gets its own seeded permutation per grid (seeded by run seed, probe, grid and dataset
index, so any batch size gives the same numbers). When the image side is not a multiple of ``g``,
the patches are ``floor(H / g) x floor(W / g)`` pixels: the top-left ``g * floor(H / g)`` by
``g * floor(W / g)`` region is shuffled as whole, equal-size patches and the remaining bottom and
right border (fewer than ``g`` pixels) stays in place; nothing is cropped or resized.

Option ``grids`` (default ``[1, 2, 4, 8, "model"]``): patches per side; ``"model"`` is
:func:`~robustvit.probes.base.default_grid` (the ViT's own grid). Grids that resolve to the same
number are computed once (the same permutations) but every requested cell keeps its name.

Cells: ``g=<g>`` (``g=4``, ``g=model``); metric ``top1`` (higher is better) with per-image outcomes.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.probes.base import Probe, accuracy_cell, batches, default_grid, per_image_perm, predict
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper

MODEL = "model"


def shuffle_patches(x: torch.Tensor, perm: torch.Tensor, grid: int) -> torch.Tensor:
    """``x`` (B,C,H,W) with its ``grid x grid`` patches rearranged: position ``k`` (row-major) gets patch ``perm[b, k]``.

    Patches are ``H // grid`` by ``W // grid`` pixels; the border beyond ``grid`` whole patches stays in place.

    Raises:
        UserError: When the grid is finer than the image.
    """
    b, c, h, w = x.shape
    ph, pw = h // grid, w // grid
    if ph == 0 or pw == 0:
        raise UserError(f"patch shuffle: grid {grid} is finer than the {(h, w)} images")
    core = x[:, :, :grid * ph, :grid * pw]
    tiles = core.reshape(b, c, grid, ph, grid, pw).permute(0, 2, 4, 1, 3, 5).reshape(b, grid * grid, c, ph, pw)
    tiles = tiles.gather(1, perm.to(x.device).view(b, -1, 1, 1, 1).expand(-1, -1, c, ph, pw))
    core = tiles.reshape(b, grid, grid, c, ph, pw).permute(0, 3, 1, 4, 2, 5).reshape(b, c, grid * ph, grid * pw)
    out = x.clone()
    out[:, :, :grid * ph, :grid * pw] = core
    return out


class PatchShuffle(Probe):
    """Top-1 on patch-shuffled images per grid (see the module docstring).

    Options:
        grids: Patches per side (positive integers) or ``"model"``.
    """

    name: ClassVar[str] = "patch_shuffle"
    options: ClassVar[dict[str, Any]] = {"grids": [1, 2, 4, 8, MODEL]}

    def validate(self) -> None:
        grids = self.opts["grids"]
        ok = isinstance(grids, (list, tuple)) and len(grids) > 0 and all(
            g == MODEL or (isinstance(g, int) and not isinstance(g, bool) and g >= 1) for g in grids)
        if not ok:
            raise UserError(f"probe {self.name!r}: bad 'grids' {grids!r} "
                            f"(allowed: a non-empty list of positive integers and {MODEL!r})")
        self.opts["grids"] = list(dict.fromkeys(grids))

    def cells(self) -> list[str]:
        return [f"g={g}" for g in self.opts["grids"]]

    def resolve(self, model: ModelWrapper) -> dict[str, int]:
        """Cell -> patches per side for ``model``."""
        return {f"g={g}": default_grid(model) if g == MODEL else int(g) for g in self.opts["grids"]}

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        grid_of = self.resolve(ctx.model)
        plan = {c: grid_of[c] for c in cells}
        correct: dict[str, list[torch.Tensor]] = {c: [] for c in cells}
        seen: list[torch.Tensor] = []
        for x, y, index in batches(ctx):
            outcome: dict[int, torch.Tensor] = {}
            for cell, g in plan.items():
                if g not in outcome:
                    if g == 1:
                        images = x
                    else:
                        perm = per_image_perm(ctx, index, g * g, self.name, f"g={g}")
                        images = shuffle_patches(x, perm, g)
                    outcome[g] = predict(ctx, images).argmax(1) == y
                correct[cell].append(outcome[g])
            seen.append(index)
        index_all = torch.cat(seen) if seen else torch.empty(0, dtype=torch.long)
        for cell in cells:
            yield accuracy_cell(cell, torch.cat(correct[cell]) if seen else torch.empty(0, dtype=torch.bool), index_all)
