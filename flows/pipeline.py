"""The video pipeline as Prefect flows: ``process_video`` (one video -> one run store ``<out>/<stem>.zarr`` plus
previews) and ``process_directory`` (every new or changed video of a folder, once, for cron deployments).

Stages of ``process_video``: probe -> extract (decode, detect the person, crop, write /frames) -> one batched body fit
over all frames with a person (shared shape, /fits/init) -> per-frame steps mapped over frame batches (the
reconstruction and the fitted-body preview, :mod:`flows.frame_batch`) -> avatar -> contact sheet -> artifacts.
Resume: a finished stage is recorded in the store's root attributes and a finished frame in /status, so re-running
on the same store skips both (:mod:`flows.resume`). This module only sequences the stages; the tasks live in
:mod:`flows.stages` and :mod:`flows.frame_batch`, shared caches in :mod:`flows.resources`, result types in
:mod:`flows.results`. Heavy imports (torch, MediaPipe, Warp) happen inside the functions that need them.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from prefect import flow
from prefect.futures import as_completed

from flows.config import PipelineConfig
from flows.detection import crop_boxes, detect_frames
from flows.extract_files import extract_to_files
from flows.frame_batch import (
    PREVIEW_TILE_PX,
    FrameContext,
    frame_steps,
    process_frame_batch,
    reconstruct_frame,
    render_frame_preview,
)
from flows.ledger import VIDEO_EXTENSIONS, Ledger, settled_videos
from flows.paths import PathEscapeError, Roots, roots_for
from flows.report import write_video_report
from flows.resources import (
    add_progress_listener,
    artifact_slug,
    body_model,
    device_scope,
    emit_progress,
    in_flow,
    load_networks,
    remove_progress_listener,
    resolve_config,
    run_logger,
)
from flows.results import (
    BatchResult,
    DirectoryResult,
    FrameBatchError,
    FrameRecord,
    RunStoreMismatchError,
    SourceInfo,
    VideoResult,
)
from flows.resume import load_records, open_for_resume, save_records, sync_records, write_contact_sheet
from flows.runners import RunnerConfig, build_task_runner
from flows.stages import FitSummary, extract_frames, fit_initial_body, probe_source
from flows.store import FrameStatus, RunStore, RunStoreBusyError, lock_run, open_run

__all__ = [
    "PREVIEW_TILE_PX",
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
    "body_model",
    "crop_boxes",
    "detect_frames",
    "extract_frames",
    "extract_to_files",
    "fit_initial_body",
    "frame_steps",
    "load_networks",
    "probe_source",
    "process_directory",
    "process_frame_batch",
    "process_video",
    "reconstruct_frame",
    "remove_progress_listener",
    "render_frame_preview",
    "resolve_config",
    "video_paths",
]


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
    logger = run_logger()
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
    logger = run_logger()
    video, store_path, preview_dir = paths.video, paths.store, paths.preview
    slug = artifact_slug(video.stem)

    stages, records = _extract_stage(paths, cfg, overwrite, replace_mismatched)
    store = open_run(store_path, "r+")
    fit_ok = "fit_init" in stages or _fit_stage(store, paths, cfg, runner, records)
    sync_records(store, records)
    save_records(preview_dir, records)
    pending = store.pending() if fit_ok else []
    _frames_stage(store, paths, cfg, runner, pending, batch_size, records, slug)

    avatar_out = _train_avatar_stage(store, paths, cfg, runner, logger) if cfg.avatar_enabled else {}
    emit_progress("video", video=str(video), stage="finish")
    store.finalize()
    sheet = write_contact_sheet(preview_dir, store)
    sync_records(store, records)
    save_records(preview_dir, records)
    result = _video_result(store, paths, records, sheet, time.perf_counter() - t_start, avatar_out)
    write_video_report(result)  # OUT/<stem>.report/index.html: a static page of the run (flows/report.py)
    if in_flow():
        from flows.artifacts import publish_video_artifacts

        _report_safely("video artifacts", publish_video_artifacts, slug, result, [records[t] for t in sorted(records)],
                       store.reasons())  # fmt: skip
    (logger.warning if result.n_failed else logger.info)("%s: %s", video.name, result.message)
    return result


def _extract_stage(
    paths: VideoPaths, cfg: PipelineConfig, overwrite: bool, replace_mismatched: bool
) -> tuple[set[str], dict[int, FrameRecord]]:
    """Probe the source; resume a matching store or extract the frames into a new one. Returns the stages already
    done before this run and the frame records."""
    video, store_path, preview_dir = paths.video, paths.store, paths.preview
    emit_progress("video", video=str(video), stage="probe")
    source = probe_source(video)
    stages = open_for_resume(store_path, source, cfg, overwrite, replace_mismatched)
    records = load_records(preview_dir) if stages else {}
    if "frames" not in stages:
        shutil.rmtree(preview_dir, ignore_errors=True)
        emit_progress("video", video=str(video), stage="extract")
        records = {r.t: r for r in extract_frames(video, store_path, cfg, source)}
    else:
        run_logger().info("%s: resuming; stages already done: %s", store_path.name, ", ".join(sorted(stages)))
    return stages, records


def _fit_stage(
    store: RunStore, paths: VideoPaths, cfg: PipelineConfig, runner: RunnerConfig, records: dict[int, FrameRecord]
) -> bool:
    """Run the initial body fit; record its numbers per frame. On failure mark every pending frame FAILED and return
    False (the per-frame stage is then skipped)."""
    emit_progress("video", video=str(paths.video), stage="fit")
    state = fit_initial_body(paths.store, cfg, runner.devices, return_state=True)
    if state.is_completed():
        fit: FitSummary = state.result()
        share = fit.seconds / max(len(fit.indices), 1)
        for t, loss, err in zip(fit.indices, fit.losses, fit.keypoint_error_px, strict=True):
            rec = records.setdefault(t, FrameRecord(t, store.attrs.frame_indices[t], float("nan")))
            rec.fit_loss, rec.keypoint_error_px = loss, err
            rec.seconds["fit"] = share
        return True
    reason = f"body fit failed: {state.message}"
    pending = store.pending()
    if pending:
        store.set_status(pending, FrameStatus.FAILED, reason)
    run_logger().error("%s: %s", paths.video.name, reason)
    return False


def _frames_stage(
    store: RunStore,
    paths: VideoPaths,
    cfg: PipelineConfig,
    runner: RunnerConfig,
    pending: list[int],
    batch_size: int,
    records: dict[int, FrameRecord],
    slug: str,
) -> None:
    """Map :func:`process_frame_batch` over the ``pending`` frames in batches, with progress; batches lost with a dead
    worker process are retried once in a new pool, then their frames are marked FAILED."""
    video, n = paths.video, store.n_frames
    batches = [pending[i : i + batch_size] for i in range(0, len(pending), batch_size)]

    def finished() -> int:
        return int(np.sum(store.status() != FrameStatus.PENDING))

    progress_id = None
    if in_flow():
        progress_id = _create_progress(100.0 * finished() / n, f"{slug}-progress", f"Frames of {video.name}")
    emit_progress("frames", video=str(video), finished=finished(), total=n)
    if not batches:
        return
    emit_progress("video", video=str(video), stage="frames")

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
        emit_progress("frames", video=str(video), finished=done_now, total=n)
        if progress_id is not None:
            _update_progress(progress_id, 100.0 * done_now / n)

    params = {"store_path": str(paths.store), "config": cfg, "preview_dir": str(paths.preview),
              "devices": list(runner.devices)}  # fmt: skip
    lost = _run_frame_batches(runner, batches, params, on_batch)
    if lost:  # a worker process died (killed, out of memory): its pool is gone; once more in a new one
        retry = [left for b, _ in lost if (left := store.pending(b))]
        run_logger().warning("%s: %d batch(es) lost with a worker (%s); retrying frames %s in a new pool", video.name,
                             len(lost), lost[0][1], sorted(t for b in retry for t in b))  # fmt: skip
        for batch, err in _run_frame_batches(runner, retry, params, on_batch) if retry else []:
            _fail_pending(store, batch, f"batch task failed twice, its worker process died: {err}", video.name)


def _video_result(
    store: RunStore,
    paths: VideoPaths,
    records: dict[int, FrameRecord],
    sheet: Path | None,
    seconds: float,
    avatar_out: dict[str, str | None],
) -> VideoResult:
    """The run's counts from the store's /status, stage seconds summed over the frame records."""
    status = store.status()
    stage_seconds: dict[str, float] = {}
    for r in records.values():
        for k, v in r.seconds.items():
            stage_seconds[k] = stage_seconds.get(k, 0.0) + v
    return VideoResult(
        video=str(paths.video),
        store=str(paths.store),
        preview_dir=str(paths.preview),
        contact_sheet=None if sheet is None else str(sheet),
        n_frames=store.n_frames,
        n_done=int(np.sum(status == FrameStatus.DONE)),
        n_skipped=int(np.sum(status == FrameStatus.SKIPPED)),
        n_failed=int(np.sum(status == FrameStatus.FAILED)),
        seconds=seconds,
        stage_seconds=stage_seconds,
        **avatar_out,
    )


def _fail_pending(store: RunStore, batch: Sequence[int], reason: str, name: str) -> None:
    """Mark the frames of ``batch`` that are not finished FAILED with ``reason`` (the others keep their status)."""
    left = store.pending(batch)
    if left:
        store.set_status(left, FrameStatus.FAILED, reason)
    run_logger().error("%s: frames %s: %s", name, left, reason)


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

    emit_progress("video", video=str(store.attrs.source_path), stage="avatar")
    devices = list(runner.devices)
    with device_scope(devices, cfg) as device:
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
        run_logger().warning("could not publish the %s (Prefect API unreachable?): %s: %s", what, type(e).__name__, e)
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
    logger = run_logger()
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
    if in_flow():
        from flows.artifacts import publish_directory_artifact

        slug = artifact_slug(root.name or "videos")
        _report_safely("scan artifact", publish_directory_artifact, slug, root, out, result)
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
