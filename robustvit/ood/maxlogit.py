"""Maximum logit.

Paper: D. Hendrycks, S. Basart, M. Mazeika, A. Zou, J. Kwon, M. Mostajabi, J. Steinhardt and
D. Song, "Scaling Out-of-Distribution Detection for Real-World Settings", ICML 2022.
https://arxiv.org/abs/1911.11132

Score: ``-max_c logits_c`` (higher = more OOD). No hyper-parameters.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import LogitDetector


class MaxLogit(LogitDetector):
    """Negative maximum logit."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return -logits.amax(dim=1)
