"""Types of the video IO (:mod:`flows.video`): its errors, the probed metadata, a decoded chunk of frames and the
frame-sampling config."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator


# ----------------------------------------------------------------------------------------------------------- errors
class VideoError(ValueError):
    """A video could not be read or written; the message names the file and the reason."""


class VideoNotFoundError(VideoError, FileNotFoundError):
    """The path does not exist or is not a regular file."""


class NotAVideoError(VideoError):
    """ffmpeg cannot open the file as any media format (random bytes, text, empty file)."""


class NoVideoStreamError(VideoError):
    """The file is valid media but holds no video stream (e.g. audio only)."""


class NoDecodableFramesError(VideoError):
    """The file has a video stream but not a single frame could be decoded."""


class NoFramesSelectedError(VideoError):
    """Frames were decoded but the sampling (time window) selected none of them."""


class VideoWriteError(VideoError):
    """ffmpeg failed to encode the output video."""


# ------------------------------------------------------------------------------------------------------ data types
@dataclass(frozen=True)
class VideoInfo:
    """Metadata of the first video stream of a file, as ffmpeg reports it.

    Attributes:
        path: the probed file.
        width: displayed width in pixels, i.e. after applying ``rotation_deg`` (what decoded frames have).
        height: displayed height in pixels, after rotation.
        fps: nominal frame rate (frames/s) from the stream header; ``None`` if ffmpeg reports none. For variable
            frame rate video this is only indicative: use the per-frame timestamps.
        duration_s: container duration in seconds; ``None`` when unknown (e.g. a still image).
        rotation_deg: counter-clockwise rotation in degrees, normalised to [0, 360), from the stream's display
            matrix. ffmpeg applies it while decoding, so decoded frames are already upright.
        n_frames_estimate: ``round(duration_s * fps)`` when both are known, else ``None``; not exact for VFR.
        codec: decoder name, e.g. ``"h264"``.
        pix_fmt: stored pixel format, e.g. ``"yuv420p"``, ``"gray"``, ``"rgba"``.
        stream_index: ffmpeg index of the decoded stream within the file (``0:<stream_index>``).
        container: demuxer name(s) as ffmpeg prints them, e.g. ``"mov,mp4,m4a,3gp,3g2,mj2"``, ``"png_pipe"``.
    """

    path: Path
    width: int
    height: int
    fps: float | None
    duration_s: float | None
    rotation_deg: int
    n_frames_estimate: int | None
    codec: str
    pix_fmt: str
    stream_index: int = 0
    container: str = ""


@dataclass
class FrameChunk:
    """A run of decoded frames in source order.

    Attributes:
        images: ``(n, H, W, 3) uint8`` RGB frames, upright (rotation metadata applied).
        indices: ``(n,) int64`` index of each frame among all decoded frames of the source (0-based).
        timestamps: ``(n,) float64`` presentation time of each frame in seconds from the start of the file.
        truncated: ``True`` when ffmpeg reported decode errors (damaged or cut-short file); the frames before the
            damage are still returned. Only set on the last chunk of an iteration.
        warnings: ffmpeg's error messages behind ``truncated`` (deduplicated, at most 20). Last chunk only.
        capped: ``True`` when decoding stopped at ``FrameSampling.max_frames`` while the video went on (later
            frames were never decoded). Last chunk only.
    """

    images: np.ndarray
    indices: np.ndarray
    timestamps: np.ndarray
    truncated: bool = False
    warnings: tuple[str, ...] = field(default_factory=tuple)
    capped: bool = False

    def __len__(self) -> int:
        return int(self.images.shape[0])


class FrameSampling(BaseModel):
    """Which frames to decode. Filters apply in order: time window, then ``fps`` or ``every_nth``, then ``max_frames``.

    The defaults decode every frame at full resolution.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    fps: float | None = Field(
        None,
        gt=0,
        description="Sample by timestamp: for targets t0 + k/fps (t0 = start_s, or the first frame's time) keep the "
        "frame whose timestamp is nearest (ties go to the earlier frame). Right for variable frame rate input. A "
        "source frame is kept at most once, so asking for more than the source rate returns every frame.",
    )
    every_nth: int | None = Field(
        None,
        ge=1,
        description="Keep every N-th decoded frame, counted from the first frame inside the time window. "
        "Mutually exclusive with fps.",
    )
    max_frames: int | None = Field(None, ge=1, description="Stop after this many selected frames.")
    start_s: float | None = Field(
        None, ge=0, description="Keep frames with timestamp >= start_s (seconds from the start of the file)."
    )
    end_s: float | None = Field(None, gt=0, description="Keep frames with timestamp < end_s (seconds).")
    max_side: int | None = Field(
        None,
        ge=2,
        description="Downscale (never upscale) so the longer displayed side is at most this many pixels, keeping "
        "the aspect ratio; bounds memory for 4K input. ffmpeg scales (area filter) before the frames are piped.",
    )

    @model_validator(mode="after")
    def _check_consistent(self) -> Self:
        if self.fps is not None and self.every_nth is not None:
            raise ValueError("FrameSampling: set either fps or every_nth, not both")
        if self.start_s is not None and self.end_s is not None and self.end_s <= self.start_s:
            raise ValueError(f"FrameSampling: end_s ({self.end_s}) must be greater than start_s ({self.start_s})")
        return self
