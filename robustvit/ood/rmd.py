"""Relative Mahalanobis distance (RMD).

Paper: J. Ren, S. Fort, J. Liu, A. G. Roy, S. Padhy and B. Lakshminarayanan, "A Simple Fix to
Mahalanobis Distance for Improving Near-OOD Detection", ICML 2021 UDL workshop.
https://arxiv.org/abs/2106.09022

Fit: as :mod:`robustvit.ood.mahalanobis`, plus one "background" Gaussian over all training
features (global mean and covariance). Score:
``min_c [MD_c(x) - MD_0(x)]`` with ``MD_c`` the squared Mahalanobis distance to class c and
``MD_0`` the one to the background Gaussian (higher = more OOD). No hyper-parameters.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector
from robustvit.ood.stats import class_means, precision, scatter, sq_mahalanobis


class RelativeMahalanobis(Detector):
    """Class-conditional minus background squared Mahalanobis distance."""

    needs_fit = True

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        means = class_means(features, labels, logits.shape[1])
        present = torch.bincount(labels, minlength=logits.shape[1]) > 0
        self.means = means[present]
        self.precision = precision(scatter(features, means, labels, self.chunk_size))
        self.mean0 = class_means(features, torch.zeros_like(labels), 1)
        self.precision0 = precision(scatter(features, self.mean0[0], None, self.chunk_size))

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        md = sq_mahalanobis(features, self.means, self.precision, self.chunk_size)
        md0 = sq_mahalanobis(features, self.mean0, self.precision0, self.chunk_size)
        return md.amin(dim=1) - md0[:, 0]
