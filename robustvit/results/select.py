"""Which records count: metric paths, the one "latest" rule, protocol labels, the one headline list.

Pure functions of a records DataFrame (the schema of :mod:`robustvit.records`); no torch.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pandas as pd

FAMILIES: tuple[str, ...] = ("vit", "cnn", "hybrid")
SUITE_ORDER: tuple[str, ...] = ("clean", "corruption", "adversarial", "ood", "probes")
FLAG_PREFIX = "flag_"

#: The one list of headline metrics: suite kind -> (cell regex, metrics). Suites of other kinds
#: headline their aggregates (cell ""), or else the primary metrics of their shallowest level.
HEADLINES: dict[str, tuple[str, tuple[str, ...]]] = {
    "clean": (r"^$", ("top1", "top5", "nll", "ece")),
    "corruption": (r"^$", ("mce", "relative_mce", "mean_error")),
    "adversarial": (r"^(?!checks$).+$", ("robust_acc",)),
    "ood": (r"^(near|far|sanity)$", ("auroc", "fpr95")),
    "probes": (r"^(patch_drop/random/f=0\.5|patch_shuffle/g=model|cutout/f=0\.5|fourier/bands|spectrum/energy)$",
               ("top1", "high", "high_share")),
    "stability": (r"^$", ("mfr", "mt5d", "mean_fp", "mean_t5d")),
    "shape_bias": (r"^$", ("shape_bias",)),
    "backgrounds": (r"^(|original|mixed_rand)$", ("bg_gap", "top1")),
}
#: metrics that headline a suite of an unknown kind
PRIMARY_METRICS: tuple[str, ...] = ("top1", "mce", "relative_mce", "mean_error", "robust_acc", "auroc", "fpr95",
                                    "error", "accuracy", "acc")

_SEPARATOR = re.compile(r"(?<!\d)/|/(?!\d)")


def depth(cell: str) -> int:
    """Number of segments of a cell; a slash between digits is part of a number (``eps=4/255``)."""
    return 0 if not cell else len(_SEPARATOR.findall(cell)) + 1


def with_paths(records: pd.DataFrame) -> pd.DataFrame:
    """A copy with ``path`` (``suite/cell/metric``, an empty cell left out) and ``order`` (input row position)."""
    from robustvit.errors import UserError

    df = records.copy()
    missing = [c for c in ("suite", "cell", "metric") if c not in df.columns]
    if missing:
        raise UserError(f"records lack the column(s) {', '.join(missing)} (expected the robustvit record schema)")
    cell = df["cell"].fillna("").astype(str)
    df["path"] = df["suite"].astype(str) + "/" + cell + cell.map(lambda c: "/" if c else "") + df["metric"].astype(str)
    df["order"] = range(len(df))
    if "protocol" not in df.columns:
        df["protocol"] = "legacy-" + df.get("kind", df["suite"]).astype(str) + "-" + df.get("config_key", "").astype(str)
    for column in ("ci_low", "ci_high"):
        if column not in df.columns:
            df[column] = float("nan")
    return df


def latest(records: pd.DataFrame, *, all_runs: bool = False) -> pd.DataFrame:
    """The current value of every (model, protocol, metric path): the one "latest" rule.

    A model's current checkpoint is the ``model_sha`` of its newest record; among that checkpoint's
    records the newest row of each (protocol, path) wins, so a model evaluated under two protocols
    keeps both (they are compared within their protocol only). A run that found its cells cached
    writes no rows, so "latest" is decided per metric, not per run. With ``all_runs`` every run keeps
    its own rows (newest per protocol and path within the run).
    """
    df = with_paths(records)
    if df.empty:
        return df
    df = df.sort_values(["created_at", "order"], kind="stable")
    if all_runs:
        return df.drop_duplicates(["model", "run_id", "protocol", "path"], keep="last").sort_values("order")
    current_sha = df.groupby("model")["model_sha"].last()
    df = df[df["model_sha"] == df["model"].map(current_sha)]
    return df.drop_duplicates(["model", "protocol", "path"], keep="last").sort_values("order")


def is_flag(metric: str) -> bool:
    return str(metric).startswith(FLAG_PREFIX)


def headline_paths(suite_rows: pd.DataFrame) -> list[str]:
    """The headline metric paths of one suite's selected rows (all of them: no cap)."""
    rows = suite_rows[~suite_rows["metric"].map(is_flag)]
    if rows.empty:
        return []
    kind = str(rows["kind"].iloc[0]) if "kind" in rows else ""
    if kind in HEADLINES:
        pattern, metrics = HEADLINES[kind]
        keep = rows["cell"].fillna("").map(lambda c: re.match(pattern, c) is not None) & rows["metric"].isin(metrics)
        order = {m: i for i, m in enumerate(metrics)}
        picked = rows[keep]
        if not picked.empty:  # else (no aggregate cells stored, say): the generic rule below
            cell_of = dict(zip(picked["path"], picked["cell"].fillna(""), strict=True))
            return sorted(dict.fromkeys(picked["path"]),
                          key=lambda p: (depth(cell_of[p]), order.get(p.rsplit("/", 1)[1], 0)))
    depth_of = dict(zip(rows["path"], rows["cell"].fillna("").map(depth), strict=True))
    metric_of = dict(zip(rows["path"], rows["metric"], strict=True))
    paths = list(dict.fromkeys(rows["path"]))
    for level in sorted(set(depth_of.values())):
        primary = [p for p in paths if depth_of[p] == level and metric_of[p] in PRIMARY_METRICS]
        if primary:
            return primary
    return [p for p in paths if depth_of[p] == min(depth_of.values())][:1]


def suite_order(selected: pd.DataFrame) -> list[str]:
    """Suites present, known kinds in a fixed order first, then the others in first-seen order."""
    kinds = dict(zip(selected["suite"], selected.get("kind", selected["suite"]), strict=True))
    present = list(dict.fromkeys(selected["suite"]))
    rank = {k: i for i, k in enumerate(SUITE_ORDER)}
    return sorted(present, key=lambda s: (rank.get(kinds.get(s, s), len(rank)), present.index(s)))


def model_order(selected: pd.DataFrame) -> dict[str, str]:
    """Model -> family, ViTs first, then CNNs, hybrids and anything else (first-seen order within)."""
    fam = dict(zip(selected["model"], selected["family"], strict=True))
    rank = {f: i for i, f in enumerate(FAMILIES)}
    names = list(fam)
    return {m: fam[m] for m in sorted(names, key=lambda m: (rank.get(fam[m], len(rank)), names.index(m)))}


def protocol_labels(selected: pd.DataFrame, specs: Mapping[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
    """Protocol id -> a readable label: suite, dataset, image subset, and the options that set it apart.

    Options are shown only where two protocols of the same suite differ in them (``preset=cifar10_c``);
    protocols of older stores (no description) are labelled ``legacy``.
    """
    specs = dict(specs or {})
    rows = selected.drop_duplicates("protocol")
    by_suite: dict[str, list[str]] = {}
    for suite, protocol in zip(rows["suite"], rows["protocol"], strict=True):
        by_suite.setdefault(str(suite), []).append(str(protocol))
    labels: dict[str, str] = {}
    for suite, protocols in by_suite.items():
        options = [_flat(specs.get(p, {}).get("options", {})) for p in protocols]
        differ = {k for o in options for k in o if len({json.dumps(x.get(k), default=str) for x in options}) > 1}
        for p, opts in zip(protocols, options, strict=True):
            spec = specs.get(p)
            if spec is None:
                labels[p] = f"{suite} · legacy {p.rsplit('-', 1)[-1][:8]}"
                continue
            subset = "all images" if spec.get("limit") is None else f"limit {spec['limit']}, seed {spec.get('seed')}"
            named = list(dict.fromkeys([*spec.get("shown", []), *sorted(differ)]))
            extra = ", ".join(f"{k}={_short(opts.get(k))}" for k in named)
            labels[p] = f"{suite} · {spec.get('dataset')} · {subset}" + (f" · {extra}" if extra else "")
        if len(set(labels[p] for p in protocols)) < len(protocols):  # still ambiguous: add the ids
            for p in protocols:
                labels[p] += f" · {p.rsplit('-', 1)[-1][:6]}"
    return labels


def _flat(options: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in options.items():
        if isinstance(v, Mapping):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _short(value: Any, width: int = 24) -> str:
    text = value if isinstance(value, str) else json.dumps(value, default=str)
    return text if len(text) <= width else text[: width - 1] + "…"
