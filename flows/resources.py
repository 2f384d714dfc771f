"""Shared resources of the pipeline's tasks: progress listeners, the run logger, per-process caches of the body
model, person detector and networks, device leases, config resolution and the code version."""

from __future__ import annotations

import contextlib
import logging
import re
import subprocess
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prefect import get_run_logger
from prefect.context import FlowRunContext, TaskRunContext

from flows.config import PipelineConfig, load_config
from flows.runners import lease_device, resolve_device

if TYPE_CHECKING:
    from body import BodyModel
    from icon.person import PersonDetector

log = logging.getLogger(__name__)

# ------------------------------------------------------------------------------------------------ progress events
_listeners: list[Callable[[str, dict[str, Any]], None]] = []


def add_progress_listener(fn: Callable[[str, dict[str, Any]], None]) -> None:
    """Call ``fn(event, data)`` on pipeline progress in this process (the CLI's progress bars use it).

    Events: ``"video"`` {video, stage} when a stage starts; ``"frames"`` {video, finished, total} as frames finish.
    """
    _listeners.append(fn)


def remove_progress_listener(fn: Callable[[str, dict[str, Any]], None]) -> None:
    """Undo :func:`add_progress_listener`."""
    with contextlib.suppress(ValueError):
        _listeners.remove(fn)


def emit_progress(event: str, **data: Any) -> None:
    for fn in list(_listeners):
        try:
            fn(event, data)
        except Exception:  # noqa: BLE001 - a broken display must not break the run
            log.debug("progress listener failed", exc_info=True)


# ------------------------------------------------------------------------------------------------------ resources
_local = threading.local()
_model_lock = threading.Lock()
_models: dict[tuple[str | None, str], BodyModel] = {}


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    if FlowRunContext.get() or TaskRunContext.get():
        return get_run_logger()
    return log


def person_detector() -> PersonDetector:
    """The MediaPipe detector of this worker thread, loaded on first use (MediaPipe graphs are not thread-safe)."""
    det = getattr(_local, "detector", None)
    if det is None:
        from icon.person import PersonDetector

        det = _local.detector = PersonDetector()
    return det


def body_model(path: str | None, device: str) -> BodyModel:
    """The body model (embedded one for ``path=None``) on ``device``, loaded once per process."""
    key = (path, device)
    with _model_lock:
        if key not in _models:
            from body import BodyModel

            _models[key] = BodyModel(path).to(device)
        return _models[key]


def body_model_id(path: str | None) -> str:
    if path is None:
        from body.model import EMBEDDED_MODEL_ID

        return EMBEDDED_MODEL_ID
    return body_model(path, "cpu").model_id


@contextlib.contextmanager
def device_scope(devices: Sequence[str], config: PipelineConfig) -> Iterator[str]:
    """Lease one of ``devices`` for the block; without a device list use the config's device, unleased."""
    if devices:
        with lease_device(devices) as device:
            yield device
    else:
        yield resolve_device(config.device)


def resolve_config(config: PipelineConfig | str | Path | dict[str, Any] | None) -> PipelineConfig:
    """A ``PipelineConfig`` from a config, a preset name (fast/default/quality), a YAML path or a plain dict."""
    if config is None:
        return load_config("default")
    if isinstance(config, PipelineConfig):
        return config
    if isinstance(config, dict):
        return PipelineConfig.model_validate(config)
    return load_config(config)


def code_version() -> str:
    """avatarize version, plus the git revision when run from a checkout."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("avatarize")
    except PackageNotFoundError:
        v = "unknown"
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=Path(__file__).resolve().parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = ""
    return f"{v}+g{rev}" if rev else v


def artifact_slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "video"


def in_flow() -> bool:
    return FlowRunContext.get() is not None



WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_nets: dict[tuple[str, str, str], Any] = {}


def weights_path(configured: str | None, default_name: str) -> Path:
    path = Path(configured) if configured else WEIGHTS_DIR / default_name
    if not path.is_file():
        raise FileNotFoundError(
            f"network weights {path} not found; pass an existing file in the config "
            f"({'normal_net_weights' if 'normal' in default_name else 'implicit_net_weights'}) or train them with "
            f"`avatarize train`"
        )
    return path


def load_networks(config: PipelineConfig, device: str) -> tuple[Any, Any]:
    """The normal and implicit networks on ``device``, loaded once per process."""
    from icon.implicit import load_implicit_net
    from icon.normal_net import load_normal_net

    normal = weights_path(config.normal_net_weights, "normal_net.safetensors")
    implicit = weights_path(config.implicit_net_weights, "implicit_net.safetensors")
    with _model_lock:
        for kind, path, loader in (("normal", normal, load_normal_net), ("implicit", implicit, load_implicit_net)):
            key = (kind, str(path), device)
            if key not in _nets:
                _nets[key] = loader(path, device)
        return _nets[("normal", str(normal), device)], _nets[("implicit", str(implicit), device)]

