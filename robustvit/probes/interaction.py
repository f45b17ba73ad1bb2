"""Patch-interaction probe (any model): second-order occlusion interactions between the patches of a
coarse grid, after Ma et al., "Visualizing and Understanding Patch Interactions in Vision
Transformer" (IEEE TNNLS 2023).

For an image x of true class y and a set S of patches of a G x G grid (:func:`~robustvit.probes.base.patch_boxes`),
``v(S)`` is the score of ``x`` with the patches of S replaced by a fill (option ``fill``):

* ``score = "log_prob"`` (default): ``v(S) = log softmax(f(x_S))[y]``;
* ``score = "logit"``: ``v(S) = f(x_S)[y]``, the raw true-class logit (exactly additive models give
  exactly zero interactions, which the log-softmax would blur).

The interaction of patches i != j is the second-order finite difference (the discrete mixed
derivative of ``v`` in the two patches' presence, as in Ma et al.'s occlusion form)::

    I(i, j) = v({i, j}) - v({i}) - v({j}) + v({})

so it is zero when removing i changes the score by the same amount whether or not j is present.
Every image takes ``1 + G^2 + G^2 (G^2 - 1) / 2`` forward passes (G = 4: 137; G = 7: 1,226), chunked
to the run's batch size.

Cells (metric path ``probes/interaction/<cell>/<metric>``; n = probed images, the first ``images``
of the evaluation subset):

* ``scope``: ``d=<k>``, the mean of |I(i, j)| over the pairs at Chebyshev distance k (patches;
  ``max(|row_i - row_j|, |col_i - col_j|)``), k = 1 .. G-1, averaged over images.
* ``field``: the responsive field of patch i is the smallest set of partners j holding the fraction
  ``mass`` (default 0.5) of ``sum_j |I(i, j)|`` (largest |I| first; empty when the sum is 0); its size
  as a fraction of the G^2 - 1 partners over every (image, patch): ``size_mean``, ``size_p50``, ``size_p90``.
* ``attention``: ``corr``, the Pearson correlation over every (image, pair i < j) between |I(i, j)|
  and the attention between patches i and j: :func:`robustvit.probes.attention.attention_maps` on the
  clean image, patch-to-patch weights renormalised over the patch keys, averaged over layers and
  heads, average-pooled to the G x G grid and symmetrised ((A + A^T) / 2). Only for models with
  global attention over a patch grid at least G per side (ViT, DeiT, BEiT); NaN with n = 0 otherwise
  (CNNs, Swin's windowed attention), as the cell is planned for every model.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch
import torch.nn.functional as F

from robustvit.errors import UserError
from robustvit.probes.base import Probe, batches, patch_masks, predict
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper

FILLS = ("black", "gray", "mean")
SCORES = ("log_prob", "logit")
MAX_GRID = 16


def auto_grid(side: int) -> int:
    """The default coarse grid: 7 x 7 for inputs of 128 px and more (32 px patches at 224), else 4 x 4."""
    return 7 if side >= 128 else 4


def _fill(x: torch.Tensor, fill: str) -> torch.Tensor:
    if fill == "mean":
        return x.mean((2, 3), keepdim=True)
    return torch.full((len(x), x.shape[1], 1, 1), 0.5 if fill == "gray" else 0.0, dtype=x.dtype, device=x.device)


def subset_values(ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor, grid: int, *, fill: str = "black",
                  score: str = "log_prob") -> torch.Tensor:
    """``v(S)`` (B, 1 + P + P (P - 1) / 2), P = grid^2, for S = {}, the singles {i} (i row-major) and the pairs
    {i, j}, i < j, in :func:`torch.triu_indices` order; the masked images are batched across images."""
    if fill not in FILLS or score not in SCORES:
        raise UserError(f"interaction: fill must be one of {', '.join(FILLS)} and score one of {', '.join(SCORES)}")
    p = grid * grid
    masks = torch.cat([patch_masks(tuple(x.shape[-2:]), grid, x.device),
                       torch.zeros(1, *x.shape[-2:], dtype=torch.bool, device=x.device)])  # index p: no patch
    pairs = torch.triu_indices(p, p, 1, device=x.device)
    none = torch.full((1,), p, device=x.device)
    first = torch.cat([none, torch.arange(p, device=x.device), pairs[0]])
    second = torch.cat([none, none.expand(p), pairs[1]])
    m, fills = len(first), _fill(x, fill)
    values = torch.empty(len(x) * m, device=x.device)
    for start in range(0, len(values), ctx.batch_size):
        t = torch.arange(start, min(start + ctx.batch_size, len(values)), device=x.device)
        img, sub = t // m, t % m
        hidden = (masks[first[sub]] | masks[second[sub]]).unsqueeze(1)
        logits = predict(ctx, torch.where(hidden, fills[img], x[img]))
        if score == "log_prob":
            logits = logits.log_softmax(-1)
        values[t] = logits.gather(1, y[img].unsqueeze(1)).squeeze(1)
    return values.view(len(x), m)


def interaction_matrix(ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor, grid: int, *, fill: str = "black",
                       score: str = "log_prob") -> torch.Tensor:
    """(B, P, P) symmetric interactions ``I(i, j) = v({i,j}) - v({i}) - v({j}) + v({})`` (module docstring),
    zero on the diagonal, patches row-major on a ``grid x grid`` grid; x float RGB in [0,1], y true classes."""
    v = subset_values(ctx, x, y, grid, fill=fill, score=score)
    p = grid * grid
    i, j = torch.triu_indices(p, p, 1, device=x.device)
    pair = v[:, 1 + p:] - v[:, 1 + i] - v[:, 1 + j] + v[:, :1]
    out = torch.zeros(len(x), p, p, device=x.device)
    out[:, i, j] = pair
    out[:, j, i] = pair
    return out


def interaction_mass(ctx: SuiteContext, x: torch.Tensor, y: torch.Tensor, grid: int, *, fill: str = "black",
                     score: str = "log_prob") -> torch.Tensor:
    """(B, grid*grid) interaction mass of each patch, ``sum_j |I(i, j)|`` (row-major; see :func:`interaction_matrix`)."""
    return interaction_matrix(ctx, x, y, grid, fill=fill, score=score).abs().sum(-1)


def chebyshev(grid: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(P, P) Chebyshev distances, in patches, between the patches of a ``grid x grid`` grid (row-major)."""
    r, c = torch.arange(grid * grid, device=device).div(grid, rounding_mode="floor"), torch.arange(grid * grid, device=device) % grid
    return torch.maximum((r[:, None] - r[None]).abs(), (c[:, None] - c[None]).abs())


def field_sizes(inter: torch.Tensor, mass: float) -> torch.Tensor:
    """(B, P) responsive-field sizes as fractions of the P - 1 partners: the fewest partners (largest |I|
    first) whose |I| reaches ``mass`` of the patch's total; 0 where the total is 0."""
    p = inter.shape[-1]
    off = ~torch.eye(p, dtype=torch.bool, device=inter.device)
    vals = inter.abs()[:, off].view(len(inter), p, p - 1).sort(-1, descending=True).values
    total = vals.sum(-1, keepdim=True)
    below = (vals.cumsum(-1) < mass * total * (1 - 1e-6)).sum(-1) + 1
    return torch.where(total.squeeze(-1) > 0, below.clamp(max=p - 1), 0).double() / (p - 1)


def attention_grid(model: ModelWrapper, x: torch.Tensor, grid: int) -> torch.Tensor | None:
    """(B, P, P) patch-to-patch attention pooled to the coarse grid and symmetrised (module docstring), or
    None when the model has no global attention over a patch grid of at least ``grid`` per side."""
    from robustvit.probes.attention import read_attention, unsupported

    if model.family != "vit" or unsupported(model) is not None:
        return None

    def patch_part(a: torch.Tensor, g: Any) -> tuple[torch.Tensor, tuple[int, int]] | None:
        if g.resolution is not None or min(g.grid) < grid:
            return None
        a = a[..., g.prefix:, g.prefix:]
        return (a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)).mean(1), g.grid

    parts = read_attention(model, x, patch_part)
    if not parts or any(p is None for p in parts):
        return None
    b = len(x)

    def pooled(a: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:  # (B, query, key) on the coarse grid
        gh, gw = size
        keys = F.adaptive_avg_pool2d(a.reshape(b * gh * gw, 1, gh, gw), grid).view(b, gh, gw, grid * grid)
        return F.adaptive_avg_pool2d(keys.permute(0, 3, 1, 2), grid).flatten(2).transpose(1, 2)

    # pooled per block, then averaged: the same for one grid (pooling is linear), and defined when the grid
    # changes from stage to stage (ViL)
    both = torch.stack([pooled(*p) for p in parts]).mean(0)  # type: ignore[misc]
    return 0.5 * (both + both.transpose(1, 2))


class InteractionProbe(Probe):
    """Patch interactions on a coarse grid: scope, responsive field, agreement with attention (module docstring).

    Options:
        grid: ``"auto"`` (7 from 128 px inputs up, else 4) or patches per side, 2 .. 16.
        images: How many of the first evaluation images are probed (default 32).
        fill: What masks a patch: ``"black"`` (0, default), ``"gray"`` (0.5) or ``"mean"`` (the image's mean colour).
        score: ``"log_prob"`` (default) or ``"logit"`` of the true class.
        mass: Fraction of a patch's |I| mass its responsive field holds, in (0, 1] (default 0.5).
    """

    name: ClassVar[str] = "interaction"
    options: ClassVar[dict[str, Any]] = {"grid": "auto", "images": 32, "fill": "black", "score": "log_prob", "mass": 0.5}

    def validate(self) -> None:
        o, where = self.opts, "probe 'interaction'"
        grid, images, mass = o["grid"], o["images"], o["mass"]
        if grid != "auto" and (isinstance(grid, bool) or not isinstance(grid, int) or not 2 <= grid <= MAX_GRID):
            raise UserError(f"{where}: grid must be \"auto\" or an integer from 2 to {MAX_GRID} (got {grid!r})")
        if isinstance(images, bool) or not isinstance(images, int) or images < 1:
            raise UserError(f"{where}: images must be a positive integer (got {images!r})")
        if o["fill"] not in FILLS:
            raise UserError(f"{where}: unknown fill {o['fill']!r} (allowed: {', '.join(FILLS)})")
        if o["score"] not in SCORES:
            raise UserError(f"{where}: unknown score {o['score']!r} (allowed: {', '.join(SCORES)})")
        if isinstance(mass, bool) or not isinstance(mass, (int, float)) or not 0 < mass <= 1:
            raise UserError(f"{where}: mass must be a number in (0, 1] (got {mass!r})")

    def cells(self) -> list[str]:
        return ["scope", "field", "attention"]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        from robustvit.results.outcomes import Outcomes

        xs, ys, idx, count = [], [], [], 0
        for x, y, index in batches(ctx):
            take = min(len(y), self.opts["images"] - count)
            xs.append(x[:take])
            ys.append(y[:take])
            idx.append(index[:take])
            count += take
            if count >= self.opts["images"]:
                break
        if not count:
            raise UserError("probe 'interaction': the evaluation dataset yielded no images")
        x, y, index = torch.cat(xs), torch.cat(ys), torch.cat(idx).tolist()
        n = len(index)
        grid = self.opts["grid"] if self.opts["grid"] != "auto" else auto_grid(int(x.shape[-1]))
        inter = interaction_matrix(ctx, x, y, grid, fill=self.opts["fill"], score=self.opts["score"]).double()
        absolute = inter.abs()
        if "scope" in cells:
            dist = chebyshev(grid, absolute.device)
            upper = torch.triu(torch.ones_like(dist, dtype=torch.bool), 1)
            result, outcomes = CellResult("scope"), Outcomes().add_pool("images", index)
            for d in range(1, grid):
                per_image = absolute[:, upper & (dist == d)].mean(1).cpu()
                result.add(f"d={d}", float(per_image.mean()), n, True)
                outcomes.add(f"d={d}", per_image.numpy())
            result.outcomes = outcomes
            yield result
        if "field" in cells:
            sizes = field_sizes(inter, float(self.opts["mass"])).cpu()
            result = CellResult("field").add("size_mean", float(sizes.mean()), n, True)
            result.add("size_p50", float(sizes.flatten().quantile(0.5)), n, True)
            result.add("size_p90", float(sizes.flatten().quantile(0.9)), n, True)
            result.outcomes = Outcomes().add_pool("images", index).add("size_mean", sizes.mean(1).numpy())
            yield result
        if "attention" in cells:
            with ctx.autocast():
                attn = attention_grid(ctx.model, x, grid)
            corr, used = float("nan"), 0
            if attn is not None:
                upper = torch.triu(torch.ones(grid * grid, grid * grid, dtype=torch.bool, device=x.device), 1)
                pairs = torch.stack([absolute[:, upper].flatten(), attn.double()[:, upper].flatten()])
                corr, used = float(torch.corrcoef(pairs)[0, 1]), n
            yield CellResult("attention").add("corr", corr, used, True)
