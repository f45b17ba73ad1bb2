"""Mahalanobis distance to the closest class mean (class means, one shared covariance).

Paper: K. Lee, K. Lee, H. Lee and J. Shin, "A Simple Unified Framework for Detecting
Out-of-Distribution Samples and Adversarial Attacks", NeurIPS 2018. https://arxiv.org/abs/1807.03888

Fit: per-class means ``mu_c`` of the penultimate features and the shared within-class covariance
``Sigma`` (maximum likelihood, divided by N), inverted by pseudo-inverse. Score:
``min_c (x - mu_c)^T Sigma^+ (x - mu_c)`` (higher = more OOD). As OpenOOD's "MDS": penultimate
features only, no input pre-processing and no layer ensemble. No hyper-parameters.

Memory: statistics accumulate over row chunks in float64 (see :mod:`robustvit.ood.stats`):
the feature matrix plus O(D^2 + C D).
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector
from robustvit.ood.stats import class_means, precision, scatter, sq_mahalanobis


class Mahalanobis(Detector):
    """Minimum squared Mahalanobis distance to the class means."""

    needs_fit = True

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        means = class_means(features, labels, logits.shape[1])
        self.present = torch.bincount(labels, minlength=logits.shape[1]) > 0
        self.means = means[self.present]
        self.precision = precision(scatter(features, means, labels, self.chunk_size))

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return sq_mahalanobis(features, self.means, self.precision, self.chunk_size).amin(dim=1)
