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
import zipfile
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


ACCEPTED = "accepted: a safetensors file, or a torch state dict saved with torch.save"


def read_checkpoint(path: str | os.PathLike[str], *, unsafe_pickle: bool = False) -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a flat ``{name: tensor}`` state dict on the CPU.

    The format is told from the file's content (:func:`checkpoint_format`), not its suffix.

    Raises:
        UserError: missing or unreadable file, a file that is no checkpoint, a pickle that needs full
            unpickling (unless opted in), no tensors. Always one line, never a library traceback.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if checkpoint_format(path) == "safetensors":
        from safetensors.torch import load_file

        try:
            obj: object = load_file(str(path), device="cpu")
        except Exception as exc:  # noqa: BLE001 - any failure to parse the file means it is damaged
            raise UserError(f"{where} is a damaged safetensors file ({error_summary(exc)}); {ACCEPTED}") from exc
        return _flatten(obj, str(path))
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            obj = torch.load(path, map_location="cpu", weights_only=not unsafe_pickle)
    except pickle.UnpicklingError as exc:
        reason = _unpickling_reason(str(exc))
        raise UserError(
            f"{where} cannot be loaded safely: weights_only loading refuses it ({reason}); "
            "it holds pickled objects or code, or is no torch checkpoint. Convert it to safetensors, "
            "or pass --unsafe-pickle if you trust the file"
        ) from exc
    except Exception as exc:  # noqa: BLE001 - torch's reader fails in many ways (IndexError, EOFError, ...) on bad files
        raise UserError(f"{where} cannot be read as a torch checkpoint ({error_summary(exc)}); {ACCEPTED}") from exc
    return _flatten(obj, str(path))


def checkpoint_format(path: str | os.PathLike[str]) -> str:
    """``"safetensors"`` or ``"torch"`` (a ``torch.save`` zip or legacy pickle), told from the file's first bytes.

    Cheap (reads 4 KiB and, for a zip, its directory), so configs can check a checkpoint before any work.

    Raises:
        UserError: the path is missing, a directory, unreadable, empty, a text file, a damaged or foreign
            zip, a TorchScript or torch.export archive (a model, not weights), or an unknown binary format.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if not path.exists():
        raise UserError(f"{where} does not exist")
    if path.is_dir():
        raise UserError(f"{where} is a directory, not a checkpoint file ({ACCEPTED})")
    try:
        size = path.stat().st_size
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError as exc:
        raise UserError(f"{where} cannot be read ({exc.strerror or exc})") from exc
    if not head:
        raise UserError(f"{where} is an empty file, not a checkpoint ({ACCEPTED})")
    if len(head) > 8 and head[8:9] == b"{" and 8 + int.from_bytes(head[:8], "little") <= size:
        return "safetensors"  # 8-byte little-endian header length, then the JSON header
    if head.startswith((b"PK\x03\x04", b"PK\x05\x06")):
        return _zip_format(path, where)
    if len(head) > 1 and head[0] == 0x80 and 2 <= head[1] <= 5:
        return "torch"  # a pickle (protocol 2+): torch.save(..., _use_new_zipfile_serialization=False)
    if path.suffix == ".safetensors":
        raise UserError(f"{where} is not a valid safetensors file (no safetensors header); {ACCEPTED}")
    if _is_text(head):
        raise UserError(f"{where} is a text file, not a checkpoint ({ACCEPTED})")
    raise UserError(f"{where} is not a checkpoint: unknown binary format (starts with {head[:8].hex(' ')}); {ACCEPTED}")


def _zip_format(path: Path, where: str) -> str:
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        raise UserError(f"{where} is a damaged or truncated zip archive, not a readable checkpoint ({ACCEPTED})") from exc
    base = {name.rsplit("/", 1)[-1] for name in names}
    if "archive_format" in base:
        raise UserError(f"{where} is a torch.export archive (a whole model), not weights: load it with --model export:PATH")
    if "constants.pkl" in base and any("/code/" in name for name in names):
        raise UserError(f"{where} is a TorchScript archive (a whole model), not weights: load it with --model torchscript:PATH")
    if "data.pkl" not in base:
        raise UserError(f"{where} is a zip archive without torch.save data, not a checkpoint ({ACCEPTED})")
    return "torch"


def _is_text(head: bytes) -> bool:
    """No NUL bytes and (almost) only printable UTF-8: a text file, not a binary format."""
    if b"\x00" in head:
        return False
    text = head.decode("utf-8", errors="replace")
    odd = sum(1 for c in text if c == "\ufffd" or not (c.isprintable() or c in "\t\r\n\f\v"))
    return odd <= max(3, len(text) // 100)  # a multi-byte character cut at the 4 KiB boundary is fine


def error_summary(exc: BaseException) -> str:
    """``Type: first sentence`` of an exception's first line (torch appends paragraphs of advice)."""
    text = next((line.strip() for line in str(exc).splitlines() if line.strip()), "")
    text = text.split(". ", 1)[0].rstrip(".")
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


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
    if not isinstance(obj, Mapping):
        raise UserError(f"checkpoint {origin!r} holds a {type(obj).__name__}, not a state dict ({ACCEPTED})")
    if not obj:
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
