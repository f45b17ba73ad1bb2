"""Fourier heat map: the model's error under additive perturbations along single Fourier basis images.

Yin, Gontijo Lopes, Shlens, Cubuk & Gilmer, "A Fourier Perspective on Model Robustness in Computer
Vision", NeurIPS 2019 (Sec. 3). For a frequency ``(i, j)`` on the centred grid (``i`` vertical, ``j``
horizontal; ``-H//2 <= i <= (H-1)//2``, e.g. -16..15 at 32 px) the basis image is

    U_ij[m, n] = cos(2 pi (i m / H + j n / W)) / ||cos(...)||_2,

real with unit L2 norm; its 2D DFT is non-zero only at ``(i, j)`` and ``(-i, -j)``. Each image ``x``
becomes ``clip(x + v * r_c * U_ij, 0, 1)``, the same ``U_ij`` in the three channels with a sign
``r_c`` in {-1, +1} drawn per channel and image (L2 size ``v`` per channel), and the cell's metric is
the top-1 error (1 - accuracy) on the perturbed images, lower is better.

Mirroring is exact: ``U_-i,-j = U_ij`` (cos is even; indices wrap modulo H and W, so at the Nyquist
row ``-H/2`` maps to itself), so ``x + r U_-i,-j`` is ``x + r U_ij`` and, the sign ``r`` being
symmetric, the two cells are the same random experiment. Each pair is computed once, with the same
draws, and the heat map is symmetric about the origin by construction.

Cells, relative to the probe (suite paths ``probes/fourier/<cell>/<metric>``):

* ``i=<i>,j=<j>`` for the half-plane ``j <= 0`` of the grid (32 x 17 = 544 cells at 32 px), metric
  ``error`` with per-image booleans ``error`` (Wilson intervals, paired comparisons).
* ``bands``: ``low``, ``mid``, ``high`` = mean error over the frequencies of the full (mirrored) grid
  whose radius ``sqrt(i^2 + j^2)`` is ``<= R/3``, in ``(R/3, 2R/3]``, ``> 2R/3``, with ``R`` the largest
  radius on the grid (the corner); ``mean`` over all of it. Per-image band means are attached
  (bootstrap intervals).

Options: ``eps`` (``"auto"``: 4.0 for images up to 64 px, the paper's CIFAR-10 value; 15.7 above,
its ImageNet value; or a positive number), ``stride`` (``"auto"``: every frequency up to 64 px, else
``ceil(side / 32)`` so the grid is at most 32 x 32, e.g. 7 at 224 px; or an integer: the grid holds the
multiples of the stride) and ``images`` (default 64: the first 64 of the run's seeded image order,
nested in the run's ``limit``; ``"all"`` for every evaluation image). The default keeps the 32 px grid
(514 distinct bases x 64 images, ~33k forward passes) to ~12 s per zoo model on one CPU core; all 540
digits images (~278k forward passes) take ~110 s.

The grid depends on the model's input size: :meth:`FourierHeatMap.cells_for` lists a model's cells.
The probes suite asks :meth:`Probe.skip_reason` for a model right before :meth:`Probe.cells`, so
:meth:`FourierHeatMap.cells` answers for the model last seen there (32 px before any).
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import torch

from robustvit.errors import UserError
from robustvit.probes.base import Probe, per_image_generators, predict
from robustvit.records import CellResult

if TYPE_CHECKING:
    from robustvit.context import SuiteContext
    from robustvit.models.wrapper import ModelWrapper

SMALL_SIDE = 64
"""Images up to this many pixels per side count as small (CIFAR-like): full grid, ``eps`` 4.0."""
MAX_GRID = 32
"""Largest number of grid frequencies per axis that ``stride = "auto"`` allows for large images."""
BANDS = ("low", "mid", "high")
_CELL = re.compile(r"^i=(-?\d+),j=(-?\d+)$")
Freq = tuple[int, int]


def auto_eps(side: int) -> float:
    """The paper's L2 size: 4.0 for CIFAR-10-sized images (<= 64 px), 15.7 for ImageNet-sized ones."""
    return 4.0 if side <= SMALL_SIDE else 15.7


def auto_stride(side: int) -> int:
    """1 (every frequency) up to 64 px, else ``ceil(side / 32)`` (at most 32 frequencies per axis)."""
    return 1 if side <= SMALL_SIDE else math.ceil(side / MAX_GRID)


def frequencies(n: int, stride: int = 1) -> list[int]:
    """The multiples of ``stride`` in the centred range ``-n//2 .. (n-1)//2`` (closed under mirroring)."""
    return [k for k in range(-(n // 2), (n - 1) // 2 + 1) if k % stride == 0]


def wrap(k: int, n: int) -> int:
    """``k`` modulo ``n`` in the centred range."""
    return (k + n // 2) % n - n // 2


def mirror(f: Freq, h: int, w: int) -> Freq:
    """The frequency ``(-i, -j)`` (wrapped) whose basis image equals that of ``f``."""
    return wrap(-f[0], h), wrap(-f[1], w)


def canonical(f: Freq, h: int, w: int) -> Freq:
    """The one of ``f`` and its mirror that is computed (the smaller tuple)."""
    return min(f, mirror(f, h, w))


def half_plane(h: int, w: int, stride: int = 1) -> list[Freq]:
    """Grid frequencies with ``j <= 0``: every basis image up to sign (``len = rows x (cols // 2 + 1)``)."""
    return [(i, j) for i in frequencies(h, stride) for j in frequencies(w, stride) if j <= 0]


def basis(freqs: list[Freq], h: int, w: int, device: torch.device | str = "cpu") -> torch.Tensor:
    """``(len(freqs), h, w)`` float32 Fourier basis images ``U_ij`` (cosines, unit L2 norm)."""
    m = torch.arange(h, dtype=torch.float64, device=device).view(1, h, 1)
    n = torch.arange(w, dtype=torch.float64, device=device).view(1, 1, w)
    fi = torch.tensor([f[0] for f in freqs], dtype=torch.float64, device=device).view(-1, 1, 1)
    fj = torch.tensor([f[1] for f in freqs], dtype=torch.float64, device=device).view(-1, 1, 1)
    phase = torch.remainder(fi * m / h + fj * n / w, 1.0)
    u = torch.cos(2 * math.pi * phase)
    return (u / u.flatten(1).norm(dim=1).view(-1, 1, 1)).float()


def band_of(f: Freq, max_radius: float) -> str:
    """``low`` (radius <= R/3), ``mid`` (<= 2R/3) or ``high`` for a frequency; R = the grid's largest radius."""
    r = math.hypot(*f)
    return "low" if r <= max_radius / 3 else "mid" if r <= 2 * max_radius / 3 else "high"


def heatmap(values: Mapping[str, float], h: int, w: int, stride: int = 1) -> torch.Tensor:
    """The full heat map (rows ``frequencies(h, stride)``, columns ``frequencies(w, stride)``) from the
    half-plane cells' values (``{"i=-16,j=0": 0.1, ...}``), each missing frequency read from its mirror."""
    rows, cols = frequencies(h, stride), frequencies(w, stride)
    known = {f: float(values[f"i={f[0]},j={f[1]}"]) for f in half_plane(h, w, stride) if f"i={f[0]},j={f[1]}" in values}
    out = torch.full((len(rows), len(cols)), math.nan, dtype=torch.float64)
    for r, i in enumerate(rows):
        for c, j in enumerate(cols):
            out[r, c] = known.get((i, j), known.get(mirror((i, j), h, w), math.nan))
    return out


def sample_batches(ctx: SuiteContext, n: int | None) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``(x, y, index)`` batches of the first ``n`` images of the run's seeded image order (all when None).

    The subset comes from the same seeded permutation as the run's ``limit``, so it is nested in it;
    ``index`` holds dataset positions (CPU, long).
    """
    from robustvit.context import subset_indices

    total = ctx.num_examples()
    k = total if n is None else min(n, total)
    positions = subset_indices(len(ctx.source()), k, ctx.seed)  # randperm(seed)[:k], sorted: nested in the limit
    start = 0
    for x, y in ctx.loader(limit=k):
        size = len(y)
        chunk = positions[start:start + size] if len(positions) >= start + size else list(range(start, start + size))
        start += size
        yield x, y, torch.tensor(chunk, dtype=torch.long)


def check_images(probe: str, value: Any) -> None:
    """``images`` must be ``"all"`` or a positive integer."""
    if value != "all" and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise UserError(f"probe {probe!r}: option 'images' must be \"all\" or an integer >= 1, got {value!r}")


class FourierHeatMap(Probe):
    """The Fourier heat map of Yin et al. (2019); see the module docstring for definitions and options."""

    name: ClassVar[str] = "fourier"
    options: ClassVar[dict[str, Any]] = {"eps": "auto", "stride": "auto", "images": 64}

    def __init__(self, **opts: Any) -> None:
        super().__init__(**opts)
        self._size: tuple[int, int] = (32, 32)

    def validate(self) -> None:
        eps, stride = self.opts["eps"], self.opts["stride"]
        if eps != "auto" and (isinstance(eps, bool) or not isinstance(eps, int | float) or not 0 < eps < math.inf):
            raise UserError(f"probe 'fourier': option 'eps' must be \"auto\" or a positive number, got {eps!r}")
        if stride != "auto" and (isinstance(stride, bool) or not isinstance(stride, int) or stride < 1):
            raise UserError(f"probe 'fourier': option 'stride' must be \"auto\" or an integer >= 1, got {stride!r}")
        check_images(self.name, self.opts["images"])

    # -- grid ---------------------------------------------------------------------------------------
    def eps_for(self, h: int, w: int) -> float:
        return auto_eps(max(h, w)) if self.opts["eps"] == "auto" else float(self.opts["eps"])

    def stride_for(self, h: int, w: int) -> int:
        return auto_stride(max(h, w)) if self.opts["stride"] == "auto" else int(self.opts["stride"])

    def cells_for_size(self, h: int, w: int) -> list[str]:
        """The cells of an ``h x w`` input: the half-plane frequencies, then ``bands``."""
        return [f"i={i},j={j}" for i, j in half_plane(h, w, self.stride_for(h, w))] + ["bands"]

    def cells_for(self, model: ModelWrapper) -> list[str]:
        """The cells for ``model`` (its input size sets the grid)."""
        return self.cells_for_size(*_size_of(model))

    def skip_reason(self, model: ModelWrapper) -> str | None:
        # The probes suite asks skip_reason(model) right before cells(): remember the model's input size
        # so that cells() lists that model's grid (32 px until a model has been seen).
        self._size = _size_of(model)
        return super().skip_reason(model)

    def cells(self) -> list[str]:
        return self.cells_for_size(*self._size)

    # -- run ----------------------------------------------------------------------------------------
    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        h, w = _size_of(ctx.model)
        stride = self.stride_for(h, w)
        grid = [(i, j) for i in frequencies(h, stride) for j in frequencies(w, stride)]
        wanted = [c for c in cells if c != "bands"]
        freqs = [_parse(c, set(grid)) for c in wanted]
        reps = sorted({canonical(f, h, w) for f in (grid if "bands" in cells else freqs)})
        t0 = time.perf_counter()
        wrong, index = self.errors(ctx, reps, h, w)
        share = (time.perf_counter() - t0) / max(1, len(wanted))  # an even split of the shared passes
        col = {f: k for k, f in enumerate(reps)}
        for cell, f in zip(wanted, freqs):
            yield _error_cell(cell, wrong[:, col[canonical(f, h, w)]], index, share)
        if "bands" in cells:
            yield _bands_cell(grid, wrong, col, index, h, w)

    def errors(self, ctx: SuiteContext, reps: list[Freq], h: int, w: int) -> tuple[torch.Tensor, torch.Tensor]:
        """``(wrong, index)``: per image and frequency of ``reps``, misclassified after the perturbation
        (bool, CPU, images x len(reps)); the images' dataset positions."""
        v = self.eps_for(h, w)
        rows = torch.tensor([f[0] % h for f in reps], dtype=torch.long)
        cols = torch.tensor([f[1] % w for f in reps], dtype=torch.long)
        # images per forward pass: the run's batch size, or more (up to 1024 images, 64 MiB) to fill it
        per_pass = max(ctx.batch_size, min(1024, (1 << 24) // (3 * h * w)))
        out, seen = [], []
        n = None if self.opts["images"] == "all" else int(self.opts["images"])
        for x, y, index in sample_batches(ctx, n):
            b = len(y)
            # one sign per (channel, frequency) per image, from a table over the full frequency grid
            # seeded by the image alone: the same draw for a frequency in any batch, stride or subset
            gens = per_image_generators(ctx, index, self.name, "signs", h, w)
            table = torch.stack([torch.rand(3, h, w, generator=g) for g in gens])
            signs = torch.where(table[:, :, rows, cols] < 0.5, -1.0, 1.0).to(x.device)  # (b, 3, F)
            step = max(1, per_pass // b)
            rows_out = []
            for s in range(0, len(reps), step):
                u = basis(reps[s:s + step], h, w, x.device)  # (f, h, w)
                delta = v * signs[:, :, s:s + step].permute(0, 2, 1)[..., None, None] * u[None, :, None]
                xp = (x[:, None].float() + delta).clamp_(0, 1).flatten(0, 1)
                pred = predict(ctx, xp).argmax(1).view(b, -1)
                rows_out.append((pred != y[:, None]).cpu())
            out.append(torch.cat(rows_out, 1))
            seen.append(index)
        if not out:
            raise UserError("probe 'fourier': the evaluation dataset yielded no images")
        return torch.cat(out), torch.cat(seen)


def _size_of(model: ModelWrapper) -> tuple[int, int]:
    size = model.data_config["input_size"]
    return int(size[-2]), int(size[-1])


def _parse(cell: str, grid: set[Freq]) -> Freq:
    match = _CELL.match(cell)
    f = (int(match.group(1)), int(match.group(2))) if match else None
    if f is None or f not in grid:
        raise UserError(f"probe 'fourier': cell {cell!r} is not a frequency of this model's grid")
    return f


def _error_cell(cell: str, wrong: torch.Tensor, index: torch.Tensor, seconds: float) -> CellResult:
    from robustvit.results.outcomes import Outcomes

    wrong = wrong.to(torch.bool)
    result = CellResult(cell, seconds=seconds).add("error", int(wrong.sum()) / len(wrong) if len(wrong) else float("nan"),
                                                  len(wrong), False)
    result.outcomes = Outcomes().add_pool("images", index.tolist()).add("error", wrong.numpy())
    return result


def _bands_cell(grid: list[Freq], wrong: torch.Tensor, col: dict[Freq, int], index: torch.Tensor,
                h: int, w: int) -> CellResult:
    """Band means over the full grid, each grid frequency read from its computed mirror representative."""
    from robustvit.results.outcomes import Outcomes

    max_radius = max(math.hypot(*f) for f in grid)
    weights = torch.zeros(len(BANDS) + 1, wrong.shape[1], dtype=torch.float64)
    for f in grid:
        k = col[canonical(f, h, w)]
        weights[BANDS.index(band_of(f, max_radius)), k] += 1
        weights[-1, k] += 1
    counts = weights.sum(1, keepdim=True)
    per_image = (wrong.double() @ (weights / counts.clamp_min(1)).T)  # (images, 4): mean error per band
    result = CellResult("bands", seconds=0.0)
    outcomes = Outcomes().add_pool("images", index.tolist())
    for k, metric in enumerate((*BANDS, "mean")):
        value = float(per_image[:, k].mean()) if counts[k] > 0 else math.nan
        result.add(metric, value, len(index), False)
        outcomes.add(metric, per_image[:, k].numpy())
    result.outcomes = outcomes
    return result
