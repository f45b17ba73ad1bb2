"""Whole-model archives: ``torch.export`` programs (``export:<path>``) and TorchScript (``torchscript:<path>``).

An archive holds the graph and the weights, so no Python class is needed to load it. Prefer
``torch.export`` (``.pt2``): TorchScript is deprecated in PyTorch. Make one from a model in eval mode,
with a dynamic batch dimension so the archive takes any batch size::

    batch = torch.export.Dim("batch", min=1)
    program = torch.export.export(model.eval(), (torch.randn(2, 3, 224, 224),), dynamic_shapes=({0: batch},))
    torch.export.save(program, "model.pt2")

The wrapper's preprocessing defaults to ImageNet's mean/std; an exported program with a static
height and width sets the input size. The family is inferred from the file name (``vit_b16.pt2`` is a
ViT) unless given.
"""

from __future__ import annotations

import warnings
import zipfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import torch
import torch.fx
from torch import nn

from robustvit.errors import UserError
from robustvit.models.checkpoint import error_summary
from robustvit.models.wrapper import ModelWrapper

EXPORT_HOWTO = "make one with torch.export.save(torch.export.export(model.eval(), (x,)), 'model.pt2')"


class ExportedModule(nn.Module):
    """The module of a ``torch.export`` program, usable like any classifier.

    ``train()`` / ``eval()`` only set the flag: an exported graph is fixed at export time (export the
    model in eval mode). A program exported with a static batch size ``B`` is fed in chunks of ``B``
    (the last chunk padded with zeros, whose outputs are dropped), so any batch size works.
    Penultimate features are the input of the graph's last ``linear`` with as many outputs as the
    logits (:meth:`forward_features`, run through :class:`torch.fx.Interpreter`).

    Args:
        program: A loaded ``torch.export.ExportedProgram`` taking one image tensor (N, C, H, W).

    Attributes:
        batch_size: The static batch size, or ``None`` when the batch dimension is dynamic.
        input_size: ``(C, H, W)`` when all three are static, else ``None``.
    """

    def __init__(self, program: torch.export.ExportedProgram) -> None:
        super().__init__()
        shape = _input_shape(program)
        self.graph_module = program.module()
        self.batch_size: int | None = shape[0] if shape else None
        dims = shape[1:] if len(shape) == 4 else ()
        self.input_size: tuple[int, int, int] | None = (
            (dims[0], dims[1], dims[2]) if len(dims) == 3 and all(d is not None for d in dims) else None  # type: ignore[assignment]
        )
        node = _feature_node(self.graph_module.graph)
        self.feature_node: str | None = None if node is None else node.name  # a name survives deepcopy

    def train(self, mode: bool = True) -> ExportedModule:  # the exported graph has no train/eval switch
        self.training = mode
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self._chunked(lambda part: (self.graph_module(part),), x)[0]

    def forward_features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(logits, penultimate features) from one pass over the graph."""
        if self.feature_node is None:
            raise UserError("the torch.export program exposes no penultimate features (no final linear layer found)")
        node = next(n for n in self.graph_module.graph.nodes if n.name == self.feature_node)

        def run(part: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            capture = _Capture(self.graph_module, node)
            return capture.run(part), capture.value.flatten(1)

        logits, feats = self._chunked(run, x)
        return logits, feats

    def _chunked(self, fn: Callable[[torch.Tensor], tuple[torch.Tensor, ...]], x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        b = self.batch_size
        if b is None or x.shape[0] == b:
            return fn(x)
        outputs = []
        for start in range(0, x.shape[0], b):
            part = x[start:start + b]
            k = part.shape[0]
            if k < b:
                part = torch.cat([part, part.new_zeros(b - k, *part.shape[1:])])
            outputs.append(tuple(out[:k] for out in fn(part)))
        return tuple(torch.cat(parts) for parts in zip(*outputs))  # noqa: B905 - same arity


class _Capture(torch.fx.Interpreter):
    """Runs a graph and keeps the value of one node."""

    def __init__(self, module: torch.fx.GraphModule, node: torch.fx.Node) -> None:
        super().__init__(module)
        self.node = node
        self.value: torch.Tensor | None = None

    def run_node(self, n: torch.fx.Node) -> Any:
        result = super().run_node(n)
        if n is self.node:
            self.value = result
        return result


def _feature_node(graph: torch.fx.Graph) -> torch.fx.Node | None:
    """The input of the last ``linear`` whose output width is the logits' (``None`` if there is none)."""
    output = next(n for n in graph.nodes if n.op == "output")
    leaf = output.args[0][0] if isinstance(output.args[0], (tuple, list)) else output.args[0]
    width = _last_dim(leaf)
    for node in reversed(list(graph.nodes)):
        if node.op != "call_function" or width is None:
            continue
        if node.target is torch.ops.aten.linear.default and _last_dim(node) == width:
            return node.args[0]
        if node.target is torch.ops.aten.addmm.default and _last_dim(node) == width:
            return node.args[1]
    return None


def _last_dim(node: object) -> int | None:
    value = node.meta.get("val") if isinstance(node, torch.fx.Node) else None
    return int(value.shape[-1]) if isinstance(value, torch.Tensor) and isinstance(value.shape[-1], int) else None


def exported_features(model: nn.Module, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The wrapper's ``features_fn`` for :class:`ExportedModule`."""
    return model.forward_features(z)  # type: ignore[operator]


def _input_shape(program: torch.export.ExportedProgram) -> tuple[int | None, ...]:
    """Shape of the program's one user input: ints where static, ``None`` where dynamic."""
    names = list(program.graph_signature.user_inputs)
    if len(names) != 1:
        raise UserError(f"the torch.export program takes {len(names)} inputs; an image classifier takes one (N,C,H,W) tensor")
    node = next(n for n in program.graph.nodes if n.op == "placeholder" and n.name == names[0])
    value = node.meta.get("val")
    if not isinstance(value, torch.Tensor):
        raise UserError("the torch.export program's input is not a tensor; an image classifier takes one (N,C,H,W) tensor")
    return tuple(d if isinstance(d, int) else None for d in value.shape)


def _zip_names(path: Path) -> list[str]:
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError):
        return []


def _is_export_archive(names: list[str]) -> bool:
    return any(name.rsplit("/", 1)[-1] == "archive_format" for name in names)


def _is_torchscript_archive(names: list[str]) -> bool:
    return any(name.endswith("/constants.pkl") for name in names) and any("/code/" in name for name in names)


def load_export(path: str, *, name: str, family: str | None, preprocess: Mapping[str, Any] | None) -> ModelWrapper:
    """Load a ``torch.export`` archive (``torch.export.save``) and wrap its module.

    Raises:
        UserError: missing file, a file that is no ``torch.export`` archive (with a hint when it is a
            TorchScript archive or a state dict), a program that does not take one image tensor, or an
            ``input_size`` override that the program's static shape refuses.
    """
    from robustvit.models import IMAGENET_DEFAULT, wrap

    file = Path(path)
    if not file.is_file():
        raise UserError(f"torch.export archive {path!r} does not exist")
    names = _zip_names(file)
    if not _is_export_archive(names):
        if _is_torchscript_archive(names):
            raise UserError(f"{path!r} is a TorchScript archive, not a torch.export one: load it with torchscript:{path}")
        if any(n.endswith("/data.pkl") for n in names):
            raise UserError(f"{path!r} holds torch.save weights, not a whole model: load them with --checkpoint PATH "
                            f"and an architecture spec (timm:, python:, ...), or {EXPORT_HOWTO}")
        raise UserError(f"{path!r} is not a torch.export archive (.pt2); {EXPORT_HOWTO}")
    try:
        with warnings.catch_warnings(), open(file, "rb") as fh:  # a buffer: torch.export.load wants '.pt2' names
            warnings.simplefilter("ignore")
            program = torch.export.load(fh)
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways inside torch
        raise UserError(f"{path!r} is a damaged torch.export archive ({error_summary(exc)}); {EXPORT_HOWTO}") from exc
    module = ExportedModule(program)
    data_config = dict(IMAGENET_DEFAULT)
    if module.input_size is not None:
        data_config["input_size"] = module.input_size
        size = (preprocess or {}).get("input_size")
        if size is not None:
            size = (3, size, size) if isinstance(size, int) else tuple(size)
            if tuple(size) != module.input_size:
                raise UserError(f"torch.export archive {path!r} takes input {module.input_size} (static shape), "
                                f"not input_size {tuple(size)}; drop the override or export with dynamic height and width")
    return wrap(module, name=name, family=family, arch=file.stem, data_config=data_config, preprocess=preprocess,
                features_fn=exported_features if module.feature_node is not None else None)


def load_torchscript(path: str, *, name: str, family: str | None, preprocess: Mapping[str, Any] | None) -> ModelWrapper:
    """Load a TorchScript archive (``torch.jit.save``) and wrap it; TorchScript is deprecated, prefer ``export:``.

    Raises:
        UserError: missing file, or a file that is no TorchScript archive (with a hint for ``.pt2`` files).
    """
    from robustvit.models import IMAGENET_DEFAULT, wrap

    file = Path(path)
    if not file.is_file():
        raise UserError(f"TorchScript file {path!r} does not exist")
    names = _zip_names(file)
    if _is_export_archive(names):
        raise UserError(f"{path!r} is a torch.export archive, not a TorchScript one: load it with export:{path}")
    if not _is_torchscript_archive(names):
        raise UserError(f"{path!r} is not a TorchScript archive (torch.jit.save); for a torch.export archive (.pt2) "
                        "use export:PATH, for weights --checkpoint PATH")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch.jit's deprecation warning: the module docstring says what to prefer
            model = torch.jit.load(str(file), map_location="cpu")
    except Exception as exc:  # noqa: BLE001 - a damaged archive fails in many ways inside torch
        raise UserError(f"{path!r} is a damaged TorchScript archive ({error_summary(exc)})") from exc
    return wrap(model, name=name, family=family, arch=file.stem, data_config=IMAGENET_DEFAULT, preprocess=preprocess)
