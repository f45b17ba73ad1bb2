"""What the runner hands a suite: the wrapped model, data loaders, the shared forward pass, seeds.

:meth:`SuiteContext.features` runs one forward pass over a dataset and keeps its logits, penultimate
features and labels, in memory for the whole run and on disk (``$ROBUSTVIT_CACHE`` or
``~/.cache/robustvit/features``), keyed by model checkpoint hash and dataset fingerprint; every
suite that needs clean logits or features (clean, corruption baselines, OOD) shares it.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sys
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from robustvit.data import Source, TensorSource
from robustvit.data.catalog import open_source, spec_label
from robustvit.data.transforms import build_transform, fit_batch
from robustvit.errors import UserError
from robustvit.models.wrapper import ModelWrapper

CACHE_ENV = "ROBUSTVIT_CACHE"
SHARE_ENV = "ROBUSTVIT_SHARE_MB"
AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class FeatureSet:
    """Outputs of one forward pass over a dataset (CPU, float32)."""

    logits: torch.Tensor
    features: torch.Tensor
    labels: torch.Tensor


def derive_seed(*parts: object) -> int:
    """A 63-bit seed from any parts (stable across processes and machines)."""
    text = "|".join(str(p) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


def subset_indices(n: int, limit: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random subset of ``limit`` of them, in increasing order."""
    if limit is None or limit >= n:
        return list(range(n))
    gen = torch.Generator().manual_seed(derive_seed("subset", seed))
    return sorted(torch.randperm(n, generator=gen)[:limit].tolist())


def _collate(batch: list) -> tuple[torch.Tensor, torch.Tensor, int]:
    kept = [b for b in batch if b is not None]
    if not kept:
        return torch.empty(0), torch.empty(0, dtype=torch.long), len(batch)
    x = torch.stack([b[0] for b in kept])
    y = torch.tensor([b[1] for b in kept], dtype=torch.long)
    return x, y, len(batch) - len(kept)


class FeatureCache:
    """In-memory (per process) and on-disk cache of :class:`FeatureSet` s."""

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, disk: bool = True) -> None:
        self.folder = Path(folder or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "robustvit") / "features"
        self.disk = disk
        self._memory: dict[str, FeatureSet] = {}
        self.hits = 0
        self.misses = 0

    def get(self, key: str) -> FeatureSet | None:
        if key in self._memory:
            self.hits += 1
            return self._memory[key]
        path = self.folder / f"{key}.pt"
        if self.disk and path.is_file():
            try:
                data = torch.load(path, map_location="cpu", weights_only=True)
                fs = FeatureSet(data["logits"], data["features"], data["labels"])
            except (RuntimeError, KeyError, OSError, EOFError):
                return None  # a damaged cache file is recomputed
            self._memory[key] = fs
            self.hits += 1
            return fs
        self.misses += 1
        return None

    def put(self, key: str, fs: FeatureSet) -> None:
        self._memory[key] = fs
        if self.disk:
            self.folder.mkdir(parents=True, exist_ok=True)
            tmp = self.folder / f"{key}.tmp{os.getpid()}"
            torch.save({"logits": fs.logits, "features": fs.features, "labels": fs.labels}, tmp)
            tmp.replace(self.folder / f"{key}.pt")  # atomic: never a half-written cache file


class SharedInputs:
    """Model inputs made once per run and reused by the run's other models (on the CPU), in a budget.

    A corrupted batch depends on the clean batch, the corruption and its seed, not on the model. On
    the CPU, where corrupting a batch can cost as much as a small model's forward pass, the first
    model's batches are kept for the others, up to ``$ROBUSTVIT_SHARE_MB`` MiB (default 1024; 0 turns
    sharing off) and each is dropped once every other model has used it; beyond the budget batches
    are made again. A reused batch is checked against the clean batch's shape and checksum.
    """

    def __init__(self, budget_bytes: int = 0, users: int = 1) -> None:
        self.budget = budget_bytes if users > 1 else 0
        self.users = users
        self.used = 0
        self.hits = 0
        self._entries: dict[tuple, tuple[tuple, torch.Tensor, int]] = {}

    @classmethod
    def for_run(cls, models: int) -> SharedInputs:
        try:
            mib = float(os.environ.get(SHARE_ENV, "1024"))
        except ValueError:
            raise UserError(f"{SHARE_ENV} must be a number of MiB, got {os.environ[SHARE_ENV]!r}") from None
        return cls(int(mib * (1 << 20)), models)

    def get(self, key: tuple, clean: torch.Tensor, make: Callable[[], torch.Tensor]) -> torch.Tensor:
        """``make()``, or the tensor it gave for the same key and clean batch earlier in the run."""
        if self.budget <= 0 or clean.device.type != "cpu":
            return make()
        check = (tuple(clean.shape), float(clean.sum()))
        entry = self._entries.get(key)
        if entry is not None and entry[0] == check:
            self.hits += 1
            if entry[2] + 1 >= self.users - 1:  # every other model has had it
                del self._entries[key]
                self.used -= entry[1].numel() * entry[1].element_size()
            else:
                self._entries[key] = (check, entry[1], entry[2] + 1)
            return entry[1]
        out = make()
        size = out.numel() * out.element_size()
        if self.used + size <= self.budget:
            self._entries[key] = (check, out, 0)
            self.used += size
        return out


class SuiteContext:
    """Everything a suite may use; see :mod:`robustvit.suites.base` for the contract."""

    def __init__(
        self,
        *,
        model: ModelWrapper,
        suite: str,
        dataset: str | Mapping[str, Any],
        device: torch.device,
        batch_size: int = 128,
        seed: int = 0,
        limit: int | None = None,
        amp: str | None = None,
        workers: int = 0,
        store: Any = None,
        key: Mapping[str, Any] | None = None,
        feature_cache: FeatureCache | None = None,
        shared: SharedInputs | None = None,
        show_progress: bool = True,
        shard: tuple[int, int] | None = None,
    ) -> None:
        if amp is not None and amp not in AMP_DTYPES:
            raise UserError(f"unknown autocast dtype {amp!r} (allowed: {', '.join(AMP_DTYPES)})")
        self.device = device
        self.suite = suite
        self.dataset = dataset
        self.batch_size = batch_size
        self.seed = seed
        self.limit = limit
        #: positions ``[start, stop)`` of the evaluation subset this context covers (None: all of it); a
        #: sharded cell is computed piecewise on these ranges and merged by image index (see the runner)
        self.shard = shard
        self.amp = amp
        self.workers = workers
        self.store = store
        self.key = dict(key or {})
        self.feature_cache = feature_cache or FeatureCache(disk=False)
        self.shared = shared or SharedInputs()
        self.show_progress = show_progress
        self.skipped = 0
        self._sources: dict[tuple[str, str], Source] = {}
        source = self.source()
        self.model = model.with_valid_labels(source.valid_labels).to(device).eval()

    # -- data ------------------------------------------------------------------------------------
    def source(self, spec: str | Mapping[str, Any] | None = None, split: str = "test") -> Source:
        """The (cached) dataset source a spec names; ``None`` is the evaluation dataset."""
        spec = self.dataset if spec is None else spec
        cache_key = (spec_label(spec), split)
        if cache_key not in self._sources:
            self._sources[cache_key] = open_source(spec, split)
        return self._sources[cache_key]

    def loader(self, spec: str | Mapping[str, Any] | None = None, split: str = "test", *,
               limit: int | None | str = "default") -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Batches ``(x, y)`` on the device; x in [0,1] at the model's input size, y long.

        ``limit`` defaults to the context's limit for the evaluation dataset's ``test`` split and to
        no limit otherwise (other datasets, training splits); the subset is seeded by the run seed.
        """
        source = self.source(spec, split)
        indices = self._indices(spec, split, limit)
        cfg = self.model.data_config
        if isinstance(source, TensorSource):
            for i in range(0, len(indices), self.batch_size):
                idx = torch.tensor(indices[i:i + self.batch_size])
                x = source.images[idx].to(self.device, non_blocking=True)
                yield fit_batch(x, cfg), source.labels[idx].to(self.device)
            return
        source.transform = build_transform(cfg)
        loader = torch.utils.data.DataLoader(
            torch.utils.data.Subset(source, indices), batch_size=self.batch_size, shuffle=False,
            num_workers=self.workers, pin_memory=self.device.type == "cuda", collate_fn=_collate,
        )
        try:
            for x, y, skipped in loader:
                self.skipped += skipped
                if len(y):
                    yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except UserError:
            raise
        except Exception as exc:  # a UserError raised in a worker comes back re-wrapped
            text = str(exc)
            if "UserError:" in text:
                raise UserError(text.rsplit("UserError:", 1)[1].strip()) from None
            raise

    def image_index(self, n: int, spec: str | Mapping[str, Any] | None = None, split: str = "test") -> list[int]:
        """Dataset positions of the ``n`` images a pass over ``spec`` yielded (the pool index of outcomes);
        positions 0..n-1 when unreadable images were skipped (the same ones for every model)."""
        index = self._indices(spec, split)
        return index if len(index) == n else list(range(n))

    def num_examples(self, spec: str | Mapping[str, Any] | None = None, split: str = "test") -> int:
        return len(self._indices(spec, split))

    def indexed_loader(self) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
        """``(x, y, index)`` batches of the evaluation images; ``index``: their dataset positions (CPU long),
        what per-image seeds derive from (positions in pass order when unreadable images were skipped)."""
        positions = self._indices(None, "test")
        start = 0
        for x, y in self.loader():
            n = len(y)
            chunk = positions[start:start + n] if len(positions) >= start + n else list(range(start, start + n))
            start += n
            yield x, y, torch.tensor(chunk, dtype=torch.long)

    def _indices(self, spec: str | Mapping[str, Any] | None, split: str, limit: int | None | str = "default") -> list[int]:
        """Dataset positions a pass reads: the seeded subset (``limit``), cut to the shard for the evaluation
        images (the ``test`` split of the evaluation dataset under the run's limit)."""
        own = spec is None and split == "test"
        if limit == "default":
            limit = self.limit if own else None
        indices = subset_indices(len(self.source(spec, split)), limit, self.seed)  # type: ignore[arg-type]
        if self.shard is not None and own and limit == self.limit:
            indices = indices[self.shard[0]:self.shard[1]]
        return indices

    # -- the shared forward pass -------------------------------------------------------------------
    def features(self, spec: str | Mapping[str, Any] | None = None, split: str = "test", *,
                 limit: int | None | str = "default") -> FeatureSet:
        """Logits, penultimate features and labels of one (cached) forward pass over a dataset.

        ``limit`` as in :meth:`loader`: by default the run's limit for the evaluation dataset's
        ``test`` split, no limit otherwise.
        """
        source = self.source(spec, split)
        if limit == "default":
            limit = self.limit if spec is None and split == "test" else None
        valid = ",".join(map(str, self.model.valid_labels or []))
        shard = self.shard if spec is None and split == "test" and limit == self.limit else None
        key = derive_seed(self.model.sha, source.fingerprint, split, limit, self.seed if limit else "",
                          valid, self.amp, tuple(self.model.data_config["input_size"]), *(shard or ()))
        cache_key = f"{self.model.sha}-{source.fingerprint}-{key:016x}"
        cached = self.feature_cache.get(cache_key)
        if cached is not None:
            return cached
        logits, feats, labels = [], [], []
        total = len(self._indices(spec, split, limit))
        name = source.name or spec_label(spec or self.dataset)
        with torch.no_grad():
            for x, y in self.progress(self.loader(spec, split, limit=limit), f"forward {name}", total, unit_scale=self.batch_size):
                with self.autocast():
                    lg, ft = self.model.forward_features(x)
                logits.append(lg.float().cpu())
                feats.append(ft.float().cpu())
                labels.append(y.cpu())
        if not logits:
            raise UserError(f"dataset {name!r} yielded no images")
        fs = FeatureSet(torch.cat(logits), torch.cat(feats), torch.cat(labels))
        self.feature_cache.put(cache_key, fs)
        return fs

    # -- seeds, precision, progress, partial state -------------------------------------------------------
    def generator(self, *parts: object) -> torch.Generator:
        """A generator on the device seeded from (run seed, *parts); same parts, same numbers."""
        return torch.Generator(device=self.device).manual_seed(derive_seed(self.seed, *parts))

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast to the run's ``amp`` dtype, or nothing when ``amp`` is unset."""
        if self.amp is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp])

    def progress(self, iterable: Iterable, desc: str, total: int | None = None, unit_scale: int = 1) -> Iterable:
        """A tqdm progress bar on a terminal; the plain iterable otherwise."""
        if not (self.show_progress and sys.stderr.isatty()):
            return iterable
        from tqdm.auto import tqdm

        steps = None if total is None else -(-total // max(1, unit_scale))
        return tqdm(iterable, desc=desc, total=steps, leave=False, unit="batch")

    def partial_get(self, cell: str) -> bytes | None:
        """Saved partial state of a long cell, if an interrupted run left some."""
        return None if self.store is None else self.store.get_partial(self.key, cell)

    def partial_put(self, cell: str, state: bytes) -> None:
        """Save partial state of a long cell (deleted when the cell is written)."""
        if self.store is not None:
            self.store.put_partial(self.key, cell, state)
