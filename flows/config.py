"""Pipeline configuration: one pydantic model per stage, YAML presets (flows/presets/) that only override defaults.

A misspelt or unknown key anywhere is an error naming the key (``extra="forbid"`` on every model).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from avatar.config import AvatarConfig
from flows.bundled import PRESETS, preset_path
from flows.video import FrameSampling
from icon.fit import FitConfig
from icon.reconstruct import ReconstructConfig

#: Defaults of the input-size bounds (a 4K or hour-long file cannot exhaust memory or run for days by accident).
DEFAULT_MAX_SIDE = 1920
DEFAULT_MAX_FRAMES = 1000


class FrameLimits(FrameSampling):
    """``FrameSampling`` with the input-size bounds always on: a maximum decoded resolution and frame count per video.

    Larger frames are downscaled while decoding; a longer video is cut at ``max_frames`` with a warning.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    max_frames: int = Field(
        DEFAULT_MAX_FRAMES,
        ge=1,
        le=100_000,
        description="Most frames processed per video (after sampling); decoding stops there with a warning.",
    )
    max_side: int = Field(
        DEFAULT_MAX_SIDE,
        ge=64,
        le=8192,
        description="Frames are downscaled while decoding so their longer side is at most this many pixels.",
    )


class PersonConfig(BaseModel):
    """Person detection and cropping."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    crop_size: int = Field(512, ge=64, le=2048, description="Side S of the square person crops (px).")
    crop_margin: float = Field(0.15, ge=0.0, le=1.0, description="Margin around the person box, fraction of its side.")
    crop_smoothing: float = Field(0.5, ge=0.0, le=1.0, description="Temporal smoothing of the crop boxes (0 = off).")
    detect_size: int = Field(512, ge=128, le=2048, description="Side of the image MediaPipe sees (px).")


class PipelineConfig(BaseModel):
    """Everything `avatarize` needs to process a video; saved with every output."""

    model_config = ConfigDict(extra="forbid")

    frames: FrameLimits = Field(
        default_factory=FrameLimits, description="Which frames to decode, and the input-size bounds."
    )
    person: PersonConfig = Field(default_factory=PersonConfig, description="Person detection and crops.")
    fit: FitConfig = Field(default_factory=FitConfig, description="Initial body fit.")
    reconstruct: ReconstructConfig = Field(
        default_factory=ReconstructConfig, description="SMPL feedback loop and implicit clothed surface per frame."
    )
    reconstruct_enabled: bool = Field(True, description="Run the per-frame reconstruction stage (else fit only).")
    avatar: AvatarConfig = Field(default_factory=AvatarConfig, description="SCANimate avatar training.")
    avatar_enabled: bool = Field(True, description="Train an avatar after the per-frame reconstruction.")
    avatar_min_frames: int = Field(2, ge=1, description="Fewest reconstructed frames needed to train an avatar.")
    avatar_motion: str | None = Field(
        None, description="Motion file for the avatar preview; None = the bundled wave (body/data/motions)."
    )
    normal_net_weights: str | None = Field(
        None, description="Normal-net safetensors file; None = the shipped icon/weights/normal_net.safetensors."
    )
    implicit_net_weights: str | None = Field(
        None, description="Implicit-net safetensors file; None = the shipped icon/weights/implicit_net.safetensors."
    )
    body_model: str | None = Field(
        None, description="Path of a user-owned SMPL/SMPL-H/SMPL-X model file; None = the embedded Anny-based model."
    )
    device: str = Field(
        "auto", pattern=r"^(auto|cpu|cuda(:\d+)?)$", description="'auto' (CUDA if available), 'cpu', or 'cuda:N'."
    )
    input_root: str | None = Field(
        None, description="Videos must resolve inside this folder (flows/paths.py); None = the folder the flow got."
    )
    output_root: str | None = Field(
        None, description="Outputs must resolve inside this folder (flows/paths.py); None = the flow's out_dir."
    )

    def digest(self) -> str:
        """Stable hash of the effective configuration (keys sorted); the path roots are not part of it (they say
        where a run may read and write, not what it computes)."""
        data = self.model_dump(mode="json", exclude={"input_root", "output_root"})
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]


class ConfigError(ValueError):
    """A configuration file or override is invalid; the message names the key."""


def _deep_update(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_update(out[key], value)
        else:
            out[key] = value
    return out


def _format_errors(err: ValidationError, source: str) -> str:
    lines = [f"invalid configuration in {source}:"]
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        lines.append(f"  {key}: {e['msg']}")
    return "\n".join(lines)


def load_config(name_or_path: str | Path = "default", overrides: dict[str, Any] | None = None) -> PipelineConfig:
    """Load a preset name (fast/default/quality) or a YAML file, then apply nested overrides.

    Raises:
        ConfigError: unknown preset, unreadable YAML, or a key/value that fails validation (the key is named).
    """
    path = Path(name_or_path)
    if str(name_or_path) in PRESETS:
        path = preset_path(str(name_or_path))
    if not path.is_file():
        raise ConfigError(f"config {name_or_path!r} is neither a preset ({', '.join(PRESETS)}) nor a YAML file")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"cannot parse {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of sections, got {type(data).__name__}")
    data = _deep_update(data, overrides or {})
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, f"{path} + overrides" if overrides else str(path))) from exc


def preset_avatar_config(preset: str = "fast", **overrides: Any) -> AvatarConfig:
    """The ``avatar:`` section of a preset (e.g. the CPU-sized one of ``fast``) with validated field overrides.

    Raises:
        ConfigError: unknown preset or an invalid override (the key is named).
    """
    return load_config(preset, {"avatar": overrides}).avatar
