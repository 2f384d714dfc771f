"""Per-frame ICON reconstruction in one call: SMPL feedback loop (refine) → clothed normals → clothed surface.

The surface is one of: ``integrated`` (the clothed normals integrated into front/back depth guided by the body, a
watertight surface from those depths and the body, `icon.integrate` + `icon.surface_fusion`), ``implicit`` (ICON's
occupancy net on local body features, `icon.implicit`), or ``fused`` (integrated, with the implicit net deciding the
occlusion gaps the depth maps cannot see).

Pure compute: networks are passed in (load them with `icon.normal_net.load_normal_net` /
`icon.implicit.load_implicit_net`); tensors and meshes in, a `FrameReconstruction` out.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field

from icon.fit import BodyFit, camera_from_params
from icon.normal_net import NormalNet, predict_normals
from icon.refine import RefineConfig, refine_body
from icon.surface_fusion import SurfaceFusionConfig

__all__ = ["FrameReconstruction", "ReconstructConfig", "SurfaceKind", "clothed_surfaces", "reconstruct"]

SurfaceKind = Literal["integrated", "implicit", "fused"]


class ReconstructConfig(BaseModel):
    """Settings of the per-frame reconstruction after the initial body fit."""

    model_config = ConfigDict(extra="forbid")

    refine: RefineConfig = Field(default_factory=RefineConfig, description="SMPL feedback loop.")
    resolution: int = Field(256, ge=16, le=1024, description="Effective marching-cubes grid (samples per side).")
    coarse_resolution: int = Field(32, ge=8, le=256, description="First level of the coarse-to-fine grid.")
    replace_hands_feet: bool = Field(
        True, description="Replace reconstructed hands and feet by the body's (thin parts fail at this resolution)."
    )
    margin: float = Field(
        0.2, ge=0.0, le=1.0, description="Metres around the body's box searched for clothing (implicit surface)."
    )
    surface: SurfaceKind = Field(
        "integrated",
        description="Clothed surface: integrated (normal integration + body, watertight), implicit (ICON's occupancy "
        "net) or fused (integrated, the implicit net deciding the occlusion gaps).",
    )
    fusion: SurfaceFusionConfig = Field(
        default_factory=SurfaceFusionConfig, description="Normal integration and depth fusion (integrated, fused)."
    )


@dataclass
class FrameReconstruction:
    """Result of `reconstruct` for T frames.

    Attributes:
        meshes: T clothed meshes (vertices (V, 3) float32 in camera space, faces (F, 3) int64); empty arrays where the
            surface found nothing.
        fit: refined `BodyFit`.
        losses: (T, iterations) refinement loss per step (NaN after an early stop).
        normals_front: (T, S, S, 3) final clothed front normals.
        normals_back: (T, S, S, 3) final clothed back normals.
        body_vertices: (T, V, 3) the refined body in camera space.
        seconds: wall seconds per stage ("refine", "surface").
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
    T = images_t.shape[0]
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
    body, meshes = clothed_surfaces(
        model, rf, refined.normals_front, refined.normals_back, masks_t, implicit_net, cfg, progress=progress
    )
    seconds["surface"] = time.perf_counter() - t0
    return FrameReconstruction(
        meshes=meshes, fit=rf, losses=refined.losses, normals_front=refined.normals_front,
        normals_back=refined.normals_back, body_vertices=body.detach().cpu(), seconds=seconds,
    )  # fmt: skip


def clothed_surfaces(
    model: torch.nn.Module,
    fit: BodyFit,
    normals_front: torch.Tensor,
    normals_back: torch.Tensor,
    masks: torch.Tensor,
    implicit_net: torch.nn.Module | None,
    config: ReconstructConfig | None = None,
    surface: SurfaceKind | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> tuple[torch.Tensor, list[tuple[np.ndarray, np.ndarray]]]:
    """Each frame's clothed surface from a (refined) body fit and its clothed normal maps.

    Args:
        model: `body.BodyModel`.
        fit: `BodyFit` of T frames (camera for crops of side `fit.image_size`).
        normals_front: (T, S, S, 3) clothed front normals.
        normals_back: (T, S, S, 3) clothed back normals.
        masks: (T, S, S) bool person masks.
        implicit_net: occupancy net (needed by the implicit and fused surfaces).
        config: `ReconstructConfig`.
        surface: overrides `config.surface`.
        progress: optional callback ("surface", step, total).

    Returns:
        (T, V, 3) body vertices (camera space, on the model's device) and T meshes (vertices (V', 3) float32,
        faces (F', 3) int64; empty arrays where no surface was found).
    """
    from icon.implicit import PointFeatureSampler, hands_feet_vertex_mask, reconstruct_surface
    from icon.surface_fusion import DepthHullField, clothed_depth_maps, fused_surface

    cfg = config or ReconstructConfig()
    kind = surface or cfg.surface
    if kind in ("implicit", "fused") and implicit_net is None:
        raise ValueError(f"the {kind} surface needs the implicit net")
    T, S = normals_front.shape[0], normals_front.shape[1]
    device = model.device
    with torch.no_grad():
        body = model(betas=fit.betas.to(device), global_orient=fit.global_orient.to(device),
                     body_pose=fit.body_pose.to(device), transl=fit.transl.to(device)).vertices  # fmt: skip
    faces = model.faces.to(device)
    meshes = []
    if kind == "implicit":
        net_device = next(implicit_net.parameters()).device
        for t in range(T):
            cam_t = camera_from_params(fit.camera[t : t + 1], fit.image_size, S).to(net_device)
            verts, tri = reconstruct_surface(
                implicit_net, body[t].to(net_device), faces.to(net_device),
                normals_front[t].to(net_device).float(), normals_back[t].to(net_device).float(), cam_t,
                resolution=cfg.resolution, coarse_resolution=cfg.coarse_resolution,
                replace_hands_feet=cfg.replace_hands_feet, lbs_weights=model.lbs_weights.to(net_device),
                margin=cfg.margin,
            )  # fmt: skip
            meshes.append((verts, tri))
            if progress:
                progress("surface", t + 1, T)
        return body, meshes
    cams = camera_from_params(fit.camera.to(device), fit.image_size, S)
    part_faces = None
    if cfg.replace_hands_feet:
        part_faces = hands_feet_vertex_mask(model.lbs_weights.to(device))[faces].all(dim=1)
    depth = clothed_depth_maps(
        normals_front.to(device).float(), normals_back.to(device).float(), masks.to(device), body, faces, cams,
        cfg.fusion, part_faces,
    )  # fmt: skip
    for t in range(T):
        cam_t = camera_from_params(fit.camera[t : t + 1].to(device), fit.image_size, S)
        occupancy = None
        if kind == "fused":
            sampler = PointFeatureSampler(body[t : t + 1], faces, normals_front[t : t + 1].to(device).float(),
                                          normals_back[t : t + 1].to(device).float(), cam_t,
                                          getattr(implicit_net, "config", None))  # fmt: skip

            def occupancy(points: torch.Tensor, sampler=sampler) -> torch.Tensor:
                return implicit_net(sampler(points[None]))[0]

        depth_t = type(depth)(
            type(depth.depth)(depth.depth.front[t : t + 1], depth.depth.back[t : t + 1], depth.depth.mask[t : t + 1]),
            depth.body_front[t : t + 1], depth.body_back[t : t + 1], depth.body_mask[t : t + 1],
        )  # fmt: skip
        field_t = DepthHullField(depth_t, cam_t, body[t], faces, part_faces, cfg.fusion, occupancy)
        meshes.append(fused_surface(field_t, cfg.resolution, cfg.coarse_resolution))
        if progress:
            progress("surface", t + 1, T)
    return body, meshes
