"""Deep nearest neighbours: distance to the k-th nearest training feature, after L2 normalisation.

Paper: Y. Sun, Y. Ming, X. Zhu and Y. Li, "Out-of-Distribution Detection with Deep Nearest
Neighbors", ICML 2022. https://arxiv.org/abs/2204.06507

Fit: stores the L2-normalised training features. Score: Euclidean distance from the normalised
feature to its k-th nearest normalised training feature (higher = more OOD).
Hyper-parameters: ``k`` = 50 (the paper's CIFAR-10 value; it uses 1000 with all of ImageNet,
or k = 10 with a 1% sample), clipped to the number of training images.

Search: ``sklearn.neighbors.NearestNeighbors(algorithm="brute")``, whose pairwise-distance
reduction (``ArgKmin``) runs in chunks over both query and training rows in float32, so memory
stays at the stored features plus a few chunk buffers.
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNN(Detector):
    """k-th nearest-neighbour distance of normalised features.

    Args:
        k: Which neighbour's distance is the score; default 50.
    """

    needs_fit = True

    def __init__(self, k: int = 50, chunk_size: int = 8192) -> None:
        super().__init__(chunk_size)
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self.k = int(k)

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        from sklearn.neighbors import NearestNeighbors

        bank = _normalise(features).to("cpu", torch.float32).numpy()
        self._k = min(self.k, bank.shape[0])
        self.index = NearestNeighbors(n_neighbors=self._k, algorithm="brute", metric="euclidean").fit(bank)

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        query = _normalise(features).to("cpu", torch.float32).numpy()
        dist, _ = self.index.kneighbors(query, n_neighbors=self._k, return_distance=True)
        return torch.from_numpy(dist[:, -1].copy()).to(features.device)
