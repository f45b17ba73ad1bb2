"""Blur corruptions: defocus, glass, motion, zoom and gaussian blur (imagecorruptions 1.1.2 semantics)."""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import torch

from robustvit.corruptions import _ops
from robustvit.corruptions.presets import params


def gaussian_blur(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                  generator: _ops.Generator = None) -> torch.Tensor:
    """skimage ``gaussian(x, sigma=c)`` per channel (scipy ``nearest`` border, truncate 4)."""
    c = params("gaussian_blur", severity, preset)["sigma"]
    return _ops.finish(_ops.gaussian_filter(_ops.work(images), float(c)), images)


@lru_cache(maxsize=32)
def _disk(radius: float, alias_blur: float) -> np.ndarray:
    """imagecorruptions' anti-aliased disk: a normalised disk smoothed by ``cv2.GaussianBlur``."""
    if radius <= 8:
        coords, ksize = np.arange(-8, 8 + 1), 3
    else:
        coords, ksize = np.arange(-radius, radius + 1), 5
    xx, yy = np.meshgrid(coords, coords)
    disk = ((xx**2 + yy**2) <= radius**2).astype(np.float64)
    disk /= disk.sum()
    t = np.arange(ksize) - (ksize - 1) / 2.0
    g = np.exp(-(t**2) / (2.0 * alias_blur**2))
    g /= g.sum()  # cv2.getGaussianKernel(ksize, sigma)
    mat = _ops.correlation_matrix(len(coords), g, "mirror")  # cv2's default border, BORDER_REFLECT_101
    return (mat @ disk @ mat.T).astype(np.float32)


def defocus_blur(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                 generator: _ops.Generator = None) -> torch.Tensor:
    """``cv2.filter2D`` of each channel with the anti-aliased disk (BORDER_REFLECT_101), via the FFT."""
    p = params("defocus_blur", severity, preset)
    kernel = torch.from_numpy(_disk(float(p["radius"]), float(p["alias_blur"])))
    return _ops.finish(_ops.filter2d_fft(_ops.work(images), kernel, mode="mirror"), images)


@lru_cache(maxsize=16)
def _wavefronts(h: int, w: int, delta: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
    """The reference's swap positions grouped into wavefronts of mutually independent swaps.

    The reference visits ``(h, w)`` for ``h`` from ``H - d`` down to ``d + 1`` and, in each row,
    ``w`` from ``W - d`` down to ``d + 1`` (order index ``t = i * nw + j``), swapping with a pixel at
    most ``d`` rows/columns away. Swap ``(i, j)`` goes into wavefront ``s = 2d * i + j``: two swaps in one
    wavefront are at least ``2d`` columns apart and so touch disjoint pixels, and every earlier swap
    that touches a pixel in common lies in an earlier wavefront. Applying the wavefronts in order
    therefore reproduces the sequential swaps exactly.

    Returns:
        Flat positions and order indices sorted by wavefront, and the wavefront boundaries.
    (The same holds for the copies the reference actually performs, see :func:`_shuffle`.)
    """
    hs = np.arange(h - delta, delta, -1)
    ws = np.arange(w - delta, delta, -1)
    i, j = np.meshgrid(np.arange(len(hs)), np.arange(len(ws)), indexing="ij")
    i, j = i.ravel(), j.ravel()
    wave = 2 * delta * i + j
    order = np.argsort(wave, kind="stable")
    pos = (hs[i] * w + ws[j])[order]
    t = (i * len(ws) + j)[order]
    bounds = np.flatnonzero(np.diff(wave[order])) + 1
    edges = [0, *bounds.tolist(), len(order)]
    return (torch.from_numpy(pos).to(device), torch.from_numpy(t).to(device), edges)


def _shuffle(n: int, h: int, w: int, delta: int, iterations: int, generator: _ops.Generator,
             device: torch.device) -> torch.Tensor:
    """Per-image source index ``(n, h*w)`` of every position after glass blur's local "swaps".

    The reference writes ``x[h, w], x[h', w'] = x[h', w'], x[h, w]`` on numpy views: the first
    assignment overwrites ``x[h, w]``, so the second copies the new value back and the "swap" is a
    copy ``x[h, w] <- x[h', w']``. That is what ImageNet-C's glass blur does, and what is done here.
    """
    hw = h * w
    base = torch.arange(n, device=device) * hw
    perm = torch.arange(n * hw, device=device)  # global source index per global position
    if h - 2 * delta <= 0 or w - 2 * delta <= 0:
        return perm.view(n, hw) - base[:, None]
    pos, t, edges = _wavefronts(h, w, delta, device)
    targets = (pos[:, None] + base[None, :]).contiguous()  # (T, n), rows in wavefront order
    span = 2 * delta
    for _ in range(iterations):
        if _ops.is_numpy(generator):
            # (dx, dy) = np.random.randint(-d, d, size=2) per visited pixel, in visiting order
            r = _ops.randint(-delta, delta, (n, len(t), 2), generator, device)
            offset = (r[..., 1] * w + r[..., 0]).index_select(1, t).T
        else:  # i.i.d. draws: no need to reorder them, and one draw gives both dx and dy
            r = _ops.randint(0, span * span, (n, len(t)), generator, device).T
            offset = torch.div(r, span, rounding_mode="floor").sub_(delta).mul_(w).add_(r.remainder(span).sub_(delta))
        sources = offset.add_(targets)
        for a, b in zip(edges[:-1], edges[1:]):  # one take/put per wavefront, for the whole batch
            perm.put_(targets[a:b], perm.take(sources[a:b]))
    return perm.view(n, hw) - base[:, None]


def glass_blur(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
               generator: _ops.Generator = None) -> torch.Tensor:
    """Gaussian blur, quantise to 8 bits, shuffle pixels locally (the reference's sequential copies), blur again."""
    p = params("glass_blur", severity, preset)
    sigma, delta, iterations = float(p["sigma"]), int(p["delta"]), int(p["iterations"])
    x = _ops.work(images)
    n, c, h, w = x.shape
    perm = _shuffle(n, h, w, delta, iterations, generator, x.device)  # whole batch: cost per wavefront
    out = torch.empty_like(x)
    step = _ops.cpu_chunk(x)
    for a in range(0, n, step):  # the pixel work in cache-sized chunks
        y = (_ops.gaussian_filter(x[a: a + step], sigma) * 255.0).floor_().clamp_(0, 255) / 255.0  # np.uint8
        m = y.shape[0]
        idx = perm[a: a + step].unsqueeze(1).expand(m, c, h * w)
        y = y.view(m, c, h * w).gather(2, idx).view(m, c, h, w)
        out[a: a + step] = _ops.gaussian_filter(y, sigma)
    return _ops.finish(out, images)


glass_blur.whole_batch = True  # type: ignore[attr-defined]  # its cost is per wavefront, shared by the batch


def motion_blur(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                generator: _ops.Generator = None) -> torch.Tensor:
    """Blur along a line at a random angle per image (ImageMagick's motion blur kernel)."""
    p = params("motion_blur", severity, preset)
    x = _ops.work(images)
    lo, hi = p["angle"]
    angles = _ops.uniform((x.shape[0],), generator, torch.device("cpu"), lo, hi, dtype=torch.float64)
    return _ops.finish(_ops.motion_blur(x, int(p["radius"]), float(p["sigma"]), angles), images)


def zoom_blur(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
              generator: _ops.Generator = None) -> torch.Tensor:
    """Average of the image and its centre zooms by each factor of the severity."""
    p = params("zoom_blur", severity, preset)
    x = _ops.work(images)
    h, w = x.shape[-2:]
    out = x.clone()
    for z in p["zooms"]:
        out += _ops.clipped_zoom(x, z, p["crop"])[..., :h, :w]
    return _ops.finish(out / (len(p["zooms"]) + 1), images)
