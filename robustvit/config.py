"""Suite files (TOML) and CLI flags -> a validated :class:`RunConfig`.

Everything is checked before any work starts: unknown keys, wrong types, unknown model / dataset
/ suite names, missing checkpoint files and bad suite options all end in one line naming the
file, the key and what is allowed.

Suite file layout::

    [run]                     # all optional
    data = "digits"           # evaluation dataset spec (name, folder path, or a table)
    seed = 0
    batch_size = 128
    device = "auto"           # auto | cpu | cuda
    limit = 500               # evaluate a seeded subset of this many images
    amp = "bf16"              # autocast for inference: bf16 | fp16
    workers = 0               # DataLoader workers for image folders
    executor = "local"        # local (this process) | ray (a Ray cluster; pip install robustvit[ray])
    ray_address = "auto"      # ray only: a running cluster (auto, host:port, ray://...); unset: start one here
    ray_workers = 8           # ray only: worker processes (default: one per GPU, else one per CPU of the cluster)
    shard_images = 4096       # ray only: images per shard of a cell that can be split (see README "Scaling out")

    [[models]]
    spec = "timm:vit_base_patch16_224"   # or zoo_vit, torchvision:..., torchscript:..., python:m:f
    checkpoint = "weights.safetensors"   # optional; name, family, pretrained, unsafe_pickle,
                                         # num_classes, preprocess = {...}, kwargs = {...}

    [suites.clean]            # table name = suite name unless `suite = "..."` says otherwise
    [suites.pgd]
    suite = "adversarial"
    limit = 256               # data, limit, batch_size override [run]; the rest are suite options

    [report]                  # optional: write the ViT-vs-CNN report of these results after the run
    out = "reports/quickstart"
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from robustvit._compat import tomllib
from robustvit.errors import UserError
from robustvit.suites.base import Suite

RUN_KEYS = {"data": (str, dict), "seed": int, "batch_size": int, "device": str, "limit": int, "amp": str,
            "workers": int, "executor": str, "ray_address": str, "ray_workers": int, "shard_images": int}
EXECUTORS = ("local", "ray")
MODEL_KEYS = {"spec": str, "name": str, "checkpoint": str, "family": str, "pretrained": bool, "unsafe_pickle": bool,
              "num_classes": int, "preprocess": dict, "kwargs": dict}
REPORT_KEYS = {"out": str, "title": str}
SUITE_RESERVED = {"suite": str, "data": (str, dict), "limit": int, "batch_size": int}
DEVICES = ("auto", "cpu", "cuda")


@dataclass
class ModelConfig:
    spec: str
    name: str | None = None
    checkpoint: str | None = None
    family: str | None = None
    pretrained: bool | None = None
    unsafe_pickle: bool = False
    num_classes: int | None = None
    preprocess: dict[str, Any] = field(default_factory=dict)
    kwargs: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.name or self.spec


@dataclass
class SuiteConfig:
    name: str
    suite: Suite
    data: str | dict | None = None
    limit: int | None = None
    batch_size: int | None = None


@dataclass
class RunConfig:
    models: list[ModelConfig]
    suites: list[SuiteConfig]
    data: str | dict = "digits"
    seed: int = 0
    batch_size: int = 128
    device: str = "auto"
    limit: int | None = None
    amp: str | None = None
    workers: int = 0
    executor: str = "local"
    ray_address: str | None = None
    ray_workers: int | None = None
    shard_images: int = 4096
    source: str = "command line"
    report: dict[str, Any] | None = None  # [report] out = "reports/x": write the report after the run

    def as_dict(self) -> dict[str, Any]:
        """The config for the run manifest."""
        return {
            "source": self.source, "data": self.data, "seed": self.seed, "batch_size": self.batch_size,
            "device": self.device, "limit": self.limit, "amp": self.amp,
            "models": [vars(m) for m in self.models],
            "suites": [{"name": s.name, "suite": s.suite.kind, "options": s.suite.config(), "data": s.data,
                        "limit": s.limit, "batch_size": s.batch_size} for s in self.suites],
        }


def _check_types(where: str, table: dict[str, Any], allowed: dict[str, Any]) -> None:
    for key, value in table.items():
        if key not in allowed:
            raise UserError(f"{where}: unknown key {key!r} (allowed: {', '.join(sorted(allowed))})")
        types = allowed[key] if isinstance(allowed[key], tuple) else (allowed[key],)
        if isinstance(value, bool) and bool not in types or not isinstance(value, types):
            names = " or ".join("table" if t is dict else t.__name__ for t in types)
            raise UserError(f"{where}: key {key!r} must be {names}, got {value!r}")


def check_model(m: ModelConfig, where: str) -> None:
    """Names and paths of a model config exist (without building the model)."""
    try:
        _check_model(m)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None


def _check_model(m: ModelConfig) -> None:
    from robustvit.models import NATIVE, SPEC_KINDS, check_native
    from robustvit.models.checkpoint import checkpoint_format
    from robustvit.models.wrapper import check_family
    from robustvit.registries import MODELS

    kind, sep, rest = m.spec.partition(":")
    if not sep:
        MODELS.canonical(m.spec)
    elif kind == "timm":
        import timm

        if not timm.is_model(rest):
            raise UserError(f"unknown timm architecture {rest!r} (see timm.list_models())")
    elif kind in NATIVE:
        check_native(kind, rest)
    elif kind in ("torchscript", "export") and not Path(rest).is_file():
        raise UserError(f"{'TorchScript' if kind == 'torchscript' else 'torch.export'} archive {rest!r} does not exist")
    elif kind not in SPEC_KINDS:
        allowed = ", ".join(f"{k}:" for k in SPEC_KINDS)
        raise UserError(f"unknown model spec kind {kind!r} (allowed: {allowed}, or a zoo name)")
    if m.checkpoint is not None:
        if not Path(m.checkpoint).exists():
            raise UserError(f"checkpoint {m.checkpoint!r} does not exist")
        checkpoint_format(m.checkpoint)  # a text file, a directory, a truncated archive: one line, before any work
    if m.family is not None:
        check_family(m.family)


def check_data(spec: str | dict, where: str) -> None:
    """A dataset spec names a registered dataset or an existing folder (see :mod:`robustvit.data.spec`)."""
    from robustvit.data.spec import parse

    try:
        parsed = parse(spec)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if parsed.path is not None and not parsed.path.is_dir():
        raise UserError(f"{where}: dataset folder {str(parsed.path)!r} does not exist")


def is_folder_spec(spec: str | dict) -> bool:
    """Whether a dataset spec names an image folder (rather than a registered dataset)."""
    from robustvit.data.spec import is_folder

    return is_folder(spec)


def skip_corrupt_images(cfg: RunConfig) -> RunConfig:
    """Make every image-folder dataset of ``cfg`` skip (and count) unreadable images."""
    def mark(spec):
        if spec is None or not is_folder_spec(spec):
            return spec
        return {**spec, "skip_corrupt": True} if isinstance(spec, dict) else {"path": spec, "skip_corrupt": True}

    cfg.data = mark(cfg.data)
    for s in cfg.suites:
        s.data = mark(s.data)
    return cfg


def build_suite(name: str, options: dict[str, Any], where: str) -> SuiteConfig:
    """Instantiate (and so validate) a suite from its table."""
    from robustvit.registries import SUITES

    reserved = {k: options[k] for k in SUITE_RESERVED if k in options}
    _check_types(where, reserved, SUITE_RESERVED)
    suite_opts = {k: v for k, v in options.items() if k not in SUITE_RESERVED}
    try:
        cls = SUITES.get(reserved.get("suite", name))
        suite = cls(name=name, **suite_opts)
    except UserError as exc:
        raise UserError(f"{where}: {exc}") from None
    if "data" in reserved:
        check_data(reserved["data"], where)
    return SuiteConfig(name, suite, reserved.get("data"), reserved.get("limit"), reserved.get("batch_size"))


def validate(cfg: RunConfig) -> RunConfig:
    """Check run-level values and every model; suites are checked when built."""
    where = cfg.source
    if cfg.device not in DEVICES:
        raise UserError(f"{where}: unknown device {cfg.device!r} (allowed: {', '.join(DEVICES)})")
    if cfg.amp is not None and cfg.amp not in ("bf16", "fp16"):
        raise UserError(f"{where}: unknown amp dtype {cfg.amp!r} (allowed: bf16, fp16)")
    if cfg.executor not in EXECUTORS:
        raise UserError(f"{where}: unknown executor {cfg.executor!r} (allowed: {', '.join(EXECUTORS)})")
    for key in ("batch_size", "limit", "workers", "ray_workers", "shard_images"):
        value = getattr(cfg, key)
        if value is not None and (value < 0 or (value == 0 and key != "workers")):
            raise UserError(f"{where}: {key} must be positive, got {value}")
    if not cfg.models:
        raise UserError(f"{where}: no models to evaluate (add a [[models]] table)")
    if not cfg.suites:
        raise UserError(f"{where}: no suites to run (add a [suites.<name>] table)")
    check_data(cfg.data, where)
    seen: dict[str, int] = {}
    for i, m in enumerate(cfg.models):
        check_model(m, f"{where}: [[models]] #{i + 1} ({m.spec})")
        if m.label in seen:
            raise UserError(f"{where}: [[models]] #{seen[m.label] + 1} and #{i + 1} are both named {m.label!r}: their "
                            "records would mix under one name (give each a distinct name = \"...\")")
        seen[m.label] = i
    return cfg


def load_suite_file(path: str | Path, overrides: dict[str, Any] | None = None) -> RunConfig:
    """Read and validate a TOML suite file; ``overrides`` replace ``[run]`` values (CLI flags)."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"suite file {str(path)!r} does not exist")
    try:
        doc = tomllib.loads(path.read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: not valid TOML: {exc}") from None
    _check_types(str(path), doc, {"run": dict, "models": list, "suites": dict, "report": dict})
    if "report" in doc:
        _check_types(f"{path}: [report]", doc["report"], REPORT_KEYS)
    run = dict(doc.get("run", {}))
    _check_types(f"{path}: [run]", run, RUN_KEYS)
    run.update({k: v for k, v in (overrides or {}).items() if v is not None})
    models = []
    for i, table in enumerate(doc.get("models", [])):
        where = f"{path}: [[models]] #{i + 1}"
        if not isinstance(table, dict) or "spec" not in table:
            raise UserError(f"{where}: needs a 'spec' key (e.g. spec = \"zoo_vit\")")
        _check_types(where, table, MODEL_KEYS)
        models.append(ModelConfig(**table))
    suites = []
    for name, table in doc.get("suites", {}).items():
        if not isinstance(table, dict):
            raise UserError(f"{path}: [suites.{name}] must be a table")
        suites.append(build_suite(name, table, f"{path}: [suites.{name}]"))
    return validate(RunConfig(models=models, suites=suites, source=str(path), report=doc.get("report"), **run))
