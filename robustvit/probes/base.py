"""What every probe is, and the helpers probes share: image batches with their dataset indices,
per-image seeded random numbers, patch grids, accuracy cells with per-image outcomes.

Contract (one module per probe, registered in :data:`robustvit.probes.BUILTINS`):

* ``Probe(**options)`` validates its options against :attr:`Probe.options` (unknown key or bad
  value -> :class:`~robustvit.errors.UserError` naming what is allowed).
* :meth:`Probe.cells` lists its cells, relative to the probe (``f=0.5``); the probes suite names
  them ``<probe>/<cell>`` (metric path ``probes/patch_drop/random/f=0.5/top1``).
* :meth:`Probe.skip_reason` says why a model cannot be probed (``vit_only`` probes on a CNN), else None.
* :meth:`Probe.run` yields one :class:`~robustvit.records.CellResult` per requested cell (relative
  names), computed batched on the model's device; every random draw comes from
  :func:`per_image_generators` (seeded by run seed, probe, cell and image index), so batch size and
  sharding never change a number.

Accuracy-like metrics carry per-image outcomes (:func:`accuracy_cell`) so the results layer gives
them Wilson intervals and paired ViT-vs-CNN comparisons.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper


class Probe:
    """Base class of probes; subclasses set ``name``, ``options`` (name -> default) and maybe ``vit_only``."""

    name: ClassVar[str] = "?"
    vit_only: ClassVar[bool] = False
    options: ClassVar[Mapping[str, Any]] = {}

    def __init__(self, **opts: Any) -> None:
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise UserError(f"probe {self.name!r}: unknown option {unknown[0]!r} (allowed: {allowed})")
        self.opts: dict[str, Any] = {**self.options, **opts}
        self.validate()

    def validate(self) -> None:
        """Check ``self.opts``; raise :class:`UserError` naming the bad option and what is allowed."""

    def config(self) -> dict[str, Any]:
        """The options that define the numbers (part of the protocol)."""
        return dict(self.opts)

    def cells(self) -> list[str]:
        raise NotImplementedError

    def cells_for(self, model: ModelWrapper) -> list[str]:
        """The cells for ``model`` (default :meth:`cells`); a probe with per-layer cells lists them here."""
        return self.cells()

    def skip_reason(self, model: ModelWrapper) -> str | None:
        """Why ``model`` cannot be probed (None: it can); ViT-only probes skip other families."""
        if self.vit_only and model.family != "vit":
            return f"{self.name} reads attention: ViT models only ({model.name} is {model.family})"
        return None

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        raise NotImplementedError


# -- helpers ---------------------------------------------------------------------------------------------
def batches(ctx: SuiteContext) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, index)`` batches of the evaluation images; ``index`` = their dataset positions (CPU, long)."""
    return ctx.indexed_loader()


def per_image_generators(ctx: SuiteContext, index: torch.Tensor, *parts: object) -> list[torch.Generator]:
    """One CPU generator per image, seeded by (run seed, *parts, dataset index): the same image gets the
    same draws in any batch, shard or worker."""
    from robustvit.context import derive_seed

    return [torch.Generator().manual_seed(derive_seed(ctx.seed, *parts, int(i))) for i in index]


def per_image_rand(ctx: SuiteContext, index: torch.Tensor, shape: tuple[int, ...], *parts: object) -> torch.Tensor:
    """Uniform [0, 1) numbers (len(index), *shape), one seeded stream per image, on the context's device."""
    gens = per_image_generators(ctx, index, *parts)
    out = torch.stack([torch.rand(shape, generator=g) for g in gens]) if gens else torch.empty(0, *shape)
    return out.to(ctx.device)


def per_image_perm(ctx: SuiteContext, index: torch.Tensor, n: int, *parts: object) -> torch.Tensor:
    """A random permutation of ``range(n)`` per image (len(index), n), seeded per image, on the device."""
    gens = per_image_generators(ctx, index, *parts)
    out = torch.stack([torch.randperm(n, generator=g) for g in gens]) if gens else torch.empty(0, n, dtype=torch.long)
    return out.to(ctx.device)


def model_grid(model: ModelWrapper) -> int | None:
    """The ViT's own patch grid (patches per side) when the model has a patch embedding, else None."""
    embed = getattr(model.model, "patch_embed", None)
    grid = getattr(embed, "grid_size", None)
    if grid is None:
        return None
    grid = tuple(grid) if not isinstance(grid, int) else (grid, grid)
    return int(grid[0]) if grid[0] == grid[1] else None


def default_grid(model: ModelWrapper) -> int:
    """Patches per side: the ViT's own grid; for other models the grid of the standard ViT for the input
    size (16 px patches from 128 px up, as ViT-B/16 at 224 px; 8 px patches below, as the zoo ViT at 32 px)."""
    own = model_grid(model)
    if own is not None:
        return own
    side = int(model.data_config["input_size"][-1])
    return max(1, side // (16 if side >= 128 else 8))


def patch_boxes(size: tuple[int, int], grid: int) -> list[tuple[int, int, int, int]]:
    """Row-major ``(top, bottom, left, right)`` of the ``grid x grid`` patches of an image (edges rounded)."""
    h, w = size
    rows = [round(i * h / grid) for i in range(grid + 1)]
    cols = [round(j * w / grid) for j in range(grid + 1)]
    return [(rows[i], rows[i + 1], cols[j], cols[j + 1]) for i in range(grid) for j in range(grid)]


def patch_masks(size: tuple[int, int], grid: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(grid*grid, H, W) boolean masks of the patches, row-major."""
    h, w = size
    masks = torch.zeros(grid * grid, h, w, dtype=torch.bool, device=device)
    for k, (t, b, lft, r) in enumerate(patch_boxes(size, grid)):
        masks[k, t:b, lft:r] = True
    return masks


def predict(ctx: SuiteContext, x: torch.Tensor) -> torch.Tensor:
    """Logits (float32) of a batch, without gradients, under the run's autocast."""
    with torch.no_grad(), ctx.autocast():
        return ctx.model(x).float()


def accuracy_cell(cell: str, correct: torch.Tensor, index: torch.Tensor | list[int],
                  metric: str = "top1") -> CellResult:
    """A cell holding the accuracy of per-image correctness, with those outcomes attached."""
    from robustvit.results.outcomes import Outcomes

    correct = correct.detach().to("cpu", torch.bool).reshape(-1)
    n = len(correct)
    result = CellResult(cell).add(metric, int(correct.sum()) / n if n else float("nan"), n, True)
    result.outcomes = Outcomes().add_pool("images", list(map(int, index))).add(metric, correct)
    return result
