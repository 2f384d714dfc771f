"""Per-frame ICON reconstruction in one call: SMPL feedback loop (refine) → clothed normals → implicit surface.

Pure compute: networks are passed in (load them with `icon.normal_net.load_normal_net` /
`icon.implicit.load_implicit_net`); tensors and meshes in, a `FrameReconstruction` out.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from icon.fit import BodyFit, camera_from_params
from icon.implicit import reconstruct_surface
from icon.normal_net import NormalNet, predict_normals
from icon.refine import RefineConfig, refine_body

__all__ = ["FrameReconstruction", "ReconstructConfig", "reconstruct"]


class ReconstructConfig(BaseModel):
    """Settings of the per-frame reconstruction after the initial body fit."""

    model_config = ConfigDict(extra="forbid")

    refine: RefineConfig = Field(default_factory=RefineConfig, description="SMPL feedback loop.")
    resolution: int = Field(256, ge=16, le=1024, description="Effective marching-cubes grid (samples per side).")
    coarse_resolution: int = Field(32, ge=8, le=256, description="First level of the coarse-to-fine grid.")
    replace_hands_feet: bool = Field(
        True, description="Replace reconstructed hands and feet by the body's (thin parts fail at this resolution)."
    )
    margin: float = Field(0.2, ge=0.0, le=1.0, description="Metres around the body's box searched for clothing.")


@dataclass
class FrameReconstruction:
    """Result of `reconstruct` for T frames.

    Attributes:
        meshes: T clothed meshes (vertices (V, 3) float32 in camera space, faces (F, 3) int64); empty arrays where the
            implicit surface found nothing.
        fit: refined `BodyFit`.
        losses: (T, iterations) refinement loss per step (NaN after an early stop).
        normals_front: (T, S, S, 3) final clothed front normals.
        normals_back: (T, S, S, 3) final clothed back normals.
        body_vertices: (T, V, 3) the refined body in camera space.
        seconds: wall seconds per stage ("refine", "implicit").
    """

    meshes: list[tuple[np.ndarray, np.ndarray]]
    fit: BodyFit
    losses: torch.Tensor
    normals_front: torch.Tensor
    normals_back: torch.Tensor
    body_vertices: torch.Tensor
    seconds: dict[str, float] = field(default_factory=dict)


def reconstruct(
    model: torch.nn.Module,
    images: torch.Tensor | np.ndarray,
    masks: torch.Tensor | np.ndarray,
    fit: BodyFit,
    normal_net: NormalNet,
    implicit_net: torch.nn.Module,
    config: ReconstructConfig | None = None,
    keypoints: torch.Tensor | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> FrameReconstruction:
    """Refine the body with the clothed normals, then extract each frame's clothed surface.

    Args:
        model: `body.BodyModel` (its device is used for the body and refinement).
        images: (T, S, S, 3) uint8 person crops.
        masks: (T, S, S) bool person masks.
        fit: initial `BodyFit` of these T frames (camera for crops of side `fit.image_size`).
        normal_net: clothed-normal predictor.
        implicit_net: occupancy network (`icon.implicit.ImplicitNet`).
        config: `ReconstructConfig`.
        keypoints: optional (T, 33, 3) crop-pixel keypoints anchoring the pose during refinement.
        progress: optional callback (stage, step, total).

    Returns:
        `FrameReconstruction`.
    """
    cfg = config or ReconstructConfig()
    images_t = torch.as_tensor(np.asarray(images) if not isinstance(images, torch.Tensor) else images)
    masks_t = torch.as_tensor(np.asarray(masks) if not isinstance(masks, torch.Tensor) else masks).bool()
    if images_t.ndim != 4 or images_t.shape[-1] != 3:
        raise ValueError(f"images must be (T, S, S, 3), got {tuple(images_t.shape)}")
    if masks_t.shape != images_t.shape[:3]:
        raise ValueError(f"masks must be (T, S, S) = {tuple(images_t.shape[:3])}, got {tuple(masks_t.shape)}")
    T, S = images_t.shape[0], images_t.shape[1]
    if fit.body_pose.shape[0] != T:
        raise ValueError(f"fit has {fit.body_pose.shape[0]} frames but {T} images were given")

    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    predictor = functools.partial(predict_normals, normal_net)
    refined = refine_body(model, fit, images_t, masks_t, predictor, cfg.refine, keypoints=keypoints,
                          progress=progress)  # fmt: skip
    seconds["refine"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    rf = refined.fit
    device = model.device
    with torch.no_grad():
        body = model(betas=rf.betas.to(device), global_orient=rf.global_orient.to(device),
                     body_pose=rf.body_pose.to(device), transl=rf.transl.to(device)).vertices  # fmt: skip
    net_device = next(implicit_net.parameters()).device
    meshes = []
    for t in range(T):
        cam_t = camera_from_params(rf.camera[t : t + 1], rf.image_size, S).to(net_device)
        verts, faces = reconstruct_surface(
            implicit_net, body[t].to(net_device), model.faces.to(net_device),
            refined.normals_front[t].to(net_device).float(), refined.normals_back[t].to(net_device).float(), cam_t,
            resolution=cfg.resolution, coarse_resolution=cfg.coarse_resolution,
            replace_hands_feet=cfg.replace_hands_feet, lbs_weights=model.lbs_weights.to(net_device),
            margin=cfg.margin,
        )  # fmt: skip
        meshes.append((verts, faces))
        if progress:
            progress("implicit", t + 1, T)
    seconds["implicit"] = time.perf_counter() - t0
    return FrameReconstruction(
        meshes=meshes, fit=rf, losses=refined.losses, normals_front=refined.normals_front,
        normals_back=refined.normals_back, body_vertices=body.detach().cpu(), seconds=seconds,
    )  # fmt: skip
