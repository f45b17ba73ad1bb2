"""Patch drop: top-1 accuracy when a fraction of an image's patches is blanked out.

Naseer et al., "Intriguing Properties of Vision Transformers", NeurIPS 2021 (section 3.1,
"Robustness of ViTs to Occlusions", *PatchDrop*): the image is cut into a ``g x g`` grid (the ViT's
own patch grid by default, the grid of a standard ViT for the input size on a CNN, see
:func:`~robustvit.probes.base.default_grid`), a fraction ``f`` of the patches is replaced by a fill
and top-1 accuracy is measured per ``f``. Paul & Chen, "Vision Transformers are Robust Learners",
AAAI 2022, use the same protocol.

Orderings (which patches go first):

* ``random``: a seeded random permutation per image; the set dropped at ``f`` is the first
  ``round(f * g * g)`` patches of it, so the sets are nested across fractions.
* ``salient_first`` / ``least_salient_first``: patches sorted by salience (Naseer et al.'s
  "salient" and "non-salient" patch drop), from option ``saliency``: ``rollout`` (attention rollout,
  :func:`robustvit.probes.attention.rollout_saliency`, ViTs only), ``gradxinput``
  (``|d logit_true / d x * x|`` summed over channels, averaged per patch, any model) or ``auto``
  (rollout on ViTs when available, gradient x input otherwise).
* ``least_interaction_first``: patches with the least interaction mass go first (Ma et al.,
  "Visualizing and Understanding Patch Interactions in Vision Transformer", TNNLS 2023), from
  :func:`robustvit.probes.interaction.interaction_mass`; not in the default orderings.

Ties in salience or mass keep row-major patch order (stable sort). Fills: ``black`` (0),
``mean`` (the image's per-channel mean) or ``noise`` (uniform [0, 1) noise, seeded per image and
shared by every cell, so larger drops extend smaller ones). ``f = 0`` is the unmodified image: its
top-1 is the clean top-1 of the same images.

Cells: ``<ordering>/f=<f>`` (``random/f=0.5``); metric ``top1`` (higher is better) with per-image
outcomes.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.probes.base import (
    Probe,
    accuracy_cell,
    batches,
    default_grid,
    patch_masks,
    per_image_perm,
    per_image_rand,
    predict,
)
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper

ORDERINGS = ("random", "salient_first", "least_salient_first", "least_interaction_first")
SALIENT = ("salient_first", "least_salient_first")
FILLS = ("black", "mean", "noise")
SALIENCY = ("auto", "gradxinput", "rollout")


def is_int(value: object) -> bool:
    """True for integers (not booleans)."""
    return isinstance(value, int) and not isinstance(value, bool)


def fraction_list(probe: str, key: str, value: object) -> list[float]:
    """A non-empty list of fractions in [0, 1], duplicates removed (cells are named ``f=<f:g>``).

    Raises:
        UserError: Anything else, naming the allowed values.
    """
    ok = isinstance(value, (list, tuple)) and len(value) > 0 and all(
        isinstance(f, (int, float)) and not isinstance(f, bool) and 0.0 <= f <= 1.0 for f in value)
    if not ok:
        raise UserError(f"probe {probe!r}: {key!r} must be a non-empty list of fractions in [0, 1] "
                        f"(allowed: numbers 0 <= f <= 1), got {value!r}")
    out: dict[str, float] = {}
    for f in value:
        out.setdefault(f"{float(f):g}", float(f))
    return list(out.values())


def _rollout() -> Callable[..., torch.Tensor] | None:
    """:func:`robustvit.probes.attention.rollout_saliency`, or None when it is not available."""
    try:
        from robustvit.probes.attention import rollout_saliency
    except (ImportError, AttributeError):
        return None
    return rollout_saliency


def _readable(model: ModelWrapper) -> bool:
    """Whether the attention module reads ``model``'s attention (a CrossViT's it cannot); True for a stand-in."""
    try:
        from robustvit.probes.attention import unsupported
    except (ImportError, AttributeError):
        return True
    return unsupported(model) is None


def _interaction() -> Callable[..., torch.Tensor] | None:
    """:func:`robustvit.probes.interaction.interaction_mass`, or None when it is not available."""
    try:
        from robustvit.probes.interaction import interaction_mass
    except (ImportError, AttributeError):
        return None
    return interaction_mass


def patch_ids(size: tuple[int, int], grid: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(H*W,) long: the row-major patch of every pixel (patches of :func:`~robustvit.probes.base.patch_masks`)."""
    masks = patch_masks(size, grid, device)
    return masks.flatten(1).to(torch.uint8).argmax(0)


def ranks_from_order(order: torch.Tensor) -> torch.Tensor:
    """Inverse permutations: ``rank[b, order[b, k]] = k`` (the position of every patch in the drop order)."""
    steps = torch.arange(order.shape[1], device=order.device).expand_as(order)
    return torch.empty_like(order).scatter_(1, order, steps)


def drop_patches(x: torch.Tensor, drop: torch.Tensor, pixel_patch: torch.Tensor, fill: torch.Tensor | float) -> torch.Tensor:
    """``x`` (B,C,H,W) with the patches where ``drop`` (B, P) is True replaced by ``fill``.

    Args:
        x: Images in [0, 1].
        drop: Which patches to drop, per image.
        pixel_patch: (H*W,) patch index of every pixel (:func:`patch_ids`).
        fill: A number, or a tensor broadcastable to ``x`` (per-channel means, noise images).
    """
    b, _, h, w = x.shape
    pixels = drop.gather(1, pixel_patch.expand(b, -1)).view(b, 1, h, w)
    fill = torch.as_tensor(fill, dtype=x.dtype, device=x.device)
    return torch.where(pixels, fill, x)


def grad_x_input(ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor, pixel_patch: torch.Tensor,
                 patches: int) -> torch.Tensor:
    """(B, P) salience: ``|d logit_y / d x * x|`` summed over channels, averaged over each patch's pixels.

    Per-image gradients of the true-class logit (the model is in eval mode, so images do not interact).
    """
    with torch.enable_grad(), ctx.autocast():
        xg = x.detach().clone().requires_grad_(True)
        score = ctx.model(xg).float().gather(1, y.view(-1, 1)).sum()
        (grad,) = torch.autograd.grad(score, xg)
    pixel = (grad.float() * x.float()).abs().sum(1).flatten(1)  # (B, H*W)
    index = pixel_patch.expand_as(pixel)
    total = torch.zeros(len(x), patches, device=x.device).scatter_add_(1, index, pixel)
    area = torch.zeros(patches, device=x.device).scatter_add_(0, pixel_patch, torch.ones_like(pixel_patch, dtype=torch.float))
    return total / area.clamp(min=1)


class PatchDrop(Probe):
    """Top-1 with a fraction of the patches dropped, per ordering and fraction (see the module docstring).

    Options:
        grid: ``"auto"`` (:func:`~robustvit.probes.base.default_grid`) or patches per side.
        fractions: Fractions of the ``grid * grid`` patches to drop (0 = clean).
        fill: ``black`` | ``mean`` | ``noise``.
        orderings: Subset of ``random``, ``salient_first``, ``least_salient_first``,
            ``least_interaction_first``.
        saliency: ``auto`` | ``gradxinput`` | ``rollout`` (for the salient orderings).
    """

    name: ClassVar[str] = "patch_drop"
    options: ClassVar[dict[str, Any]] = {
        "grid": "auto",
        "fractions": [round(0.1 * i, 1) for i in range(10)],
        "fill": "black",
        "orderings": ["random", "salient_first", "least_salient_first"],
        "saliency": "auto",
    }

    def validate(self) -> None:
        o, where = self.opts, f"probe {self.name!r}"
        if o["grid"] != "auto" and not (is_int(o["grid"]) and o["grid"] >= 1):
            raise UserError(f"{where}: bad 'grid' {o['grid']!r} (allowed: \"auto\" or a positive integer)")
        o["fractions"] = fraction_list(self.name, "fractions", o["fractions"])
        if o["fill"] not in FILLS:
            raise UserError(f"{where}: bad 'fill' {o['fill']!r} (allowed: {', '.join(FILLS)})")
        orderings = o["orderings"]
        if not isinstance(orderings, (list, tuple)) or not orderings or any(v not in ORDERINGS for v in orderings):
            raise UserError(f"{where}: bad 'orderings' {orderings!r} (allowed: a non-empty list of {', '.join(ORDERINGS)})")
        o["orderings"] = list(dict.fromkeys(orderings))
        if o["saliency"] not in SALIENCY:
            raise UserError(f"{where}: bad 'saliency' {o['saliency']!r} (allowed: {', '.join(SALIENCY)})")
        if "least_interaction_first" in o["orderings"] and _interaction() is None:
            raise UserError(f"{where}: ordering 'least_interaction_first' needs "
                            "robustvit.probes.interaction.interaction_mass, which is not available "
                            f"(allowed orderings here: {', '.join(ORDERINGS[:3])})")
        if o["saliency"] == "rollout" and self._salient() and _rollout() is None:
            raise UserError(f"{where}: saliency 'rollout' needs robustvit.probes.attention.rollout_saliency, "
                            "which is not available (allowed here: auto, gradxinput)")

    def _salient(self) -> bool:
        return any(v in SALIENT for v in self.opts["orderings"])

    def cells(self) -> list[str]:
        return [f"{v}/f={f:g}" for v in self.opts["orderings"] for f in self.opts["fractions"]]

    def skip_reason(self, model: ModelWrapper) -> str | None:
        if self.opts["saliency"] == "rollout" and self._salient() and model.family != "vit":
            return (f"{self.name}: saliency 'rollout' reads attention, ViT models only ({model.name} is "
                    f"{model.family}; saliency 'auto' uses gradient x input there)")
        return None

    def grid(self, model: ModelWrapper) -> int:
        """Patches per side for ``model``."""
        return default_grid(model) if self.opts["grid"] == "auto" else int(self.opts["grid"])

    def saliency_method(self, model: ModelWrapper) -> str:
        """``rollout`` or ``gradxinput``: what the salient orderings use on ``model``."""
        method = self.opts["saliency"]
        if method == "auto":
            return "rollout" if model.family == "vit" and _rollout() is not None and _readable(model) else "gradxinput"
        return method

    def _order(self, ctx: SuiteContext, ordering: str, x: torch.Tensor, y: torch.Tensor, index: torch.Tensor,
               grid: int, pixel_patch: torch.Tensor, memo: dict[str, torch.Tensor]) -> torch.Tensor:
        """(B, P) patch indices in the order they are dropped."""
        if ordering == "random":
            return per_image_perm(ctx, index, grid * grid, self.name, "random")
        if ordering == "least_interaction_first":
            mass = _interaction()(ctx, x, y, grid)  # type: ignore[misc]
            return torch.argsort(mass.float().to(x.device), dim=1, stable=True)
        if "saliency" not in memo:
            if self.saliency_method(ctx.model) == "rollout":
                with torch.no_grad():
                    memo["saliency"] = _rollout()(ctx.model, x, grid).float().to(x.device)  # type: ignore[misc]
            else:
                memo["saliency"] = grad_x_input(ctx, x, y, pixel_patch, grid * grid)
        return torch.argsort(memo["saliency"], dim=1, descending=ordering == "salient_first", stable=True)

    def _fill(self, ctx: SuiteContext, x: torch.Tensor, index: torch.Tensor) -> torch.Tensor | float:
        if self.opts["fill"] == "mean":
            return x.mean(dim=(2, 3), keepdim=True)
        if self.opts["fill"] == "noise":
            return per_image_rand(ctx, index, tuple(x.shape[1:]), self.name, "noise").to(x.dtype)
        return 0.0

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        grid = self.grid(ctx.model)
        patches = grid * grid
        declared = {f"{v}/f={f:g}": (v, f) for v in self.opts["orderings"] for f in self.opts["fractions"]}
        plan = {c: (declared[c][0], round(declared[c][1] * patches)) for c in cells}
        needed = {v for v, k in plan.values() if 0 < k < patches}
        correct: dict[str, list[torch.Tensor]] = {c: [] for c in cells}
        seen: list[torch.Tensor] = []
        pixel_patch: torch.Tensor | None = None
        for x, y, index in batches(ctx):
            if pixel_patch is None:
                if grid > min(x.shape[-2:]):
                    raise UserError(f"probe {self.name!r}: grid {grid} is finer than the {tuple(x.shape[-2:])} images")
                pixel_patch = patch_ids(tuple(x.shape[-2:]), grid, x.device)
            memo: dict[str, torch.Tensor] = {}
            ranks = {v: ranks_from_order(self._order(ctx, v, x, y, index, grid, pixel_patch, memo)) for v in sorted(needed)}
            fill = self._fill(ctx, x, index) if any(k for _, k in plan.values()) else 0.0
            outcome: dict[tuple[str, int], torch.Tensor] = {}
            for cell, (ordering, k) in plan.items():
                key = ("*", k) if k in (0, patches) else (ordering, k)  # nothing / everything dropped: same images
                if key not in outcome:
                    if k == 0:
                        images = x
                    else:
                        drop = ranks[ordering] < k if k < patches else torch.ones(len(x), patches, dtype=torch.bool,
                                                                                   device=x.device)
                        images = drop_patches(x, drop, pixel_patch, fill)
                    outcome[key] = predict(ctx, images).argmax(1) == y
                correct[cell].append(outcome[key])
            seen.append(index)
        index_all = torch.cat(seen) if seen else torch.empty(0, dtype=torch.long)
        for cell in cells:
            yield accuracy_cell(cell, torch.cat(correct[cell]) if seen else torch.empty(0, dtype=torch.bool), index_all)
