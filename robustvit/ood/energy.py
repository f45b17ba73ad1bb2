"""Energy score.

Paper: W. Liu, X. Wang, J. Owens and Y. Li, "Energy-based Out-of-distribution Detection",
NeurIPS 2020. https://arxiv.org/abs/2010.03759

Score: the free energy ``E(x) = -T * logsumexp(logits / T)`` (higher = more OOD).
Hyper-parameters: ``temperature`` T = 1 (the paper's choice).
"""

from __future__ import annotations

import torch

from robustvit.ood.base import LogitDetector, energy


class Energy(LogitDetector):
    """Free energy of the logits.

    Args:
        temperature: T > 0; default 1.
    """

    def __init__(self, temperature: float = 1.0, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if temperature <= 0:
            raise ValueError(f"temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        return energy(logits, self.temperature)
