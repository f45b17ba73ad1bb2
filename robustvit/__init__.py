"""robustvit: robustness evaluation of image classifiers, Vision Transformers versus CNNs."""

from __future__ import annotations

__version__ = "0.1.0"
