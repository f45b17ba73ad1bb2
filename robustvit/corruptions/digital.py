"""Digital corruptions: brightness, contrast, saturate, JPEG, pixelate and elastic transform.

Brightness and saturate change one HSV component; with hue and the other component fixed, the RGB
values are linear in it (each channel is ``v * (1 - s * g(h))``), so the HSV round trip of the
reference (skimage ``rgb2hsv`` / ``hsv2rgb``) reduces to a per-pixel rescaling, grey pixels included.
"""

from __future__ import annotations

import io
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.corruptions import _ops
from robustvit.corruptions.presets import params


def brightness(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
               generator: _ops.Generator = None) -> torch.Tensor:
    """HSV value ``v -> clip(v + c)`` with hue and saturation kept."""
    c = params("brightness", severity, preset)["shift"]
    x = _ops.work(images)
    v = x.amax(dim=1, keepdim=True)
    v2 = (v + c).clamp_(0.0, 1.0)
    out = torch.where(v > 0, x * (v2 / v.clamp_min(1e-12)), v2.expand_as(x))
    return _ops.finish(out, images)


def contrast(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
             generator: _ops.Generator = None) -> torch.Tensor:
    """``(x - mean) * c + mean`` with the mean per image and channel."""
    c = params("contrast", severity, preset)["factor"]
    x = _ops.work(images)
    mean = x.mean(dim=(2, 3), keepdim=True)
    return _ops.finish((x - mean) * c + mean, images)


def saturate(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
             generator: _ops.Generator = None) -> torch.Tensor:
    """HSV saturation ``s -> clip(s * c0 + c1)`` with hue and value kept.

    Grey pixels have hue 0 (red) in skimage, so a positive ``c1`` tints them red as in the reference.
    """
    p = params("saturate", severity, preset)
    x = _ops.work(images)
    v = x.amax(dim=1, keepdim=True)
    delta = v - x.amin(dim=1, keepdim=True)
    s = torch.where(v > 0, delta / v.clamp_min(1e-12), torch.zeros_like(v))
    s2 = (s * p["factor"] + p["shift"]).clamp_(0.0, 1.0)
    coloured = v - (v - x) * (s2 / s.clamp_min(1e-12))
    grey = torch.cat([v, v * (1 - s2), v * (1 - s2)], dim=1)
    return _ops.finish(torch.where(delta > 0, coloured, grey), images)


def jpeg_compression(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                     generator: _ops.Generator = None) -> torch.Tensor:
    """Real JPEG: each 8-bit image encoded by PIL at the quality (PIL's defaults: 4:2:0 chroma
    subsampling, IJG quality tables), decoded by libjpeg through ``torchvision.io.decode_jpeg``.

    PIL encodes fast (libjpeg-turbo) while torchvision's encoder is several times slower on CPU;
    torchvision's batched decoder gives the same pixels as PIL's.
    """
    from PIL import Image
    from torchvision.io import ImageReadMode, decode_jpeg

    quality = int(params("jpeg_compression", severity, preset)["quality"])
    x = _ops.work(images)
    u8 = (x.clamp(0, 1) * 255.0).round_().to(torch.uint8).permute(0, 2, 3, 1).contiguous().cpu().numpy()
    blobs = []
    for img in u8:  # the encoder is a C call per image; everything around it is batched
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=quality)
        blobs.append(torch.frombuffer(bytearray(buf.getbuffer()), dtype=torch.uint8))
    decoded = torch.stack(decode_jpeg(blobs, mode=ImageReadMode.RGB))
    return _ops.finish(decoded.to(x.device, torch.float32) / 255.0, images)


@lru_cache(maxsize=64)
def _box_windows(n_in: int, n_out: int) -> tuple[np.ndarray, np.ndarray]:
    """Start and end of PIL's BOX filter window for each output pixel (``ImagingResample``)."""
    scale = n_in / n_out
    support = 0.5 * max(scale, 1.0)
    centre = (np.arange(n_out) + 0.5) * scale
    lo = np.maximum((centre - support + 0.5).astype(np.int64), 0)
    hi = np.minimum((centre + support + 0.5).astype(np.int64), n_in)
    # taps j in [lo, hi) get weight box((j - centre + 0.5) / filterscale): 1 on (-0.5, 0.5]
    starts, ends = np.empty(n_out, np.int64), np.empty(n_out, np.int64)
    for o in range(n_out):
        j = np.arange(lo[o], hi[o])
        t = (j - centre[o] + 0.5) / max(scale, 1.0)
        sel = j[(t > -0.5) & (t <= 0.5)]
        starts[o], ends[o] = sel[0], sel[-1] + 1
    return starts, ends


def _box_down(x: torch.Tensor, dim: int, n_out: int) -> torch.Tensor:
    starts, ends = _box_windows(x.shape[dim], n_out)
    cs = F.pad(torch.cumsum(x, dim=dim), (1, 0) if dim == -1 else (0, 0, 1, 0))
    s = torch.from_numpy(starts).to(x.device)
    e = torch.from_numpy(ends).to(x.device)
    count = (e - s).to(x.dtype)
    total = cs.index_select(dim, e) - cs.index_select(dim, s)
    mean = total / (count if dim == -1 else count.view(-1, 1))
    return (mean * 255.0 + 0.501).floor_() / 255.0  # PIL rounds each pass to 8 bits, halves up


def pixelate(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
             generator: _ops.Generator = None) -> torch.Tensor:
    """PIL ``resize`` to ``int(side * c)`` with BOX, then back with NEAREST."""
    c = params("pixelate", severity, preset)["factor"]
    x = _ops.work(images)
    h, w = x.shape[-2:]
    oh, ow = int(h * c), int(w * c)
    small = _box_down(_box_down(x, -1, ow), -2, oh)
    iw = torch.from_numpy(((np.arange(w) + 0.5) * (ow / w)).astype(np.int64)).to(x.device)
    ih = torch.from_numpy(((np.arange(h) + 0.5) * (oh / h)).astype(np.int64)).to(x.device)
    return _ops.finish(small.index_select(-1, iw).index_select(-2, ih), images)


def _affine_grid(n: int, h: int, w: int, jitter: float, generator: _ops.Generator,
                 device: torch.device) -> torch.Tensor:
    """Sampling grid of the CIFAR-10-C generator's random affine (``cv2.getAffineTransform`` of
    three jittered points, then ``cv2.warpAffine``), in ``grid_sample``'s align_corners=True units."""
    cy, cx = float(h // 2), float(w // 2)
    sq = float(min(h, w) // 3)
    # the script builds the points from (H//2, W//2) and passes them to OpenCV as (x, y)
    pts1 = torch.tensor([[cy + sq, cx + sq], [cy + sq, cx - sq], [cy - sq, cx - sq]], dtype=torch.float64)
    pts2 = pts1 + _ops.uniform((n, 3, 2), generator, torch.device("cpu"), -jitter, jitter, dtype=torch.float64)
    src = torch.cat([pts1, torch.ones(3, 1, dtype=torch.float64)], dim=1)  # (3, 3)
    m = torch.linalg.solve(src, pts2).transpose(1, 2)  # (n, 2, 3): dst = M @ [x, y, 1]
    full = torch.cat([m, torch.tensor([[[0.0, 0.0, 1.0]]], dtype=torch.float64).expand(n, 1, 3)], dim=1)
    inv = torch.linalg.inv(full)[:, :2]  # warpAffine samples src at M^-1 dst
    ys, xs = torch.meshgrid(torch.arange(h, dtype=torch.float64), torch.arange(w, dtype=torch.float64),
                            indexing="ij")
    dst = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1).view(1, h * w, 3)
    srcxy = dst @ inv.transpose(1, 2)  # (n, h*w, 2)
    gx = 2.0 * srcxy[..., 0] / max(w - 1, 1) - 1.0
    gy = 2.0 * srcxy[..., 1] / max(h - 1, 1) - 1.0
    return torch.stack([gx, gy], dim=-1).view(n, h, w, 2).to(device=device, dtype=torch.float32)


def elastic_transform(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                      generator: _ops.Generator = None) -> torch.Tensor:
    """Smooth random displacement field (plus, in ``cifar10_c``, a random affine), bilinear resampling.

    The field is ``gaussian(U(-a, a), sigma, mode="reflect", truncate=3) * alpha`` per axis, and the
    image is resampled with ``scipy.ndimage.map_coordinates(order=1, mode="reflect")``, which is
    ``grid_sample`` with reflection padding and ``align_corners=False``.
    """
    p = params("elastic_transform", severity, preset)
    x = _ops.work(images)
    n, _, h, w = x.shape
    if p["affine_rel"] > 0:
        grid = _affine_grid(n, h, w, p["affine_rel"] * h, generator, x.device)
        x = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=True)
    amp = p["amp_rel"] * h
    sigma = (p["sigma_rel"] * h, p["sigma_rel"] * w)
    field = _ops.uniform((n, 2, h, w), generator, x.device, -amp, amp)  # dx, dy
    field = _ops.gaussian_filter(field, sigma, truncate=3.0, mode="reflect") * p["alpha"]
    if p["alpha"] == 0:
        return _ops.finish(x, images)
    ys, xs = torch.meshgrid(torch.arange(h, device=x.device, dtype=torch.float32),
                            torch.arange(w, device=x.device, dtype=torch.float32), indexing="ij")
    gx = (2.0 * (xs + field[:, 0]) + 1.0) / w - 1.0
    gy = (2.0 * (ys + field[:, 1]) + 1.0) / h - 1.0
    grid = torch.stack([gx, gy], dim=-1)
    out = F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)
    return _ops.finish(out, images)

