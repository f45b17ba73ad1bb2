"""ImageNet-P perturbation sequences, made on the fly as batched torch code on the images' device.

Each function follows Hendrycks' generator of the preset (``ImageNet-P/create_p/make_imagenet_p.py``,
``make_cifar_p.py``; parameters in :mod:`robustvit.stability.presets`) and reuses the corruption
engine's operations (:mod:`robustvit.corruptions._ops`: Gaussian filtering, ImageMagick's motion blur,
clipped zoom, grey levels; the spatter water map of :mod:`robustvit.corruptions.spatter`). Frames are
quantised to 8 bits as the reference's PNG frames are (``np.uint8`` truncation, or rounding where
PIL / OpenCV / ImageMagick resample).

Differences from the reference, by design:

* ImageNet-P moves the 256 px resize before its 224 px centre crop (translate, rotate, tilt, scale,
  shear, zoom blur), so content from outside the crop comes in; here the model-sized image is
  transformed and what comes from outside it is black, as in CIFAR-10-P (which transforms the 32 px
  image itself). Affine maps use torchvision (bilinear, nearest for the integer translations), the
  tilt the reference's homography.
* The released frames were then H.264-encoded; generated frames are not (read the released videos
  with :mod:`robustvit.stability.disk` for that).

Randomness (noise draws, the snow and liquid layers) comes from one ``torch.Generator`` per image,
drawn block of frames after block (the blocks' size depends on the image size only), so an image's
sequence is the same in any batch. Frames are made in such blocks where the operations allow it (one
engine call for several frames), which keeps the number of small tensor operations low.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from robustvit.corruptions import _ops
from robustvit.errors import UserError
from robustvit.stability.presets import Params, params, schedule

Gens = Sequence[torch.Generator | None]
_BLOCK_PIXELS = 1 << 17  # frames made in one go hold at most this many pixels per image (see _blocks)


def _floor8(x: torch.Tensor) -> torch.Tensor:
    """``np.uint8(255 * clip(x))`` (truncation; 1/1000 of a level absorbs float round-off), back in [0, 1]."""
    return (x.clamp(0.0, 1.0) * 255.0 + 1e-3).floor_().clamp_(max=255.0).div_(255.0)


def _round8(x: torch.Tensor) -> torch.Tensor:
    """8-bit rounding of a resampled image (PIL, OpenCV and ImageMagick round), back in [0, 1]."""
    return (x.clamp(0.0, 1.0) * 255.0).round_().div_(255.0)


def _normal(gens: Gens, shape: tuple[int, ...], device: torch.device, mean: float = 0.0,
            std: float = 1.0) -> torch.Tensor:
    """``N(mean, std^2)`` of ``shape`` per image, each from its own generator, stacked on ``device``."""
    return torch.stack([_ops.normal(shape, g, device, mean=mean, std=std) for g in gens])


def _poisson(x: torch.Tensor, rate: float, gens: Gens, frames: int) -> torch.Tensor:
    """``(frames, N, C, H, W)``: ``Poisson(x * rate) / rate``, each image's frames from its own generator."""
    out = []
    for xi, g in zip(x, gens):
        dev = g.device if g is not None else xi.device
        out.append(torch.poisson(xi.to(dev).expand(frames, *xi.shape) * rate, generator=g).to(x.device))
    return torch.stack(out, 1) / rate


def _noise(x: torch.Tensor, p: Params, difficulty: int, gens: Gens, kind: str) -> Iterator[torch.Tensor]:
    """The clean image, then ``frames - 1`` independent noise draws of it (gaussian / shot / speckle)."""
    yield x
    for block in _blocks(int(p["frames"]) - 1, *x.shape[-2:]):  # one draw per image and block of frames
        if kind == "shot":
            out = _poisson(x, float(p["rate"][difficulty - 1]), gens, len(block))
        else:
            z = _normal(gens, (len(block), *x.shape[1:]), x.device, std=float(p["std"][difficulty - 1])).transpose(0, 1)
            out = x + z if kind == "gaussian" else x + x * z
        yield _floor8(out)


def _blocks(frames: int, h: int, w: int) -> Iterator[range]:
    """Frame blocks made in one go: as many frames as fit ``_BLOCK_PIXELS`` pixels of one image (all of a
    32 px sequence, two at 224 px). The size depends on the image size only, never on the batch, so what
    a frame's pixels go through (FFT sizes included) is the same in any batch."""
    size = max(1, min(frames, _BLOCK_PIXELS // (h * w)))
    for start in range(0, frames, size):
        yield range(start, min(frames, start + size))


def _motion_blurred(x: torch.Tensor, radius: int, sigma: float, angles: list[float]) -> torch.Tensor:
    """``(K, N, C, H, W)``: the images blurred at each of ``K`` angles, in one engine call."""
    k, n = len(angles), x.shape[0]
    per_image = torch.tensor(angles, dtype=torch.float64).repeat_interleave(n)
    out = _ops.motion_blur(x.repeat(k, 1, 1, 1), radius, sigma, per_image)
    return out.view(k, *x.shape)


def _motion_blur(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """ImageMagick's motion blur at an angle that turns frame by frame."""
    for block in _blocks(int(p["frames"]), *x.shape[-2:]):
        angles = [schedule(p["angle"], i) for i in block]
        yield _round8(_motion_blurred(x, int(p["radius"]), float(p["sigma"]), angles))


def _zoom_blur(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """Frame ``i``: the running mean of the image zoomed by ``1, 1 + s, ..., 1 + i s`` (an accelerating zoom)."""
    yield x
    total = x.clone()
    for i in range(1, int(p["frames"])):
        total += _round8(_affine(x, scale=schedule(p["zoom"], i)))
        yield _floor8(total / (i + 1))


def _snow(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """One random snow layer per image, streaked by a motion blur whose angle turns frame by frame."""
    n, _, h, w = x.shape
    layer = _normal(gens, (1, h, w), x.device, mean=float(p["loc"]), std=float(p["scale"]))
    layer = _ops.clipped_zoom(layer, float(p["zoom"]), "center")
    layer = torch.where(layer < p["threshold"], torch.zeros_like(layer), layer).clamp_(0.0, 1.0)
    layer = (layer * 255.0).floor_() / 255.0  # an 8-bit PNG for ImageMagick
    blend = float(p["blend"])
    base = blend * x + (1.0 - blend) * torch.maximum(x, _ops.gray(x) * 1.5 + 0.5)
    for block in _blocks(int(p["frames"]), h, w):
        angles = [schedule(p["angle"], i) for i in block]
        moved = _round8(_motion_blurred(layer, int(p["radius"]), float(p["sigma"]), angles))
        yield _floor8(base + moved + moved.flip(-1, -2))


def _brightness(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """HSV value ``v -> clip(v + c)`` (hue and saturation kept) with ``c`` rising frame by frame."""
    v = x.amax(dim=1, keepdim=True)
    for block in _blocks(int(p["frames"]), *x.shape[-2:]):
        shifts = torch.tensor([schedule(p["shift"], i) for i in block], device=x.device).view(-1, 1, 1, 1, 1)
        v2 = (v + shifts).clamp(0.0, 1.0)
        yield _floor8(torch.where(v > 0, x * (v2 / v.clamp_min(1e-12)), v2.expand(-1, *x.shape)))


def _affine(x: torch.Tensor, *, angle: float = 0.0, shift: float = 0.0, scale: float = 1.0, shear: float = 0.0,
            nearest: bool = False) -> torch.Tensor:
    """torchvision's affine map about the image centre (as the reference's ``trn_F.affine``); outside the image
    is black, blended in at the edges by the bilinear interpolation."""
    import torchvision.transforms.v2.functional as TF
    from torchvision.transforms import InterpolationMode

    mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
    return TF.affine(x, angle=angle, translate=[shift, 0.0], scale=scale, shear=[shear, 0.0], interpolation=mode)


def _geometric(kind: str) -> Callable[..., Iterator[torch.Tensor]]:
    def frames(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
        for i in range(int(p["frames"])):
            if kind == "translate":  # integer shifts, nearest: pixels move unchanged
                yield _affine(x, shift=schedule(p["shift"], i), nearest=True)
            elif kind == "rotate":
                yield _round8(_affine(x, angle=schedule(p["angle"], i)))
            elif kind == "scale":
                yield _round8(_affine(x, scale=schedule(p["scale"], i)))
            else:
                yield _round8(_affine(x, shear=schedule(p["angle"], i)))

    frames.__doc__ = f"{kind} by the frame's amount (torchvision affine about the centre)"
    return frames


def tilt_homography(angle: float, h: int, w: int) -> np.ndarray:
    """The reference's 3x3 homography (source -> destination pixels) tilting by ``angle`` degrees about both axes."""
    phi = theta = math.radians(angle)
    f = math.hypot(w, h)
    p1 = np.array([[1, 0, -w / 2], [0, 1, -h / 2], [0, 0, 1], [0, 0, 1]])
    rx = np.array([[1, 0, 0, 0], [0, math.cos(theta), -math.sin(theta), 0],
                   [0, math.sin(theta), math.cos(theta), 0], [0, 0, 0, 1]])
    ry = np.array([[math.cos(phi), 0, -math.sin(phi), 0], [0, 1, 0, 0],
                   [math.sin(phi), 0, math.cos(phi), 0], [0, 0, 0, 1]])
    t = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, f], [0, 0, 0, 1]])
    p2 = np.array([[f, 0, w / 2, 0], [0, f, h / 2, 0], [0, 0, 1, 0]])
    return p2 @ t @ rx @ ry @ p1


def _tilt(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """``cv2.warpPerspective`` (bilinear, ``BORDER_CONSTANT`` black blended in at the edges) by the reference's
    tilt homography; OpenCV's pixel centres sit at integers, torchvision's half a pixel further."""
    import torchvision.transforms.v2.functional as TF

    h, w = x.shape[-2:]
    half = np.array([[1.0, 0.0, 0.5], [0.0, 1.0, 0.5], [0.0, 0.0, 1.0]])  # OpenCV pixel centres -> torchvision's
    for i in range(int(p["frames"])):
        inverse = half @ np.linalg.inv(tilt_homography(schedule(p["angle"], i), h, w)) @ np.linalg.inv(half)
        inverse = inverse / inverse[2, 2]
        yield _round8(TF.perspective(x, None, None, coefficients=inverse.ravel()[:8].tolist()))


def _gaussian_blur(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """skimage ``gaussian`` (nearest border) with a sigma growing frame by frame."""
    for i in range(int(p["frames"])):
        yield _floor8(_ops.gaussian_filter(x, schedule(p["sigma"], i), truncate=float(p["truncate"]), mode="nearest"))


def drip(liquid: torch.Tensor, kernel: Sequence[float]) -> torch.Tensor:
    """``np.convolve(column, kernel, mode="same")`` down every column of ``(N, H, W)`` maps (zeros outside)."""
    m = len(kernel)
    off = (m - 1) // 2
    h = liquid.shape[-2]
    padded = F.pad(liquid, (0, 0, m - 1 - off, off))
    out = torch.zeros_like(liquid)
    for t, k in enumerate(kernel):  # out[j] = sum_t k[t] * liquid[j + off - t]
        out.add_(padded[..., m - 1 - t: m - 1 - t + h, :], alpha=float(k))
    return out


def _spatter(x: torch.Tensor, p: Params, difficulty: int, gens: Gens) -> Iterator[torch.Tensor]:
    """Water drops (ImageNet-C's spatter, water branch) whose liquid layer drips down frame by frame."""
    from robustvit.corruptions.spatter import _water

    n, _, h, w = x.shape
    liquid = _normal(gens, (h, w), x.device, mean=float(p["loc"]), std=float(p["scale"]))
    liquid = _ops.gaussian_filter(liquid, float(p["sigma"]))
    liquid = torch.where(liquid < p["threshold"], torch.zeros_like(liquid), liquid)
    # the reference treats the RGB array as BGR: channel 0 gets 175/255, channels 1-2 get 238/255
    colour = torch.tensor([175.0, 238.0, 238.0], device=x.device).view(1, 1, 3, 1, 1) / 255.0
    for block in _blocks(int(p["frames"]), h, w):
        layers = []
        for _ in block:
            layers.append(liquid)
            liquid = drip(liquid, p["drip"])
        m, dry = _water(torch.cat(layers), float(p["intensity"]))  # every map on its own: one call per block
        m, dry = m.view(len(block), n, 1, h, w), dry.view(len(block), n, 1, 1, 1)
        # no water at all: the reference's 0 / 0 map turns the frame black (as ImageNet-C's spatter)
        yield _floor8((x + m * colour).masked_fill_(dry, 0.0))


_MAKERS: dict[str, Callable[..., Iterator[torch.Tensor]]] = {
    "gaussian_noise": lambda x, p, d, g: _noise(x, p, d, g, "gaussian"),
    "shot_noise": lambda x, p, d, g: _noise(x, p, d, g, "shot"),
    "speckle_noise": lambda x, p, d, g: _noise(x, p, d, g, "speckle"),
    "motion_blur": _motion_blur,
    "zoom_blur": _zoom_blur,
    "snow": _snow,
    "brightness": _brightness,
    "translate": _geometric("translate"),
    "rotate": _geometric("rotate"),
    "tilt": _tilt,
    "scale": _geometric("scale"),
    "gaussian_blur": _gaussian_blur,
    "spatter": _spatter,
    "shear": _geometric("shear"),
}
#: perturbations that draw random numbers (they need one generator per image to be reproducible)
RANDOM: tuple[str, ...] = ("gaussian_noise", "shot_noise", "speckle_noise", "snow", "spatter")


def sequence(images: torch.Tensor, name: str, *, preset: str = "imagenet_p", difficulty: int = 1,
             generators: Gens | None = None) -> Iterator[torch.Tensor]:
    """The frames of the perturbation sequence of every image, frame by frame.

    Args:
        images: Float ``(N, 3, H, W)`` in [0, 1] (8-bit values, as the reference's), ``H, W >= 32``, any device.
        name: A perturbation of :data:`robustvit.stability.ALL`.
        preset: ``"imagenet_p"`` or ``"cifar10_p"`` (:mod:`robustvit.stability.presets`).
        difficulty: 1-3; sets the noise strength of noise perturbations, ignored by the others (whose
            difficulty is the frame stride of the comparison, see :mod:`robustvit.stability.metrics`).
        generators: One ``torch.Generator`` per image (on any device) for the random perturbations;
            None draws from torch's global generator.

    Yields:
        ``frame_count(name, preset)`` tensors ``(N, 3, H, W)`` on the images' device, frame 0 first.
    """
    from robustvit.corruptions import check_images

    check_images(images)
    p = params(name, preset)
    if difficulty not in (1, 2, 3):
        raise UserError(f"difficulty must be 1, 2 or 3, got {difficulty!r}")
    gens: Gens = list(generators) if generators is not None else [None] * images.shape[0]
    if len(gens) != images.shape[0]:
        raise ValueError(f"{len(gens)} generators for {images.shape[0]} images")
    x = images.to(torch.float32).contiguous()
    with torch.no_grad():
        for made in _MAKERS[name](x, p, difficulty, gens):
            for frame in (made if made.dim() == 5 else (made,)):  # a block of frames, or one
                yield frame.to(images.dtype)
