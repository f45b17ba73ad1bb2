"""ReAct: rectified activations, scored with the energy.

Paper: Y. Sun, C. Guo and Y. Li, "ReAct: Out-of-distribution Detection With Rectified
Activations", NeurIPS 2021. https://arxiv.org/abs/2111.12797

Fit: the clipping threshold ``c`` is the ``percentile`` quantile of all penultimate activations
of the ID training set. Score: energy of the logits recomputed from the clipped features,
``-logsumexp(W min(x, c) + b)`` (higher = more OOD).

Hyper-parameters: ``percentile`` = 0.90 (the paper's p = 90), ``temperature`` = 1 for the energy.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector, energy
from robustvit.ood.stats import activation_quantile


class ReAct(Detector):
    """Energy of the logits of features clipped at an ID activation percentile.

    Args:
        percentile: Fraction in [0, 1] of ID activations below the threshold; default 0.90.
        temperature: Energy temperature; default 1.
    """

    needs_fit = True
    uses_head = True

    def __init__(self, percentile: float = 0.90, temperature: float = 1.0, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if not 0.0 <= percentile <= 1.0 or temperature <= 0:
            raise ValueError(f"ReAct needs percentile in [0, 1] and temperature > 0, got {percentile}, {temperature}")
        self.percentile = float(percentile)
        self.temperature = float(temperature)

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.threshold = activation_quantile(features, self.percentile)

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return energy(self.head(features.clamp(max=self.threshold)), self.temperature)
