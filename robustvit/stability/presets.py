"""Parameters of the ImageNet-P perturbation sequences, per preset (data, not code branches).

Copied from Hendrycks' generators (``hendrycks/robustness``, ``ImageNet-P/create_p``):

* ``imagenet_p``: ``make_imagenet_p.py`` (224 px ImageNet-P);
* ``cifar10_p``: ``make_cifar_p.py`` (32 px CIFAR-10-P).

A linear schedule ``(start, step)`` gives frame ``i``'s value ``start + i * step`` (``i = 0 .. frames-1``):
ImageNet-P's rotate uses ``angle = i - 15``, i.e. ``(-15, 1)``. Noise perturbations have one
strength per difficulty (1-3: the reference's ``<name>``, ``<name>_2``, ``<name>_3`` sequences);
the others have one sequence whose difficulty is the frame stride of the comparison. Lengths (blur
radii, translations) are in pixels, as in the reference, whatever the image size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from robustvit.errors import UserError

Params = Mapping[str, Any]

IMAGENET_P: dict[str, Params] = {
    # test perturbations
    "gaussian_noise": {"frames": 31, "std": (0.03, 0.05, 0.08)},
    "shot_noise": {"frames": 31, "rate": (300.0, 120.0, 60.0)},
    "motion_blur": {"frames": 31, "radius": 10, "sigma": 3.0, "angle": (-120.0, 4.0)},  # angle (i - 30) * 4
    "zoom_blur": {"frames": 31, "zoom": (1.0, 0.004)},  # frame i: mean of the zooms 1 + 0.004 k, k <= i
    "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 3.0, "threshold": 0.5, "radius": 14, "sigma": 4.0,
             "angle": (-150.0, 4.0), "blend": 0.85},
    "brightness": {"frames": 31, "shift": (-0.30, 0.02)},  # (i - 15) * 2 / 100
    "translate": {"frames": 41, "shift": (-20.0, 1.0)},  # pixels, horizontal
    "rotate": {"frames": 31, "angle": (-15.0, 1.0)},
    "tilt": {"frames": 31, "angle": (-15.0, 1.0)},  # both axes, degrees
    "scale": {"frames": 31, "scale": (0.40, 0.025)},  # (i * 2.5 + 40) / 100
    # validation perturbations
    "speckle_noise": {"frames": 31, "std": (0.05, 0.10, 0.15)},
    "gaussian_blur": {"frames": 31, "sigma": (0.25, 0.035), "truncate": 6.0},
    "spatter": {"frames": 31, "loc": 0.65, "scale": 0.27, "sigma": 3.7, "threshold": 0.69, "intensity": 0.6,
                "drip": (0.05, 0.1, 0.15, 0.7)},
    "shear": {"frames": 31, "angle": (-15.0, 1.0)},
}

CIFAR10_P: dict[str, Params] = {
    "gaussian_noise": {"frames": 31, "std": (0.02, 0.04, 0.06)},
    "shot_noise": {"frames": 31, "rate": (700.0, 400.0, 200.0)},
    "motion_blur": {"frames": 21, "radius": 6, "sigma": 1.8, "angle": (-180.0, 9.0)},  # angle (i - 20) * 9
    "zoom_blur": {"frames": 31, "zoom": (1.0, 0.004)},
    "snow": {"frames": 31, "loc": 0.05, "scale": 0.3, "zoom": 2.0, "threshold": 0.5, "radius": 10, "sigma": 2.0,
             "angle": (-150.0, 4.0), "blend": 0.85},
    "brightness": {"frames": 31, "shift": (-0.225, 0.015)},  # (i - 15) * 1.5 / 100
    "translate": {"frames": 16, "shift": (-7.0, 1.0)},
    "rotate": {"frames": 31, "angle": (-15.0, 1.0)},
    "tilt": {"frames": 31, "angle": (-11.25, 0.75)},  # 0.75 * (i - 15)
    "scale": {"frames": 31, "scale": (0.70, 0.02)},  # (i * 2 + 70) / 100
    "speckle_noise": {"frames": 31, "std": (0.05, 0.07, 0.10)},
    "gaussian_blur": {"frames": 31, "sigma": (0.3, 0.015), "truncate": 7.0},
    "spatter": {"frames": 31, "loc": 0.6, "scale": 0.265, "sigma": 1.75, "threshold": 0.7, "intensity": 0.6,
                "drip": (0.2, 0.8)},
    "shear": {"frames": 31, "angle": (-15.0, 1.0)},
}

PRESETS: dict[str, dict[str, Params]] = {"imagenet_p": IMAGENET_P, "cifar10_p": CIFAR10_P}


def params(name: str, preset: str = "imagenet_p") -> Params:
    """The parameters of perturbation ``name`` in ``preset``."""
    table = PRESETS.get(preset)
    if table is None:
        raise UserError(f"unknown perturbation preset {preset!r} (allowed: {', '.join(PRESETS)})")
    row = table.get(name)
    if row is None:
        raise UserError(f"unknown perturbation {name!r} (allowed: {', '.join(table)})")
    return row


def frame_count(name: str, preset: str = "imagenet_p") -> int:
    """Frames in a sequence of ``name`` (the clean frame of noise sequences included)."""
    return int(params(name, preset)["frames"])


def schedule(value: tuple[float, float], i: int) -> float:
    """Frame ``i``'s value of a linear ``(start, step)`` schedule."""
    start, step = value
    return float(start) + i * float(step)
