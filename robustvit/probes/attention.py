"""Attention probe (ViTs): mean attention distance per layer and head, and attention rollout maps.

Attention weights are read from the model's own attention modules: timm's fused kernels
(``F.scaled_dot_product_attention``) return no weights, so during a read each supported module is
switched to its un-fused path (``fused_attn = False``, the same q, k, scale, relative position bias
and shifted-window mask) and the softmax output it hands to its ``attn_drop`` is captured (the
model's output is unchanged up to float error). Supported: timm ``vision_transformer.Attention``
(ViT, DeiT with its distillation token), ``beit.Attention`` (relative position bias, shared or
per block) and ``swin_transformer.WindowAttention`` (windows, relative bias, shifted windows); and any
attention module with the same interface plus a ``token_layout`` = (token grid, token spacing in input
pixels, prefix tokens): robustvit's DeepViT (its softmax maps, before re-attention mixes the heads) and ViL
(global tokens first; zero weight outside a token's window; a new grid per stage).

Cells (metric path ``probes/attention/<cell>/<metric>``):

* ``distance/layer=<l>``: mean attention distance (:func:`mean_attention_distance`: patch queries and
  keys only, attention renormalised over the patch keys; Swin: within windows) of block ``l``
  (0-based, forward order, Swin counted across stages), metrics ``head=<h>`` and ``mean`` over heads,
  input pixels, n = images. The depth depends on the model, which :meth:`Probe.cells` cannot know:
  these cells are written in the pass of the planned cell ``distance`` (``mean`` over layers and
  heads, ``first`` and ``last`` layer), which comes last, so a stored ``distance`` means all were.
* ``rollout/sample=<k>``: the rollout map (:func:`rollout_maps`: class-token row; Swin and models
  without a class token: mean over the queries) of the k-th evaluation image, metrics ``p<i>`` per
  patch of the model's own token grid (row-major, summing to 1), n = 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from robustvit.errors import UserError
from robustvit.probes.base import Probe, batches
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper

T = TypeVar("T")


@dataclass(frozen=True)
class Geometry:
    """Token layout of one attention block.

    Attributes:
        grid: Patch tokens per side the attention runs over: the patch grid, or for Swin the window.
        spacing: Input pixels between neighbouring token centres (rows, columns).
        prefix: Leading non-patch tokens (class, distillation, register tokens); 0 for Swin.
        resolution: Swin only: the stage's token grid (H, W); None for global attention.
        shift: Swin only: the cyclic shift of the windows (rows, columns).
    """

    grid: tuple[int, int]
    spacing: tuple[float, float]
    prefix: int = 0
    resolution: tuple[int, int] | None = None
    shift: tuple[int, int] = (0, 0)

    def coords(self, device: torch.device | str = "cpu") -> torch.Tensor:
        """(grid_h * grid_w, 2) pixel centres of the patch tokens (row-major, within a window for Swin)."""
        rows = (torch.arange(self.grid[0], dtype=torch.float32, device=device) + 0.5) * self.spacing[0]
        cols = (torch.arange(self.grid[1], dtype=torch.float32, device=device) + 0.5) * self.spacing[1]
        return torch.stack(torch.meshgrid(rows, cols, indexing="ij"), -1).reshape(-1, 2)

    def valid(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Swin: (windows, window tokens) True for real tokens, False for the padding that fills the
        last windows when the stage's grid is not a multiple of the window; None for global attention."""
        if self.resolution is None:
            return None
        (h, w), (wh, ww) = self.resolution, self.grid
        hp, wp = -(-h // wh) * wh, -(-w // ww) * ww
        real = torch.zeros(hp, wp, dtype=torch.bool, device=device)
        real[:h, :w] = True
        return real.view(hp // wh, wh, wp // ww, ww).permute(0, 2, 1, 3).reshape(-1, wh * ww)


def _classes() -> tuple[tuple[type, ...], type, type]:
    from timm.layers.attention import Attention
    from timm.models.beit import Attention as BeitAttention
    from timm.models.swin_transformer import SwinTransformerBlock, WindowAttention

    return (Attention, BeitAttention), WindowAttention, SwinTransformerBlock


def _declared(module: nn.Module) -> bool:
    """An attention module that declares its token layout (``token_layout``; robustvit's DeepViT and ViL)."""
    return hasattr(module, "token_layout") and hasattr(module, "attn_drop") and hasattr(module, "fused_attn")


def _blocks(model: ModelWrapper) -> list[tuple[nn.Module, nn.Module | None]]:
    """Supported attention modules in forward order, each with its Swin block (None for global attention)."""
    global_cls, window_cls, swin_block = _classes()
    net = model.model
    owner = {id(m.attn): m for m in net.modules() if isinstance(m, swin_block)}
    found = [(m, owner.get(id(m))) for m in net.modules() if isinstance(m, (*global_cls, window_cls)) or _declared(m)]
    if any(isinstance(m, window_cls) and blk is None for m, blk in found):
        raise UserError(f"model {model.name!r}: a WindowAttention outside a Swin block (unsupported layout)")
    return found


def unsupported(model: ModelWrapper) -> str | None:
    """Why :func:`attention_maps` cannot read ``model``'s attention, else None."""
    try:
        blocks = _blocks(model)
    except UserError as exc:
        return str(exc)
    net = model.model
    if not blocks:
        return (f"{model.name} has no supported attention (timm ViT/DeiT/BEiT Attention, Swin WindowAttention, "
                "DeepViT, ViL)")
    if all(_declared(m) for m, _ in blocks):
        return None
    if getattr(net, "patch_embed", None) is None:
        return f"{model.name} has no patch embedding (patch_embed)"
    if any(blk is None for _, blk in blocks) and not isinstance(getattr(net, "num_prefix_tokens", None), int):
        return f"{model.name}: token layout unknown (no num_prefix_tokens, as timm ViT, DeiT and BEiT have)"
    return None


def _geometry(model: ModelWrapper, module: nn.Module, block: nn.Module | None, x: torch.Tensor,
              tokens: int) -> Geometry:
    if _declared(module):
        grid, spacing, prefix = module.token_layout
        if tokens != prefix + grid[0] * grid[1]:
            raise UserError(f"model {model.name!r}: {tokens} tokens are not the {prefix} prefix tokens and "
                            f"{grid[0]}x{grid[1]} grid its attention declares")
        return Geometry(tuple(grid), tuple(float(v) for v in spacing), int(prefix))
    height, width = int(x.shape[-2]), int(x.shape[-1])
    if block is not None:  # Swin: the block's stage grid, window and shift
        res = tuple(int(v) for v in block.input_resolution)
        return Geometry(tuple(int(v) for v in block.window_size), (height / res[0], width / res[1]), 0, res,
                        tuple(int(v) for v in block.shift_size))
    ph, pw = (int(v) for v in model.model.patch_embed.patch_size)
    grid = (height // ph, width // pw)
    prefix = tokens - grid[0] * grid[1]
    if prefix != model.model.num_prefix_tokens:
        raise UserError(f"model {model.name!r}: {tokens} tokens are not {model.model.num_prefix_tokens} prefix "
                        f"tokens and a {grid[0]}x{grid[1]} patch grid (token layout not understood)")
    return Geometry(grid, (float(ph), float(pw)), prefix)


def read_attention(model: ModelWrapper, x: torch.Tensor, reduce: Callable[[torch.Tensor, Geometry], T]) -> list[T]:
    """Forward ``x`` (float RGB in [0,1]) and apply ``reduce(weights, geometry)`` to each block's attention
    weights (float32, no gradients) as the block computes them; one result per block, in forward order.

    ``weights`` is (B, heads, N, N) for global attention (all N tokens, prefix tokens first) and
    (B, windows, heads, n, n) for Swin (n = window_h * window_w tokens per window, windows row-major
    over the cyclically shifted, padded stage grid, as in Liu et al. 2021).
    """
    reason = unsupported(model)
    if reason is not None:
        raise UserError(f"cannot read attention: {reason}")
    blocks = _blocks(model)
    out: list[T] = []

    def hook(module: nn.Module, block: nn.Module | None) -> Callable[[nn.Module, tuple[Any, ...]], None]:
        def capture(_m: nn.Module, args: tuple[Any, ...]) -> None:
            weights = args[0].detach().float()
            geometry = _geometry(model, module, block, x, weights.shape[-1])
            if block is not None:
                weights = weights.view(len(x), -1, *weights.shape[1:])
            out.append(reduce(weights, geometry))
        return capture

    saved = [m.fused_attn for m, _ in blocks]
    handles = [m.attn_drop.register_forward_pre_hook(hook(m, blk)) for m, blk in blocks]
    try:
        for m, _ in blocks:
            m.fused_attn = False
        with torch.no_grad():
            model(x)
    finally:
        for (m, _), fused in zip(blocks, saved, strict=True):
            m.fused_attn = fused
        for handle in handles:
            handle.remove()
    if len(out) != len(blocks):
        raise UserError(f"model {model.name!r}: read {len(out)} attention maps from {len(blocks)} attention modules")
    return out


def attention_maps(model: ModelWrapper, x: torch.Tensor) -> list[torch.Tensor]:
    """Attention weights per block: softmax(q k^T / sqrt(d) + relative position bias [+ shift mask]).

    Args:
        model: A wrapped timm ViT, DeiT, BEiT or Swin (see :func:`unsupported`).
        x: Images (B, 3, H, W), float RGB in [0,1] at the model's input size.

    Returns:
        One tensor per block, in forward order: (B, heads, N, N) over all tokens (class/distillation
        tokens first, then the patch grid row-major) for ViT/DeiT/BEiT; for Swin (B, windows, heads,
        n, n) with n tokens per window (see :func:`read_attention`). Rows sum to 1.
    """
    return read_attention(model, x, lambda a, _g: a)


def mean_attention_distance(attn: torch.Tensor, coords: torch.Tensor, prefix: int = 0,
                            valid: torch.Tensor | None = None) -> torch.Tensor:
    """Mean attention distance per image and head (Dosovitskiy et al. 2021, Fig. 7 and appendix D.7).

    For query patch q: ``d(q) = sum_k A'(q, k) * ||c_q - c_k||``, with ``c`` the patch centres in input
    pixels and ``A'`` the attention renormalised over the patch keys (class, distillation and register
    tokens are left out as queries and as keys); the distance of a head is the mean of ``d(q)`` over
    the patch queries (and, for windowed attention, over windows).

    Args:
        attn: (B, heads, N, N), or (B, windows, heads, n, n) for windowed attention.
        coords: (N - prefix, 2) pixel centres of the patch tokens (within a window).
        prefix: Leading non-patch tokens.
        valid: Windowed attention only: (windows, n) True for real (not padding) tokens.

    Returns:
        (B, heads) mean distances in pixels.
    """
    a = attn[..., prefix:, prefix:].float()
    if valid is not None:
        a = a * valid[None, :, None, None, :].to(a.dtype)
    a = a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)
    per_query = (a * torch.cdist(coords, coords).to(a)).sum(-1)
    if valid is None:
        per_window = per_query.mean(-1)
        return per_window.mean(1) if attn.dim() == 5 else per_window
    weight = valid[None, :, None, :].to(a.dtype)
    return (per_query * weight).sum((1, 3)) / weight.sum((1, 3))


def attention_rollout(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Attention rollout (Abnar & Zuidema 2020): ``R = Â_L ... Â_1`` with ``Â_l = rownorm(0.5 A_l + 0.5 I)``
    and ``A_l`` the head mean of block ``l``; (B, heads, N, N) or (B, N, N) maps in, (B, N, N) out (rows sum to 1)."""
    rollout: torch.Tensor | None = None
    for a in maps:
        a = a.float().mean(1) if a.dim() == 4 else a.float()
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        a = a / a.sum(-1, keepdim=True)
        rollout = a if rollout is None else a @ rollout
    if rollout is None:
        raise ValueError("attention_rollout needs at least one attention map")
    return rollout


def _windowed(weights: torch.Tensor, g: Geometry) -> torch.Tensor:
    """Swin block -> (B, windows, n, n) ``Â`` of the rollout: padding keys dropped, rows renormalised, head mean."""
    a = weights * g.valid(weights.device)[None, :, None, None, :].to(weights.dtype)  # type: ignore[index]
    a = (a / a.sum(-1, keepdim=True).clamp_min(torch.finfo(a.dtype).tiny)).mean(2)
    a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
    return a / a.sum(-1, keepdim=True)


def _unmerge(v: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Swin patch merging backwards: each token's weight split evenly over its (up to 2x2) source tokens."""
    h, w = size
    ones = F.pad(torch.ones(1, h, w, device=v.device), (0, 2 * v.shape[2] - w, 0, 2 * v.shape[1] - h))
    count = ones.view(1, v.shape[1], 2, v.shape[2], 2).sum((2, 4))
    spread = (v / count).repeat_interleave(2, 1).repeat_interleave(2, 2)
    return spread[:, :h, :w]


def _swin_rollout(blocks: list[tuple[torch.Tensor, Geometry]], grid: tuple[int, int]) -> torch.Tensor:
    """(B, grid_h, grid_w) = mean over the last stage's query tokens of the rollout, by a row vector through
    ``Â_L ... Â_1`` (windows undone, patch merging split evenly); sums to 1 per image."""
    a, g = blocks[-1]
    v = torch.full((a.shape[0], *g.resolution), 1.0 / (g.resolution[0] * g.resolution[1]), device=a.device)
    for a, g in reversed(blocks):
        if tuple(v.shape[1:]) != g.resolution:
            v = _unmerge(v, g.resolution)  # type: ignore[arg-type]
        (h, w), (wh, ww), (sh, sw) = g.resolution, g.grid, g.shift  # type: ignore[misc]
        s = F.pad(torch.roll(v, shifts=(-sh, -sw), dims=(1, 2)), (0, -w % ww, 0, -h % wh))
        hp, wp = s.shape[1:]
        win = s.view(-1, hp // wh, wh, wp // ww, ww).permute(0, 1, 3, 2, 4).reshape(len(s), -1, 1, wh * ww)
        win = (win @ a).view(-1, hp // wh, wp // ww, wh, ww).permute(0, 1, 3, 2, 4).reshape(-1, hp, wp)
        v = torch.roll(win[:, :h, :w], shifts=(sh, sw), dims=(1, 2))
    return v if tuple(v.shape[1:]) == grid else _unmerge(v, grid)


def _staged_rollout(blocks: list[tuple[torch.Tensor, Geometry]], from_token: bool) -> torch.Tensor:
    """Global attention over a new token grid per stage (ViL): a row vector through ``Â_L ... Â_1``, from the
    last stage's first prefix token (``from_token``) or the mean of its patch queries. At a stage boundary the
    vector's patch part is spread evenly over the p x p tokens of the previous stage each token embeds (rows
    and columns a stride leaves out get none), and its prefix part is dropped: each stage starts new global
    tokens. (B, grid_h, grid_w) on the first stage's grid, summing to 1 per image."""
    a, g = blocks[-1]
    n_patch = g.grid[0] * g.grid[1]
    v = torch.zeros(a.shape[0], g.prefix + n_patch, device=a.device)
    if from_token and g.prefix > 0:
        v[:, 0] = 1.0
    else:
        v[:, g.prefix:] = 1.0 / n_patch
    current = g
    for a, g in reversed(blocks):
        if g != current:
            (h, w), (hp, wp) = g.grid, current.grid
            patch = v[:, current.prefix:].view(-1, hp, wp)
            patch = patch.repeat_interleave(h // hp, 1).repeat_interleave(w // wp, 2) / ((h // hp) * (w // wp))
            patch = F.pad(patch, (0, w - patch.shape[2], 0, h - patch.shape[1]))
            v = torch.cat([v.new_zeros(len(v), g.prefix), patch.flatten(1)], 1)
            current = g
        a = 0.5 * a + 0.5 * torch.eye(a.shape[-1], device=a.device)
        v = (v.unsqueeze(1) @ (a / a.sum(-1, keepdim=True))).squeeze(1)
    patch = v[:, current.prefix:].view(-1, *current.grid)
    return patch / patch.sum((1, 2), keepdim=True)


def rollout_maps(model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
    """Rollout maps on the model's own token grid (B, grid_h, grid_w), each summing to 1.

    ViT/DeiT/BEiT/DeepViT with a class token: the class token's row of :func:`attention_rollout` over the
    patch tokens, renormalised; without a class token (and for Swin, see :func:`_swin_rollout`): the
    mean over the patch queries' rows; ViL (a grid per stage): :func:`_staged_rollout`, on the first stage's grid.
    """
    blocks = read_attention(model, x, lambda a, g: (_windowed(a, g) if g.resolution else a.mean(1), g))
    g = blocks[0][1]
    grid = tuple(int(v) for v in model.model.patch_embed.grid_size) if g.resolution else g.grid
    if g.resolution:
        return _swin_rollout(blocks, grid)  # type: ignore[arg-type]
    if any(other != g for _, other in blocks):
        return _staged_rollout(blocks, getattr(model.model, "global_pool", "token") == "token")
    rollout = attention_rollout([a for a, _ in blocks])[:, :, g.prefix:]
    has_cls = getattr(model.model, "cls_token", None) is not None and g.prefix > 0
    rows = rollout[:, 0] if has_cls else rollout[:, g.prefix:].mean(1)
    return (rows / rows.sum(-1, keepdim=True)).view(len(x), *grid)


def rollout_saliency(model: ModelWrapper, x: torch.Tensor, grid: int) -> torch.Tensor:
    """Rollout saliency (B, grid*grid), row-major: :func:`rollout_maps` average-pooled (adaptive pooling;
    repeated cells when ``grid`` is finer than the model's grid) to ``grid x grid`` and renormalised to sum 1."""
    pooled = F.adaptive_avg_pool2d(rollout_maps(model, x).unsqueeze(1), grid).flatten(1)
    return pooled / pooled.sum(-1, keepdim=True)


class AttentionProbe(Probe):
    """Mean attention distance per layer and head, and rollout maps of sample images (module docstring).

    Options:
        samples: How many of the first evaluation images get a rollout cell (default 4).
    """

    name: ClassVar[str] = "attention"
    vit_only: ClassVar[bool] = True
    options: ClassVar[dict[str, Any]] = {"samples": 4}

    def validate(self) -> None:
        samples = self.opts["samples"]
        if isinstance(samples, bool) or not isinstance(samples, int) or not 0 <= samples <= 64:
            raise UserError(f"probe 'attention': samples must be an integer from 0 to 64 (got {samples!r})")

    def cells(self) -> list[str]:
        return ["distance", *(f"rollout/sample={k}" for k in range(self.opts["samples"]))]

    def cells_for(self, model: ModelWrapper) -> list[str]:
        """One ``distance/layer=<l>`` cell per attention layer of ``model``, then the summary and the rollouts."""
        layers = len(_blocks(model)) if self.skip_reason(model) is None else 0
        return [f"distance/layer={layer}" for layer in range(layers)] + self.cells()

    def skip_reason(self, model: ModelWrapper) -> str | None:
        return super().skip_reason(model) or unsupported(model)

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        wanted = [c for c in cells if c.startswith("rollout/")]
        # sample k is the k-th evaluation image, whichever rollout cells are asked for (resumes, shards of cells)
        samples = max((int(c.split("=", 1)[1]) + 1 for c in wanted), default=0)
        per_layer: list[list[torch.Tensor]] = []
        indices: list[torch.Tensor] = []
        maps: list[torch.Tensor] = []
        for x, _y, index in batches(ctx):
            need = samples - sum(len(m) for m in maps)
            if need > 0:
                with ctx.autocast():
                    maps.append(rollout_maps(ctx.model, x[:need]).flatten(1).cpu())
            if not any(c.startswith("distance") for c in cells):
                if need <= len(x):
                    break
                continue
            with ctx.autocast():
                dist = read_attention(ctx.model, x, lambda a, g: mean_attention_distance(
                    a, g.coords(a.device), g.prefix, g.valid(a.device)).cpu())
            per_layer = [[*p, d] for p, d in zip(per_layer or [[] for _ in dist], dist, strict=True)]
            indices.append(index)
        rollouts = torch.cat(maps) if maps else torch.empty(0, 0)
        for cell in wanted:
            k = int(cell.split("=", 1)[1])
            result = CellResult(cell)
            row = rollouts[k].tolist() if k < len(rollouts) else [float("nan")]
            for i, value in enumerate(row):
                result.add(f"p{i}", value, int(k < len(rollouts)), True)
            yield result
        if any(c.startswith("distance") for c in cells):
            yield from _distance_cells(per_layer, torch.cat(indices) if indices else torch.empty(0, dtype=torch.long))


def _distance_cells(per_layer: list[list[torch.Tensor]], index: torch.Tensor) -> Iterator[CellResult]:
    """``distance/layer=<l>`` cells with per-image outcomes (bootstrap intervals), then the ``distance`` summary."""
    from robustvit.results.outcomes import Outcomes

    def cell(name: str, metrics: dict[str, torch.Tensor]) -> CellResult:
        result, outcomes = CellResult(name), Outcomes().add_pool("images", index.tolist())
        for metric, per_image in metrics.items():
            result.add(metric, float(per_image.mean()) if len(index) else float("nan"), len(index), True)
            outcomes.add(metric, per_image.numpy())
        result.outcomes = outcomes
        return result

    layer_means = []
    for layer, parts in enumerate(per_layer):
        d = torch.cat(parts).double()  # (images, heads)
        layer_means.append(d.mean(1))
        yield cell(f"distance/layer={layer}", {**{f"head={h}": d[:, h] for h in range(d.shape[1])}, "mean": d.mean(1)})
    means = torch.stack(layer_means, 1) if layer_means else torch.full((len(index), 1), float("nan"))
    yield cell("distance", {"mean": means.mean(1), "first": means[:, 0], "last": means[:, -1]})
