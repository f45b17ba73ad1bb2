"""DCT energy spectrum of minimal adversarial perturbations (DeepFool-L2).

Paul & Chen, "Vision Transformers are Robust Learners", AAAI 2022 (Sec. "Adversarial
perturbations"): the frequency content of the perturbations that fool a model. DeepFool-L2
(Moosavi-Dezfooli et al., CVPR 2016; robustvit's ``deepfool-l2`` attack, foolbox) runs in fp32 on the
initially correct images; ``delta = x_adv - x`` of every image whose attacked version is misclassified
(re-predicted, "found") enters the spectrum

    S[u, v] = mean over found images and the 3 channels of D(delta)[u, v]^2,

with ``D`` the orthonormal 2D DCT-II over the image plane (``u`` vertical, ``v`` horizontal frequency
index, 0 = constant). Orthonormality makes ``sum S = mean ||delta_c||_2^2`` (Parseval).

Cells, relative to the probe (suite paths ``probes/spectrum/<cell>/<metric>``):

* ``dct``: metrics ``u=<u>,v=<v>`` = ``10 log10`` of ``S`` average-pooled to ``B x B`` bins, ``B =
  min(16, H)`` per axis (adaptive pooling: bins of ``H / B`` coefficients, 2 x 2 at 32 px, 14 x 14 at
  224 px), ``u, v = 0 .. B-1`` bin indices.
* ``energy``: ``high_share`` = share of ``sum S`` in the high-frequency half ``u / H + v / W >= 1``
  (square images: ``u + v >= H``, strictly beyond the anti-diagonal ``u + v = H - 1``),
  ``low_share`` = the rest (``1 - high_share``), ``n_found`` = number of images with a found
  perturbation (of ``n`` attacked).

All metrics are descriptive, not rankings (stored with ``higher_is_better = False``); no per-image
outcomes. Options: ``images`` (default 64: the first 64 of the run's seeded image order, nested in the
``limit``; ``"all"``), ``steps`` (50), ``overshoot`` (0.02), ``candidates`` (10): DeepFool's settings.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.probes.base import Probe, predict
from robustvit.probes.fourier import check_images, sample_batches
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext

MAX_BINS = 16
"""Most bins per axis of the stored (pooled) spectrum."""
ATTACK = "deepfool-l2"


def dct_matrix(n: int, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """The orthonormal DCT-II matrix ``D`` (n x n): ``D[k, m] = a_k cos(pi (2m + 1) k / (2n))``,
    ``a_0 = sqrt(1/n)``, ``a_k = sqrt(2/n)``; ``D @ x`` is ``scipy.fft.dct(x, norm="ortho")``."""
    k = torch.arange(n, dtype=dtype, device=device).view(-1, 1)
    m = torch.arange(n, dtype=dtype, device=device).view(1, -1)
    d = torch.cos(math.pi * (2 * m + 1) * k / (2 * n)) * math.sqrt(2 / n)
    d[0] /= math.sqrt(2)
    return d


def dct2(x: torch.Tensor) -> torch.Tensor:
    """Orthonormal 2D DCT-II (float64) over the last two dimensions: ``scipy.fft.dctn(x, axes=(-2, -1), norm="ortho")``."""
    h, w = x.shape[-2:]
    dh = dct_matrix(h, x.device)
    dw = dct_matrix(w, x.device)
    return dh @ x.double() @ dw.T


def energy_sum(delta: torch.Tensor) -> torch.Tensor:
    """Sum over images and channels of the squared DCT coefficients of ``delta`` (N, C, H, W): (H, W) float64."""
    return dct2(delta.double()).pow(2).sum(dim=(0, 1))


def high_mask(h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """(h, w) booleans of the high-frequency half ``u / h + v / w >= 1``."""
    u = torch.arange(h, device=device).view(-1, 1)
    v = torch.arange(w, device=device).view(1, -1)
    return u * w + v * h >= h * w


def pooled(spectrum: torch.Tensor, bins: int = MAX_BINS) -> torch.Tensor:
    """``spectrum`` (H, W) average-pooled to ``min(bins, H) x min(bins, W)`` (adaptive bins)."""
    h, w = spectrum.shape
    return torch.nn.functional.adaptive_avg_pool2d(spectrum[None, None], (min(bins, h), min(bins, w)))[0, 0]


class PerturbationSpectrum(Probe):
    """DCT energy spectrum of DeepFool-L2 perturbations (Paul & Chen, 2022); see the module docstring."""

    name: ClassVar[str] = "spectrum"
    options: ClassVar[dict[str, Any]] = {"images": 64, "steps": 50, "overshoot": 0.02, "candidates": 10}

    def validate(self) -> None:
        check_images(self.name, self.opts["images"])
        for key, low in (("steps", 1), ("candidates", 2)):
            value = self.opts[key]
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise UserError(f"probe 'spectrum': option {key!r} must be an integer >= {low}, got {value!r}")
        value = self.opts["overshoot"]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < math.inf:
            raise UserError(f"probe 'spectrum': option 'overshoot' must be a number >= 0, got {value!r}")

    def attack(self) -> Any:
        """The registered DeepFool-L2 adapter with this probe's settings."""
        from robustvit.registries import ATTACKS

        settings = {k: self.opts[k] for k in ("steps", "candidates")} | {"overshoot": float(self.opts["overshoot"])}
        try:
            return ATTACKS.get(ATTACK)(**settings)
        except UserError as exc:
            raise UserError(f"probe 'spectrum': {exc}") from None

    def cells(self) -> list[str]:
        return ["dct", "energy"]

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        total, found, attacked = self.spectrum(ctx)
        h, w = total.shape
        spectrum = total / max(1, 3 * found)  # the 3 channels of each found image
        if "dct" in cells:
            result = CellResult("dct")
            bins = pooled(spectrum)
            for u in range(bins.shape[0]):
                for v in range(bins.shape[1]):
                    value = 10 * math.log10(float(bins[u, v])) if found and bins[u, v] > 0 else math.nan
                    result.add(f"u={u},v={v}", value, found, False)
            yield result
        if "energy" in cells:
            energy = float(spectrum.sum())
            high = float(spectrum[high_mask(h, w)].sum()) / energy if found and energy > 0 else math.nan
            yield (CellResult("energy").add("high_share", high, found, False)
                   .add("low_share", 1 - high, found, False).add("n_found", float(found), attacked, False))

    def spectrum(self, ctx: SuiteContext) -> tuple[torch.Tensor, int, int]:
        """``(energy sum (H, W) float64 CPU, images found, images attacked)`` over the probe's images."""
        from robustvit.attacks.base import eval_mode, frozen, seeded
        from robustvit.attacks.engine import split_on_oom
        from robustvit.context import derive_seed

        attack = self.attack()
        attack.check_model(ctx.model.num_classes)
        seed = derive_seed(ctx.seed, self.name, ATTACK)  # DeepFool draws nothing; forked RNGs all the same
        total: torch.Tensor | None = None
        found = attacked = 0
        n = None if self.opts["images"] == "all" else int(self.opts["images"])
        model = ctx.model
        for x, y, _index in sample_batches(ctx, n):
            x = x.float()
            keep = predict(ctx, x).argmax(1) == y
            xs, ys = x[keep], y[keep]
            if total is None:
                total = torch.zeros(x.shape[-2:], dtype=torch.float64)
            if not len(ys):
                continue

            def run(xb: torch.Tensor, yb: torch.Tensor) -> tuple[torch.Tensor, dict[str, float]]:
                with torch.enable_grad():
                    return attack.perturb(model, xb, yb, eps=math.inf, seed=seed).detach().float(), {}

            with eval_mode(model), seeded(seed, x.device), frozen(model):
                adv, _ = split_on_oom(run, xs, ys)
            adv = adv.clamp(0, 1)
            hit = predict(ctx, adv).argmax(1) != ys
            attacked += len(ys)
            found += int(hit.sum())
            if bool(hit.any()):
                total += energy_sum(adv[hit] - xs[hit]).cpu()
        if total is None:
            raise UserError("probe 'spectrum': the evaluation dataset yielded no images")
        return total, found, attacked
