"""Memory-bounded statistics of a feature matrix, shared by the fitted detectors.

scikit-learn's covariance estimators (``EmpiricalCovariance``) and ``PCA`` need the whole centred
feature matrix in float64: four times a 50k x 2048 float32 matrix (1.6 GB) on top of it. Here
every statistic is accumulated in float64 over row chunks, so fitting needs the feature matrix
plus O(D^2 + C*D) memory, whatever N is. The linear algebra on the small D x D matrices is
torch's (``pinv`` / ``eigh``), on the device of the features.
"""

from __future__ import annotations

import torch

from robustvit.errors import UserError
from robustvit.ood.base import chunks


def class_means(features: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None) -> torch.Tensor:
    """Per-class mean features (C, D) in float64; classes without images get a NaN row."""
    c = int(num_classes if num_classes is not None else int(labels.max()) + 1)
    sums = torch.zeros(c, features.shape[1], dtype=torch.float64, device=features.device)
    for s in chunks(features.shape[0], 8192):
        sums.index_add_(0, labels[s], features[s].double())
    counts = torch.bincount(labels, minlength=c).double().unsqueeze(1)
    return sums / counts


def scatter(
    features: torch.Tensor,
    center: torch.Tensor,
    labels: torch.Tensor | None = None,
    chunk_size: int = 8192,
) -> torch.Tensor:
    """Mean outer product of centred rows, (D, D) float64.

    Args:
        features: (N, D) features.
        center: (D,) one centre for every row, or (C, D) per-class centres picked by ``labels``.
        labels: (N,) class of each row when ``center`` is per class.
        chunk_size: Rows per chunk.

    Returns:
        ``sum_i (x_i - c_i)(x_i - c_i)^T / N``: the (maximum-likelihood) covariance when the
        centres are the means; the shared within-class covariance for class means.
    """
    d = features.shape[1]
    out = torch.zeros(d, d, dtype=torch.float64, device=features.device)
    for s in chunks(features.shape[0], chunk_size):
        c = center if labels is None else center[labels[s]]
        x = features[s].double() - c
        out.addmm_(x.T, x)
    return out / features.shape[0]


def precision(cov: torch.Tensor) -> torch.Tensor:
    """Pseudo-inverse of a symmetric covariance (as ``sklearn.covariance.EmpiricalCovariance``)."""
    return torch.linalg.pinv(cov, hermitian=True)


def sq_mahalanobis(
    features: torch.Tensor, means: torch.Tensor, prec: torch.Tensor, chunk_size: int = 4096
) -> torch.Tensor:
    """Squared Mahalanobis distances of every row to every mean, (N, C) float64.

    Uses ``(x-m)^T P (x-m) = x^T P x - 2 x^T P m + m^T P m`` in float64, chunked over rows.
    """
    means = means.to(features.device)
    prec = prec.to(features.device)
    mpm = ((means @ prec) * means).sum(1)  # (C,)
    out = []
    for s in chunks(features.shape[0], chunk_size):
        x = features[s].double()
        xp = x @ prec
        out.append(((xp * x).sum(1, keepdim=True) - 2 * xp @ means.T + mpm).clamp_min(0))
    return torch.cat(out) if out else features.new_zeros(0, means.shape[0], dtype=torch.float64)


class LinearHead:
    """The classifier's last layer ``logits = features @ W.T + b``, recovered from data.

    ReAct, ASH and ViM need the last layer's weights. Every model's shared forward pass gives
    features and the logits computed from them, so when the head is linear it is recovered
    exactly by least squares on (features, 1) -> logits, accumulated over chunks in float64
    (normal equations, solved by pseudo-inverse). A head that is not linear in the features is
    detected from the residual and refused.

    Args:
        weight: (C, D) weight, when known.
        bias: (C,) bias, when known.
    """

    #: largest relative residual ||F W^T + b - L|| / ||L - mean(L)|| accepted as "linear"
    tolerance = 1e-2

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight = weight.double()
        self.bias = bias.double()

    @classmethod
    def from_model(cls, model: torch.nn.Module, features: torch.Tensor, logits: torch.Tensor,
                   valid_labels: list[int] | None = None) -> LinearHead | None:
        """The model's own last layer: the last ``nn.Linear`` (D -> C) that reproduces the logits.

        Args:
            model: Any module holding the classifier (e.g. the model wrapper).
            features: (N, D) penultimate features.
            logits: (N, C) logits of the same rows.
            valid_labels: The logit indices kept when the logits are a class subset of the layer's
                outputs (ImageNet-R/A), else None.

        Returns:
            The head, checked on up to 256 of the rows; None when no linear layer reproduces the logits.
        """
        n, d = features.shape
        rows = slice(0, min(n, 256))
        for module in reversed(list(model.modules())):
            if not isinstance(module, torch.nn.Linear) or module.in_features != d:
                continue
            w = module.weight.detach().to(features.device)
            b = module.bias.detach().to(features.device) if module.bias is not None else w.new_zeros(w.shape[0])
            if valid_labels and module.out_features > max(valid_labels):
                w, b = w[valid_labels], b[valid_labels]
            if w.shape[0] != logits.shape[1]:
                continue
            head = cls(w, b)
            if _relative_residual(head, features[rows], logits[rows]) <= cls.tolerance:
                return head
        return None

    @classmethod
    def from_data(cls, features: torch.Tensor, logits: torch.Tensor, chunk_size: int = 8192) -> LinearHead:
        """Least-squares fit of (features, 1) -> logits; :class:`UserError` when the head is not linear.

        Exact when the features span their space; when they lie on an affine subspace (e.g. after
        a LayerNorm), the weight is the minimum-norm one, which agrees with the true head on that
        subspace only: prefer :meth:`from_model`.
        """
        n, d = features.shape
        gram = torch.zeros(d + 1, d + 1, dtype=torch.float64, device=features.device)
        rhs = torch.zeros(d + 1, logits.shape[1], dtype=torch.float64, device=features.device)
        for s in chunks(n, chunk_size):
            a = torch.cat([features[s].double(), features.new_ones(s.stop - s.start, 1, dtype=torch.float64)], 1)
            gram.addmm_(a.T, a)
            rhs.addmm_(a.T, logits[s].double())
        sol = precision(gram) @ rhs  # (D+1, C)
        head = cls(sol[:d].T.contiguous(), sol[d].contiguous())
        rel = _relative_residual(head, features, logits, chunk_size)
        if rel > cls.tolerance:
            raise UserError(
                f"the logits are not a linear function of the penultimate features (relative residual {rel:.3g}); "
                "the detectors ReAct, ASH and ViM need a model whose last layer is linear"
            )
        return head

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (N, C) in float64 for features (N, D)."""
        w = self.weight.to(features.device)
        return torch.addmm(self.bias.to(features.device), features.double(), w.T)

    def origin(self) -> torch.Tensor:
        """ViM's origin ``u = -pinv(W) b``, (D,) float64."""
        return -(torch.linalg.pinv(self.weight) @ self.bias)


def _relative_residual(head: LinearHead, features: torch.Tensor, logits: torch.Tensor, chunk_size: int = 8192) -> float:
    """``||head(F) - L|| / ||L - mean(L)||`` over all rows, chunked."""
    mean = logits.double().mean(0)
    err = spread = 0.0
    for s in chunks(features.shape[0], chunk_size):
        err += float(((head(features[s]) - logits[s].double()) ** 2).sum())
        spread += float(((logits[s].double() - mean) ** 2).sum())
    return (err / max(spread, 1e-300)) ** 0.5


def activation_quantile(features: torch.Tensor, q: float) -> float:
    """The ``q``-quantile (fraction in [0, 1]) of all entries of the feature matrix.

    ``numpy.percentile`` with linear interpolation (as OpenOOD's ReAct), on a float32 copy:
    one extra feature matrix of memory.
    """
    import numpy as np

    if not 0.0 <= q <= 1.0:
        raise UserError(f"percentile must be a fraction in [0, 1], got {q}")
    return float(np.percentile(features.detach().to("cpu", torch.float32).numpy().reshape(-1), q * 100))
