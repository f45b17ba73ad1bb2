"""Noise corruptions: gaussian, shot (Poisson), impulse (salt & pepper) and speckle noise.

Each follows imagecorruptions 1.1.2 / the CIFAR-10-C generator; parameters come from
:mod:`robustvit.corruptions.presets`. Noise is drawn independently per pixel and channel.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustvit.corruptions import _ops
from robustvit.corruptions.presets import params

_GUIDE_MIN = 256  # guide-table cells per Poisson level: about four per support point (few increments)
_STEPS = 3  # increments from the guide's candidate before a binary search of the (few) values left


def _noise(x: torch.Tensor, generator: _ops.Generator, std: float) -> torch.Tensor:
    """``N(0, std^2)`` per value, drawn in the reference's (N, H, W, C) order."""
    n, c, h, w = x.shape
    return _ops.normal((n, h, w, c), generator, x.device, std=std).permute(0, 3, 1, 2)


def gaussian_noise(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                   generator: _ops.Generator = None) -> torch.Tensor:
    """``clip(x + N(0, c^2))``."""
    c = params("gaussian_noise", severity, preset)["scale"]
    x = _ops.work(images)
    return _ops.finish(x + _noise(x, generator, c), images)


def speckle_noise(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                  generator: _ops.Generator = None) -> torch.Tensor:
    """``clip(x + x * N(0, c^2))``."""
    c = params("speckle_noise", severity, preset)["scale"]
    x = _ops.work(images)
    return _ops.finish(x + x * _noise(x, generator, c), images)


def impulse_noise(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                  generator: _ops.Generator = None) -> torch.Tensor:
    """Salt and pepper (skimage ``random_noise(mode="s&p", amount=c)``): each value is replaced with
    probability ``c``, by 1 or 0 with equal odds."""
    c = params("impulse_noise", severity, preset)["amount"]
    x = _ops.work(images)
    u = _ops.uniform(tuple(x.shape), generator, x.device)
    out = torch.where(u < c, (u < 0.5 * c).to(x.dtype), x)
    return _ops.finish(out, images)


@lru_cache(maxsize=32)
def _poisson_tables(rate: float, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """CDF and guide tables of Poisson(k * rate / 255) for k = 0..255 (inversion sampling)."""
    lam = np.arange(256, dtype=np.float64) * rate / 255.0
    size = int(np.ceil(rate + 12.0 * np.sqrt(rate) + 20.0))
    j = np.arange(size, dtype=np.float64)
    gammaln = torch.special.gammaln(torch.from_numpy(j + 1.0)).numpy()
    with np.errstate(divide="ignore", invalid="ignore"):
        logp = j[None, :] * np.log(lam[:, None]) - lam[:, None] - gammaln[None, :]
    pmf = np.exp(logp)
    pmf[0] = 0.0
    pmf[0, 0] = 1.0  # Poisson(0) is 0
    cdf = np.cumsum(pmf, axis=1)
    cdf[:, -1] = 2.0  # every u < 1 stops at the last support point at the latest
    guide_cells = max(_GUIDE_MIN, 4 << (size - 1).bit_length())
    cells = np.arange(guide_cells, dtype=np.float64) / guide_cells
    guide = np.stack([np.searchsorted(row, cells, side="right") for row in cdf])  # first j with F(j) > g/G
    return (torch.from_numpy(cdf.astype(np.float32).ravel()).to(device),
            torch.from_numpy(guide.astype(np.int16).ravel()).to(device), size, guide_cells)


def shot_noise(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
               generator: _ops.Generator = None) -> torch.Tensor:
    """``clip(Poisson(x * c) / c)`` on the 8-bit image, as the reference (which takes uint8 input).

    Sampled exactly by inversion with per-level CDF tables and a guide table, which is several
    times faster than ``torch.poisson`` on CPU: each value is the first support point whose CDF
    exceeds its uniform draw, found by a few steps from its guide cell's first candidate, or, for
    the few values in the first and last cells (which span a whole tail), by binary search.
    """
    c = float(params("shot_noise", severity, preset)["rate"])
    x = _ops.work(images)
    cdf, guide, size, cells = _poisson_tables(c, x.device)
    level = (x.clamp(0, 1) * 255.0).round_().to(torch.int64).view(-1)
    u = _ops.uniform((x.shape[0], level.numel() // max(x.shape[0], 1)), generator, x.device).view(-1)
    cell = (u * cells).to(torch.int64).clamp_(max=cells - 1)
    k = guide.take(cell.add_(level * cells)).long()
    base = level * size
    active = torch.nonzero(cdf.take(base + k) <= u).squeeze(1)
    for _ in range(_STEPS):  # a few values sit past their guide cell's first candidate
        if not active.numel():
            break
        k[active] += 1
        active = active[cdf.take(base[active] + k[active]) <= u[active]]
    if active.numel():  # the tail cells span many support points: search the few left in their rows
        rows = cdf.view(256, size).index_select(0, level[active])
        k[active] = torch.searchsorted(rows, u[active].unsqueeze(1), right=True).squeeze(1)
    out = (k.to(torch.float32) / c).view_as(x)
    return _ops.finish(out, images)
