"""The one dataset-spec parser: is a spec a registered dataset or an image folder, and with which options.

A spec is a string or a table (``{path = "...", classes = "imagenet_1k"}`` / ``{name = "digits"}``):

* ``folder:<path>`` is always a folder; so is a string that looks like a path (it contains ``/``
  or starts with ``.`` or ``~``);
* otherwise a registered dataset name (``digits``, ``digits:train`` picks a split) wins;
* otherwise an existing folder of that name in the working directory (``imgs``);
* otherwise it is an unknown dataset: a did-you-mean error that also says no such folder exists.

Config validation, :func:`robustvit.data.catalog.open_source`, the OOD suite and ``--skip-corrupt``
all ask this module, so they cannot disagree.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustvit.errors import UserError


@dataclass(frozen=True)
class DatasetSpec:
    """A parsed spec: a folder (``path``) or a registered dataset (``name`` and optional ``split``)."""

    path: Path | None = None
    name: str | None = None
    split: str | None = None
    options: dict[str, Any] = field(default_factory=dict)

    @property
    def is_folder(self) -> bool:
        return self.path is not None


def _looks_like_path(text: str) -> bool:
    return text.startswith(("folder:", ".", "~", "/")) or "/" in text or os.sep in text


def parse(spec: str | Mapping[str, Any], *, unlabelled: bool = False) -> DatasetSpec:
    """Parse a spec (see the module docstring); raises :class:`UserError` for an unknown name.

    Args:
        spec: The spec as typed.
        unlabelled: Folders are read as unlabelled data (any structure; OOD sets) unless the table says otherwise.
    """
    from robustvit.registries import DATASETS

    options: dict[str, Any] = {}
    if isinstance(spec, Mapping):
        options = dict(spec)
        if "path" in options:
            path = options.pop("path")
            options.pop("name", None)  # with a path, a name only labels the set (OOD suites)
            if not isinstance(path, str) or not path:
                raise UserError(f"dataset {dict(spec)!r}: 'path' must be a folder path")
            if unlabelled:
                options.setdefault("unlabelled", True)
            return DatasetSpec(path=Path(os.path.expanduser(path.removeprefix("folder:"))), options=options)
        target = options.pop("name", None)
        if not isinstance(target, str) or not target:
            raise UserError(f"dataset {dict(spec)!r} names neither 'path' nor 'name'")
        text = target
    elif isinstance(spec, str) and spec:
        text = spec
    else:
        raise UserError(f"a dataset must be a name, a folder path or a table, got {spec!r}")
    if _looks_like_path(text):
        folder_options = {"unlabelled": True, **options} if unlabelled else options
        return DatasetSpec(path=Path(os.path.expanduser(text.removeprefix("folder:"))), options=folder_options)
    name, _, split = text.partition(":")
    if name in DATASETS:
        return DatasetSpec(name=DATASETS.canonical(name), split=split or None, options=options)
    if Path(text).is_dir():
        folder_options = {"unlabelled": True, **options} if unlabelled else options
        return DatasetSpec(path=Path(text), options=folder_options)
    try:
        DATASETS.canonical(name)
    except UserError as exc:
        raise UserError(f"{exc}; no folder {text!r} exists either") from None
    return DatasetSpec(name=name, split=split or None, options=options)  # pragma: no cover


def is_folder(spec: str | Mapping[str, Any]) -> bool:
    """Whether a spec names an image folder (an unknown name is a :class:`UserError`)."""
    return parse(spec).is_folder
