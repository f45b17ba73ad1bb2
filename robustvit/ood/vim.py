"""ViM: virtual-logit matching.

Paper: H. Wang, Z. Li, L. Feng and W. Zhang, "ViM: Out-Of-Distribution with Virtual-logit
Matching", CVPR 2022. https://arxiv.org/abs/2203.10807 (code: https://github.com/haoqiwang/vim)

Fit: origin ``u = -pinv(W) b`` from the last layer (W, b); principal subspace = the ``dim``
leading eigenvectors of the uncentred covariance of ``x - u`` over the training features;
``alpha = mean(max logit) / mean(||residual||)`` on the training data. Score:
``alpha * ||(x - u) projected off the principal subspace|| - logsumexp(logits)``
(the paper's ``-score``; higher = more OOD).

Hyper-parameters: ``dim`` = the authors' rule when None: 1000 if D >= 2048, 512 if D >= 768,
else D // 2; always below D.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector, chunks
from robustvit.ood.stats import scatter


def default_dim(d: int) -> int:
    """The authors' principal-subspace size for feature dimension ``d``."""
    return 1000 if d >= 2048 else 512 if d >= 768 else d // 2


class ViM(Detector):
    """Residual norm off the principal subspace as a virtual logit, minus the energy.

    Args:
        dim: Principal-subspace dimension; None = :func:`default_dim`.
    """

    needs_fit = True
    uses_head = True

    def __init__(self, dim: int | None = None, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if dim is not None and dim < 1:
            raise ValueError(f"dim must be >= 1, got {dim}")
        self.dim = dim

    def _residual_norm(self, features: torch.Tensor) -> torch.Tensor:
        x = features.double() - self.origin.to(features.device)
        return (x @ self.null_space.to(features.device)).norm(dim=1)

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        d = features.shape[1]
        dim = min(self.dim if self.dim is not None else default_dim(d), d - 1)
        self.origin = self.head.origin().to(features.device)
        _, vecs = torch.linalg.eigh(scatter(features, self.origin, None, self.chunk_size))  # ascending
        self.null_space = vecs[:, : d - dim].contiguous()
        vnorm = torch.cat([self._residual_norm(features[s]) for s in chunks(features.shape[0], self.chunk_size)])
        self.alpha = float(logits.double().amax(dim=1).mean() / vnorm.mean())

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.alpha * self._residual_norm(features) - torch.logsumexp(logits.double(), dim=1)

