"""ImageNet-P style perturbation sequences and the stability metrics computed on them.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), section 4: each image becomes a short sequence of slightly different frames
(more noise draws, a slowly turning or moving image, ...) and a classifier is scored on how often its
prediction flips along the sequence (flip probability) and how much its top-5 ranking moves (top-5
distance). :mod:`robustvit.stability.sequences` makes the sequences on the fly (batched, on the
images' device, one seeded generator per image), :mod:`robustvit.stability.metrics` scores them and
:mod:`robustvit.stability.disk` reads the released ImageNet-P videos and CIFAR-10-P arrays.
"""

from __future__ import annotations

from robustvit.errors import UserError

#: the 10 test perturbations of ImageNet-P (mFR and mT5D are means over them), in the paper's order
TEST: tuple[str, ...] = ("gaussian_noise", "shot_noise", "motion_blur", "zoom_blur", "snow", "brightness",
                         "translate", "rotate", "tilt", "scale")
#: the 4 validation perturbations released with ImageNet-P
VALIDATION: tuple[str, ...] = ("speckle_noise", "gaussian_blur", "spatter", "shear")
ALL: tuple[str, ...] = TEST + VALIDATION
#: noise sequences: every frame is a new noise draw of the first (clean) frame, so frames are compared
#: with the first one, and the difficulty is the noise strength (others: the frame stride)
NOISE: tuple[str, ...] = ("gaussian_noise", "shot_noise", "speckle_noise")
DIFFICULTIES: tuple[int, ...] = (1, 2, 3)
GROUPS: dict[str, tuple[str, ...]] = {"test": TEST, "validation": VALIDATION, "all": ALL}


def list_perturbations(spec: str | list[str] | tuple[str, ...] = "test") -> list[str]:
    """Perturbation names from ``"test"`` (the 10), ``"validation"`` (the 4), ``"all"`` or a list of names."""
    if isinstance(spec, str) and spec in GROUPS:
        return list(GROUPS[spec])
    names = [spec] if isinstance(spec, str) else list(spec) if isinstance(spec, (list, tuple)) else []
    if not names or not all(isinstance(n, str) for n in names):
        raise UserError(f"perturbations must be 'test', 'validation', 'all' or a list of names, got {spec!r}")
    unknown = [n for n in names if n not in ALL]
    if unknown:
        raise UserError(f"unknown perturbation {unknown[0]!r} (allowed: test, validation, all, {', '.join(ALL)})")
    return list(dict.fromkeys(names))
