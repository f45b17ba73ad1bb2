"""Digital corruptions: brightness, contrast, saturate, JPEG, pixelate and elastic transform.

Brightness and saturate change one HSV component; with hue and the other component fixed, the RGB
values are linear in it (each channel is ``v * (1 - s * g(h))``), so the HSV round trip of the
reference (skimage ``rgb2hsv`` / ``hsv2rgb``) reduces to a per-pixel rescaling, grey pixels included.
"""

from __future__ import annotations

import io
import warnings
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


def _decode_all(data: list[bytes]) -> list[torch.Tensor]:
    """Decode JPEG files to ``(3, H, W)`` uint8 tensors: torchvision's libjpeg decoder in one call for
    the batch (it gives PIL's pixels, faster; deprecated in torchvision 0.29), else PIL image by image."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            from torchvision.io import ImageReadMode, decode_jpeg

            return decode_jpeg([torch.frombuffer(bytearray(d), dtype=torch.uint8) for d in data],
                               mode=ImageReadMode.RGB)
    except ImportError:  # a torchvision without image decoding
        from PIL import Image

        out = []
        for d in data:
            with Image.open(io.BytesIO(d)) as im:
                out.append(torch.from_numpy(np.asarray(im.convert("RGB")).copy()).permute(2, 0, 1))
        return out


def _jpeg_encode(planes: np.ndarray, quality: int) -> bytes:
    """One image given as 8-bit planes ``(3, H, W)``, encoded by PIL."""
    from PIL import Image

    h, w = planes.shape[-2:]
    image = Image.merge("RGB", [Image.frombuffer("L", (w, h), plane, "raw", "L", 0, 1) for plane in planes])
    buf = io.BytesIO()
    image.save(buf, format="JPEG", quality=quality)
    return buf.getvalue()


def jpeg_compression(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
                     generator: _ops.Generator = None) -> torch.Tensor:
    """Real JPEG: each 8-bit image encoded by PIL at the quality (PIL's defaults: 4:2:0 chroma
    subsampling, IJG quality tables), the batch decoded by libjpeg through ``torchvision.io``.

    PIL encodes fast (libjpeg-turbo) while torchvision's encoder is several times slower on CPU.
    (A thread pool for the encoder measured no faster on two cores: the work around it dominates.)
    """
    quality = int(params("jpeg_compression", severity, preset)["quality"])
    x = _ops.work(images)
    n = x.shape[0]
    planes = np.empty(tuple(x.shape), dtype=np.uint8)
    step = _ops.cpu_chunk(x)
    for a in range(0, n, step):  # float -> 8 bits, rounding half up (via int16: a direct uint8 cast is slow)
        chunk = x[a: a + step].mul(255.0).add_(0.5).clamp_(0.0, 255.0).to(torch.int16)
        planes[a: a + step] = chunk.cpu().numpy()
    data = [_jpeg_encode(p, quality) for p in planes]  # one C call per image
    decoded = _decode_all(data)  # (3, H, W) views of (H, W, 3) pixels
    out = torch.empty(tuple(x.shape), dtype=torch.float32)
    for a in range(0, n, step):
        for i in range(a, min(a + step, n)):
            out[i].copy_(decoded[i])  # de-interleave and widen in one copy
        out[a: a + step].mul_(1.0 / 255.0)
    return out.to(device=x.device, dtype=images.dtype)  # k / 255 is in [0, 1]: nothing to clip


jpeg_compression.whole_batch = True  # type: ignore[attr-defined]  # per-image C calls; no cache gain in chunks


@lru_cache(maxsize=64)
def _box_plan(n_in: int, n_out: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """PIL's BOX windows for an ``n_in -> n_out`` reduction, and NEAREST's way back.

    Pillow (``ImagingResample``) gives input pixel ``j`` weight ``box((j + 0.5 - c) / scale)`` around
    the centre ``c = (i + 0.5) * scale``, with ``box`` 1 on (-0.5, 0.5]: output ``i`` averages the
    pixels whose centres lie in ``(i * scale, (i + 1) * scale]`` (as rounded in double precision).
    The windows are runs of consecutive pixels that do not overlap; floating-point rounding can leave
    a pixel out of both neighbouring windows. Pillow's fixed-point weights round like the exact mean
    for the window sizes of the presets (at most 5 pixels: ties only for 2 and 4, whose weights are
    exact). NEAREST maps output ``o`` of the way back to ``floor((o + 0.5) * n_out / n_in)``, summed
    step by step.

    Returns:
        ``window`` (``n_in``): the output pixel whose window holds each input pixel (``n_out`` for
        none); ``inverse`` (``n_out``): one over each window's size; and the nearest source index
        per pixel of the way back (torch's ``nearest-exact`` interpolation computes it otherwise and
        picks other pixels for many size pairs).
    """
    scale = n_in / n_out
    filterscale = max(scale, 1.0)
    support, ss = 0.5 * filterscale, 1.0 / filterscale
    window = np.full(n_in, n_out, np.int64)
    sizes = np.zeros(n_out, np.float64)
    for o in range(n_out):  # Pillow's precompute_coeffs, in its double arithmetic
        centre = (o + 0.5) * scale
        j = np.arange(max(int(centre - support + 0.5), 0), min(int(centre + support + 0.5), n_in))
        t = (j - centre + 0.5) * ss
        inside = j[(t > -0.5) & (t <= 0.5)]
        window[inside] = o
        sizes[o] = len(inside)
    # NEAREST (``ImagingScaleAffine``) steps through the source in double precision, one increment
    # per pixel from half a step: ``floor((o + 0.5) * n_out / n_in)`` with that sum's rounding
    step = n_out / n_in
    back = np.cumsum(np.r_[0.5 * step, np.full(n_in - 1, step)]).astype(np.int64)
    return (torch.from_numpy(window).to(device), torch.from_numpy(1.0 / sizes).float().to(device),
            torch.from_numpy(back).to(device))


@lru_cache(maxsize=64)
def _bags(n_in: int, n_out: int, planes: int, scale: float,
          device: torch.device) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``F.embedding_bag`` arguments that sum the BOX windows of ``planes`` stacked ``(n_in, L)``
    planes (viewed as ``planes * n_in`` rows) into ``planes * n_out`` rows, each pixel weighted by
    ``scale`` over its window's size: the member rows in window order, the windows' offsets, weights."""
    window, inverse, _ = _box_plan(n_in, n_out, device)
    members = torch.nonzero(window < n_out).squeeze(1)  # ascending: the windows are runs, in order
    sizes = torch.bincount(window[members], minlength=n_out)
    starts = sizes.cumsum(0) - sizes
    plane = torch.arange(planes, device=device).view(-1, 1)
    rows = (plane * n_in + members).view(-1)
    offsets = (plane * len(members) + starts).view(-1)
    weights = (inverse[window[members]] * scale).repeat(planes)
    return rows, offsets, weights


def _window_means(x: torch.Tensor, n_out: int, scale: float) -> torch.Tensor:
    """Window means over rows, ``(P, n_in, L) -> (P, n_out, L)``, rounded to 8 bits as Pillow rounds
    each pass (halves up); ``scale`` is 255 for a pass that reads [0, 1], else 1. One
    ``embedding_bag`` sums every window in a single read of the rows (a gather per window position
    reads them several times, an ``index_add_`` is slower)."""
    p, n_in, length = x.shape
    rows, offsets, weights = _bags(n_in, n_out, p, scale, x.device)
    sums = F.embedding_bag(rows, x.reshape(p * n_in, length), offsets, mode="sum", per_sample_weights=weights)
    return sums.add_(0.501).floor_().view(p, n_out, length)


def pixelate(images: torch.Tensor, severity: int, *, preset: str = "imagenet_c",
             generator: _ops.Generator = None) -> torch.Tensor:
    """PIL ``resize`` to ``int(side * c)`` with BOX, then back with NEAREST.

    Rows are reduced before columns (Pillow does columns first; only the 8-bit rounding between
    the passes can differ, by one level for a few pixels): each pass sums the windows of whole rows
    in one ``embedding_bag`` (the column pass on the transposed rows); the way back copies whole rows
    of the small transposed image, then transposes them into the output's rows, in cache-sized chunks
    written straight into the output. 224 px, one thread, huge pages on (as the ``robustvit``
    command runs): about 0.2 ms per image; imagecorruptions (Pillow on 8-bit images) about 0.3 ms.
    """
    c = params("pixelate", severity, preset)["factor"]
    x = _ops.work(images)
    n, ch, h, w = x.shape
    h_out, w_out = int(h * c), int(w * c)
    back_h = _box_plan(h, h_out, x.device)[2]
    back_w = _box_plan(w, w_out, x.device)[2]
    out = torch.empty((n * ch, h, w), device=x.device)
    planes = x.view(n * ch, h, w)
    step = _ops.cpu_chunk(x, bytes_per_image=x[0].numel() * 2) * ch  # planes per chunk (fastest: 2-4 images)
    for a in range(0, n * ch, step):
        rows = _window_means(planes[a: a + step], h_out, 255.0)  # (P, h_out, w), 8-bit levels
        small_t = _window_means(rows.transpose(1, 2).contiguous(), w_out, 1.0)  # (P, w_out, h_out)
        wide_t = small_t.clamp_(0.0, 255.0).div_(255.0).index_select(1, back_w)  # (P, w, h_out)
        torch.index_select(wide_t.transpose(1, 2), 1, back_h, out=out[a: a + step])  # (P, h, w)
    return out.view(n, ch, h, w).to(images.dtype)


pixelate.whole_batch = True  # type: ignore[attr-defined]  # chunks itself, into its output


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

