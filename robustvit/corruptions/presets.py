"""Severity tables: the parameters of every corruption at severities 1-5, per preset.

Presets are data, not code branches: a corruption function reads its five parameter sets from here.

* ``imagenet_c``: the tables of ``imagecorruptions`` 1.1.2 (Michaelis et al., the pip package
  generalising Hendrycks & Dietterich's ImageNet-C code to any image size >= 32 px).
* ``cifar10_c``: the tables of Hendrycks' CIFAR-10-C generator
  (``hendrycks/robustness``, ``ImageNet-C/create_c/make_cifar_c.py``), written for 32x32 images.
  Where that script hard-codes 32 px, lengths are stored relative to the image side so the preset
  still runs on other sizes; at 32 px they are the script's numbers.

Length conventions: ``*_rel`` values are fractions of the image side (height for one number, each
side for per-axis values); everything else is in pixels or is dimensionless, as in the reference.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from robustvit.errors import UserError

Params = Mapping[str, Any]


def _rows(keys: tuple[str, ...], rows: list[tuple[Any, ...]], **common: Any) -> tuple[Params, ...]:
    return tuple({**dict(zip(keys, row)), **common} for row in rows)


def _zooms(start: float, stop: float, step: float) -> tuple[float, ...]:
    # np.arange, exactly as the reference builds them (floating-point values matter for ceil())
    return tuple(float(z) for z in np.arange(start, stop, step))


IMAGENET_C: dict[str, tuple[Params, ...]] = {
    # noise
    "gaussian_noise": _rows(("scale",), [(0.08,), (0.12,), (0.18,), (0.26,), (0.38,)]),
    "shot_noise": _rows(("rate",), [(60,), (25,), (12,), (5,), (3,)]),
    "impulse_noise": _rows(("amount",), [(0.03,), (0.06,), (0.09,), (0.17,), (0.27,)]),
    "speckle_noise": _rows(("scale",), [(0.15,), (0.2,), (0.35,), (0.45,), (0.6,)]),
    # blur
    "gaussian_blur": _rows(("sigma",), [(1,), (2,), (3,), (4,), (6,)]),
    "glass_blur": _rows(("sigma", "delta", "iterations"),
                        [(0.7, 1, 2), (0.9, 2, 1), (1, 2, 3), (1.1, 3, 2), (1.5, 4, 2)]),
    "defocus_blur": _rows(("radius", "alias_blur"), [(3, 0.1), (4, 0.5), (6, 0.5), (8, 0.5), (10, 0.5)]),
    "motion_blur": _rows(("radius", "sigma"), [(10, 3), (15, 5), (15, 8), (15, 12), (20, 15)],
                         angle=(-45.0, 45.0)),
    "zoom_blur": tuple({"zooms": _zooms(*z), "crop": "topleft"} for z in
                       [(1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.02), (1, 1.26, 0.02), (1, 1.31, 0.03)]),
    # weather
    "snow": _rows(("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
                  [(0.1, 0.3, 3, 0.5, 10, 4, 0.8), (0.2, 0.3, 2, 0.5, 12, 4, 0.7),
                   (0.55, 0.3, 4, 0.9, 12, 8, 0.7), (0.55, 0.3, 4.5, 0.85, 12, 8, 0.65),
                   (0.55, 0.3, 2.5, 0.85, 12, 12, 0.55)],
                  angle=(-135.0, -45.0), crop="topleft", layer_uint8=False),
    "frost": _rows(("image_weight", "frost_weight"), [(1, 0.4), (0.8, 0.6), (0.7, 0.7), (0.65, 0.7), (0.6, 0.75)],
                   textures=5, scale=None, interpolation="bicubic"),
    "fog": _rows(("strength", "decay"), [(1.5, 2), (2.0, 2), (2.5, 1.7), (2.5, 1.5), (3.0, 1.4)]),
    "spatter": _rows(("loc", "scale", "sigma", "threshold", "intensity", "mud"),
                     [(0.65, 0.3, 4, 0.69, 0.6, 0), (0.65, 0.3, 3, 0.68, 0.6, 0), (0.65, 0.3, 2, 0.68, 0.5, 0),
                      (0.65, 0.3, 1, 0.65, 1.5, 1), (0.67, 0.4, 1, 0.65, 1.5, 1)]),
    # digital
    "brightness": _rows(("shift",), [(0.1,), (0.2,), (0.3,), (0.4,), (0.5,)]),
    "contrast": _rows(("factor",), [(0.4,), (0.3,), (0.2,), (0.1,), (0.05,)]),
    "saturate": _rows(("factor", "shift"), [(0.3, 0), (0.1, 0), (2, 0), (5, 0.1), (20, 0.2)]),
    "jpeg_compression": _rows(("quality",), [(25,), (18,), (15,), (10,), (7,)]),
    "pixelate": _rows(("factor",), [(0.6,), (0.5,), (0.4,), (0.3,), (0.25,)]),
    # displacement = gaussian(U(-amp_rel*H, amp_rel*H), sigma_rel * side) * alpha, no random affine
    "elastic_transform": _rows(("alpha",), [(250 * 0.05,), (250 * 0.065,), (250 * 0.085,), (250 * 0.1,), (250 * 0.12,)],
                               amp_rel=0.005, sigma_rel=0.01, affine_rel=0.0),
}

_S = 32.0  # the CIFAR-10-C script's hard-coded image side

CIFAR10_C: dict[str, tuple[Params, ...]] = {
    "gaussian_noise": _rows(("scale",), [(0.04,), (0.06,), (0.08,), (0.09,), (0.10,)]),
    "shot_noise": _rows(("rate",), [(500,), (250,), (100,), (75,), (50,)]),
    "impulse_noise": _rows(("amount",), [(0.01,), (0.02,), (0.03,), (0.05,), (0.07,)]),
    "speckle_noise": _rows(("scale",), [(0.06,), (0.1,), (0.12,), (0.16,), (0.2,)]),
    "gaussian_blur": _rows(("sigma",), [(0.4,), (0.6,), (0.7,), (0.8,), (1,)]),
    "glass_blur": _rows(("sigma", "delta", "iterations"),
                        [(0.05, 1, 1), (0.25, 1, 1), (0.4, 1, 1), (0.25, 1, 2), (0.4, 1, 2)]),
    "defocus_blur": _rows(("radius", "alias_blur"), [(0.3, 0.4), (0.4, 0.5), (0.5, 0.6), (1, 0.2), (1.5, 0.1)]),
    # ImageMagick's MotionBlurImage, the algorithm imagecorruptions re-implements
    "motion_blur": _rows(("radius", "sigma"), [(6, 1), (6, 1.5), (6, 2), (8, 2), (9, 2.5)], angle=(-45.0, 45.0)),
    "zoom_blur": tuple({"zooms": _zooms(*z), "crop": "center"} for z in
                       [(1, 1.06, 0.01), (1, 1.11, 0.01), (1, 1.16, 0.01), (1, 1.21, 0.01), (1, 1.26, 0.01)]),
    "snow": _rows(("loc", "scale", "zoom", "threshold", "radius", "sigma", "blend"),
                  [(0.1, 0.2, 1, 0.6, 8, 3, 0.95), (0.1, 0.2, 1, 0.5, 10, 4, 0.9),
                   (0.15, 0.3, 1.75, 0.55, 10, 4, 0.9), (0.25, 0.3, 2.25, 0.6, 12, 6, 0.85),
                   (0.3, 0.3, 1.25, 0.65, 14, 12, 0.8)],
                  angle=(-135.0, -45.0), crop="center", layer_uint8=True),
    # textures shrunk by 0.2 (bilinear) at 32 px: scale = 0.2 * side / 32
    "frost": _rows(("image_weight", "frost_weight"), [(1, 0.2), (1, 0.3), (0.9, 0.4), (0.85, 0.4), (0.75, 0.45)],
                   textures=5, scale=0.2 / _S, interpolation="bilinear"),
    "fog": _rows(("strength", "decay"), [(0.2, 3), (0.5, 3), (0.75, 2.5), (1, 2), (1.5, 1.75)]),
    "spatter": _rows(("loc", "scale", "sigma", "threshold", "intensity", "mud"),
                     [(0.62, 0.1, 0.7, 0.7, 0.5, 0), (0.65, 0.1, 0.8, 0.7, 0.5, 0), (0.65, 0.3, 1, 0.69, 0.5, 0),
                      (0.65, 0.1, 0.7, 0.69, 0.6, 1), (0.65, 0.1, 0.5, 0.68, 0.6, 1)]),
    "brightness": _rows(("shift",), [(0.05,), (0.1,), (0.15,), (0.2,), (0.3,)]),
    "contrast": _rows(("factor",), [(0.75,), (0.5,), (0.4,), (0.3,), (0.15,)]),
    "saturate": _rows(("factor", "shift"), [(0.3, 0), (0.1, 0), (1.5, 0), (2, 0.1), (2.5, 0.2)]),
    "jpeg_compression": _rows(("quality",), [(80,), (65,), (58,), (50,), (40,)]),
    # BOX down then BOX up; PIL's BOX upsampling picks the same pixel as NEAREST
    "pixelate": _rows(("factor",), [(0.95,), (0.9,), (0.85,), (0.75,), (0.65,)]),
    # c = (IMSIZE*alpha, IMSIZE*sigma, IMSIZE*affine); displacement drawn from U(-1, 1)
    "elastic_transform": _rows(("alpha", "sigma_rel", "affine_rel"),
                               [(_S * 0, 0, 0.08), (_S * 0.05, 0.2, 0.07), (_S * 0.08, 0.06, 0.06),
                                (_S * 0.1, 0.04, 0.05), (_S * 0.1, 0.03, 0.03)],
                               amp_rel=1 / _S),
}

PRESETS: dict[str, dict[str, tuple[Params, ...]]] = {"imagenet_c": IMAGENET_C, "cifar10_c": CIFAR10_C}


def params(name: str, severity: int, preset: str = "imagenet_c") -> Params:
    """The parameter set of corruption ``name`` at ``severity`` (1-5) in ``preset``."""
    table = PRESETS.get(preset)
    if table is None:
        raise UserError(f"unknown corruption preset {preset!r} (allowed: {', '.join(sorted(PRESETS))})")
    rows = table.get(name)
    if rows is None:
        raise UserError(f"corruption {name!r} has no parameters in preset {preset!r}")
    if isinstance(severity, bool) or not isinstance(severity, (int, np.integer)) or not 1 <= severity <= len(rows):
        raise UserError(f"severity must be an integer 1-{len(rows)}, got {severity!r}")
    return rows[int(severity) - 1]
