"""A small generic plugin registry.

One :class:`Registry` instance exists per kind of plugin (models, datasets, suites, corruptions,
attacks, detectors, metrics); see :mod:`robustvit.registries`. Entries are either objects
registered with the :meth:`Registry.register` decorator or lazy ``"module:attr"`` strings that are
imported only when first looked up, so importing robustvit fills no global table as a side effect.

Third-party packages add entries through the entry-point group ``robustvit.<kind>`` (for example
``robustvit.models``); each entry point's value is a ``module:attr`` string and is imported lazily.
Set ``ROBUSTVIT_NO_PLUGINS=1`` to turn entry-point autoload off (hermetic CI).
"""

from __future__ import annotations

import difflib
import fnmatch
import importlib
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from robustvit.errors import UserError

T = TypeVar("T")

PLUGINS_ENV = "ROBUSTVIT_NO_PLUGINS"
#: optional dependencies -> the robustvit extra that installs them (for "No module named" errors)
EXTRAS = {"torchattacks": "attacks", "foolbox": "attacks", "skimage": "ood", "jinja2": "report",
          "matplotlib": "report", "markupsafe": "report"}


class RegistryError(UserError):
    """Unknown name or a name clash."""


@dataclass
class _Entry:
    name: str
    target: object  # the object, or a "module:attr" string while not yet loaded
    origin: str
    aliases: tuple[str, ...] = ()

    def load(self) -> object:
        if isinstance(self.target, str) and ":" in self.target:
            module, _, attr = self.target.partition(":")
            try:
                obj: object = importlib.import_module(module)
                for part in attr.split("."):
                    obj = getattr(obj, part)
            except (ImportError, AttributeError) as exc:
                missing = getattr(exc, "name", None)
                extra = EXTRAS.get((missing or "").split(".")[0])
                hint = f"; install it with: pip install 'robustvit[{extra}]'" if extra else ""
                if missing == "torchattacks":
                    hint = "; install it with: pip install 'robustvit[attacks]' && pip install --no-deps torchattacks==3.5.1"
                raise RegistryError(f"cannot load {self.name!r} from {self.target!r} ({self.origin}): {exc}{hint}") from exc
            self.target = obj
        return self.target


def _import_origin(fn: object) -> str:
    module = getattr(fn, "__module__", None) or "?"
    qual = getattr(fn, "__qualname__", None) or type(fn).__name__
    return f"{module}:{qual}"


class Registry(Generic[T]):
    """A named table of plugins with aliases, lazy entries, entry points and did-you-mean errors.

    Args:
        kind: Plural name of what is registered (``"models"``); also names the entry-point group
            ``robustvit.<kind>``.
        builtins: Optional mapping of name -> ``"module:attr"`` (or name -> (target, aliases)) of
            built-in lazy entries.
        tables: ``"module:attr"`` paths of further such mappings, imported on first look-up (so a
            subpackage owns its own table of built-ins and importing robustvit imports none).
        entry_points: Whether to read the ``robustvit.<kind>`` entry-point group (on first use).
    """

    def __init__(
        self,
        kind: str,
        builtins: Mapping[str, str | tuple[str, Iterable[str]]] | None = None,
        *,
        tables: Iterable[str] = (),
        entry_points: bool = True,
    ) -> None:
        self.kind = kind
        self._entries: dict[str, _Entry] = {}
        self._aliases: dict[str, str] = {}
        self._tables = list(tables)
        self._entry_points_loaded = not entry_points
        self._add_table(builtins or {}, "robustvit (built-in)")

    def _add_table(self, table: Mapping[str, str | tuple[str, Iterable[str]]], origin: str) -> None:
        for name, spec in table.items():
            target, aliases = (spec, ()) if isinstance(spec, str) else spec
            self._add(name, target, origin, tuple(aliases))

    # -- registration ---------------------------------------------------------------------
    def _add(self, name: str, target: object, origin: str, aliases: tuple[str, ...]) -> None:
        for key in (name, *aliases):
            clash = self._entries.get(key) or self._entries.get(self._aliases.get(key, ""))
            if clash is not None:
                raise RegistryError(
                    f"{self.kind}: name {key!r} from {origin} clashes with {clash.name!r} "
                    f"registered by {clash.origin}"
                )
        self._entries[name] = _Entry(name, target, origin, aliases)
        for alias in aliases:
            self._aliases[alias] = name

    def register(self, name: str, *aliases: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` (or, used as a decorator, the decorated object) under name and aliases.

        ``obj`` may be a lazy ``"module:attr"`` string.
        """
        if obj is not None:
            origin = obj if isinstance(obj, str) else _import_origin(obj)
            self._add(name, obj, origin, aliases)
            return None

        def decorator(fn: T) -> T:
            self._add(name, fn, _import_origin(fn), aliases)
            return fn

        return decorator

    def _load_entry_points(self) -> None:
        while self._tables:
            path = self._tables.pop(0)
            table = _Entry(path, path, "robustvit (built-in)").load()
            self._add_table(table, f"robustvit (built-in, {path})")  # type: ignore[arg-type]
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        if os.environ.get(PLUGINS_ENV, "").strip() not in ("", "0"):
            return
        from importlib.metadata import entry_points

        for ep in entry_points(group=f"robustvit.{self.kind}"):
            dist = getattr(ep, "dist", None)
            origin = f"entry point {ep.name} = {ep.value}" + (f" ({dist.name})" if dist else "")
            self._add(ep.name, ep.value, origin, ())

    # -- look-up -------------------------------------------------------------------------------
    def canonical(self, name: str) -> str:
        """The registered name for ``name`` or one of its aliases; did-you-mean error otherwise."""
        self._load_entry_points()
        if name in self._entries:
            return name
        if name in self._aliases:
            return self._aliases[name]
        choices = sorted([*self._entries, *self._aliases])
        close = difflib.get_close_matches(name, choices, n=3, cutoff=0.6)
        hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        shown = ", ".join(sorted(self._entries)[:30]) + (" ..." if len(self._entries) > 30 else "")
        raise RegistryError(f"unknown {self.kind[:-1] if self.kind.endswith('s') else self.kind} {name!r}{hint} (known: {shown})")

    def get(self, name: str) -> T:
        """The registered object, importing a lazy entry on first use."""
        return self._entries[self.canonical(name)].load()  # type: ignore[return-value]

    def __contains__(self, name: object) -> bool:
        self._load_entry_points()
        return isinstance(name, str) and (name in self._entries or name in self._aliases)

    def names(self, pattern: str | None = None) -> list[str]:
        """Sorted registered names, optionally filtered by an fnmatch pattern (``vit_*``)."""
        self._load_entry_points()
        names = sorted(self._entries)
        if pattern:
            names = [n for n in names if fnmatch.fnmatchcase(n, pattern)]
        return names

    def describe(self, name: str) -> tuple[str, tuple[str, ...]]:
        """(origin, aliases) of a registered name, without importing it."""
        entry = self._entries[self.canonical(name)]
        return entry.origin, entry.aliases

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}, {len(self._entries)} entries)"
