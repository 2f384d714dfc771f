"""Result and error types of the video pipeline: the probed source, per-frame records, batch, video and directory
results (plain dataclasses, picklable across task workers)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


# ----------------------------------------------------------------------------------------------------- data types
class RunStoreMismatchError(ValueError):
    """An existing store was made from another source file or config (or is not a run store)."""


@dataclass(frozen=True)
class SourceInfo:
    """The probed source video.

    Attributes:
        path: absolute path.
        sha256: hex digest of the file's bytes.
        fps: nominal frame rate (frames/s); 1.0 when ffmpeg reports none (a still image).
        width: displayed width (px).
        height: displayed height (px).
        size: bytes.
        mtime_ns: modification time (ns).
    """

    path: str
    sha256: str
    fps: float
    width: int
    height: int
    size: int
    mtime_ns: int


@dataclass
class FrameRecord:
    """One row of the frame table (also ``<stem>.preview/frames.json``).

    Attributes:
        t: store position.
        source_index: frame number in the source video.
        timestamp: seconds from the start of the video.
        status: ``FrameStatus`` name in lower case.
        reason: why the frame was skipped or failed.
        fit_loss: final body-fit loss of the frame (None before the fit).
        keypoint_error_px: mean 2D keypoint error of the fit (px at the crop size).
        seconds: wall-clock seconds per stage attributed to this frame (shared stages divided evenly).
    """

    t: int
    source_index: int
    timestamp: float
    status: str = "pending"
    reason: str = ""
    fit_loss: float | None = None
    keypoint_error_px: float | None = None
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class BatchResult:
    """Outcome of one :func:`process_frame_batch`: frames done, failed (with reasons), seconds per frame and step."""

    frames: list[int]
    done: list[int] = field(default_factory=list)
    failed: dict[int, str] = field(default_factory=dict)
    seconds: dict[int, dict[str, float]] = field(default_factory=dict)


class FrameBatchError(RuntimeError):
    """Some frames of a batch failed (they are marked FAILED in the store); ``result`` holds the whole outcome."""

    def __init__(self, message: str, result: BatchResult) -> None:
        super().__init__(message)
        self.result = result

    def __reduce__(self) -> tuple[Any, ...]:  # picklable across process and Dask workers
        return (type(self), (str(self), self.result))


@dataclass
class VideoResult:
    """What ``process_video`` made.

    Attributes:
        video: source path.
        store: run store path.
        preview_dir: folder with tiles, ``contact_sheet.png`` and ``frames.json``.
        contact_sheet: the contact sheet PNG, or None when no frame finished.
        n_frames: sampled frames T.
        n_done: frames DONE.
        n_skipped: frames SKIPPED (no usable person).
        n_failed: frames FAILED (see the store's reasons).
        seconds: wall-clock seconds of this run.
        stage_seconds: seconds per stage summed over frames processed in this and earlier runs.
    """

    video: str
    store: str
    preview_dir: str
    contact_sheet: str | None
    n_frames: int
    n_done: int
    n_skipped: int
    n_failed: int
    seconds: float
    stage_seconds: dict[str, float] = field(default_factory=dict)
    avatar_dir: str | None = None
    avatar_video: str | None = None
    avatar_gltf: str | None = None
    avatar_error: str | None = None

    @property
    def status(self) -> str:
        """``"completed"`` or ``"completed_with_failures"``."""
        return "completed_with_failures" if self.n_failed else "completed"

    @property
    def message(self) -> str:
        """One line for logs and the ledger."""
        if self.n_failed:
            return f"completed with failures: {self.n_failed}"
        return f"completed: {self.n_done} done, {self.n_skipped} skipped"


@dataclass
class DirectoryResult:
    """What ``process_directory`` did in one scan.

    Attributes:
        processed: results of the videos processed now.
        failed: video path -> error, for videos that could not be processed (bad or unreadable files).
        unchanged: videos skipped because the ledger has them with the same size, mtime and config.
        growing: files left for the next scan because they were still changing (or empty).
        busy: videos left for the next scan because another run was writing their store.
    """

    processed: list[VideoResult] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    growing: list[str] = field(default_factory=list)
    busy: list[str] = field(default_factory=list)

    @property
    def message(self) -> str:
        """One line summary."""
        return (
            f"{len(self.processed)} processed, {len(self.failed)} failed, {len(self.unchanged)} unchanged, "
            f"{len(self.growing)} still growing, {len(self.busy)} busy"
        )

