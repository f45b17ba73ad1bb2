"""Spatter: water drops (severities 1-3) or mud (4-5) over the image, as imagecorruptions 1.1.2.

The water branch of the reference is an OpenCV pipeline on an 8-bit "liquid" map: Canny edges ->
distance to the nearest edge (capped at 20) -> 3x3 blur -> histogram equalisation -> an emboss
filter -> 3x3 blur, which shapes the drops' rims. Each step is re-implemented here batched, with
OpenCV's semantics (borders, rounding, Canny's fixed-point direction test and hysteresis); the
distance is the exact Euclidean one where OpenCV uses its 5x5 chamfer approximation. A liquid
layer that holds no water turns the image black, as the reference's ``0 / 0`` does.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from robustvit.corruptions import _ops
from robustvit.corruptions.presets import params

_SOBEL_X = [[-1.0, 0.0, 1.0], [-2.0, 0.0, 2.0], [-1.0, 0.0, 1.0]]
_SOBEL_Y = [[-1.0, -2.0, -1.0], [0.0, 0.0, 0.0], [1.0, 2.0, 1.0]]
_EMBOSS = [[-2.0, -1.0, 0.0], [-1.0, 1.0, 1.0], [0.0, 1.0, 2.0]]
_TG22 = 13573  # OpenCV: tan(22.5 deg) * 2^15


def canny(img: torch.Tensor, low: float = 50, high: float = 150) -> torch.Tensor:
    """``cv2.Canny(img, low, high)`` (aperture 3, L1 gradient) of ``(N, H, W)`` 8-bit-valued maps -> bool edges."""
    dx = _ops.conv3x3(img, _SOBEL_X, mode="nearest").round_().to(torch.int32)  # Sobel uses BORDER_REPLICATE
    dy = _ops.conv3x3(img, _SOBEL_Y, mode="nearest").round_().to(torch.int32)
    mag = dx.abs() + dy.abs()
    mp = F.pad(mag, (1, 1, 1, 1))  # magnitudes outside the image are 0
    left, right = mp[:, 1:-1, :-2], mp[:, 1:-1, 2:]
    up, down = mp[:, :-2, 1:-1], mp[:, 2:, 1:-1]
    ax, ay = dx.abs(), dy.abs() << 15
    tg22 = ax * _TG22
    tg67 = tg22 + (ax << 16)
    horizontal = ay < tg22
    vertical = ~horizontal & (ay > tg67)
    s_neg = (dx ^ dy) < 0
    diag_a = torch.where(s_neg, mp[:, :-2, 2:], mp[:, :-2, :-2])  # previous row, j - s
    diag_b = torch.where(s_neg, mp[:, 2:, :-2], mp[:, 2:, 2:])  # next row, j + s
    peak = torch.where(horizontal, (mag > left) & (mag >= right),
                       torch.where(vertical, (mag > up) & (mag >= down), (mag > diag_a) & (mag > diag_b)))
    cand = peak & (mag > int(low))
    edges = cand & (mag > int(high))
    weak = cand & ~edges
    if bool(weak.any()):
        while True:  # hysteresis: grow strong edges through 8-connected weak ones
            grown = edges | (_ops.dilate3x3(edges) & weak)
            if torch.equal(grown, edges):
                break
            edges = grown
    return edges


def edge_distance(edges: torch.Tensor, cap: int) -> torch.Tensor:
    """Euclidean distance of every pixel of ``(N, H, W)`` to the nearest edge, capped at ``cap``."""
    n, h, w = edges.shape
    far = cap + 1
    idx = torch.arange(w, device=edges.device).expand(n, h, w)
    big = 4 * (h + w + far)
    left = torch.where(edges, idx, torch.full_like(idx, -big)).cummax(dim=-1).values
    right = torch.where(edges, idx, torch.full_like(idx, big)).flip(-1).cummin(dim=-1).values.flip(-1)
    g2 = torch.minimum(idx - left, right - idx).clamp_(max=far).float().square_()
    d2 = g2.clone()
    for k in range(1, min(far, h - 1) + 1):
        kk = float(k * k)
        torch.minimum(d2[:, :-k], g2[:, k:] + kk, out=d2[:, :-k])
        torch.minimum(d2[:, k:], g2[:, :-k] + kk, out=d2[:, k:])
    return d2.sqrt_().clamp_(max=float(cap))


def equalize_hist(img: torch.Tensor) -> torch.Tensor:
    """``cv2.equalizeHist`` per map of ``(N, H, W)`` integer-valued (0-255) float maps."""
    n = img.shape[0]
    flat = img.reshape(n, -1).long()
    total = flat.shape[1]
    hist = torch.zeros((n, 256), device=img.device, dtype=torch.float32)
    hist.scatter_add_(1, flat, torch.ones_like(flat, dtype=torch.float32))
    first = (hist > 0).float().argmax(dim=1, keepdim=True)
    h0 = hist.gather(1, first)
    cum = hist.cumsum(1) - hist.cumsum(1).gather(1, first)
    scale = 255.0 / (total - h0).clamp_min(1)
    lut = (cum * scale).round_().clamp_(0, 255)
    lut = torch.where(h0 == total, first.float().expand_as(lut), lut)  # a constant map stays as is
    return lut.gather(1, flat).view_as(img)


def _water(liquid: torch.Tensor, intensity: float) -> tuple[torch.Tensor, torch.Tensor]:
    """The water map of ``(N, H, W)`` liquid layers, and which layers hold no water at all.

    A layer with no water (no pixel above the threshold, or none left after the rim shaping) has a
    map that is 0 everywhere: the reference divides it by its maximum, 0 / 0.
    """
    l8 = (liquid * 255.0).floor_().clamp_(0, 255)
    dist = edge_distance(canny(l8), 20)
    dist = _ops.box3(dist).floor_()
    dist = equalize_hist(dist)
    dist = _ops.conv3x3(dist, _EMBOSS, mode="mirror").round_().clamp_(0, 255)  # filter2D to CV_8U
    dist = (_ops.box3(dist) + 0.5).floor_()  # cv2.blur of an 8-bit map rounds
    m = l8 * dist
    peak = m.amax(dim=(1, 2), keepdim=True)
    return m / peak.clamp_min(1e-12) * intensity, (peak == 0).view(-1)


def spatter(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
            generator: _ops.Generator = None) -> torch.Tensor:
    """Thresholded, smoothed Gaussian noise as liquid: pale-turquoise water or mud-brown splashes."""
    p = params("spatter", severity, preset)
    x = _ops.work(images)
    n, _, h, w = x.shape
    out = torch.empty_like(x)
    # most of the work is on one-channel maps: chunks of several images amortise the many small ops
    step = _ops.cpu_chunk(x, bytes_per_image=h * w * 4)
    for a in range(0, n, step):
        out[a: a + step] = _spatter(x[a: a + step], p, _ops.chunk(generator, a, a + step))
    return _ops.finish(out, images)


spatter.whole_batch = True  # type: ignore[attr-defined]  # it chunks itself


def _spatter(x: torch.Tensor, p: dict, generator: _ops.Generator) -> torch.Tensor:
    n, _, h, w = x.shape
    liquid = _ops.normal((n, h, w), generator, x.device, mean=p["loc"], std=p["scale"])
    liquid = _ops.gaussian_filter(liquid, float(p["sigma"]))
    liquid = torch.where(liquid < p["threshold"], torch.zeros_like(liquid), liquid)
    if not p["mud"]:
        m, dry = _water(liquid, float(p["intensity"]))
        # the reference treats the RGB array as BGR: channel 0 gets 175/255, channels 1-2 get 238/255
        colour = torch.tensor([175.0, 238.0, 238.0], device=x.device).view(1, 3, 1, 1) / 255.0
        # No water at all: the reference's map is 0 / 0 = NaN everywhere, which its final
        # ``np.uint8`` cast turns into 0, a black image (small images at severity 1: about 2% of
        # the draws at 32 px, none at 224 px). Kept, so that error rates compare with its outputs.
        return (x + m.unsqueeze(1) * colour).masked_fill_(dry.view(-1, 1, 1, 1), 0.0)
    m = _ops.gaussian_filter((liquid > p["threshold"]).float(), float(p["intensity"]))
    m = torch.where(m < 0.8, torch.zeros_like(m), m).unsqueeze(1)
    colour = torch.tensor([63.0, 42.0, 20.0], device=x.device).view(1, 3, 1, 1) / 255.0
    return x * (1 - m) + colour * m
