"""Attack entries of a suite file: which attack, which epsilons, which options, and the cell names.

In a suite table, ``attacks`` is a list whose items are either a registered name (``"pgd-linf"``) or
a table::

    attacks = [
      "pgd-linf",
      { attack = "pgd-l2", eps = [0.25, 0.5], steps = 20 },
      { attack = "autoattack", version = "fast", eps = ["8/255"] },
      { attack = "pgd-linf", steps = 50, label = "pgd50-linf" },
    ]

``eps`` defaults to the suite's ``eps`` option, else to 4/255 (Linf) or 0.5 (L2). ``label`` renames
the cells (needed when the same attack appears twice). Every other key is an option of the attack.
Cells are ``<label>/eps=<eps>``, e.g. ``pgd-linf/eps=4/255``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robustvit.attacks.base import Attack, eps_list
from robustvit.errors import UserError

DEFAULT_EPS: dict[str, list[str | float]] = {"linf": ["4/255"], "l2": [0.5]}
_LABEL_OK = set("abcdefghijklmnopqrstuvwxyz0123456789-_.")


@dataclass
class AttackSpec:
    """One attack entry of a suite: the adapter, its epsilons and cell names."""

    attack: Attack
    label: str
    eps: list[tuple[float, str]]  # (value, canonical text)

    def cell(self, eps_label: str) -> str:
        return f"{self.label}/eps={eps_label}"

    @property
    def cells(self) -> list[str]:
        return [self.cell(text) for _, text in self.eps]

    def config(self) -> dict[str, Any]:
        return {**self.attack.describe(), "eps": [text for _, text in self.eps]}


def parse_specs(items: Any, default_eps: Any = None) -> list[AttackSpec]:
    """Parse a suite's ``attacks`` option; every name and option is checked before any work."""
    from robustvit.registries import ATTACKS

    if isinstance(items, str | Mapping):
        items = [items]
    if not isinstance(items, list | tuple) or not items:
        raise UserError("option 'attacks' must be a non-empty list of attack names or tables")
    specs: list[AttackSpec] = []
    seen: dict[str, str] = {}
    for item in items:
        if isinstance(item, str):
            entry: dict[str, Any] = {"attack": item}
        elif isinstance(item, Mapping):
            entry = dict(item)
        else:
            raise UserError(f"bad attacks entry {item!r} (allowed: a name like 'pgd-linf' or a table with 'attack')")
        name = entry.pop("attack", None)
        if not isinstance(name, str):
            raise UserError(f"attacks entry {item!r} has no 'attack' name (e.g. attack = 'pgd-linf')")
        cls = ATTACKS.get(name)
        eps_value = entry.pop("eps", None)
        label = entry.pop("label", None)
        attack = cls(**entry)
        if eps_value is None:
            eps_value = default_eps if default_eps is not None else DEFAULT_EPS[attack.norm]
        label = attack.label if label is None else str(label)
        if not label or not set(label) <= _LABEL_OK:
            raise UserError(f"bad attack label {label!r} (allowed: lowercase letters, digits, '-', '_', '.')")
        spec = AttackSpec(attack, label, eps_list(eps_value))
        for cell in spec.cells:
            if cell in seen:
                raise UserError(f"attack cell {cell!r} appears twice (give one of the entries a different 'label')")
            seen[cell] = label
        specs.append(spec)
    return specs
