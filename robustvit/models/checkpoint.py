"""Safe checkpoint loading.

Checkpoints are read with safetensors or ``torch.load(weights_only=True)``, which refuses pickles
that would construct arbitrary objects or run code; ``unsafe_pickle=True`` (CLI
``--unsafe-pickle``) opts in to full unpickling for files the user trusts. Nested ``state_dict`` /
``model`` / ``model_ema`` / ``module`` / ``ema`` / ``net`` keys and ``module.`` prefixes (from
``DataParallel``/DDP) are unwrapped.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import warnings
from collections.abc import Mapping
from pathlib import Path

import torch

from robustvit.errors import UserError

_NESTED_KEYS = ("state_dict", "model_ema", "model", "module", "ema", "net", "params")
_PREFIXES = ("module.", "_orig_mod.", "model.")


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Full sha256 hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def state_dict_sha256(state: Mapping[str, torch.Tensor]) -> str:
    """sha256 over the names, shapes, dtypes and bytes of a state dict (weights without a file)."""
    digest = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().cpu().contiguous()
        digest.update(f"{name}:{tuple(t.shape)}:{t.dtype}".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def read_checkpoint(path: str | os.PathLike[str], *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` state dict on the CPU.

    Raises:
        UserError: missing file, unreadable or malicious pickle (unless opted in), no tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint {str(path)!r} does not exist")
    if path.suffix == ".safetensors":
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except (SafetensorError, OSError, ValueError) as exc:
            raise UserError(f"checkpoint {str(path)!r} is not a valid safetensors file: {exc}") from exc
    else:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
        except pickle.UnpicklingError as exc:
            reason = _unpickling_reason(str(exc))
            raise UserError(
                f"checkpoint {str(path)!r} cannot be loaded safely: weights_only loading refuses it ({reason}); "
                "it holds pickled objects or code, or is no torch checkpoint. Convert it to safetensors, "
                "or pass --unsafe-pickle if you trust the file"
            ) from exc
        except (RuntimeError, EOFError, OSError, ValueError, AttributeError) as exc:
            raise UserError(f"checkpoint {str(path)!r} cannot be read as a torch checkpoint: {exc}") from exc
    return _flatten(obj, str(path))


_BOILERPLATE = ("Weights only load failed", "Please file an issue", "Check the documentation", "In PyTorch")


def _unpickling_reason(message: str) -> str:
    """The informative line of torch's weights_only refusal (e.g. the blocked global)."""
    for line in message.splitlines():
        line = line.strip()
        if line.startswith("Please file an issue") and "WeightsUnpickler error:" in line:
            line = line.split("WeightsUnpickler error:", 1)[1].strip()
        if line and not line.startswith(_BOILERPLATE):
            return line
    return "unsupported content"


def _flatten(obj: object, origin: str) -> dict[str, torch.Tensor]:
    if isinstance(obj, torch.nn.Module):
        obj = obj.state_dict()
    while isinstance(obj, Mapping) and not _is_state_dict(obj):
        nested = next((k for k in _NESTED_KEYS if k in obj and isinstance(obj[k], (Mapping, torch.nn.Module))), None)
        if nested is None:
            raise UserError(
                f"checkpoint {origin!r} holds no state dict (top-level keys: {', '.join(map(str, list(obj)[:8]))})"
            )
        obj = obj[nested]
        if isinstance(obj, torch.nn.Module):
            obj = obj.state_dict()
    if not isinstance(obj, Mapping) or not obj:
        raise UserError(f"checkpoint {origin!r} holds no tensors")
    return {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}


def _is_state_dict(obj: Mapping) -> bool:
    values = list(obj.values())
    return bool(values) and sum(isinstance(v, torch.Tensor) for v in values) >= max(1, len(values) // 2)


def load_into(model: torch.nn.Module, state: Mapping[str, torch.Tensor], origin: str) -> None:
    """Load ``state`` into ``model`` strictly; mismatches end in a clear :class:`UserError`."""
    own = model.state_dict()
    for prefix in _PREFIXES:  # DataParallel / torch.compile / wrapper prefixes, when they explain the mismatch
        if set(state) != set(own) and state and all(k.startswith(prefix) for k in state):
            state = {k[len(prefix):]: v for k, v in state.items()}
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (first: {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (first: {', '.join(unexpected[:3])})")
        raise UserError(f"checkpoint {origin!r} does not fit the model: " + "; ".join(parts))
    bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
    if bad:
        k = bad[0]
        raise UserError(
            f"checkpoint {origin!r} does not fit the model: {len(bad)} shape mismatches "
            f"(first: {k} is {tuple(state[k].shape)} in the checkpoint, {tuple(own[k].shape)} in the model)"
        )
    model.load_state_dict(state, strict=True)
