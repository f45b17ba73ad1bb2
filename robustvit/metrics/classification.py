"""Classification metrics on logits (torch tensors; labels are class indices)."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def topk(logits: torch.Tensor, labels: torch.Tensor, k: int = 5) -> float:
    """Fraction of examples whose label is among the ``k`` largest logits (higher is better)."""
    k = min(k, logits.shape[1])
    hits = (logits.topk(k, dim=1).indices == labels[:, None]).any(dim=1)
    return float(hits.float().mean())


def top1(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy: fraction of examples whose arg-max logit is the label (higher is better)."""
    return float((logits.argmax(dim=1) == labels).float().mean())


def nll(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Mean negative log-likelihood of the label under softmax(logits), in nats (lower is better)."""
    return float(F.cross_entropy(logits.float(), labels, reduction="mean"))


def ece(logits: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """Expected calibration error with equal-width confidence bins (lower is better).

    Follows Guo et al., "On Calibration of Modern Neural Networks" (ICML 2017), eq. 3, with 15
    bins as in that paper and in Minderer et al., "Revisiting the Calibration of Modern Neural
    Networks" (NeurIPS 2021), the usual ViT-vs-CNN calibration comparison: confidence is the max
    softmax probability; bins are (i/B, (i+1)/B]; ECE = sum_b |B_b|/n * |acc(B_b) - conf(B_b)|.
    """
    probs = logits.float().softmax(dim=1)
    conf, pred = probs.max(dim=1)
    correct = (pred == labels).float()
    # bin b holds conf in (b/B, (b+1)/B]; conf > 0 always for a softmax
    bins = (torch.ceil(conf * n_bins).long() - 1).clamp(0, n_bins - 1)
    n = float(len(labels))
    conf_sum = torch.zeros(n_bins).index_add_(0, bins, conf)
    acc_sum = torch.zeros(n_bins).index_add_(0, bins, correct)
    return float((conf_sum - acc_sum).abs().sum() / n)
