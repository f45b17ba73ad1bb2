"""Weather corruptions: snow, frost and fog (spatter lives in :mod:`robustvit.corruptions.spatter`)."""

from __future__ import annotations

import os

import torch

from robustvit.corruptions import _ops
from robustvit.corruptions import textures as _textures
from robustvit.corruptions.presets import params


def snow(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
         generator: _ops.Generator = None) -> torch.Tensor:
    """Zoomed, thresholded Gaussian noise streaked by a motion blur, over a whitened image."""
    p = params("snow", severity, preset)
    x = _ops.work(images)
    n, _, h, w = x.shape
    layer = _ops.normal((n, 1, h, w), generator, x.device, mean=p["loc"], std=p["scale"])
    layer = _ops.clipped_zoom(layer, float(p["zoom"]), p["crop"])
    layer = torch.where(layer < p["threshold"], torch.zeros_like(layer), layer).clamp_(0.0, 1.0)
    if p["layer_uint8"]:  # CIFAR-10-C hands ImageMagick an 8-bit PNG
        layer = (layer * 255.0).floor_() / 255.0
    lo, hi = p["angle"]
    angles = _ops.uniform((n,), generator, torch.device("cpu"), lo, hi, dtype=torch.float64)
    layer = _ops.motion_blur(layer, int(p["radius"]), float(p["sigma"]), angles)
    layer = (layer * 255.0).round_().clamp_(0, 255)[..., :h, :w] / 255.0
    blend = float(p["blend"])
    x = blend * x + (1.0 - blend) * torch.maximum(x, _ops.gray(x) * 1.5 + 0.5)
    return _ops.finish(x + layer + layer.flip(-1, -2), images)


def frost(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
          generator: _ops.Generator = None, frost_dir: str | os.PathLike[str] | None = None) -> torch.Tensor:
    """``clip(c0 * x + c1 * texture)`` with a random crop of one of the first five frost textures.

    Args:
        frost_dir: Folder with the textures; see :func:`robustvit.corruptions.textures.frost_dir`
            for where they are found otherwise.
    """
    p = params("frost", severity, preset)
    x = _ops.work(images)
    n, _, h, w = x.shape
    textures = _textures.frost_textures(str(_textures.frost_dir(frost_dir)), int(p["textures"]), h, w, p["scale"],
                                        p["interpolation"], x.device)
    layer = torch.empty_like(x)
    rows_h = torch.arange(h, device=x.device)
    cols_w = torch.arange(w, device=x.device)
    sizes = torch.tensor([tuple(t.shape[-2:]) for t in textures], dtype=torch.int64)
    if _ops.is_numpy(generator):  # reference order, image by image: texture, then its crop
        picks = []
        for _ in range(n):
            k = _ops.randint(0, len(textures), (), generator, torch.device("cpu"))
            picks.append(torch.cat([k.view(1), _ops.randint_below(sizes[k] - torch.tensor([h, w]), generator)]))
        choice, top, left = torch.stack(picks).unbind(1)
    else:
        choice = _ops.randint(0, len(textures), (n,), generator, torch.device("cpu"))
        top, left = _ops.randint_below(sizes[choice] - torch.tensor([h, w]), generator).unbind(1)
    for k, tex in enumerate(textures):  # one gather per texture, not per image
        idx = torch.nonzero(choice == k).squeeze(1)
        if idx.numel() == 0:
            continue
        rows = (top[idx].to(x.device)[:, None] + rows_h)[:, :, None]
        cols = (left[idx].to(x.device)[:, None] + cols_w)[:, None, :]
        layer[idx.to(x.device)] = tex[:, rows, cols].permute(1, 0, 2, 3)
    return _ops.finish(p["image_weight"] * x + p["frost_weight"] * layer, images)


def _plasma(n: int, size: int, decay: float, generator: _ops.Generator, device: torch.device) -> torch.Tensor:
    """Batched diamond-square height maps in [0, 1] (imagecorruptions' ``plasma_fractal``)."""
    m = torch.zeros((n, size, size), device=device, dtype=torch.float32)
    step, wibble = size, 100.0

    def wibbled(a: torch.Tensor) -> torch.Tensor:
        return a / 4 + wibble * _ops.uniform(tuple(a.shape), generator, device, -wibble, wibble)

    while step >= 2:
        half = step // 2
        corner = m[:, 0:size:step, 0:size:step]
        sq = corner + torch.roll(corner, -1, dims=1)
        sq = sq + torch.roll(sq, -1, dims=2)
        m[:, half:size:step, half:size:step] = wibbled(sq)
        dr = m[:, half:size:step, half:size:step]
        ul = m[:, 0:size:step, 0:size:step]
        lt = dr + torch.roll(dr, 1, dims=1) + ul + torch.roll(ul, -1, dims=2)
        m[:, 0:size:step, half:size:step] = wibbled(lt)
        tt = dr + torch.roll(dr, 1, dims=2) + ul + torch.roll(ul, -1, dims=1)
        m[:, half:size:step, 0:size:step] = wibbled(tt)
        step //= 2
        wibble /= decay
    m = m - m.amin(dim=(1, 2), keepdim=True)
    return m / m.amax(dim=(1, 2), keepdim=True)


def fog(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
        generator: _ops.Generator = None) -> torch.Tensor:
    """``(x + c0 * plasma) * max / (max + c0)`` with a plasma fractal of the next power-of-two size."""
    p = params("fog", severity, preset)
    x = _ops.work(images)
    n, _, h, w = x.shape
    size = 1 << (max(h, w, 3) - 1).bit_length()
    plasma = _plasma(n, size, float(p["decay"]), generator, x.device)  # whole batch: cost per level
    c = float(p["strength"])
    out = torch.empty_like(x)
    step = _ops.cpu_chunk(x)
    for a in range(0, n, step):
        xa = x[a: a + step]
        peak = xa.amax(dim=(1, 2, 3), keepdim=True)
        out[a: a + step] = (xa + c * plasma[a: a + step, None, :h, :w]) * (peak / (peak + c))
    return _ops.finish(out, images)


fog.whole_batch = True  # type: ignore[attr-defined]
