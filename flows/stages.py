"""The whole-video tasks before the per-frame work: probe the source, extract frames (detect, crop, write /frames),
and the one batched body fit over all frames with a person (/fits/init)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.config import PipelineConfig
from flows.detection import crop_boxes, detect_frames, iter_crops
from flows.resources import body_model, body_model_id, code_version, device_scope, emit_progress, run_logger
from flows.results import FrameRecord, SourceInfo
from flows.store import FrameStatus, RunAttrs, create_run, open_run
from flows.video import probe_video


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
        body_model_id=body_model_id(config.body_model),
        config=config.model_dump(mode="json"),
        code_version=code_version(),
    )
    n = len(det.indices)
    store = create_run(
        store_path, n_frames=n, image_size=config.person.crop_size, attrs=attrs, overwrite=True,
        refine_iters=max(config.reconstruct.refine.iterations, 1),
    )
    store.start_pipeline(config.digest())
    crop_secs = np.zeros(n)
    for rows, cropped, secs in iter_crops(video, config, det, crops):
        store.write_frames(rows, cropped.images, cropped.masks, cropped.crops, cropped.keypoints, det.timestamps[rows])
        if det.keypoints3d is not None:  # metric, hip-centred: the crop does not change them
            store.write_keypoints3d(rows, det.keypoints3d[rows])
        crop_secs[rows] = secs
    skipped = np.flatnonzero(~det.valid)
    if skipped.size:
        store.set_status(skipped, FrameStatus.SKIPPED, [det.reasons[t] or "no person" for t in skipped])
    store.mark_stage_done("frames")
    run_logger().info("%s: %d frames extracted, %d without a usable person", Path(video).name, n, skipped.size)
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
        with device_scope(devices, config) as device:
            model = body_model(config.body_model, device)
            fit = fit_body(
                model,
                torch.from_numpy(fr.keypoints),
                torch.from_numpy(fr.mask),
                store.image_size,
                config.fit,
                keypoints3d=torch.from_numpy(kp3) if np.isfinite(kp3).any() else None,
                progress=lambda stage, step, total: emit_progress("steps", label=f"fit {stage}", completed=step,
                                                                  total=total),
            )  # fmt: skip
        store.write_fit("init", idx, **fit.body.to("cpu").as_dict(), camera=fit.camera.cpu())
        store.write_fit_info(idx, fit.confidence.cpu(), None if fit.focal_px is None else fit.focal_px.cpu())
        losses = [float(x) for x in fit.losses.cpu()]
        errors = [float(x) for x in fit.keypoint_error_px.cpu()]
    else:
        losses, errors = [], []
    store.mark_stage_done("fit_init")
    seconds = time.perf_counter() - t0
    if errors:
        run_logger().info("%s: body fit of %d frames in %.0f s, mean keypoint error %.1f px", Path(store_path).name,
                          len(errors), seconds, float(np.mean(errors)))  # fmt: skip
    return FitSummary([int(t) for t in idx], losses, errors, seconds)

