"""The per-frame work: the context a step gets, the steps (reconstruction, preview tile) and the batch task that runs
them over a batch of frames on one leased device, isolating failures per frame."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from prefect import task
from prefect.cache_policies import NO_CACHE

from flows.config import PipelineConfig
from flows.resources import body_model, device_scope, load_networks, run_logger
from flows.results import BatchResult, FrameBatchError
from flows.store import FrameStatus, RunStore, open_run

if TYPE_CHECKING:
    from body import BodyModel

PREVIEW_TILE_PX = 192
"""Side of one contact-sheet tile."""


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
    write_png(tile_path(ctx.preview_dir, t), tile)


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
    fit = BodyFit.from_params(init.body.to(dev), init.camera.to(dev), ctx.store.image_size)
    _, focal = ctx.store.read_fit_info([t])  # the perspective camera the pose was fitted with, if any
    fit.focal_px = torch.from_numpy(focal).to(dev) if np.isfinite(focal).all() else None
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
    ctx.store.write_fit("refined", [t], **rf.body.to("cpu").as_dict(), camera=rf.camera.cpu())
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


def tile_path(preview_dir: Path, t: int) -> Path:
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
    with device_scope(devices, config) as device:
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
                run_logger().warning("frame %d failed in step %s: %s", t, name, e)
            result.seconds[t] = secs
    if result.failed:
        raise FrameBatchError(f"{len(result.failed)} of {len(todo)} frame(s) failed", result)
    return result

