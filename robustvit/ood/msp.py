"""Maximum softmax probability (MSP) baseline.

Paper: D. Hendrycks and K. Gimpel, "A Baseline for Detecting Misclassified and
Out-of-Distribution Examples in Neural Networks", ICLR 2017. https://arxiv.org/abs/1610.02136

Score: ``-max_c softmax(logits)_c`` (higher = more OOD). No hyper-parameters.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import LogitDetector


class MSP(LogitDetector):
    """Negative maximum softmax probability."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -torch.softmax(logits, dim=1).amax(dim=1)
