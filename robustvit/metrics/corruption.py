"""Corruption robustness metrics of ImageNet-C: CE, mCE, relative CE / mCE, unnormalised mean error.

Hendrycks & Dietterich (2019), "Benchmarking Neural Network Robustness to Common Corruptions and
Perturbations" (ICLR), section 3. With ``E[c, s]`` a classifier's top-1 error on corruption ``c`` at
severity ``s`` and ``E_clean`` its clean error:

* Corruption Error ``CE_c = sum_s E[c, s] / sum_s E_base[c, s]`` (normalised by a baseline, AlexNet
  in the paper); ``mCE`` is the mean CE over the 15 benchmark corruptions.
* Relative CE ``rCE_c = sum_s (E[c, s] - E_clean) / sum_s (E_base[c, s] - E_base_clean)``: the
  degradation relative to the baseline's degradation; ``relative mCE`` its mean over the 15.
* The unnormalised mean error (``mean_error``): the plain mean of ``E[c, s]`` (what
  ``ImageNet-C/test.py`` prints as "mCE (unnormalized)", and the usual CIFAR-10-C summary).

Every metric here is an error: lower is better (``higher_is_better=False``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

#: AlexNet's top-1 error per benchmark corruption and severity 1-5 on ImageNet-C. Source: the
#: per-severity table distributed with ImageNet-C evaluation code (``imagenetc_alexnet_error_rates_list``,
#: e.g. in timm-based ImageNet-C validation scripts); the mean of each row is exactly the CE
#: normaliser published by Hendrycks (``hendrycks/robustness``; copied as ``ALEXNET_ERR`` into
#: google-research/augmix ``imagenet.py`` and as ``get_ce_alexnet`` into many codebases), which
#: :data:`ALEXNET_MEAN_ERRORS` keeps and the tests check against.
ALEXNET_ERRORS: dict[str, tuple[float, float, float, float, float]] = {
    "gaussian_noise": (0.69528, 0.82542, 0.93554, 0.98138, 0.99452),
    "shot_noise": (0.71224, 0.85108, 0.93574, 0.98182, 0.99146),
    "impulse_noise": (0.78374, 0.89808, 0.9487, 0.9872, 0.99548),
    "defocus_blur": (0.65624, 0.73202, 0.85036, 0.91364, 0.94714),
    "glass_blur": (0.64308, 0.75054, 0.88806, 0.91622, 0.93344),
    "motion_blur": (0.5843, 0.70048, 0.82108, 0.8975, 0.92638),
    "zoom_blur": (0.70008, 0.76992, 0.80784, 0.84198, 0.87198),
    "snow": (0.71726, 0.88392, 0.86468, 0.9187, 0.94952),
    "frost": (0.6139, 0.79734, 0.8879, 0.89942, 0.9343),
    "fog": (0.67474, 0.7605, 0.84378, 0.8726, 0.945),
    "brightness": (0.4514, 0.48502, 0.54048, 0.62166, 0.7244),
    "contrast": (0.64548, 0.7615, 0.88874, 0.9776, 0.9927),
    "elastic_transform": (0.52596, 0.70116, 0.55686, 0.64076, 0.80554),
    "pixelate": (0.52218, 0.5462, 0.73728, 0.87092, 0.91262),
    "jpeg_compression": (0.51002, 0.54718, 0.57294, 0.65458, 0.74778),
}

#: Hendrycks' published AlexNet errors averaged over severities (the usual CE normalisers).
ALEXNET_MEAN_ERRORS: dict[str, float] = {
    "gaussian_noise": 0.886428, "shot_noise": 0.894468, "impulse_noise": 0.922640,
    "defocus_blur": 0.819880, "glass_blur": 0.826268, "motion_blur": 0.785948, "zoom_blur": 0.798360,
    "snow": 0.866816, "frost": 0.826572, "fog": 0.819324, "brightness": 0.564592,
    "contrast": 0.853204, "elastic_transform": 0.646056, "pixelate": 0.717840, "jpeg_compression": 0.606500,
}

#: AlexNet's clean top-1 error on the ImageNet validation set: 1 - 0.56522, the top-1 accuracy
#: torchvision publishes for ``AlexNet_Weights.IMAGENET1K_V1`` (the ``alexnet-owt`` weights that
#: ``ImageNet-C/test.py`` evaluates); the paper rounds it to 43.5%.
ALEXNET_CLEAN_ERROR: float = 1.0 - 0.56522


def corruption_error(errors: Mapping[int, float], baseline: Mapping[int, float]) -> float:
    """CE: the model's errors summed over severities over the baseline's summed over the same ones.

    Args:
        errors: Top-1 error per severity.
        baseline: The baseline's top-1 error per severity (at least those in ``errors``).

    Returns:
        The CE (a ratio; 1.0 = as bad as the baseline), NaN if a severity lacks a baseline value.
    """
    if not errors or any(s not in baseline for s in errors):
        return math.nan
    den = sum(float(baseline[s]) for s in errors)
    return sum(float(e) for e in errors.values()) / den if den > 0 else math.nan


def relative_corruption_error(errors: Mapping[int, float], clean_error: float, baseline: Mapping[int, float],
                              baseline_clean_error: float) -> float:
    """Relative CE: the model's error increase over its clean error, over the baseline's increase."""
    if not errors or any(s not in baseline for s in errors) or math.isnan(clean_error):
        return math.nan
    den = sum(float(baseline[s]) - baseline_clean_error for s in errors)
    num = sum(float(e) - clean_error for e in errors.values())
    return num / den if den > 0 else math.nan


def mean(values: Iterable[float]) -> float:
    """Arithmetic mean (NaN if empty or if any value is NaN): mCE, relative mCE, mean error."""
    vals = [float(v) for v in values]
    return sum(vals) / len(vals) if vals else math.nan


def alexnet_baseline(corruption: str) -> dict[int, float] | None:
    """AlexNet's error per severity for a benchmark corruption, ``None`` for others."""
    row = ALEXNET_ERRORS.get(corruption)
    return None if row is None else {s + 1: e for s, e in enumerate(row)}
