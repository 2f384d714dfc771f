"""The video pipeline as Prefect flows: ``process_video`` (one video -> one run store ``<out>/<stem>.zarr`` plus
previews) and ``process_directory`` (every new or changed video of a folder, once, for cron deployments).

Stages of ``process_video``: probe -> extract (decode, detect the person, crop, write /frames) -> one batched body fit
over all frames with a person (shared shape, /fits/init) -> per-frame steps mapped over frame batches (today: the
fitted-body preview; the reconstruction stage plugs in through :func:`frame_steps`) -> contact sheet -> artifacts.
Resume: a finished stage is recorded in the store's root attributes and a finished frame in /status, so re-running
on the same store skips both. Heavy imports (torch, MediaPipe, Warp) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext
from prefect.futures import as_completed

from flows.config import PipelineConfig, load_config
from flows.ledger import VIDEO_EXTENSIONS, Ledger, settled_videos
from flows.paths import PathEscapeError, Roots, roots_for
from flows.runners import RunnerConfig, build_task_runner, lease_device, resolve_device
from flows.store import (
    FrameStatus,
    NotARunStoreError,
    RunAttrs,
    RunStore,
    RunStoreBusyError,
    SchemaVersionError,
    create_run,
    lock_run,
    open_run,
)
from flows.video import iter_frames, probe_video

if TYPE_CHECKING:
    from body import BodyModel
    from icon.person import CroppedFrames, PersonDetector

log = logging.getLogger(__name__)

__all__ = [
    "DirectoryResult",
    "FrameBatchError",
    "FrameContext",
    "FrameRecord",
    "PathEscapeError",
    "RunStoreBusyError",
    "RunStoreMismatchError",
    "SourceInfo",
    "VideoPaths",
    "VideoResult",
    "add_progress_listener",
    "extract_frames",
    "extract_to_files",
    "fit_initial_body",
    "frame_steps",
    "process_directory",
    "process_frame_batch",
    "process_video",
    "remove_progress_listener",
    "render_frame_preview",
    "resolve_config",
    "video_paths",
]

PREVIEW_TILE_PX = 192
"""Side of one contact-sheet tile."""
MAX_SHEET_TILES = 48
"""At most this many frames (evenly spaced) go on the contact sheet."""
DECODE_CHUNK = 32
"""Frames per decoded chunk; the person tracker restarts with a whole-frame search at each chunk."""
KEEP_DECODED_BYTES = 512 << 20
"""Decoded frames up to this size are kept from the detection pass; longer clips are decoded a second time."""

_STAGES = ("frames", "fit_init")


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


def _emit(event: str, **data: Any) -> None:
    for fn in list(_listeners):
        try:
            fn(event, data)
        except Exception:  # noqa: BLE001 - a broken display must not break the run
            log.debug("progress listener failed", exc_info=True)


# ------------------------------------------------------------------------------------------------------ resources
_local = threading.local()
_model_lock = threading.Lock()
_models: dict[tuple[str | None, str], BodyModel] = {}


def _logger() -> logging.Logger | logging.LoggerAdapter:
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


def _body_model_id(path: str | None) -> str:
    if path is None:
        from body.model import EMBEDDED_MODEL_ID

        return EMBEDDED_MODEL_ID
    return body_model(path, "cpu").model_id


@contextlib.contextmanager
def _device_scope(devices: Sequence[str], config: PipelineConfig) -> Iterator[str]:
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


def _slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "video"


def _in_flow() -> bool:
    return FlowRunContext.get() is not None


# ------------------------------------------------------------------------------------------- extraction (pure part)
@dataclass
class Detections:
    """Result of the detection pass over the sampled frames of a video (source pixels).

    Attributes:
        indices: ``(T,) int64`` source frame numbers.
        timestamps: ``(T,) float64`` seconds.
        keypoints: ``(T, 33, 3) float32``.
        boxes: ``(T, 4) float32`` person boxes.
        valid: ``(T,) bool``.
        reasons: skip reason per frame (None where valid).
        masks: per frame ``(x0, y0, (h, w), packed)`` of the person mask inside its box, bit-packed
            (``np.packbits``, 8 pixels per byte, so a long clip's detections stay small), or None.
        image_hw: (H, W) of the decoded frames.
        seconds: ``(T,)`` decode + detection seconds per frame.
        images: the decoded ``(T, H, W, 3)`` frames when they fit ``KEEP_DECODED_BYTES``, else None.
        keypoints3d: ``(T, 33, 4) float32`` MediaPipe metric 3D landmarks + visibility, or None.
    """

    indices: np.ndarray
    timestamps: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    reasons: list[str | None]
    masks: list[tuple[int, int, tuple[int, int], np.ndarray] | None]
    image_hw: tuple[int, int]
    seconds: np.ndarray
    images: np.ndarray | None = None
    keypoints3d: np.ndarray | None = None

    def full_masks(self, rows: np.ndarray) -> np.ndarray:
        """``(n, H, W) bool`` masks of the frames at positions ``rows``."""
        h, w = self.image_hw
        out = np.zeros((len(rows), h, w), bool)
        for i, t in enumerate(rows):
            m = self.masks[int(t)]
            if m is not None:
                x0, y0, (sh, sw), packed = m
                out[i, y0 : y0 + sh, x0 : x0 + sw] = np.unpackbits(packed, count=sh * sw).reshape(sh, sw)
        return out


def detect_frames(video: str | Path, config: PipelineConfig, keep_bytes: int = KEEP_DECODED_BYTES) -> Detections:
    """Decode the sampled frames chunk by chunk and find the person in each (bounded memory: only keypoints, boxes
    and the mask inside each box are kept, plus the frames themselves while they fit ``keep_bytes``)."""
    from icon.person import PersonTrackingConfig, detect_person, mask_box

    tracking = PersonTrackingConfig(detect_size=config.person.detect_size)
    detector = person_detector()
    idx, ts, kps, boxes, valid, reasons, masks, secs, kept = [], [], [], [], [], [], [], [], []
    kps3d: list[np.ndarray] = []
    kept_bytes = 0
    hw = (0, 0)
    t0 = time.perf_counter()
    for chunk in iter_frames(video, config.frames, chunk_size=DECODE_CHUNK):
        track = detect_person(chunk.images, detector, tracking)
        hw = chunk.images.shape[1:3]
        for i in range(len(chunk)):
            box = mask_box(track.masks[i]) if track.valid[i] else None
            if box is None:
                masks.append(None)
            else:
                x0, y0, x1, y1 = (int(v) for v in box)
                sub = track.masks[i, y0:y1, x0:x1]
                masks.append((x0, y0, sub.shape, np.packbits(sub, axis=None)))
        idx.append(chunk.indices)
        ts.append(chunk.timestamps)
        kps.append(track.keypoints)
        kps3d.append(track.keypoints3d)
        boxes.append(track.boxes)
        valid.append(track.valid)
        reasons.extend(track.reasons)
        now = time.perf_counter()
        secs.append(np.full(len(chunk), (now - t0) / len(chunk)))
        t0 = now
        if kept is not None:
            kept_bytes += chunk.images.nbytes
            kept = kept + [chunk.images] if kept_bytes <= keep_bytes else None
    return Detections(
        indices=np.concatenate(idx),
        timestamps=np.concatenate(ts),
        keypoints=np.concatenate(kps).astype(np.float32),
        boxes=np.concatenate(boxes).astype(np.float32),
        valid=np.concatenate(valid),
        reasons=reasons,
        masks=masks,
        image_hw=(int(hw[0]), int(hw[1])),
        seconds=np.concatenate(secs),
        images=np.concatenate(kept) if kept else None,
        keypoints3d=np.concatenate(kps3d).astype(np.float32) if kps3d and None not in kps3d else None,
    )


def crop_boxes(det: Detections, config: PipelineConfig) -> np.ndarray:
    """``(T, 3)`` smoothed square crops (cx, cy, size) around the person; the whole frame when nobody was found."""
    from icon.person import compute_crop_boxes

    if not det.valid.any():
        h, w = det.image_hw
        return np.tile(np.array([w / 2, h / 2, max(h, w)], np.float32), (len(det.valid), 1))
    return compute_crop_boxes(det.boxes, det.valid, config.person.crop_margin, config.person.crop_smoothing)


def iter_crops(
    video: str | Path, config: PipelineConfig, det: Detections, crops: np.ndarray
) -> Iterator[tuple[np.ndarray, CroppedFrames, np.ndarray]]:
    """Yield ``(store positions, crops, seconds per frame)`` chunk by chunk, re-decoding the video when the
    detection pass did not keep the frames.

    Raises:
        VideoError: the second decode selected other frames than the first (the file changed meanwhile).
    """
    from flows.video import VideoError
    from icon.person import crop_frames

    size = config.person.crop_size
    if det.images is not None:
        chunks: Any = (
            (np.arange(s, min(s + DECODE_CHUNK, len(det.indices))), det.images[s : s + DECODE_CHUNK])
            for s in range(0, len(det.indices), DECODE_CHUNK)
        )
    else:

        def redecode() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            pos = 0
            for chunk in iter_frames(video, config.frames, chunk_size=DECODE_CHUNK):
                rows = np.arange(pos, pos + len(chunk))
                if rows[-1] >= len(det.indices) or not np.array_equal(det.indices[rows], chunk.indices):
                    raise VideoError(f"{video}: the video changed while it was being read; run again")
                pos += len(chunk)
                yield rows, chunk.images

        chunks = redecode()
    t0 = time.perf_counter()
    for rows, images in chunks:
        cropped = crop_frames(images, det.full_masks(rows), det.keypoints[rows], crops[rows], size)
        now = time.perf_counter()
        yield rows, cropped, np.full(len(rows), (now - t0) / len(rows))
        t0 = now


# ----------------------------------------------------------------------------------------------------------- tasks
@task(name="probe-video", cache_policy=NO_CACHE)
def probe_source(video: str | Path) -> SourceInfo:
    """Probe the video and hash its bytes (raises a ``VideoError`` for missing or unreadable files)."""
    from flows.store import sha256_file

    info = probe_video(video)
    st = Path(video).stat()
    return SourceInfo(
        path=str(Path(video).absolute()),
        sha256=sha256_file(video),
        fps=float(info.fps) if info.fps else 1.0,
        width=info.width,
        height=info.height,
        size=st.st_size,
        mtime_ns=st.st_mtime_ns,
    )


def _stages_done(store: RunStore) -> set[str]:
    return set(store.group.attrs.get("pipeline_stages", []))


def _mark_stage(store: RunStore, stage: str) -> None:
    stages = sorted(_stages_done(store) | {stage})
    store.group.attrs.update({"pipeline_stages": stages})


@task(name="extract-frames", cache_policy=NO_CACHE)
def extract_frames(
    video: str | Path, store_path: str | Path, config: PipelineConfig, source: SourceInfo
) -> list[FrameRecord]:
    """Decode, detect and crop the sampled frames into a new store at ``store_path`` (replacing what is there).

    Frames without a usable person are marked SKIPPED with the detector's reason.
    """
    det = detect_frames(video, config)
    crops = crop_boxes(det, config)
    attrs = RunAttrs(
        source_path=source.path,
        source_sha256=source.sha256,
        fps=source.fps,
        frame_indices=[int(i) for i in det.indices],
        body_model_id=_body_model_id(config.body_model),
        config=config.model_dump(mode="json"),
        code_version=code_version(),
    )
    n = len(det.indices)
    store = create_run(
        store_path, n_frames=n, image_size=config.person.crop_size, attrs=attrs, overwrite=True,
        refine_iters=max(config.reconstruct.refine.iterations, 1),
    )
    store.group.attrs.update({"config_digest": config.digest(), "pipeline_stages": []})
    crop_secs = np.zeros(n)
    for rows, cropped, secs in iter_crops(video, config, det, crops):
        store.write_frames(rows, cropped.images, cropped.masks, cropped.crops, cropped.keypoints, det.timestamps[rows])
        if det.keypoints3d is not None:  # metric, hip-centred: the crop does not change them
            store.write_keypoints3d(rows, det.keypoints3d[rows])
        crop_secs[rows] = secs
    skipped = np.flatnonzero(~det.valid)
    if skipped.size:
        store.set_status(skipped, FrameStatus.SKIPPED, [det.reasons[t] or "no person" for t in skipped])
    _mark_stage(store, "frames")
    _logger().info("%s: %d frames extracted, %d without a usable person", Path(video).name, n, skipped.size)
    return [
        FrameRecord(
            t=t,
            source_index=int(det.indices[t]),
            timestamp=float(det.timestamps[t]),
            status="pending" if det.valid[t] else "skipped",
            reason=det.reasons[t] or "",
            seconds={"detect": float(det.seconds[t]), "crop": float(crop_secs[t])},
        )
        for t in range(n)
    ]


@dataclass
class FitSummary:
    """Per-frame numbers of the initial body fit: store positions, final loss, keypoint error (px), seconds."""

    indices: list[int]
    losses: list[float]
    keypoint_error_px: list[float]
    seconds: float


@task(name="fit-body", cache_policy=NO_CACHE)
def fit_initial_body(store_path: str | Path, config: PipelineConfig, devices: Sequence[str] = ()) -> FitSummary:
    """Fit the body to every frame with a person (one shared shape) and write ``/fits/init``."""
    import torch

    from icon.fit import fit_body

    t0 = time.perf_counter()
    store = open_run(store_path, "r+")
    idx = np.flatnonzero(store.status() != FrameStatus.SKIPPED)
    if idx.size:
        fr = store.read_frames(idx)
        kp3 = store.read_keypoints3d(idx)
        with _device_scope(devices, config) as device:
            model = body_model(config.body_model, device)
            fit = fit_body(
                model,
                torch.from_numpy(fr.keypoints),
                torch.from_numpy(fr.mask),
                store.image_size,
                config.fit,
                keypoints3d=torch.from_numpy(kp3) if np.isfinite(kp3).any() else None,
            )
        store.write_fit(
            "init",
            idx,
            betas=fit.betas.cpu(),
            global_orient=fit.global_orient.cpu(),
            body_pose=fit.body_pose.cpu(),
            transl=fit.transl.cpu(),
            camera=fit.camera.cpu(),
        )
        store.write_fit_info(idx, fit.confidence.cpu(), None if fit.focal_px is None else fit.focal_px.cpu())
        losses = [float(x) for x in fit.losses.cpu()]
        errors = [float(x) for x in fit.keypoint_error_px.cpu()]
    else:
        losses, errors = [], []
    _mark_stage(store, "fit_init")
    return FitSummary([int(t) for t in idx], losses, errors, time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------------- per-frame steps
@dataclass
class FrameContext:
    """What a per-frame step gets: the open store, the config, the leased device and the preview folder."""

    store: RunStore
    config: PipelineConfig
    device: str
    preview_dir: Path

    def model(self) -> BodyModel:
        """The body model on this step's device (cached per process)."""
        return body_model(self.config.body_model, self.device)


FrameStep = Callable[[FrameContext, int], None]


def render_frame_preview(ctx: FrameContext, t: int) -> None:
    """Render the fitted body (normals, silhouette) over the crop of store position ``t``; write its tile PNG."""
    import torch

    from flows.previews import preview_tile, write_png
    from geometry.render import render_mesh
    from icon.fit import camera_from_params

    frame = ctx.store.read_frames([t])
    fit = ctx.store.read_fit("init", [t])
    if not torch.isfinite(fit.betas).all():
        raise RuntimeError("no body fit stored for this frame")
    model = ctx.model()
    dev = torch.device(ctx.device)
    with torch.no_grad():
        out = model(
            betas=fit.betas.to(dev),
            global_orient=fit.global_orient.to(dev),
            body_pose=fit.body_pose.to(dev),
            transl=fit.transl.to(dev),
        )
        camera = camera_from_params(fit.camera.to(dev), ctx.store.image_size)
        render = render_mesh(out.vertices, model.faces, camera)
    tile = preview_tile(
        frame.image[0],
        frame.keypoints[0],
        render.normal_front[0].cpu().numpy(),
        render.mask[0].cpu().numpy(),
        size=PREVIEW_TILE_PX,
        label=str(t),
    )
    write_png(_tile_path(ctx.preview_dir, t), tile)


WEIGHTS_DIR = Path(__file__).resolve().parent.parent / "weights"
_nets: dict[tuple[str, str, str], Any] = {}


def _weights_path(configured: str | None, default_name: str) -> Path:
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

    normal = _weights_path(config.normal_net_weights, "normal_net.safetensors")
    implicit = _weights_path(config.implicit_net_weights, "implicit_net.safetensors")
    with _model_lock:
        for kind, path, loader in (("normal", normal, load_normal_net), ("implicit", implicit, load_implicit_net)):
            key = (kind, str(path), device)
            if key not in _nets:
                _nets[key] = loader(path, device)
        return _nets[("normal", str(normal), device)], _nets[("implicit", str(implicit), device)]


def reconstruct_frame(ctx: FrameContext, t: int) -> None:
    """ICON on store position ``t``: refine the body (β fixed to the video's), predict clothed normals, extract the
    clothed mesh; write /fits/refined, /fits/loss, /normals and /meshes."""
    import torch

    from icon.fit import BodyFit
    from icon.reconstruct import reconstruct

    frame = ctx.store.read_frames([t])
    init = ctx.store.read_fit("init", [t])
    if not torch.isfinite(init.betas).all():
        raise RuntimeError("no body fit stored for this frame")
    model = ctx.model()
    normal_net, implicit_net = load_networks(ctx.config, ctx.device)
    dev = torch.device(ctx.device)
    _, focal = ctx.store.read_fit_info([t])  # the perspective camera the pose was fitted with, if any
    fit = BodyFit(
        betas=init.betas.to(dev), global_orient=init.global_orient.to(dev), body_pose=init.body_pose.to(dev),
        transl=init.transl.to(dev), camera=init.camera.to(dev), image_size=ctx.store.image_size,
        losses=torch.zeros(1, device=dev), keypoint_error_px=torch.zeros(1, device=dev),
        focal_px=torch.from_numpy(focal).to(dev) if np.isfinite(focal).all() else None,
    )  # fmt: skip
    cfg = ctx.config.reconstruct.model_copy(
        update={"refine": ctx.config.reconstruct.refine.model_copy(update={"optimise_betas": False})}
    )
    rec = reconstruct(
        model, torch.from_numpy(frame.image).to(dev), torch.from_numpy(frame.mask).to(dev), fit, normal_net,
        implicit_net, cfg, keypoints=torch.from_numpy(frame.keypoints).to(dev),
    )  # fmt: skip
    vertices, faces = rec.meshes[0]
    if len(faces) == 0:
        raise RuntimeError("the implicit surface is empty for this frame")
    rf = rec.fit
    ctx.store.write_fit(
        "refined", [t], betas=rf.betas.cpu(), global_orient=rf.global_orient.cpu(), body_pose=rf.body_pose.cpu(),
        transl=rf.transl.cpu(), camera=rf.camera.cpu(),
    )  # fmt: skip
    losses = rec.losses.cpu().numpy()[:, : ctx.store.refine_iters]
    ctx.store.write_loss([t], losses)
    ctx.store.write_normals(
        [t], rec.normals_front.cpu().numpy().astype(np.float16), rec.normals_back.cpu().numpy().astype(np.float16)
    )
    ctx.store.write_mesh(t, vertices.astype(np.float32), faces.astype(np.int32))


def frame_steps(config: PipelineConfig | None = None) -> list[tuple[str, FrameStep]]:
    """The per-frame steps, in order, run by :func:`process_frame_batch`; a frame is DONE once all succeed.

    The reconstruction stage runs first (when enabled in the config), then the preview.
    """
    steps: list[tuple[str, FrameStep]] = []
    if config is not None and config.reconstruct_enabled:
        steps.append(("reconstruct", reconstruct_frame))
    steps.append(("preview", render_frame_preview))
    return steps


def _tile_path(preview_dir: Path, t: int) -> Path:
    return Path(preview_dir) / "tiles" / f"{t:06d}.png"


@task(name="process-frame-batch", cache_policy=NO_CACHE, retries=1, retry_delay_seconds=1)
def process_frame_batch(
    store_path: str | Path,
    frames: list[int],
    config: PipelineConfig,
    preview_dir: str | Path,
    devices: Sequence[str] = (),
) -> BatchResult:
    """Run :func:`frame_steps` on the unfinished frames of one batch, on one leased device.

    Each frame is marked DONE after its last step, or FAILED with the failing step and error; the others go on.
    Raises :class:`FrameBatchError` at the end if any frame failed (so the task shows as failed, and a retry redoes
    only the frames that are not DONE).
    """
    store = open_run(store_path, "r+")
    result = BatchResult(frames=list(frames))
    todo = store.pending(frames)
    steps = frame_steps(config)
    with _device_scope(devices, config) as device:
        ctx = FrameContext(store, config, device, Path(preview_dir))
        for t in todo:
            secs: dict[str, float] = {}
            name = ""
            try:
                for name, step in steps:
                    t0 = time.perf_counter()
                    step(ctx, t)
                    secs[name] = time.perf_counter() - t0
                store.set_status(t, FrameStatus.DONE)
                result.done.append(t)
            except Exception as e:  # noqa: BLE001 - one bad frame must not stop the batch
                reason = f"{name}: {type(e).__name__}: {e}"
                store.set_status(t, FrameStatus.FAILED, reason)
                result.failed[t] = reason
                _logger().warning("frame %d failed in step %s: %s", t, name, e)
            result.seconds[t] = secs
    if result.failed:
        raise FrameBatchError(f"{len(result.failed)} of {len(todo)} frame(s) failed", result)
    return result


# ------------------------------------------------------------------------------------------------- store & report
def _open_for_resume(
    store_path: Path, source: SourceInfo, config: PipelineConfig, overwrite: bool, replace_mismatched: bool
) -> set[str]:
    """Stages already done in an existing store that matches the source and config; empty for a new store.

    Raises:
        RunStoreMismatchError: the store holds another video or config and ``replace_mismatched`` is off, or the
            path holds something that is not a run store (never replaced automatically).
    """
    if not store_path.exists() or overwrite:
        return set()
    try:
        store = open_run(store_path, "r")
    except SchemaVersionError as e:
        if replace_mismatched:
            return set()
        raise RunStoreMismatchError(f"{e}; pass overwrite=True (--overwrite) to rebuild it") from e
    except NotARunStoreError as e:
        raise RunStoreMismatchError(
            f"{store_path}: exists but is not an avatarize run store ({e}); move it away or choose another output"
        ) from e
    same_source = store.attrs.source_sha256 == source.sha256
    same_config = store.group.attrs.get("config_digest") == config.digest()
    if same_source and same_config:
        return _stages_done(store) & set(_STAGES)
    what = "another source file" if not same_source else "another configuration"
    if replace_mismatched:
        _logger().info("%s: made from %s; rebuilding it", store_path, what)
        return set()
    raise RunStoreMismatchError(
        f"{store_path}: made from {what} (store sha256 {store.attrs.source_sha256[:12]}…, digest "
        f"{store.group.attrs.get('config_digest')}); pass overwrite=True (--overwrite) to rebuild it or choose "
        "another output folder"
    )


def _load_records(preview_dir: Path) -> dict[int, FrameRecord]:
    path = preview_dir / "frames.json"
    if not path.is_file():
        return {}
    try:
        return {r["t"]: FrameRecord(**r) for r in json.loads(path.read_text())}
    except (OSError, ValueError, TypeError, KeyError):
        log.warning("%s: unreadable frame report; starting a new one", path)
        return {}


def _save_records(preview_dir: Path, records: dict[int, FrameRecord]) -> Path:
    preview_dir.mkdir(parents=True, exist_ok=True)
    path = preview_dir / "frames.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([asdict(records[t]) for t in sorted(records)], indent=1))
    os.replace(tmp, path)
    return path


def _sync_records(store: RunStore, records: dict[int, FrameRecord]) -> None:
    """Status and reason of every record from the store (the store is the truth)."""
    status = store.status()
    reasons = store.reasons()
    indices = store.attrs.frame_indices
    for t in range(store.n_frames):
        r = records.get(t) or FrameRecord(t=t, source_index=int(indices[t]), timestamp=float("nan"))
        r.status = FrameStatus(int(status[t])).name.lower()
        r.reason = reasons.get(t, "")
        records[t] = r


def _sheet_pick(positions: np.ndarray) -> np.ndarray:
    """At most ``MAX_SHEET_TILES`` of ``positions``, evenly spaced (all of them when they fit)."""
    if positions.size <= MAX_SHEET_TILES:
        return positions
    return positions[np.linspace(0, positions.size - 1, MAX_SHEET_TILES).round().astype(int)]


def _write_contact_sheet(preview_dir: Path, store: RunStore) -> Path | None:
    from flows.previews import contact_sheet, read_png, write_png

    done = np.flatnonzero(store.status() == FrameStatus.DONE)
    tiles_t = np.array([int(t) for t in done if _tile_path(preview_dir, int(t)).is_file()], dtype=np.int64)
    if not tiles_t.size:
        return None
    sheet = contact_sheet([read_png(_tile_path(preview_dir, int(t))) for t in _sheet_pick(tiles_t)])
    return write_png(preview_dir / "contact_sheet.png", sheet)


# ----------------------------------------------------------------------------------------------------------- flows
@flow(name="process-video")
def process_video(
    video: str | Path,
    out_dir: str | Path,
    config: PipelineConfig | str | dict[str, Any] | None = "default",
    runner: RunnerConfig | None = None,
    batch_size: int = 8,
    overwrite: bool = False,
    replace_mismatched: bool = False,
    lock_timeout_s: float | None = None,
) -> VideoResult:
    """One video -> ``<out_dir>/<stem>.zarr`` (run store) and ``<out_dir>/<stem>.preview/`` (tiles, contact sheet,
    frame report), with progress, table and summary artifacts.

    Re-running on a store made from the same file bytes and config resumes: finished stages and DONE frames are not
    recomputed, FAILED and PENDING frames are retried. A store made from another file or config is an error unless
    ``replace_mismatched`` (then it is rebuilt); ``overwrite`` always rebuilds. One run writes a store at a time (see
    :func:`flows.store.lock_run`): a second run on the same store waits for the first, then resumes (a no-op when the
    first finished every frame). Paths are confined to the config's ``input_root``/``output_root``
    (:mod:`flows.paths`): nothing is written outside ``out_dir`` even through a symlink planted there.

    Args:
        video: the source video.
        out_dir: output folder (created).
        config: a ``PipelineConfig``, preset name, YAML path or dict.
        runner: where frame batches run (threads by default) and which devices they lease.
        batch_size: frames per frame-batch task.
        overwrite: rebuild the store even if it matches.
        replace_mismatched: rebuild a store made from another file or config instead of raising.
        lock_timeout_s: how long to wait for another run writing the same store (None: as long as it takes; 0: fail
            at once with ``RunStoreBusyError``).

    Returns:
        VideoResult; frames that failed are counted in ``n_failed`` ("completed with failures: N"), not raised.

    Raises:
        VideoError: the video is missing or unreadable. RunStoreMismatchError: see above. RunStoreBusyError: another
        run held the store for ``lock_timeout_s``. PathEscapeError: a path outside the input/output roots.
    """
    t_start = time.perf_counter()
    logger = _logger()
    cfg = resolve_config(config)
    runner = runner or RunnerConfig()
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    paths = video_paths(video, out_dir, cfg)
    paths.out.mkdir(parents=True, exist_ok=True)

    def waiting(holder: str) -> None:
        logger.warning("%s: another run is writing this store (%s); waiting for it", paths.store.name, holder)

    with lock_run(paths.store, lock_timeout_s, on_wait=waiting):
        return _process_video_locked(paths, cfg, runner, batch_size, overwrite, replace_mismatched, t_start)


@dataclass(frozen=True)
class VideoPaths:
    """Where one video run reads and writes (absolute, as given: symlinks are checked, not replaced).

    Attributes:
        video: the source video.
        out: the output folder.
        store: ``<out>/<stem>.zarr``.
        preview: ``<out>/<stem>.preview``.
        avatar: ``<out>/<stem>.avatar``.
    """

    video: Path
    out: Path
    store: Path
    preview: Path
    avatar: Path


def run_roots(input_default: str | Path, out_dir: str | Path, config: PipelineConfig) -> Roots:
    """Input/output roots of a run: the config's ``input_root``/``output_root``, else ``input_default``/``out_dir``."""
    return roots_for(input_default, out_dir, config.input_root, config.output_root)


def video_paths(video: str | Path, out_dir: str | Path, config: PipelineConfig) -> VideoPaths:
    """The paths of one video run, each checked against the run's roots (after resolving ``..`` and symlinks).

    Without a configured ``input_root`` the video may be anywhere (it was named explicitly); without an
    ``output_root`` everything must stay inside ``out_dir``.

    Raises:
        PathEscapeError: the video lies outside the input root, ``out_dir`` outside the output root, or an output
            (e.g. a symlink ``<stem>.zarr`` planted in ``out_dir``) resolves outside the output root.
    """
    given = Path(video).absolute()
    roots = run_roots(Path(os.path.realpath(given)).parent, out_dir, config)
    roots.input_path(given, "video")
    out = Path(out_dir).absolute()
    p = VideoPaths(given, out, out / f"{given.stem}.zarr", out / f"{given.stem}.preview", out / f"{given.stem}.avatar")
    for what, path in (("run store", p.store), ("preview folder", p.preview), ("avatar folder", p.avatar)):
        roots.output_path(path, what)
        roots.output_path(path.with_name(path.name + ".lock"), f"{what} lock")
    return p


def _process_video_locked(
    paths: VideoPaths,
    cfg: PipelineConfig,
    runner: RunnerConfig,
    batch_size: int,
    overwrite: bool,
    replace_mismatched: bool,
    t_start: float,
) -> VideoResult:
    """The body of :func:`process_video`, run while holding the store's lock."""
    logger = _logger()
    video, store_path, preview_dir = paths.video, paths.store, paths.preview
    slug = _slug(video.stem)

    _emit("video", video=str(video), stage="probe")
    source = probe_source(video)
    stages = _open_for_resume(store_path, source, cfg, overwrite, replace_mismatched)
    records = _load_records(preview_dir) if stages else {}
    if "frames" not in stages:
        shutil.rmtree(preview_dir, ignore_errors=True)
        _emit("video", video=str(video), stage="extract")
        records = {r.t: r for r in extract_frames(video, store_path, cfg, source)}
    else:
        logger.info("%s: resuming; stages already done: %s", store_path.name, ", ".join(sorted(stages)))
    store = open_run(store_path, "r+")
    n = store.n_frames

    fit_ok = True
    if "fit_init" not in stages:
        _emit("video", video=str(video), stage="fit")
        fit_future_state = fit_initial_body(store_path, cfg, runner.devices, return_state=True)
        if fit_future_state.is_completed():
            fit: FitSummary = fit_future_state.result()
            share = fit.seconds / max(len(fit.indices), 1)
            for t, loss, err in zip(fit.indices, fit.losses, fit.keypoint_error_px, strict=True):
                rec = records.setdefault(t, FrameRecord(t, store.attrs.frame_indices[t], float("nan")))
                rec.fit_loss, rec.keypoint_error_px = loss, err
                rec.seconds["fit"] = share
        else:
            fit_ok = False
            reason = f"body fit failed: {fit_future_state.message}"
            pending = store.pending()
            if pending:
                store.set_status(pending, FrameStatus.FAILED, reason)
            logger.error("%s: %s", video.name, reason)
    _sync_records(store, records)
    _save_records(preview_dir, records)

    pending = store.pending() if fit_ok else []
    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]

    def finished() -> int:
        return int(np.sum(store.status() != FrameStatus.PENDING))

    progress_id = None
    if _in_flow():
        progress_id = _create_progress(100.0 * finished() / n, f"{slug}-progress", f"Frames of {video.name}")
    _emit("frames", video=str(video), finished=finished(), total=n)
    if batches:
        _emit("video", video=str(video), stage="frames")

        def on_batch(batch: list[int], outcome: Any, message: str | None) -> None:
            if isinstance(outcome, BatchResult):
                res = outcome
            elif isinstance(outcome, FrameBatchError):
                res = outcome.result
            else:  # the task died before it could mark its frames (crash, lost worker, bad input)
                res = BatchResult(frames=batch)
                _fail_pending(store, batch, f"batch task failed: {message or outcome}", video.name)
            for t, secs in res.seconds.items():
                rec = records.setdefault(t, FrameRecord(t, store.attrs.frame_indices[t], float("nan")))
                rec.seconds.update(secs)
            done_now = finished()
            _emit("frames", video=str(video), finished=done_now, total=n)
            if progress_id is not None:
                _update_progress(progress_id, 100.0 * done_now / n)

        params = {"store_path": str(store_path), "config": cfg, "preview_dir": str(preview_dir),
                  "devices": list(runner.devices)}  # fmt: skip
        lost = _run_frame_batches(runner, batches, params, on_batch)
        if lost:  # a worker process died (killed, out of memory): its pool is gone; once more in a new one
            retry = [left for b, _ in lost if (left := store.pending(b))]
            logger.warning("%s: %d batch(es) lost with a worker (%s); retrying frames %s in a new pool", video.name,
                           len(lost), lost[0][1], sorted(t for b in retry for t in b))  # fmt: skip
            for batch, err in _run_frame_batches(runner, retry, params, on_batch) if retry else []:
                _fail_pending(store, batch, f"batch task failed twice, its worker process died: {err}", video.name)

    avatar_out = _train_avatar_stage(store, paths, cfg, runner, logger) if cfg.avatar_enabled else {}
    _emit("video", video=str(video), stage="finish")
    store.finalize()
    sheet = _write_contact_sheet(preview_dir, store)
    _sync_records(store, records)
    _save_records(preview_dir, records)
    status = store.status()
    stage_seconds: dict[str, float] = {}
    for r in records.values():
        for k, v in r.seconds.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v
    result = VideoResult(
        video=str(video),
        store=str(store_path),
        preview_dir=str(preview_dir),
        contact_sheet=None if sheet is None else str(sheet),
        n_frames=n,
        n_done=int(np.sum(status == FrameStatus.DONE)),
        n_skipped=int(np.sum(status == FrameStatus.SKIPPED)),
        n_failed=int(np.sum(status == FrameStatus.FAILED)),
        seconds=time.perf_counter() - t_start,
        stage_seconds=stage_seconds,
        **avatar_out,
    )
    if _in_flow():
        from flows.artifacts import publish_video_artifacts

        _report_safely("video artifacts", publish_video_artifacts, slug, result, [records[t] for t in sorted(records)],
                       store.reasons())  # fmt: skip
    (logger.warning if result.n_failed else logger.info)("%s: %s", video.name, result.message)
    return result


def _fail_pending(store: RunStore, batch: Sequence[int], reason: str, name: str) -> None:
    """Mark the frames of ``batch`` that are not finished FAILED with ``reason`` (the others keep their status)."""
    left = store.pending(batch)
    if left:
        store.set_status(left, FrameStatus.FAILED, reason)
    _logger().error("%s: frames %s: %s", name, left, reason)


def _run_frame_batches(
    runner: RunnerConfig,
    batches: list[list[int]],
    parameters: dict[str, Any],
    on_batch: Callable[[list[int], Any, str | None], None],
) -> list[tuple[list[int], str]]:
    """Run one :func:`process_frame_batch` per batch on a new task runner; ``on_batch(batch, outcome, message)`` as
    each ends (outcome: its ``BatchResult``, ``FrameBatchError`` or other error).

    Returns:
        The batches whose future itself raised, with the error: their worker process died (e.g. ``BrokenProcessPool``
        after a SIGKILL or the OOM killer), which also takes down every batch still queued on that pool.
    """
    lost: list[tuple[list[int], str]] = []
    with build_task_runner(runner) as task_runner:
        futures = {task_runner.submit(process_frame_batch, parameters={**parameters, "frames": b}): b for b in batches}
        for future in as_completed(list(futures)):
            batch = futures[future]
            try:
                future.wait()
                outcome = future.result(raise_on_failure=False)
            except Exception as e:  # noqa: BLE001 - a dead worker; reported to the caller, never ends the flow
                lost.append((batch, f"{type(e).__name__}: {e}"))
                continue
            on_batch(batch, outcome, future.state.message)
    return lost


def _train_avatar_stage(
    store: RunStore, paths: VideoPaths, cfg: PipelineConfig, runner: RunnerConfig, logger: Any
) -> dict[str, str | None]:
    """Train the avatar from the reconstructed frames (a sub-flow) and re-pose it as a preview; never raises."""
    store_path = paths.store
    n_meshes = len(store.mesh_frames())
    if not cfg.reconstruct_enabled or n_meshes < cfg.avatar_min_frames:
        logger.info("%s: no avatar: %d reconstructed frame(s), %d needed", store_path.name, n_meshes,
                    cfg.avatar_min_frames)  # fmt: skip
        return {}
    from flows.avatar_flow import train_avatar_flow

    _emit("video", video=str(store.attrs.source_path), stage="avatar")
    devices = list(runner.devices)
    with _device_scope(devices, cfg) as device:
        try:
            res = train_avatar_flow(store_path, cfg.avatar, motion_path=cfg.avatar_motion, device=device,
                                    min_frames=cfg.avatar_min_frames, body_model_path=cfg.body_model,
                                    out_dir=paths.avatar)  # fmt: skip
        except Exception as e:  # noqa: BLE001 - the frames are done; report the avatar failure, keep them
            logger.error("%s: avatar training failed: %s", store_path.name, e)
            return {"avatar_error": f"{type(e).__name__}: {e}"}
    out: dict[str, str | None] = {"avatar_dir": str(res.avatar_dir)}
    if res.preview is not None:
        out["avatar_video"] = str(res.preview.video_path)
        out["avatar_gltf"] = str(res.preview.gltf_path)
    return out


def _report_safely(what: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Call an artifact/reporting function; an unreachable Prefect API (after the client's own retries) costs the
    report, never the frames: log it and go on (returns None)."""
    try:
        return fn(*args, **kwargs)
    except Exception as e:  # noqa: BLE001 - reports are optional, the store is the record
        _logger().warning("could not publish the %s (Prefect API unreachable?): %s: %s", what, type(e).__name__, e)
        return None


def _create_progress(progress: float, key: str, description: str) -> Any:
    from prefect.artifacts import create_progress_artifact

    return _report_safely("progress artifact", create_progress_artifact, progress=progress, key=key,
                          description=description)  # fmt: skip


def _update_progress(artifact_id: Any, progress: float) -> None:
    from prefect.artifacts import update_progress_artifact

    _report_safely("progress update", update_progress_artifact, artifact_id=artifact_id, progress=progress)


@flow(name="process-directory")
def process_directory(
    video_dir: str | Path,
    out_dir: str | Path,
    config: PipelineConfig | str | dict[str, Any] | None = "default",
    runner: RunnerConfig | None = None,
    batch_size: int = 8,
    settle_seconds: float = 5.0,
    extensions: list[str] | None = None,
    retry_failed: bool = False,
) -> DirectoryResult:
    """Process every new or changed video under ``video_dir`` once (see :class:`flows.ledger.Ledger`).

    Videos still being written (size or mtime changing over ``settle_seconds``) wait for the next scan. One video
    that cannot be processed is reported in the ledger and the result and never stops the others. Outputs mirror the
    input folders: ``<video_dir>/a/b.mp4`` -> ``<out_dir>/a/b.zarr``. A store made from an older version of a video
    (or another config) is rebuilt.

    Args:
        video_dir: folder scanned recursively (symlinks followed, loops ignored).
        out_dir: output root; holds the ledger ``avatarize-ledger.json``.
        config: a ``PipelineConfig``, preset name, YAML path or dict.
        runner: task runner and devices for the frame batches of each video.
        batch_size: frames per frame-batch task.
        settle_seconds: a file must keep its size and mtime this long to be processed.
        extensions: video extensions to scan for (default: mp4, mov, m4v, mkv, webm, avi).
        retry_failed: also reprocess videos whose last run failed or had failed frames.

    Videos that resolve outside the input root (default ``video_dir``; e.g. through a symlink to another folder) are
    refused and reported as failed; a video whose store another run is writing is left for the next scan (``busy``).
    """
    logger = _logger()
    cfg = resolve_config(config)
    digest = cfg.digest()
    runner = runner or RunnerConfig()
    root = Path(video_dir).absolute()
    out = Path(out_dir).absolute()
    roots = run_roots(root, out, cfg)
    # The videos' runs keep to the scan's roots (roots are not part of the digest, so stores and ledger still match).
    video_cfg = cfg.model_copy(update={"input_root": str(roots.input), "output_root": str(roots.output)})
    out.mkdir(parents=True, exist_ok=True)
    ledger = Ledger.in_dir(out)
    settled, growing = settled_videos(root, settle_seconds, extensions or VIDEO_EXTENSIONS)
    result = DirectoryResult(growing=[str(p) for p in growing])
    todo = []
    for v in settled:
        try:
            roots.input_path(v.path, "video")
        except PathEscapeError as e:
            result.failed[str(v.path)] = f"{type(e).__name__}: {e}"
            ledger.record(v, digest, "failed", None, str(e))
            logger.error("%s: refused: %s", v.path, e)
            continue
        if ledger.needs_processing(v, digest, retry_failed):
            todo.append(v)
        else:
            result.unchanged.append(str(v.path))
    logger.info(
        "%s: %d video(s) to process, %d unchanged, %d still growing",
        root,
        len(todo),
        len(result.unchanged),
        len(growing),
    )
    with _shared_dask_cluster(runner, bool(todo)) as video_runner:
        for v in todo:
            try:
                rel = v.path.parent.relative_to(root)
            except ValueError:
                rel = Path()
            state = process_video(
                v.path,
                out / rel,
                video_cfg,
                video_runner,
                batch_size,
                replace_mismatched=True,
                lock_timeout_s=0,
                return_state=True,
            )
            if state.is_completed():
                res: VideoResult = state.result()
                result.processed.append(res)
                ledger.record(v, digest, res.status, res.store, res.message)
                continue
            err = state.result(raise_on_failure=False)
            if isinstance(err, RunStoreBusyError):  # not recorded: the next scan picks it up
                result.busy.append(str(v.path))
                logger.warning("%s: left for the next scan: %s", v.path, err)
            else:
                message = f"{type(err).__name__}: {err}" if isinstance(err, BaseException) else str(state.message)
                result.failed[str(v.path)] = message
                ledger.record(v, digest, "failed", None, message)
                logger.error("%s: skipped: %s", v.path, message)
    if _in_flow():
        from flows.artifacts import publish_directory_artifact

        _report_safely("scan artifact", publish_directory_artifact, _slug(root.name or "videos"), root, out, result)
    logger.info("%s: %s", root, result.message)
    return result


@contextlib.contextmanager
def _shared_dask_cluster(runner: RunnerConfig, needed: bool) -> Iterator[RunnerConfig]:
    """For a local Dask runner, start one LocalCluster for all videos of a scan instead of one per video."""
    if runner.kind != "dask" or runner.address or not needed:
        yield runner
        return
    from distributed import LocalCluster

    with LocalCluster(
        n_workers=runner.n_workers, threads_per_worker=1, processes=True, dashboard_address=None
    ) as cluster:
        yield runner.model_copy(update={"address": cluster.scheduler_address})


# -------------------------------------------------------------------------------------------- plain-file variant
def extract_to_files(video: str | Path, out_dir: str | Path, config: PipelineConfig | str | None = "default") -> Path:
    """Frames and body fit of a short clip as plain files, without a store or Prefect.

    Writes ``<out_dir>/<stem>/``: ``crops/NNNNNN.png``, ``masks/NNNNNN.png``, ``keypoints.npz`` (keypoints in crop
    pixels, crops, source indices, timestamps, valid, reasons), ``fit.npz`` (BodyFit fields for the valid frames,
    with their positions) and ``contact_sheet.png``.

    Returns:
        The output folder.
    """
    import torch

    from flows.previews import contact_sheet, preview_tile, write_png
    from geometry.render import render_mesh
    from icon.fit import fit_body

    cfg = resolve_config(config)
    video = Path(video)
    folder = Path(out_dir) / video.stem
    folder.mkdir(parents=True, exist_ok=True)
    det = detect_frames(video, cfg)
    crops = crop_boxes(det, cfg)
    n, s = len(det.indices), cfg.person.crop_size
    images = np.zeros((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), bool)
    keypoints = np.zeros((n, 33, 3), np.float32)
    for rows, cropped, _ in iter_crops(video, cfg, det, crops):
        images[rows], masks[rows], keypoints[rows] = cropped.images, cropped.masks, cropped.keypoints
        for i, t in enumerate(rows):
            write_png(folder / "crops" / f"{t:06d}.png", cropped.images[i])
            write_png(folder / "masks" / f"{t:06d}.png", cropped.masks[i])
    np.savez_compressed(
        folder / "keypoints.npz",
        keypoints=keypoints,
        crops=crops,
        source_indices=det.indices,
        timestamps=det.timestamps,
        valid=det.valid,
        reasons=np.array([r or "" for r in det.reasons]),
    )
    valid = np.flatnonzero(det.valid)
    tiles = []
    if valid.size:
        device = resolve_device(cfg.device)
        model = body_model(cfg.body_model, device)
        fit = fit_body(model, torch.from_numpy(keypoints[valid]), torch.from_numpy(masks[valid]), s, cfg.fit)
        np.savez_compressed(
            folder / "fit.npz",
            positions=valid,
            **{
                k: getattr(fit, k).cpu().numpy()
                for k in ("betas", "global_orient", "body_pose", "transl", "camera", "losses", "keypoint_error_px")
            },
            image_size=s,
        )
        with torch.no_grad():
            body = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
            render = render_mesh(body.vertices, model.faces, fit.cameras())
        pick = _sheet_pick(valid)
        row_of = {int(t): i for i, t in enumerate(valid)}
        for t in pick:
            i = row_of[int(t)]
            normals, mask = render.normal_front[i].cpu().numpy(), render.mask[i].cpu().numpy()
            tiles.append(preview_tile(images[t], keypoints[t], normals, mask, size=PREVIEW_TILE_PX, label=str(int(t))))
    if tiles:
        write_png(folder / "contact_sheet.png", contact_sheet(tiles))
    return folder
