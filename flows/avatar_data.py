"""Avatar training data read from a run store: the DONE frames' meshes, fits, crop cameras, times and per-frame quality
weights (``load_training_data``), and each mesh's visibility from its camera."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch

    from body.params import BodyParams
    from flows.store import RunStore

log = logging.getLogger(__name__)

__all__ = ["QUALITY_FLOOR", "StoreTrainingData", "frame_quality_weights", "frame_visibility", "load_training_data"]

QUALITY_FLOOR = 0.2
"""Lowest per-frame quality weight given to a frame with a high refinement loss."""


@dataclass
class StoreTrainingData:
    """What avatar training reads from a run store (CPU tensors).

    Attributes:
        frames: (T,) store positions used (DONE, with a mesh and a finite fit).
        meshes: T meshes (vertices (V_t, 3) float32 metres in the crop camera's space, faces (F_t, 3) int64).
        fits: body parameters of those frames (refined where finite, else the initial fit).
        fit_stage: per frame, "refined" or "init".
        cameras: (T, 3) orthographic crop cameras (scale px/m, cx, cy) of the fits.
        image_size: side S (px) of the crops the cameras project to.
        frame_weights: (T,) per-frame quality in [QUALITY_FLOOR, 1] (see :func:`frame_quality_weights`).
        final_losses: (T,) last finite refinement loss per frame (NaN where none was recorded).
        times: (T,) frame times in seconds (the stored timestamps, else source frame index / fps), for the temporal
            smoothing of the poses the avatar holds.
    """

    frames: list[int]
    meshes: list[tuple[torch.Tensor, torch.Tensor]]
    fits: BodyParams
    fit_stage: list[str]
    cameras: torch.Tensor
    image_size: int
    frame_weights: torch.Tensor
    final_losses: np.ndarray
    times: np.ndarray


def frame_quality_weights(losses: np.ndarray, floor: float = QUALITY_FLOOR) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame quality weights from the refinement losses: ``w = clip(exp(-(l / median(l) - 1)), floor, 1)``.

    ``l`` is each frame's last recorded (finite) loss, so a frame at or below the median loss weighs 1 and one at
    twice the median weighs e^-1 ~ 0.37. Frames without a recorded loss get the median weight of the others (1 if no
    frame has one); a median of 0 (perfect fits) gives every finite frame weight 1.

    Args:
        losses: (T, iters) float, NaN where an iteration did not run.
        floor: lowest weight, in [0, 1].

    Returns:
        weights (T,) float32 in [floor, 1] and the last finite losses (T,) float64 (NaN where none).
    """
    losses = np.asarray(losses, dtype=np.float64)
    if losses.ndim != 2:
        raise ValueError(f"losses must be (T, iters), got shape {losses.shape}")
    finite = np.isfinite(losses)
    last = np.full(losses.shape[0], np.nan)
    for i, row in enumerate(losses):
        idx = np.flatnonzero(finite[i])
        if idx.size:
            last[i] = row[idx[-1]]
    has = np.isfinite(last)
    weights = np.ones(losses.shape[0])
    if has.any():
        med = float(np.median(last[has]))
        if med > 0:
            weights[has] = np.clip(np.exp(-(last[has] / med - 1.0)), floor, 1.0)
        weights[~has] = float(np.median(weights[has]))
    return weights.astype(np.float32), last


def load_training_data(store: RunStore, min_frames: int = 2) -> StoreTrainingData:
    """Read the DONE frames that have a mesh, their fits (refined, falling back to init where refined is NaN),
    quality weights from the refinement losses and crop cameras.

    Raises:
        ValueError: fewer than ``min_frames`` usable frames (the message says how many the store has and why).
    """
    import torch

    from body.params import BodyParams
    from flows.store import FrameStatus

    status = store.status()
    with_mesh = store.mesh_frames()
    candidates = [t for t in with_mesh if status[t] == FrameStatus.DONE]
    if len(candidates) < min_frames:
        raise ValueError(
            f"{store.path}: an avatar needs at least {min_frames} reconstructed frames, but only {len(candidates)} "
            f"are done with a mesh ({len(with_mesh)} meshes, {int((status == FrameStatus.DONE).sum())} done frames of "
            f"{store.n_frames}); run the pipeline with reconstruction enabled on more frames"
        )
    refined = store.read_fit("refined", candidates)
    init = store.read_fit("init", candidates)
    names = ("betas", "global_orient", "body_pose", "transl", "camera")

    def finite_rows(fit) -> torch.Tensor:
        return torch.stack([torch.isfinite(getattr(fit, n)).all(-1) for n in names]).all(0)

    ok_refined, ok_init = finite_rows(refined), finite_rows(init)
    rows, stages, frames = [], [], []
    for i, t in enumerate(candidates):
        if ok_refined[i]:
            rows.append((refined, i))
            stages.append("refined")
        elif ok_init[i]:
            rows.append((init, i))
            stages.append("init")
        else:
            log.warning("%s: frame %d has a mesh but no finite body fit; left out of avatar training", store.path, t)
            continue
        frames.append(t)
    if len(frames) < min_frames:
        raise ValueError(
            f"{store.path}: an avatar needs at least {min_frames} frames with a mesh and a body fit, found "
            f"{len(frames)}"
        )
    if (n_init := stages.count("init")) > 0:
        log.info("%s: %d of %d frames have no refined fit; using their initial fit", store.path, n_init, len(frames))
    body = BodyParams.cat([f.body[i] for f, i in rows])
    cameras = torch.stack([f.camera[i] for f, i in rows])
    keep = [candidates.index(t) for t in frames]
    weights, last = frame_quality_weights(store.read_loss(candidates)[keep])
    times = store.read_frames(frames).timestamp.astype(np.float64)
    if not np.isfinite(times).all():  # no timestamps written: the sampled source frame over the frame rate
        fps = float(store.attrs.fps) if store.attrs.fps else 1.0
        times = np.asarray([store.attrs.frame_indices[t] for t in frames], np.float64) / fps
    meshes = []
    for t in frames:
        m = store.read_mesh(t)
        meshes.append((torch.as_tensor(np.asarray(m.vertices), dtype=torch.float32),
                       torch.as_tensor(np.asarray(m.faces), dtype=torch.long)))  # fmt: skip
    return StoreTrainingData(
        frames=frames,
        meshes=meshes,
        fits=body,
        fit_stage=stages,
        cameras=cameras,
        image_size=store.image_size,
        frame_weights=torch.from_numpy(weights),
        final_losses=last,
        times=times,
    )


def frame_visibility(data: StoreTrainingData) -> list[torch.Tensor]:
    """Per-vertex visibility (V_t,) of every frame's mesh from its crop camera."""
    from avatar.train import vertex_visibility
    from icon.fit import camera_from_params

    return [
        vertex_visibility(v, f, camera_from_params(cam[None], data.image_size)).cpu()
        for (v, f), cam in zip(data.meshes, data.cameras, strict=True)
    ]
