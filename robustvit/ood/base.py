"""The detector interface, in the spirit of pytorch-ood's ``Detector`` (fit / predict on features).

A detector sees the output of the one shared forward pass: penultimate ``features`` (N, D) and
``logits`` (N, C). :meth:`Detector.fit` takes in-distribution *training* features, logits and
labels; :meth:`Detector.score` returns one outlier score per image, **higher = more OOD**.
Detectors that need the images themselves (ODIN) set ``needs_images = True`` and implement
:meth:`Detector.score_images`, which takes the model wrapper and a batch.

Inputs may be torch tensors (on any device) or numpy arrays. Scores are computed per row, so
they do not depend on how the rows are batched; large inputs are processed in chunks of
``chunk_size`` rows to keep memory bounded.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError

if TYPE_CHECKING:
    from robustvit.ood.stats import LinearHead

Array = Any  # torch.Tensor | numpy.ndarray

#: rows per chunk when fitting and scoring large feature matrices
DEFAULT_CHUNK = 8192


def as_tensor(x: Array, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``x`` as a torch tensor of ``dtype``, on its own device (numpy arrays land on the CPU)."""
    t = x if isinstance(x, torch.Tensor) else torch.as_tensor(x)
    return t.detach().to(dtype)


def chunks(n: int, size: int) -> Iterator[slice]:
    """Consecutive row slices of at most ``size`` rows covering ``range(n)``."""
    for start in range(0, n, max(1, size)):
        yield slice(start, min(n, start + size))


class Detector:
    """Base class: fit on ID training data, then score any images (higher = more OOD).

    Subclasses set ``needs_fit`` when :meth:`fit` learns something, override :meth:`_fit` and
    :meth:`_score`, and take their hyper-parameters as keyword arguments of ``__init__`` (the
    defaults are the paper's; :meth:`hparams` lists them).
    """

    #: whether :meth:`fit` must be called before :meth:`score`
    needs_fit: ClassVar[bool] = False
    #: whether the detector needs its own pass over the images (ODIN); see :meth:`score_images`
    needs_images: ClassVar[bool] = False
    #: whether the detector applies the classifier's last linear layer to modified features
    uses_head: ClassVar[bool] = False

    def __init__(self, chunk_size: int = DEFAULT_CHUNK) -> None:
        self.chunk_size = int(chunk_size)
        self._fitted = not self.needs_fit

    # -- public API --------------------------------------------------------------------------
    def fit(self, features: Array, logits: Array, labels: Array, head: LinearHead | None = None) -> Detector:
        """Learn what the detector needs from in-distribution training data.

        Args:
            features: Penultimate features, (N, D).
            logits: Logits of the same images, (N, C).
            labels: Class labels, (N,). Rows with a negative label are ignored.
            head: The classifier's last layer, for detectors with ``uses_head`` (ReAct, ASH,
                ViM); see :meth:`LinearHead.from_model`. Recovered from (features, logits) by
                least squares when not given.

        Returns:
            ``self``.
        """
        feats, logs = as_tensor(features), as_tensor(logits)
        labs = as_tensor(labels, torch.long).to(feats.device)
        known = labs >= 0
        if not bool(known.all()):
            feats, logs, labs = feats[known], logs[known], labs[known]
        if feats.shape[0] == 0:
            raise UserError(f"detector {self.name!r}: no in-distribution training images to fit on")
        if self.uses_head:
            from robustvit.ood.stats import LinearHead

            self.head = head if head is not None else LinearHead.from_data(feats, logs, self.chunk_size)
        self._fit(feats, logs, labs)
        self._fitted = True
        return self

    def score(self, features: Array, logits: Array) -> torch.Tensor:
        """Outlier scores, one per row; higher means more OOD.

        Args:
            features: Penultimate features, (N, D).
            logits: Logits, (N, C).

        Returns:
            A 1-D float tensor of N scores on the device of the inputs.
        """
        if not self._fitted:
            raise RuntimeError(f"detector {self.name!r} must be fitted before scoring (call fit first)")
        feats, logs = as_tensor(features), as_tensor(logits)
        n = logs.shape[0]
        if n == 0:
            return logs.new_zeros(0)
        out = [self._score(feats[s], logs[s]) for s in chunks(n, self.chunk_size)]
        return torch.cat([o.reshape(-1) for o in out])

    def score_images(self, model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
        """Outlier scores computed from the images (only detectors with ``needs_images``)."""
        raise NotImplementedError(f"detector {self.name!r} scores features, not images")

    @property
    def name(self) -> str:
        return type(self).__name__

    @classmethod
    def defaults(cls) -> dict[str, Any]:
        """The hyper-parameters and their defaults (keyword arguments of ``__init__``)."""
        params = inspect.signature(cls.__init__).parameters
        return {k: p.default for k, p in params.items() if k != "self" and p.default is not inspect.Parameter.empty}

    def hparams(self) -> dict[str, Any]:
        """The hyper-parameters this instance uses."""
        return {k: getattr(self, k) for k in self.defaults()}

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hparams().items() if k != "chunk_size")
        return f"{self.name}({args})"

    # -- for subclasses ------------------------------------------------------------------------
    def _fit(self, features: torch.Tensor, logits: torch.Tensor, labels: torch.Tensor) -> None:
        """Fit on known-class rows (features float32, labels long, same device)."""

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class LogitDetector(Detector):
    """A detector that needs only the logits (MSP, MaxLogit, Energy, Entropy, GEN)."""

    def _score(self, features: torch.Tensor, logits: torch.Tensor) -> torch.Tensor:
        return self.score_logits(logits)

    def score_logits(self, logits: torch.Tensor) -> torch.Tensor:
        """Outlier scores from logits (N, C) -> (N,)."""
        raise NotImplementedError


def energy(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Free energy ``-T * logsumexp(logits / T)`` (Liu et al., 2020): higher = more OOD."""
    return -temperature * torch.logsumexp(logits / temperature, dim=1)
