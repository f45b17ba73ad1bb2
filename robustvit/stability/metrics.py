"""Stability metrics of ImageNet-P (Hendrycks & Dietterich 2019, section 4), per image, from logits.

For a sequence of frames ``x_1 .. x_n`` of one image and a classifier ``f``:

* **Flip probability** (FP): the share of compared frame pairs whose top-1 predictions differ. Pairs
  follow ``ImageNet-P/test.py``: a noise sequence (every frame a new draw of noise on the clean
  first frame) compares every frame with the first, ``(x_1, x_j)`` for ``j > 1``; the other
  (temporally related) sequences compare frames ``d`` apart, ``(x_j, x_{j+d})``, where ``d`` is the
  difficulty (1: consecutive frames; noise sequences get their difficulty from the noise strength).
* **Top-5 distance** (T5D): with ``sigma(k)`` the rank in the second frame of the class ranked ``k``
  in the first (ordinal ranks, ties broken by class index as ``scipy.stats.rankdata(-logits,
  "ordinal")``), ``T5D = sum_{k=1..5} |(k - 1) - min(sigma(k) - 1, 5)|`` (the implementation in
  ``test.py`` of the paper's ``sum_i sum_j 1(1 <= j - 1 <= 5)`` over ``j`` between ``i`` and
  ``sigma(i)``); 0 for identical top-5 rankings. Averaged over the same pairs as FP.
* **Zipf distance**: ``sum_k |1/k - 1/sigma(k)| / k`` over all classes (``test.py``'s ``mode="zipf"``),
  a ranking distance that weighs every rank by Zipf's law.

Per image, each metric is the mean over its pairs; a model's value is the mean over images (every
image has the same number of pairs, as ``test.py`` averages per video, then over videos). The flip
rate and mFR / mT5D (normalised by a baseline model) are formed by the stability suite's aggregates.
All three are lower-is-better.
"""

from __future__ import annotations

import torch

_CHUNK_ELEMENTS = 1 << 22  # sorts of (images x pairs x classes) logits in chunks of about 4M values


def pairs(frames: int, difficulty: int = 1, noise: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices ``(first, second)`` of the compared frames of a sequence (``test.py``'s rule).

    Args:
        frames: Frames in the sequence.
        difficulty: The frame stride of temporally related sequences (ignored for noise).
        noise: Compare every frame with the first (noise sequences).
    """
    if noise:
        return torch.zeros(frames - 1, dtype=torch.long), torch.arange(1, frames)
    d = int(difficulty)
    return torch.arange(0, max(frames - d, 0)), torch.arange(d, max(frames, d))


def flip_probability(logits: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> torch.Tensor:
    """Per image: the share of frame pairs with different top-1 predictions.

    Args:
        logits: ``(N, T, C)`` scores of each image's ``T`` frames (or ``(N, T)`` predicted classes).
        first, second: Frame indices of the pairs (:func:`pairs`).

    Returns:
        ``(N,)`` float64 flip probabilities (NaN without pairs).
    """
    pred = logits.argmax(-1) if logits.is_floating_point() else logits
    a, b = first.to(pred.device), second.to(pred.device)
    return (pred[:, a] != pred[:, b]).to(torch.float64).mean(1)


def rank_distances(logits: torch.Tensor, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image: the mean top-5 distance and the mean Zipf distance over the frame pairs.

    Args:
        logits: ``(N, T, C)`` scores of each image's ``T`` frames.
        first, second: Frame indices of the pairs; ``first`` is the reference ranking.

    Returns:
        ``(t5d, zipf)``, each ``(N,)`` float64.
    """
    n, _, c = logits.shape
    a, b = first.to(logits.device), second.to(logits.device)
    per = max(1, _CHUNK_ELEMENTS // max(1, len(a) * c))
    t5d, zipf = [], []
    k = torch.arange(1, c + 1, device=logits.device)
    top = min(5, c)
    for s in range(0, n, per):
        chunk = logits[s: s + per].float()
        order_a = torch.sort(chunk[:, a], dim=-1, descending=True, stable=True).indices
        order_b = torch.sort(chunk[:, b], dim=-1, descending=True, stable=True).indices
        rank_b = torch.empty_like(order_b).scatter_(-1, order_b, k.expand_as(order_b))  # 1-based rank of each class
        sigma = rank_b.gather(-1, order_a)  # rank in the second frame of the first frame's k-th class
        near = ((k[:top] - 1) - (sigma[..., :top] - 1).clamp(max=5)).abs().sum(-1)
        kf = k.to(torch.float64)
        far = ((1.0 / kf - 1.0 / sigma.to(torch.float64)).abs() / kf).sum(-1)
        t5d.append(near.to(torch.float64).mean(1))
        zipf.append(far.mean(1))
    if not t5d:
        empty = torch.zeros(0, dtype=torch.float64, device=logits.device)
        return empty, empty.clone()
    return torch.cat(t5d), torch.cat(zipf)


def sequence_metrics(logits: torch.Tensor, difficulty: int = 1, noise: bool = False) -> dict[str, torch.Tensor]:
    """``{"fp", "t5d", "zipf"}`` per image (``(N,)`` float64, CPU) of ``(N, T, C)`` sequence logits."""
    first, second = pairs(logits.shape[1], difficulty, noise)
    t5d, zipf = rank_distances(logits, first, second)
    return {"fp": flip_probability(logits, first, second).cpu(), "t5d": t5d.cpu(), "zipf": zipf.cpu()}


def normalised(values: dict[int, float], baseline: dict[int, float]) -> float:
    """Flip rate / T5D rate: the model's values summed over difficulties over the baseline's (as CE sums
    severities); with difficulty 1 alone (the usual protocol) ``FP / FP_baseline``. NaN when the
    baseline lacks a difficulty or its sum is 0 (a perfectly stable baseline normalises nothing)."""
    if not values or any(d not in baseline for d in values):
        return float("nan")
    den = sum(float(baseline[d]) for d in values)
    return sum(float(v) for v in values.values()) / den if den > 0 else float("nan")
