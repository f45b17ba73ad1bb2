"""ImageNet-C corruptions as batched tensor operations.

The 19 corruptions of Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to
Common Corruptions and Perturbations": the 15 benchmark ones and the 4 extra ("validation") ones,
at severities 1-5, following ``imagecorruptions`` 1.1.2 (``preset="imagenet_c"``, any size >= 32 px)
or Hendrycks' CIFAR-10-C generator (``preset="cifar10_c"``). They take float images
``(N, 3, H, W)`` in [0, 1] on any device and return the same shape, dtype and device; randomness
comes from a ``torch.Generator`` (same generator state, same output).

>>> import torch
>>> from robustvit.corruptions import corrupt
>>> g = torch.Generator().manual_seed(0)
>>> corrupt(torch.rand(4, 3, 64, 64), "gaussian_noise", 3, generator=g).shape
torch.Size([4, 3, 64, 64])

A corruption is a function ``fn(images, severity, *, preset, generator) -> images`` registered in
:data:`BUILTINS` (or through the ``robustvit.corruptions`` entry-point group) with its parameter
rows in :mod:`robustvit.corruptions.presets`.
"""

from __future__ import annotations

import fnmatch
from typing import Any

import numpy as np
import torch

from robustvit.errors import UserError

#: the 15 corruptions of the ImageNet-C benchmark (mCE is their mean CE), in the paper's order
BENCHMARK: tuple[str, ...] = (
    "gaussian_noise", "shot_noise", "impulse_noise",
    "defocus_blur", "glass_blur", "motion_blur", "zoom_blur",
    "snow", "frost", "fog", "brightness",
    "contrast", "elastic_transform", "pixelate", "jpeg_compression",
)
#: the 4 extra ("validation") corruptions released with ImageNet-C
EXTRA: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "saturate")
ALL: tuple[str, ...] = BENCHMARK + EXTRA

#: the paper's grouping of the benchmark corruptions (extra ones by the family of their module)
FAMILIES: dict[str, tuple[str, ...]] = {
    "noise": ("gaussian_noise", "shot_noise", "impulse_noise", "speckle_noise"),
    "blur": ("defocus_blur", "glass_blur", "motion_blur", "zoom_blur", "gaussian_blur"),
    "weather": ("snow", "frost", "fog", "brightness", "spatter"),
    "digital": ("contrast", "elastic_transform", "pixelate", "jpeg_compression", "saturate"),
}

_MODULES = {
    "gaussian_noise": "noise", "shot_noise": "noise", "impulse_noise": "noise", "speckle_noise": "noise",
    "defocus_blur": "blur", "glass_blur": "blur", "motion_blur": "blur", "zoom_blur": "blur",
    "gaussian_blur": "blur",
    "snow": "weather", "frost": "weather", "fog": "weather", "spatter": "spatter",
    "brightness": "digital", "contrast": "digital", "elastic_transform": "digital", "pixelate": "digital",
    "jpeg_compression": "digital", "saturate": "digital",
}

#: registry table: name -> "module:function" (loaded lazily by robustvit.registries.CORRUPTIONS)
BUILTINS: dict[str, str] = {name: f"robustvit.corruptions.{_MODULES[name]}:{name}" for name in ALL}

MIN_SIZE = 32


def list_corruptions(subset: str = "all") -> list[str]:
    """Corruption names: ``"all"`` (every registered one, plugins included), ``"benchmark"`` (the 15),
    ``"extra"`` (the 4), a family (``noise``, ``blur``, ``weather``, ``digital``) or an fnmatch pattern."""
    from robustvit.registries import CORRUPTIONS

    if subset == "benchmark":
        return list(BENCHMARK)
    if subset == "extra":
        return list(EXTRA)
    if subset in FAMILIES:
        return list(FAMILIES[subset])
    registered = CORRUPTIONS.names("*")
    names = [n for n in ALL if n in registered] + sorted(n for n in registered if n not in ALL)
    if subset == "all":
        return names
    matched = [n for n in names if fnmatch.fnmatchcase(n, subset)]
    if not matched:
        raise UserError(f"no corruption matches {subset!r} (allowed: all, benchmark, extra, "
                        f"{', '.join(FAMILIES)}, a name or an fnmatch pattern)")
    return matched


def check_images(images: torch.Tensor) -> None:
    """Raise :class:`UserError` unless ``images`` is a float ``(N, 3, H, W)`` batch with sides >= 32."""
    if not isinstance(images, torch.Tensor):
        raise UserError(f"images must be a torch.Tensor, got {type(images).__name__}")
    if images.ndim != 4 or images.shape[1] != 3:
        raise UserError(f"images must be shaped (N, 3, H, W), got {tuple(images.shape)}")
    if not images.is_floating_point():
        raise UserError(f"images must be a float tensor in [0, 1], got dtype {images.dtype}")
    if min(images.shape[-2:]) < MIN_SIZE:
        raise UserError(f"image height and width must be at least {MIN_SIZE}, got {tuple(images.shape[-2:])}")


def corrupt(images: torch.Tensor, name: str, severity: int, *, preset: str = "imagenet_c",
            generator: torch.Generator | np.random.RandomState | None = None, **options: Any) -> torch.Tensor:
    """Corrupt a batch of images.

    Args:
        images: Float tensor ``(N, 3, H, W)`` in [0, 1], ``H, W >= 32``, on any device.
        name: A registered corruption (see :func:`list_corruptions`).
        severity: 1-5.
        preset: ``"imagenet_c"`` (imagecorruptions 1.1.2) or ``"cifar10_c"`` (CIFAR-10-C generator).
        generator: Source of randomness: a ``torch.Generator`` (on any device; ``None`` uses torch's
            global one), per-image streams (:class:`robustvit.rng.ImageStreams`, one per image of the
            batch: each image's corruption then depends on that image's stream only), or a numpy ``RandomState`` for reference mode: the random numbers are then
            drawn by numpy with imagecorruptions' calls, so that a batch of one image gets the same
            draws as ``imagecorruptions.corrupt`` after ``np.random.seed(seed)`` (gaussian/speckle
            noise, glass/motion blur, snow, frost, fog, spatter, elastic; not shot/impulse noise,
            which sample differently). Slower; meant for checking against the reference.
        **options: Extra keyword arguments of that corruption (``frost_dir=`` for frost).

    Returns:
        The corrupted images, same shape, dtype and device.
    """
    from robustvit.corruptions import _ops
    from robustvit.corruptions.presets import PRESETS
    from robustvit.registries import CORRUPTIONS

    check_images(images)
    if preset not in PRESETS:
        raise UserError(f"unknown corruption preset {preset!r} (allowed: {', '.join(sorted(PRESETS))})")
    fn = CORRUPTIONS.get(name)
    n = images.shape[0]
    if n == 0:
        return images.clone()
    # On CPU, cache-sized chunks (see robustvit.corruptions._ops.cpu_chunk) unless the function
    # has ``whole_batch = True`` (its cost is per call, and it chunks its pixel work itself).
    step = n if getattr(fn, "whole_batch", False) else _ops.cpu_chunk(images)
    with torch.no_grad():
        if step >= n:
            return fn(images, severity, preset=preset, generator=generator, **options)
        out = torch.empty_like(images)
        for start in range(0, n, step):
            out[start: start + step] = fn(images[start: start + step], severity, preset=preset,
                                          generator=_ops.chunk(generator, start, start + step), **options)
        return out
