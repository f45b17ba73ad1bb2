"""Predictive entropy of the softmax.

Paper: used as an OOD baseline since D. Hendrycks, M. Mazeika and T. Dietterich, "Deep Anomaly
Detection with Outlier Exposure", ICLR 2019 (https://arxiv.org/abs/1812.04606); OpenOOD and
pytorch-ood include it as a baseline.

Score: ``H(p) = -sum_c p_c log p_c`` with ``p = softmax(logits)`` (higher = more OOD).
No hyper-parameters.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import LogitDetector


class Entropy(LogitDetector):
    """Shannon entropy of the softmax (nats)."""

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        logp = torch.log_softmax(logits, dim=1)
        return -(logp.exp() * logp).sum(dim=1)
