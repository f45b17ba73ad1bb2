"""Batched tensor building blocks shared by the corruption families.

Everything here works on float tensors ``(N, C, H, W)`` on any device. Linear filters with a fixed
kernel are applied as matrix products with an exact boundary-handling operator per axis (a blur is
``A_h @ x @ A_w^T``), which is both exact at the borders and the fastest primitive on CPU and GPU;
big non-separable kernels (defocus disk, per-image motion kernels) go through the FFT.

Border modes use the scipy / OpenCV vocabulary:

* ``"nearest"``: edge value repeated (scipy ``nearest``, OpenCV ``BORDER_REPLICATE``),
* ``"reflect"``: half-sample symmetric ``d c b a | a b c d`` (scipy ``reflect``),
* ``"mirror"``: whole-sample symmetric ``d c b | a b c d`` (scipy ``mirror``, OpenCV ``BORDER_REFLECT_101``).
"""

from __future__ import annotations

import math
from functools import lru_cache
from typing import TypeAlias, Union

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.rng import ImageStreams

# -- dtype / device plumbing ------------------------------------------------------------------


def work(images: torch.Tensor) -> torch.Tensor:
    """The images as contiguous float32 (the working precision of every corruption)."""
    return images.to(torch.float32).contiguous()


def finish(out: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Clip to [0, 1] and return in the dtype of the input."""
    return out.clamp_(0.0, 1.0).to(like.dtype)


Generator: TypeAlias = Union[torch.Generator, np.random.RandomState, ImageStreams, None]  # noqa: UP007
"""A source of randomness: a ``torch.Generator`` (on any device), per-image counter-based streams
(:class:`robustvit.rng.ImageStreams`: what image ``i`` gets depends on that image only; the suites use
them), or a numpy ``RandomState``.

With a ``RandomState`` the draws are made by numpy with the calls, shapes and order of
imagecorruptions 1.1.2, so a batch of one image corrupted under ``RandomState(seed)`` sees the same
random numbers as the reference after ``np.random.seed(seed)`` (reference mode, used by the
fidelity tests; see :func:`robustvit.corruptions.corrupt`).
"""


def is_numpy(generator: object) -> bool:
    """Whether ``generator`` is a numpy ``RandomState`` (reference mode)."""
    return isinstance(generator, np.random.RandomState)


#: On CPU, images are processed in chunks of about this many bytes of float32 pixels per thread:
#: chunks that stay in a core's cache (and reuse freed memory instead of faulting in fresh pages)
#: run several times faster than one pass over a large batch.
CPU_CHUNK_BYTES = 1 << 20


def cpu_chunk(x: torch.Tensor, bytes_per_image: int | None = None) -> int:
    """Images per chunk for ``x`` (N, C, H, W): cache-sized on CPU, the whole batch elsewhere.

    ``bytes_per_image`` overrides the working set of one image (default: its float32 pixels).
    """
    n = x.shape[0]
    if x.device.type != "cpu" or n == 0:
        return max(n, 1)
    per = bytes_per_image or x[0].numel() * 4
    return max(1, min(n, CPU_CHUNK_BYTES * torch.get_num_threads() // per))


def _gen_device(generator: torch.Generator | None, device: torch.device) -> torch.device:
    return generator.device if generator is not None else device


def chunk(generator: Generator, start: int, stop: int) -> Generator:
    """The generator for images ``start:stop`` of a batch processed in chunks (per-image streams are
    sliced; a sequential generator is shared, drawing in chunk order)."""
    return generator[start:stop] if isinstance(generator, ImageStreams) else generator


def uniform(shape: tuple[int, ...], generator: Generator, device: torch.device,
            low: float = 0.0, high: float = 1.0, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``U(low, high)`` samples drawn from ``generator`` (on its device), returned on ``device``."""
    if is_numpy(generator):
        return torch.from_numpy(generator.uniform(low, high, size=shape)).to(device=device, dtype=dtype)
    if isinstance(generator, ImageStreams):
        return generator.uniform(shape, device, low, high, dtype)
    u = torch.rand(shape, generator=generator, device=_gen_device(generator, device), dtype=dtype)
    if low != 0.0 or high != 1.0:
        u = u.mul_(high - low).add_(low)
    return u.to(device)


def normal(shape: tuple[int, ...], generator: Generator, device: torch.device,
           mean: float = 0.0, std: float = 1.0) -> torch.Tensor:
    """``N(mean, std^2)`` samples drawn from ``generator``, returned on ``device``."""
    if is_numpy(generator):
        return torch.from_numpy(generator.normal(loc=mean, scale=std, size=shape)).to(device=device,
                                                                                      dtype=torch.float32)
    if isinstance(generator, ImageStreams):
        return generator.normal(shape, device, mean, std)
    z = torch.randn(shape, generator=generator, device=_gen_device(generator, device))
    if std != 1.0 or mean != 0.0:
        z = z.mul_(std).add_(mean)
    return z.to(device)


def randint(low: int, high: int, shape: tuple[int, ...], generator: Generator,
            device: torch.device) -> torch.Tensor:
    """Integers in ``[low, high)`` (numpy's ``randint`` convention)."""
    if is_numpy(generator):
        return torch.from_numpy(np.asarray(generator.randint(low, high, size=shape), dtype=np.int64)).to(device)
    if isinstance(generator, ImageStreams):
        u = generator.uniform(shape, device, dtype=torch.float32 if high - low <= 1 << 16 else torch.float64)
        return (u * (high - low)).long().clamp_(max=high - low - 1).add_(low)
    u = torch.rand(shape, generator=generator, device=_gen_device(generator, device),
                   dtype=torch.float32 if high - low <= 1 << 16 else torch.float64)
    return (u * (high - low)).long().clamp_(max=high - low - 1).add_(low).to(device)


def randint_below(highs: torch.Tensor, generator: Generator) -> torch.Tensor:
    """One integer in ``[0, highs[i])`` per entry (CPU int64), drawn in order."""
    if is_numpy(generator):
        return torch.tensor([int(generator.randint(0, int(h))) for h in highs.tolist()], dtype=torch.int64)
    u = uniform(tuple(highs.shape), generator, torch.device("cpu"), dtype=torch.float64)
    return (u * highs.to(torch.float64)).long().clamp_(max=(highs - 1).clamp_min(0))


# -- separable linear filters as exact matrix operators -----------------------------------------


def _border_index(idx: np.ndarray, n: int, mode: str) -> np.ndarray:
    if mode == "nearest":
        return np.clip(idx, 0, n - 1)
    if mode == "reflect":  # half-sample symmetric, period 2n
        idx = np.mod(idx, 2 * n)
        return np.where(idx >= n, 2 * n - 1 - idx, idx)
    if mode == "mirror":  # whole-sample symmetric, period 2n - 2
        if n == 1:
            return np.zeros_like(idx)
        idx = np.mod(idx, 2 * n - 2)
        return np.where(idx >= n, 2 * n - 2 - idx, idx)
    raise ValueError(f"unknown border mode {mode!r}")


def correlation_matrix(n: int, weights: np.ndarray, mode: str) -> np.ndarray:
    """The ``(n, n)`` matrix of a centred 1-D correlation with ``weights`` under a border mode."""
    r = len(weights) // 2
    rows = np.arange(n)[:, None]
    taps = np.arange(-r, r + 1)[None, :]
    cols = _border_index(rows + taps, n, mode)
    mat = np.zeros((n, n), dtype=np.float64)
    np.add.at(mat, (np.broadcast_to(rows, cols.shape), cols), np.broadcast_to(weights, cols.shape))
    return mat


def gauss_weights(sigma: float, truncate: float = 4.0) -> np.ndarray:
    """scipy.ndimage's Gaussian taps: radius ``int(truncate * sigma + 0.5)``, normalised."""
    radius = int(truncate * float(sigma) + 0.5)
    x = np.arange(-radius, radius + 1, dtype=np.float64)
    w = np.exp(-0.5 / float(sigma) ** 2 * x**2)
    return w / w.sum()


@lru_cache(maxsize=256)
def _gauss_matrix(n: int, sigma: float, truncate: float, mode: str) -> np.ndarray:
    return correlation_matrix(n, gauss_weights(sigma, truncate), mode)


def _operator(mat: np.ndarray, device: torch.device) -> torch.Tensor:
    return torch.from_numpy(mat).to(device=device, dtype=torch.float32)


def apply_separable(x: torch.Tensor, mat_h: np.ndarray | None, mat_w: np.ndarray | None) -> torch.Tensor:
    """``mat_h @ x @ mat_w^T`` over the last two axes (either operator may be ``None`` = identity)."""
    if mat_w is not None:
        x = torch.matmul(x, _operator(mat_w, x.device).T)
    if mat_h is not None:
        x = torch.matmul(_operator(mat_h, x.device), x)
    return x


_SHIFT_MAX_TAPS = 31  # up to this many taps, shifted multiply-adds beat a dense matrix product


def pad_axis(x: torch.Tensor, before: int, after: int, dim: int, mode: str) -> torch.Tensor:
    """Pad one of the last two axes under a border mode (``nearest``, ``reflect``, ``mirror``, ``zeros``)."""
    n = x.shape[dim]
    if before == 0 and after == 0:
        return x
    if mode == "zeros":
        pads = (before, after) if dim == -1 else (0, 0, before, after)
        return F.pad(x, pads)
    if mode == "nearest" or (mode == "mirror" and max(before, after) < n):
        pads = (before, after) if dim == -1 else (0, 0, before, after)
        shape = x.shape
        y = F.pad(x.reshape(-1, *shape[-2:]), pads, mode="replicate" if mode == "nearest" else "reflect")
        return y.reshape(*shape[:-2], *y.shape[-2:])
    if mode == "reflect" and max(before, after) <= n:
        parts = [x.narrow(dim, 0, before).flip(dim), x, x.narrow(dim, n - after, after).flip(dim)]
        return torch.cat(parts, dim=dim)
    idx = _border_index(np.arange(-before, n + after), n, mode)
    return x.index_select(dim, torch.from_numpy(idx).to(x.device))


def correlate1d(x: torch.Tensor, weights: np.ndarray, dim: int, mode: str) -> torch.Tensor:
    """Centred 1-D correlation along ``dim`` (-1 or -2) with odd-length ``weights`` under a border mode."""
    n = x.shape[dim]
    taps = len(weights)
    r = taps // 2
    if taps > _SHIFT_MAX_TAPS or taps > n:
        mat = correlation_matrix(n, np.asarray(weights, np.float64), mode)
        return apply_separable(x, mat if dim == -2 else None, mat if dim == -1 else None)
    xp = pad_axis(x, r, r, dim, mode)
    out: torch.Tensor | None = None
    for k, wk in enumerate(np.asarray(weights, np.float64).tolist()):
        if wk == 0.0:
            continue
        part = xp.narrow(dim, k, n)
        out = part * wk if out is None else out.add_(part, alpha=wk)
    return out if out is not None else torch.zeros_like(x)


def gaussian_filter(x: torch.Tensor, sigma: float | tuple[float, float], *, truncate: float = 4.0,
                    mode: str = "nearest") -> torch.Tensor:
    """scipy.ndimage.gaussian_filter over the last two axes (skimage.filters.gaussian's core).

    Args:
        x: ``(..., H, W)`` float tensor.
        sigma: One sigma or ``(sigma_h, sigma_w)`` in pixels; an axis with sigma <= 1e-15 is left alone.
        truncate: Kernel radius in sigmas (scipy: ``int(truncate * sigma + 0.5)``).
        mode: Border mode (``nearest``, ``reflect``, ``mirror``).
    """
    sh, sw = (sigma, sigma) if isinstance(sigma, (int, float)) else sigma
    if sw > 1e-15:
        x = correlate1d(x, gauss_weights(float(sw), truncate), -1, mode)
    if sh > 1e-15:
        x = correlate1d(x, gauss_weights(float(sh), truncate), -2, mode)
    return x


_BOX3 = np.full(3, 1.0 / 3.0)


def box3(x: torch.Tensor) -> torch.Tensor:
    """OpenCV ``cv2.blur(x, (3, 3))`` (normalised box, BORDER_REFLECT_101) over the last two axes."""
    return correlate1d(correlate1d(x, _BOX3, -1, "mirror"), _BOX3, -2, "mirror")


def conv3x3(x: torch.Tensor, kernel: list[list[float]], mode: str = "mirror") -> torch.Tensor:
    """Correlate ``(..., H, W)`` maps with a 3x3 kernel (OpenCV filter2D semantics), by shifted adds."""
    h, w = x.shape[-2:]
    xp = pad_axis(pad_axis(x, 1, 1, -1, mode), 1, 1, -2, mode)
    out: torch.Tensor | None = None
    for i in range(3):
        for j in range(3):
            k = float(kernel[i][j])
            if k != 0.0:
                part = xp[..., i: i + h, j: j + w]
                out = part * k if out is None else out.add_(part, alpha=k)
    return out if out is not None else torch.zeros_like(x)


def dilate3x3(mask: torch.Tensor) -> torch.Tensor:
    """Binary 3x3 dilation (8-connectivity) of a ``(..., H, W)`` bool tensor."""
    h, w = mask.shape[-2:]
    p = F.pad(mask.to(torch.uint8), (1, 1))
    row = p[..., :, :w] | p[..., :, 1: w + 1] | p[..., :, 2: w + 2]
    q = F.pad(row, (0, 0, 1, 1))
    return (q[..., :h, :] | q[..., 1: h + 1, :] | q[..., 2: h + 2, :]).bool()


# -- FFT filtering ---------------------------------------------------------------------------


def fft_size(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (fast FFT lengths)."""
    best = 1 << max(0, (n - 1).bit_length())
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def filter2d_fft(x: torch.Tensor, kernel: torch.Tensor, mode: str = "mirror") -> torch.Tensor:
    """Centred 2-D correlation of ``(N, C, H, W)`` with one odd-sized kernel, via the FFT."""
    kh, kw = kernel.shape[-2:]
    rh, rw = kh // 2, kw // 2
    h, w = x.shape[-2:]
    pad = {"mirror": "reflect", "nearest": "replicate"}[mode]
    xp = F.pad(x, (rw, rw, rh, rh), mode=pad)
    mh, mw = fft_size(h + 2 * rh), fft_size(w + 2 * rw)
    # correlation == convolution with the flipped kernel; anchor the kernel's first tap at 0
    kimg = torch.zeros((mh, mw), dtype=torch.float32, device=x.device)
    kimg[:kh, :kw] = kernel.to(device=x.device, dtype=torch.float32).flip(-1, -2)
    spec = torch.fft.rfft2(xp, s=(mh, mw)) * torch.fft.rfft2(kimg)
    out = torch.fft.irfft2(spec, s=(mh, mw))
    return out[..., 2 * rh: 2 * rh + h, 2 * rw: 2 * rw + w]


# -- motion blur (ImageMagick's MotionBlurImage, as re-implemented by imagecorruptions) -------


def motion_blur(x: torch.Tensor, radius: int, sigma: float, angles: torch.Tensor) -> torch.Tensor:
    """Blur each image along a line at its own angle (degrees), replicating the edges.

    Output pixel ``(h, w)`` is ``sum_i k_i x[h + oy_i, w + ox_i]`` with Gaussian weights ``k_i`` over
    ``i = 0 .. 2*radius`` and offsets ``(oy_i, ox_i) = (ceil(i sin a - 0.5), ceil(i cos a - 0.5))``;
    as in the reference, taps from the first one whose offset leaves the image are dropped.
    """
    n, _, h, w = x.shape
    width = 2 * int(radius) + 1
    i = torch.arange(width, dtype=torch.float64)
    k = torch.exp(-(i**2) / (2.0 * float(sigma) ** 2)) / (math.sqrt(2.0 * math.pi) * float(sigma))
    k = k / k.sum()
    rad = torch.deg2rad(angles.detach().to("cpu", torch.float64)).view(n, 1)
    oy = torch.ceil(i * torch.sin(rad) - 0.5).long()  # (n, width)
    ox = torch.ceil(i * torch.cos(rad) - 0.5).long()
    inside = (oy.abs() < h) & (ox.abs() < w)
    keep = torch.cumprod(inside.long(), dim=1).bool()  # the reference breaks at the first tap outside
    weights = torch.where(keep, k.view(1, -1), torch.zeros((), dtype=torch.float64))
    oy = torch.where(keep, oy, torch.zeros_like(oy))
    ox = torch.where(keep, ox, torch.zeros_like(ox))
    top, bottom = int(max(0, -oy.min())), int(max(0, oy.max()))
    left, right = int(max(0, -ox.min())), int(max(0, ox.max()))
    xp = F.pad(x, (left, right, top, bottom), mode="replicate") if top + bottom + left + right else x
    if n == 1:  # one image (CPU chunks): its taps are plain shifted slices
        out = torch.zeros_like(x)
        for wi, dy, dx in zip(weights[0].tolist(), oy[0].tolist(), ox[0].tolist()):
            if wi:
                out.add_(xp[..., top + dy: top + dy + h, left + dx: left + dx + w], alpha=wi)
        return out
    mh, mw = fft_size(h + top + bottom), fft_size(w + left + right)
    flat = ((-oy) % mh) * mw + ((-ox) % mw)
    kimg = torch.zeros((n, mh * mw), dtype=torch.float64)
    kimg.scatter_add_(1, flat, weights)
    kimg = kimg.view(n, 1, mh, mw).to(device=x.device, dtype=torch.float32)
    spec = torch.fft.rfft2(xp, s=(mh, mw)) * torch.fft.rfft2(kimg)
    out = torch.fft.irfft2(spec, s=(mh, mw))
    return out[..., top: top + h, left: left + w]


# -- zoom ----------------------------------------------------------------------------------------


def clipped_zoom(x: torch.Tensor, zoom: float, crop: str = "topleft") -> torch.Tensor:
    """imagecorruptions' ``clipped_zoom``: centre crop of ``ceil(side / zoom)``, zoomed back up.

    The zoom is scipy.ndimage.zoom with ``order=1`` (output size ``round(in * zoom)``, corners
    aligned). ``crop="topleft"`` returns the zoomed crop uncut (callers take ``[:H, :W]`` as
    imagecorruptions does), ``crop="center"`` trims it to the input size around the centre (the
    CIFAR-10-C generator).
    """
    h, w = x.shape[-2:]
    ch, cw = int(math.ceil(h / float(zoom))), int(math.ceil(w / float(zoom)))
    top, left = (h - ch) // 2, (w - cw) // 2
    oh, ow = int(round(ch * float(zoom))), int(round(cw * float(zoom)))
    crop_ = x[..., top: top + ch, left: left + cw]
    if (oh, ow) == (ch, cw):
        out = crop_
    else:
        out = F.interpolate(crop_, size=(oh, ow), mode="bilinear", align_corners=True)
    if crop == "center":
        th, tw = (oh - h) // 2, (ow - w) // 2
        return out[..., th: th + h, tw: tw + w]
    return out


# -- colour ------------------------------------------------------------------------------------


def gray(x: torch.Tensor) -> torch.Tensor:
    """OpenCV's RGB -> grey (``0.299 R + 0.587 G + 0.114 B``), keeping a channel axis of 1."""
    return 0.299 * x[:, 0:1] + 0.587 * x[:, 1:2] + 0.114 * x[:, 2:3]
