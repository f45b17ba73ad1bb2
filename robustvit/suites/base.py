"""What every suite is: a planner of cells and a producer of :class:`CellResult` s.

A suite never prints and never writes files: it yields results, the runner stores them.

Contract:
    * ``Suite(**options)`` validates its options (unknown key or bad value -> :class:`UserError`).
    * :meth:`Suite.cells` lists the cells the options ask for (stable names, e.g. ``"gaussian_noise/3"``).
    * :meth:`Suite.run` computes the requested cells (those not already stored) and yields one
      :class:`CellResult` per finished cell, in any order.
    * :meth:`Suite.run` attaches to each result the per-image outcomes its metrics come from
      (:class:`robustvit.results.outcomes.Outcomes`: predictions, scores, robust or not).
    * :meth:`Suite.aggregate` turns the stored per-cell records and outcomes of this model/config
      into suite-level results (``cell=""`` by convention, e.g. ``mce``); it is called after every
      run and must be a pure function of what it is passed (the records, the outcomes by cell and
      the records of the models :meth:`Suite.needs_models` names), so cached and fresh cells
      aggregate alike and no suite reads the store.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

from robustvit.errors import UserError
from robustvit.records import CellResult

if TYPE_CHECKING:
    import pandas as pd

    from robustvit.context import SuiteContext
    from robustvit.results.outcomes import Outcomes


class Suite:
    """Base class of suites. Subclasses set ``kind``, ``version`` and ``options`` (name -> default)."""

    kind: ClassVar[str] = "?"
    version: ClassVar[str] = "1"
    #: allowed option names and their defaults
    options: ClassVar[Mapping[str, Any]] = {}
    #: options every protocol label of this suite names (e.g. the corruption preset and mCE baseline)
    label_options: ClassVar[tuple[str, ...]] = ()

    def __init__(self, name: str | None = None, **opts: Any) -> None:
        self.name = name or self.kind
        unknown = sorted(set(opts) - set(self.options))
        if unknown:
            allowed = ", ".join(sorted(self.options)) or "none"
            raise UserError(f"suite {self.name!r}: unknown option {unknown[0]!r} (allowed: {allowed})")
        self.opts: dict[str, Any] = {**self.options, **opts}
        self.validate()

    def validate(self) -> None:
        """Check ``self.opts``; raise :class:`UserError` naming the bad option and what is allowed."""

    def cells(self) -> list[str]:
        raise NotImplementedError

    def run(self, ctx: SuiteContext, cells: list[str]) -> Iterator[CellResult]:
        raise NotImplementedError

    def aggregate(self, records: pd.DataFrame, outcomes: Mapping[str, Outcomes] | None = None,
                  baseline: Mapping[str, pd.DataFrame | None] | None = None) -> list[CellResult]:
        """Suite-level results from the stored per-cell records and outcomes; none by default.

        Args:
            records: This model's stored records of the suite (one config).
            outcomes: Cell -> its per-image outcomes (``.get(cell)`` is None for a cell without them).
            baseline: Model name -> its stored records of this suite (for :meth:`needs_models`), or None.
        """
        return []

    def config(self) -> dict[str, Any]:
        """The options that define the numbers (part of the cache key)."""
        return dict(self.opts)

    def cells_for(self, model: Any) -> list[str]:
        """The cells to compute for ``model`` (default: all of :meth:`cells`); a suite can leave out
        what does not apply to a model (ViT-only probes on a CNN) and say why in :meth:`notes_for`."""
        return self.cells()

    def notes_for(self, model: Any) -> list[str]:
        """Why cells were left out for ``model`` (shown to the user); none by default."""
        return []

    def bind(self, source: Any) -> None:
        """Resolve data-dependent defaults from the evaluation dataset's source (called before any work)."""

    def datasets(self, data: Any) -> list[tuple[Any, str]]:
        """Other ``(dataset spec, split)`` pairs the suite reads besides the evaluation data (OOD sets,
        a fitting split); the runner opens them all before any work. None by default."""
        return []

    # -- image sharding (see the runner's executors) -------------------------------------------------
    def shardable(self, cell: str) -> bool:
        """Whether ``cell`` can be computed piecewise on image shards (contexts with ``ctx.shard`` set) and
        merged by :meth:`merge`: its metrics are a function of per-image outcomes and every random draw is
        per image (or per :meth:`shard_unit` block). None by default."""
        return False

    def shard_unit(self) -> int:
        """Shard boundaries fall on multiples of this many images (a block of images drawn together)."""
        return 1

    def finish(self, cell: str, outcomes: Outcomes) -> CellResult:
        """The cell's result from all its per-image outcomes (what :meth:`merge` computes once)."""
        raise NotImplementedError(f"suite {self.kind!r} cannot merge shards")

    def merge(self, cell: str, parts: list[CellResult]) -> CellResult:
        """One result from the results of consecutive image shards (in order): outcomes joined by image
        index, metrics computed once from them by :meth:`finish` (an AUROC or a mean of the whole set,
        never an average over shards)."""
        from robustvit.results.outcomes import concat

        missing = [i for i, p in enumerate(parts) if p.outcomes is None]
        if missing:
            raise ValueError(f"cell {cell!r}: shard {missing[0]} returned no outcomes")
        result = self.finish(cell, concat([p.outcomes for p in parts]))  # type: ignore[misc]
        seconds = [p.seconds for p in parts if p.seconds is not None]
        result.seconds = sum(seconds) if seconds else None
        return result

    def needs_models(self) -> list[str]:
        """Models (by name) whose stored results :meth:`aggregate` reads; the runner evaluates the
        ones in the same run first. None by default."""
        return []
