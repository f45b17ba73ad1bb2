"""Deep nearest neighbours: distance to the k-th nearest training feature, after L2 normalisation.

Paper: Y. Sun, Y. Ming, X. Zhu and Y. Li, "Out-of-Distribution Detection with Deep Nearest
Neighbors", ICML 2022. https://arxiv.org/abs/2204.06507

Fit: stores the L2-normalised training features. Score: Euclidean distance from the normalised
feature to its k-th nearest normalised training feature (higher = more OOD).
Hyper-parameters: ``k`` = 50 (the paper's CIFAR-10 value; it uses 1000 with all of ImageNet,
or k = 10 with a 1% sample), clipped to the number of training images.

Search: exact, in torch on the features' device (GPU when the features are there), chunked over
both the queries (``chunk_size`` rows) and the stored features (``bank_chunk`` rows) with a
running top-k, so memory is the stored features plus one ``chunk_size x bank_chunk`` similarity
block. For unit vectors ``||a - b||^2 = 2 - 2 a.b``, so the k nearest are the k most similar.
(scikit-learn's ``NearestNeighbors(algorithm="brute")`` computes the same, on the CPU only, and
its per-call overhead exceeds this whole search on small sets.)
"""

from __future__ import annotations

import torch

from robustvit.ood.base import Detector, chunks


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return x / x.norm(dim=1, keepdim=True).clamp_min(1e-12)


class KNN(Detector):
    """k-th nearest-neighbour distance of normalised features.

    Args:
        k: Which neighbour's distance is the score; default 50.
        bank_chunk: Stored features compared per block; default 8192.
    """

    needs_fit = True

    def __init__(self, k: int = 50, bank_chunk: int = 8192, chunk_size: int = 2048) -> None:
        super().__init__(chunk_size)
        if k < 1 or bank_chunk < 1:
            raise ValueError(f"k and bank_chunk must be >= 1, got k={k}, bank_chunk={bank_chunk}")
        self.k = int(k)
        self.bank_chunk = int(bank_chunk)

    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        self.bank = _normalise(features.float())
        self._k = min(self.k, self.bank.shape[0])

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        bank = self.bank.to(features.device)
        query = _normalise(features.float())
        best = None
        for s in chunks(bank.shape[0], self.bank_chunk):
            sims = query @ bank[s].T
            top = sims.topk(min(self._k, sims.shape[1]), dim=1).values
            best = top if best is None else torch.cat([best, top], 1).topk(self._k, dim=1).values
        return (2 - 2 * best[:, self._k - 1]).clamp_min(0).sqrt()
