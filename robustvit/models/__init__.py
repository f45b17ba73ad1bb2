"""Model specs a user can type, loaded into a :class:`~robustvit.models.wrapper.ModelWrapper`.

==============================  =====================================================================
spec                            meaning
==============================  =====================================================================
``zoo_vit``, ``zoo_<family>``   embedded zoo models (and any model registered in ``robustvit.models``)
``timm:<arch>``                 timm architecture; timm's pretrained weights unless a checkpoint is
                                given or ``pretrained=False``
``torchvision:<name>``          torchvision architecture; its ``DEFAULT`` weights unless a checkpoint
                                is given or ``pretrained=False``
``export:<path>``               a ``torch.export`` archive (``torch.export.save``, ``.pt2``); preferred
``torchscript:<path>``          a TorchScript archive (``torch.jit.save``; deprecated in PyTorch)
``python:<module>:<callable>``  ``callable(**model_kwargs)`` returning an ``nn.Module`` (or a
                                wrapper); ``<module>`` is an importable module or a ``.py`` path
``deepvit:<variant>``           DeepViT and ViL, implemented here (:mod:`robustvit.models.deepvit`,
``vil:<variant>``               :mod:`robustvit.models.vil`); nothing to download: give a checkpoint
                                (the authors' load as they are) or ``pretrained=False``
==============================  =====================================================================

Random initialisation (``pretrained=False``, a new classifier head, a python factory) is seeded:
the weights, and so the model's hash, are a function of the spec and ``seed``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import random
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from robustvit.errors import UserError
from robustvit.models.checkpoint import file_sha256, load_into, read_checkpoint, state_dict_sha256
from robustvit.models.wrapper import ModelWrapper, check_family, infer_family, timm_features

__all__ = ["SPEC_KINDS", "ModelWrapper", "load_model", "seeded", "wrap"]

#: The ``kind:`` prefixes of model specs (a spec without one is a registered model name).
SPEC_KINDS = ("timm", "torchvision", "export", "torchscript", "python", "deepvit", "vil")
#: architectures implemented in robustvit: spec kind -> module with ``create(variant, **kw)`` and ``data_config(model)``
NATIVE: dict[str, str] = {"deepvit": "robustvit.models.deepvit", "vil": "robustvit.models.vil"}

IMAGENET_DEFAULT = {
    "input_size": (3, 224, 224), "mean": (0.485, 0.456, 0.406), "std": (0.229, 0.224, 0.225),
    "interpolation": "bilinear", "crop_pct": 0.875, "crop_mode": "center",
}
PREPROCESS_KEYS = ("input_size", "mean", "std", "interpolation", "crop_pct", "crop_mode")


def wrap(
    model: nn.Module,
    *,
    name: str,
    family: str | None = None,
    arch: str | None = None,
    checkpoint: str | None = None,
    unsafe_pickle: bool = False,
    data_config: Mapping[str, Any] | None = None,
    preprocess: Mapping[str, Any] | None = None,
    num_classes: int | None = None,
    features_fn: Callable[[nn.Module, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None = None,
) -> ModelWrapper:
    """Load an optional checkpoint into ``model`` and wrap it.

    The hash is the checkpoint file's sha256 when there is one, else that of the weights.
    ``features_fn`` (see :class:`ModelWrapper`) defaults to timm's trunk/head split for timm models.
    """
    if checkpoint is not None:
        load_into(model, read_checkpoint(checkpoint, unsafe_pickle=unsafe_pickle), checkpoint)
        sha = file_sha256(checkpoint)
    else:
        sha = state_dict_sha256(model.state_dict())
    cfg = dict(data_config or _timm_data_config(model) or IMAGENET_DEFAULT)
    for key, value in (preprocess or {}).items():
        if key not in PREPROCESS_KEYS:
            raise UserError(f"model {name!r}: unknown preprocessing option {key!r} (allowed: {', '.join(PREPROCESS_KEYS)})")
        cfg[key] = tuple(value) if isinstance(value, list) else value
    if isinstance(cfg["input_size"], int):
        cfg["input_size"] = (3, cfg["input_size"], cfg["input_size"])
    n = num_classes or getattr(model, "num_classes", None) or _probe_num_classes(model, cfg["input_size"])
    is_timm = hasattr(model, "forward_head") and hasattr(model, "forward_features")
    features_fn = features_fn or (timm_features if is_timm else None)
    return ModelWrapper(
        model, name=name, family=check_family(family) if family else infer_family(arch or name),
        sha=sha[:16], data_config=cfg, num_classes=int(n), features_fn=features_fn,
    )


def _timm_data_config(model: nn.Module) -> dict[str, Any] | None:
    if getattr(model, "pretrained_cfg", None) is None:
        return None
    from timm.data import resolve_data_config

    cfg = dict(resolve_data_config({}, model=model))
    # a model built with another img_size keeps its pretrained_cfg's size: trust the model
    size = getattr(getattr(model, "patch_embed", None), "img_size", None) or getattr(model, "img_size", None)
    if size is not None:
        size = (size, size) if isinstance(size, int) else tuple(size)
        cfg["input_size"] = (3, int(size[0]), int(size[1]))
    return cfg


def _probe_num_classes(model: nn.Module, input_size: tuple[int, ...]) -> int:
    with torch.no_grad():
        return int(model(torch.zeros(1, *input_size)).shape[-1])


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Run a block with torch's, Python's and NumPy's global RNGs seeded from ``seed``.

    The caller's RNG states are restored afterwards, so seeding here changes no random draw outside
    the block. CUDA generators are forked and seeded only when CUDA is already initialised (seeding
    them otherwise would queue a lazy seeding that outlives the block).
    """
    import numpy as np
    import torch.cuda

    cuda = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() else []
    py_state, np_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=cuda):
            torch.default_generator.manual_seed(seed)
            if cuda:
                torch.cuda.manual_seed_all(seed)
            random.seed(seed)
            np.random.seed(seed % 2**32)
            yield
    finally:
        random.setstate(py_state)
        np.random.set_state(np_state)


def load_model(
    spec: str,
    *,
    checkpoint: str | None = None,
    family: str | None = None,
    pretrained: bool | None = None,
    unsafe_pickle: bool = False,
    name: str | None = None,
    num_classes: int | None = None,
    preprocess: Mapping[str, Any] | None = None,
    model_kwargs: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> ModelWrapper:
    """Build the model a spec names (see the module docstring) and wrap it.

    Args:
        spec: ``zoo_vit``, ``timm:<arch>``, ``torchvision:<name>``, ``export:<path>``,
            ``torchscript:<path>`` or ``python:<module>:<callable>``.
        checkpoint: Local weights (safetensors or a torch state dict).
        family: ``vit`` | ``cnn`` | ``hybrid``; inferred from the architecture when omitted.
        pretrained: Fetch the library's pretrained weights (default: when no checkpoint is given).
        unsafe_pickle: Allow checkpoints that need full unpickling (only for trusted files).
        name: Name shown in results (default: the spec).
        num_classes: Override the number of classes (timm/torchvision/python constructors).
        preprocess: Overrides of ``input_size``, ``mean``, ``std``, ``interpolation``, ``crop_pct``.
        model_kwargs: Extra constructor arguments.
        seed: Seed of random initialisation (the run seed): the same spec and seed give the same
            weights and hash. The caller's global RNG states are left as they were.
    """
    with seeded(seed):
        return _load_model(spec, checkpoint=checkpoint, family=family, pretrained=pretrained,
                           unsafe_pickle=unsafe_pickle, name=name, num_classes=num_classes, preprocess=preprocess,
                           model_kwargs=model_kwargs)


def _load_model(spec: str, *, checkpoint: str | None, family: str | None, pretrained: bool | None,
                unsafe_pickle: bool, name: str | None, num_classes: int | None, preprocess: Mapping[str, Any] | None,
                model_kwargs: Mapping[str, Any] | None) -> ModelWrapper:
    name = name or spec
    kw = dict(model_kwargs or {})
    common = {"name": name, "family": family, "checkpoint": checkpoint, "unsafe_pickle": unsafe_pickle,
              "preprocess": preprocess}
    kind, sep, rest = spec.partition(":")
    if not sep:
        from robustvit.registries import MODELS

        factory = MODELS.get(spec)
        return factory(**common, **kw)
    if not rest:
        raise UserError(f"model spec {spec!r} names no model after {kind + ':'!r}")
    if kind == "timm":
        return _load_timm(rest, pretrained, num_classes, kw, common)
    if kind == "torchvision":
        return _load_torchvision(rest, pretrained, num_classes, kw, common)
    if kind in ("export", "torchscript"):
        from robustvit.models import archives

        if checkpoint is not None:
            raise UserError(f"model {spec!r} is an archive with its own weights; drop the checkpoint")
        loader = archives.load_export if kind == "export" else archives.load_torchscript
        return loader(rest, name=name, family=family, preprocess=preprocess)
    if kind == "python":
        return _load_python(rest, num_classes, kw, common)
    if kind in NATIVE:
        return _load_native(kind, rest, pretrained, num_classes, kw, common)
    allowed = ", ".join(f"{k}:" for k in SPEC_KINDS)
    raise UserError(f"unknown model spec kind {kind!r} in {spec!r} (allowed: {allowed}, or a zoo name)")


def _load_timm(arch: str, pretrained: bool | None, num_classes: int | None, kw: dict, common: dict) -> ModelWrapper:
    import timm

    if not timm.is_model(arch):
        import difflib

        close = difflib.get_close_matches(arch, timm.list_models(), n=3)
        hint = f"; did you mean {', '.join(close)}?" if close else ""
        raise UserError(f"unknown timm architecture {arch!r}{hint} (see timm.list_models())")
    use_pretrained = (common["checkpoint"] is None) if pretrained is None else pretrained
    if num_classes is not None:
        kw["num_classes"] = num_classes
    if use_pretrained and "pretrained_cfg_overlay" not in kw and "pretrained_cfg" not in kw:
        from robustvit.models.hub import timm_weights_overlay

        overlay = timm_weights_overlay(arch)  # fails in seconds when the weights are neither cached nor reachable
        if overlay is not None:
            kw["pretrained_cfg_overlay"] = overlay
    try:
        model = timm.create_model(arch, pretrained=use_pretrained, **kw)
    except (OSError, RuntimeError, ValueError) as exc:  # offline hub, missing weights tag
        if not use_pretrained:
            raise UserError(f"cannot build timm model {arch!r}: {exc}") from exc
        raise UserError(
            f"cannot fetch timm pretrained weights for {arch!r} ({type(exc).__name__}); run with --no-pretrained "
            "(pretrained = false in a suite file) for random weights, or give local weights with --checkpoint PATH"
        ) from exc
    return wrap(model, arch=arch, **common)


def _load_torchvision(arch: str, pretrained: bool | None, num_classes: int | None, kw: dict, common: dict) -> ModelWrapper:
    import torchvision

    if arch not in torchvision.models.list_models():
        raise UserError(f"unknown torchvision model {arch!r} (see torchvision.models.list_models())")
    use_pretrained = (common["checkpoint"] is None) if pretrained is None else pretrained
    data_config = dict(IMAGENET_DEFAULT)
    weights = None
    if use_pretrained:
        weights = torchvision.models.get_model_weights(arch).DEFAULT
        t = weights.transforms()
        crop, resize = int(t.crop_size[0]), int(t.resize_size[0])
        data_config.update(input_size=(3, crop, crop), mean=tuple(t.mean), std=tuple(t.std),
                           interpolation=t.interpolation.value, crop_pct=crop / resize)
    if num_classes is not None:
        kw["num_classes"] = num_classes
    try:
        model = torchvision.models.get_model(arch, weights=weights, **kw)
    except (OSError, RuntimeError, ValueError) as exc:
        raise UserError(
            f"cannot fetch torchvision weights for {arch!r} ({type(exc).__name__}); "
            "give a local checkpoint with --checkpoint PATH, or pretrained=false"
        ) from exc
    return wrap(model, arch=arch, data_config=data_config, **common)


def check_native(kind: str, variant: str) -> None:
    """A ``deepvit:`` / ``vil:`` variant exists (without building the model), else a :class:`UserError`."""
    module = importlib.import_module(NATIVE[kind])
    names = [*module.VARIANTS, *getattr(module, "ALIASES", {})]
    if variant.lower() not in names:
        raise UserError(f"unknown {kind} variant {variant!r} (allowed: {', '.join(f'{kind}:{n}' for n in names)})")


def _load_native(kind: str, variant: str, pretrained: bool | None, num_classes: int | None, kw: dict,
                 common: dict) -> ModelWrapper:
    check_native(kind, variant)
    module = importlib.import_module(NATIVE[kind])
    if pretrained is not False and common["checkpoint"] is None:
        raise UserError(f"model {kind}:{variant} has no weights to download; give the authors' (or your) "
                        "checkpoint with --checkpoint PATH, or --no-pretrained for random weights")
    if num_classes is not None:
        kw["num_classes"] = num_classes
    model = module.create(variant, **kw)
    return wrap(model, arch=f"{kind}_{variant}", data_config=module.data_config(model),
                **{**common, "family": common["family"] or "vit"})


def _load_python(target: str, num_classes: int | None, kw: dict, common: dict) -> ModelWrapper:
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise UserError(f"python model spec must be python:<module>:<callable>, got 'python:{target}'")
    try:
        if module_name.endswith(".py"):
            if not Path(module_name).is_file():
                raise UserError(f"python model file {module_name!r} does not exist")
            mspec = importlib.util.spec_from_file_location(Path(module_name).stem, module_name)
            module = importlib.util.module_from_spec(mspec)  # type: ignore[arg-type]
            mspec.loader.exec_module(module)  # type: ignore[union-attr]
        else:
            module = importlib.import_module(module_name)
        factory = getattr(module, attr)
    except (ImportError, AttributeError) as exc:
        raise UserError(f"cannot load python:{target}: {exc}") from exc
    if num_classes is not None:
        kw["num_classes"] = num_classes
    model = factory(**kw)
    if isinstance(model, ModelWrapper):
        return model
    if not isinstance(model, nn.Module):
        raise UserError(f"python:{target} returned {type(model).__name__}, not a torch.nn.Module")
    return wrap(model, arch=attr, **common)
