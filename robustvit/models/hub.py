"""Pretrained timm weights without waiting on an unreachable hub.

Asked for weights it has not cached, timm goes to the Hugging Face hub, whose client retries for
about a minute when there is no network. :func:`timm_weights_overlay` decides first, in a few
seconds at most: weights in the local cache are used as they are (with no network request when the
hub cannot be reached), weights that are neither cached nor reachable end in a :class:`UserError`
naming the fixes (``--no-pretrained``, ``--checkpoint PATH``).

The hub is ``HF_ENDPOINT`` (default ``https://huggingface.co``); ``HF_HUB_OFFLINE=1`` means
unreachable without trying; the probe goes through the environment's proxies (``https_proxy``, ...).
"""

from __future__ import annotations

import os
import ssl
import threading
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from robustvit.errors import UserError

HF_DEFAULT_ENDPOINT = "https://huggingface.co"
PROBE_TIMEOUT_S = 2.0
_TRUE = ("1", "true", "yes", "on")
_SAFE_ALTERNATIVES = {"pytorch_model.bin": "model.safetensors",
                      "open_clip_pytorch_model.bin": "open_clip_model.safetensors"}


@dataclass(frozen=True)
class WeightsSource:
    """Where timm would read an architecture's pretrained weights from.

    Attributes:
        kind: ``"hf-hub"`` (a Hugging Face repo), ``"url"`` (a download URL) or ``"local"`` (a file
            or state dict in the pretrained config: no network).
        location: Repo id, URL or file.
        revision: Hub revision (``None``: the default branch).
        filenames: Hub files in the order timm tries them (safetensors first).
        url: The download URL of a hub source too (its torch hub cache is the fallback).
    """

    kind: str
    location: str
    revision: str | None = None
    filenames: tuple[str, ...] = ()
    url: str | None = None


def timm_weights_source(arch: str) -> WeightsSource | None:
    """The source of ``arch``'s pretrained weights (``arch`` may carry a tag), or ``None`` if it has none."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch)
    except RuntimeError as exc:  # an unknown pretrained tag
        raise UserError(f"timm architecture {arch!r}: {exc} (see timm.list_pretrained())") from exc
    if cfg is None:
        return None
    if cfg.state_dict or cfg.file or cfg.source == "local-dir":
        return WeightsSource("local", str(cfg.file or "state_dict"))
    if cfg.hf_hub_id:
        repo, _, revision = cfg.hf_hub_id.partition("@")
        filename = cfg.hf_hub_filename or "pytorch_model.bin"
        names = [filename]
        if not filename.endswith(".safetensors") and not (cfg.hf_hub_filename and cfg.custom_load == "hf"):
            names.insert(0, _SAFE_ALTERNATIVES.get(filename, filename.rsplit(".", 1)[0] + ".safetensors"))
        return WeightsSource("hf-hub", repo, revision or None, tuple(dict.fromkeys(names)), cfg.url or None)
    if cfg.url:
        return WeightsSource("url", cfg.url)
    return None


def hf_cache_dir() -> Path:
    """The Hugging Face hub cache: ``HF_HUB_CACHE``, else ``HF_HOME/hub``, else the library's default."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"]).expanduser()
    if os.environ.get("HF_HOME"):
        return Path(os.environ["HF_HOME"]).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def cached_weights(source: WeightsSource) -> str | None:
    """Path of the locally cached weights file of ``source``, or ``None`` if it is not cached."""
    if source.kind == "hf-hub":
        from huggingface_hub import try_to_load_from_cache

        for filename in source.filenames:
            found = try_to_load_from_cache(source.location, filename, cache_dir=hf_cache_dir(),
                                           revision=source.revision)
            if isinstance(found, str) and Path(found).is_file():
                return found
    url = source.location if source.kind == "url" else source.url
    if url:  # timm's downloads from a URL land in the torch hub cache
        import torch.hub

        path = Path(torch.hub.get_dir()) / "checkpoints" / Path(urlparse(url).path).name
        return str(path) if path.is_file() else None
    return None


def hub_offline() -> bool:
    """``HF_HUB_OFFLINE`` is set (now, or when ``huggingface_hub`` was imported)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _TRUE:
        return True
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def hf_endpoint() -> str:
    """The hub's base URL: ``HF_ENDPOINT`` or ``https://huggingface.co``."""
    return (os.environ.get("HF_ENDPOINT") or HF_DEFAULT_ENDPOINT).rstrip("/")


def unreachable_reason(url: str, timeout: float | None = None) -> str | None:
    """Why ``url`` cannot be reached, or ``None`` when its server (or the proxy for it) answers.

    One ``HEAD`` request through the environment's proxies: any HTTP status, or a TLS handshake that
    fails on certificates, counts as an answer (the hub client decides the rest). Name resolution,
    connection and response together take at most ``timeout`` seconds (default :data:`PROBE_TIMEOUT_S`).
    """
    timeout = PROBE_TIMEOUT_S if timeout is None else timeout
    parts = urlparse(url)
    where = f"{parts.hostname}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    outcome: list[str | None] = []

    def probe() -> None:
        request = urllib.request.Request(url, method="HEAD", headers={"User-Agent": "robustvit"})
        try:
            with urllib.request.build_opener().open(request, timeout=timeout):  # proxies as the environment says now
                outcome.append(None)
        except urllib.error.HTTPError:  # a status code: the server answered
            outcome.append(None)
        except urllib.error.URLError as exc:
            outcome.append(None if isinstance(exc.reason, ssl.SSLError) else _describe(exc.reason))
        except ssl.SSLError:
            outcome.append(None)
        except Exception as exc:  # noqa: BLE001 - reported as the reason, never raised in the thread
            outcome.append(_describe(exc))

    thread = threading.Thread(target=probe, name="robustvit-hub-probe", daemon=True)
    thread.start()
    thread.join(timeout)  # a hanging name lookup is left behind in its daemon thread
    if not outcome or outcome[0] == _TIMED_OUT:  # the join or the socket timed out first: the same thing
        return f"{where} did not answer within {timeout:g} s"
    return None if outcome[0] is None else f"{where} cannot be reached ({outcome[0]})"


_TIMED_OUT = "timed out"


def _describe(error: object) -> str:
    if isinstance(error, TimeoutError):
        return _TIMED_OUT
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error) or type(error).__name__


def timm_weights_overlay(arch: str) -> dict[str, Any] | None:
    """Decide, in seconds, how timm gets ``arch``'s pretrained weights.

    Returns:
        ``None`` when timm can fetch them itself (the source is reachable, or local), or
        ``{"file": path}`` (a ``pretrained_cfg_overlay``) to read them from the local cache when the
        source is unreachable.

    Raises:
        UserError: the weights are not cached and the source is offline or unreachable.
    """
    source = timm_weights_source(arch)
    if source is None or source.kind == "local":
        return None  # no pretrained weights (timm's own error follows) or a local file
    if source.kind == "hf-hub":
        reason = "HF_HUB_OFFLINE is set" if hub_offline() else unreachable_reason(hf_endpoint())
    else:
        reason = unreachable_reason(source.location)
    if reason is None:
        return None
    cached = cached_weights(source)
    if cached is not None:
        return {"file": cached}
    where = f"the Hugging Face cache {str(hf_cache_dir())!r}" if source.kind == "hf-hub" else "the torch hub cache"
    raise UserError(
        f"cannot fetch timm pretrained weights for {arch!r}: they are not in {where} and {reason}; "
        "run with --no-pretrained (pretrained = false in a suite file) for random weights, "
        "or give local weights with --checkpoint PATH"
    )
