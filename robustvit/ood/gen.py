"""GEN: generalized entropy of the top-M softmax probabilities.

Paper: X. Liu, Y. Lochman and C. Zach, "GEN: Pushing the Limits of Softmax-Based
Out-of-Distribution Detection", CVPR 2023. https://openaccess.thecvf.com/content/CVPR2023/html/
Liu_GEN_Pushing_the_Limits_of_Softmax-Based_Out-of-Distribution_Detection_CVPR_2023_paper.html

Score: ``G(x) = sum_{j in top-M} p_j^gamma (1 - p_j)^gamma`` (higher = more OOD; the paper's
confidence is ``-G``). Hyper-parameters: ``gamma`` = 0.1 and ``top_m`` = 100 (the paper's
ImageNet setting); with fewer classes than ``top_m`` every class counts. Probabilities are clamped
to [1e-7, 1 - 1e-7] as in the authors' code.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import LogitDetector


class GEN(LogitDetector):
    """Generalized entropy of the M largest softmax probabilities.

    Args:
        gamma: Exponent, > 0; default 0.1.
        top_m: Number of largest probabilities summed; default 100.
    """

    def __init__(self, gamma: float = 0.1, top_m: int = 100, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if gamma <= 0 or top_m < 1:
            raise ValueError(f"GEN needs gamma > 0 and top_m >= 1, got gamma={gamma}, top_m={top_m}")
        self.gamma = float(gamma)
        self.top_m = int(top_m)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        p = torch.softmax(logits.double(), dim=1)  # float64: (1 - p)^gamma is steep near p = 1
        p = p.topk(min(self.top_m, p.shape[1]), dim=1).values.clamp(1e-7, 1 - 1e-7)
        return (p.pow(self.gamma) * (1 - p).pow(self.gamma)).sum(dim=1)
