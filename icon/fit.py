"""SMPLify-style initial body fit: 2D keypoints + silhouettes of a clip → one shared β, per-frame θ, t and camera.

Pure compute (tensors in, `BodyFit` out). The camera is weak-perspective (`OrthographicCamera` per frame): crops are
square and person-centred, so a per-frame scale plus the body's x/y translation explains the projection well and keeps
the problem well-conditioned (as ICON does).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from pydantic import BaseModel, ConfigDict, Field

from body.landmarks import mediapipe_landmark_mask, mediapipe_landmarks_3d
from body.params import BodyParams
from geometry.cameras import OrthographicCamera
from geometry.diffrender import edge_topology, render_silhouette_soft

log = logging.getLogger(__name__)

# Indices (MediaPipe order) of the torso landmarks used to fix camera and global orientation first.
_TORSO = (11, 12, 23, 24)  # left/right shoulder, left/right hip
# body_pose (69) entries and signs penalised when bent the wrong way (elbows about y, knees about x), SMPLify-style.
_BEND_IDX = (52, 55, 9, 12)
_BEND_SIGN = (1.0, -1.0, -1.0, -1.0)
_MEAN_BODY_HEIGHT_M = 1.7


class FitConfig(BaseModel):
    """Settings of the initial body fit."""

    model_config = ConfigDict(extra="forbid")

    orient_iters: int = Field(40, ge=0, description="Adam steps for camera + global orientation (torso only).")
    pose_iters: int = Field(100, ge=0, description="Adam steps for pose, shape and translation on all keypoints.")
    silhouette_iters: int = Field(30, ge=0, description="Adam steps adding the silhouette term.")
    lr: float = Field(0.03, gt=0, description="Adam learning rate.")
    silhouette_resolution: int = Field(96, ge=16, le=1024, description="Side of the silhouette render (px).")
    min_confidence: float = Field(0.3, ge=0, le=1, description="Keypoints below this confidence are ignored.")
    robust_sigma_px: float = Field(
        20.0, gt=0, description="Geman-McClure scale (px at S=512) down-weighting outlier keypoints."
    )
    w_keypoints: float = Field(1.0, ge=0, description="Weight of the 2D keypoint term.")
    w_silhouette: float = Field(5.0, ge=0, description="Weight of the silhouette term (mean L2 over pixels).")
    w_pose_prior: float = Field(0.02, ge=0, description="Weight of the small-angle pose prior.")
    w_bend_prior: float = Field(0.5, ge=0, description="Weight of the elbow/knee wrong-way-bend prior.")
    w_shape_prior: float = Field(0.005, ge=0, description="Weight of the β L2 prior.")
    w_smooth: float = Field(5.0, ge=0, description="Weight of the temporal smoothness of θ and t.")
    n_orientations: int = Field(4, ge=1, le=8, description="Global-orientation hypotheses (about the up axis).")


@dataclass
class BodyFit:
    """Per-frame body parameters of a clip (β shared by all frames) and their cameras.

    Attributes:
        body: T frames of body parameters (torch): betas (T, 10) identical rows, global_orient (T, 3),
            body_pose (T, 69) axis-angle, transl (T, 3) metres. Also readable as ``fit.betas`` etc.
        camera: (T, 3) weak-perspective camera (scale px/m, cx px, cy px) for crops of `image_size`.
        image_size: side S of the square crops the camera refers to.
        losses: (T,) final total loss per frame.
        keypoint_error_px: (T,) mean 2D error of the confident keypoints (px at `image_size`).
        history: per-iteration mean loss (for plots).
    """

    body: BodyParams
    camera: torch.Tensor
    image_size: int
    losses: torch.Tensor
    keypoint_error_px: torch.Tensor
    history: list[float] = field(default_factory=list)

    @classmethod
    def from_params(
        cls,
        body: BodyParams,
        camera: torch.Tensor,
        image_size: int,
        losses: torch.Tensor | None = None,
        keypoint_error_px: torch.Tensor | None = None,
        history: list[float] | None = None,
    ) -> BodyFit:
        """A fit from known parameters (stored, synthetic or ground truth); zero losses and keypoint errors unless
        given. ``camera`` (T, 3) as in the attributes."""
        body = BodyParams.of(body).torch()
        zeros = torch.zeros(len(body), device=body.device)
        camera = torch.as_tensor(camera, device=body.device)
        if camera.shape != (len(body), 3):
            raise ValueError(f"camera must have shape ({len(body)}, 3) like the body, got {tuple(camera.shape)}")
        return cls(body, camera, int(image_size), zeros if losses is None else losses,
                   zeros.clone() if keypoint_error_px is None else keypoint_error_px, list(history or []))  # fmt: skip

    @property
    def betas(self) -> torch.Tensor:
        """(T, 10) shape coefficients (identical rows)."""
        return self.body.betas

    @property
    def global_orient(self) -> torch.Tensor:
        """(T, 3) axis-angle root rotation."""
        return self.body.global_orient

    @property
    def body_pose(self) -> torch.Tensor:
        """(T, 69) axis-angle rotations of joints 1..23."""
        return self.body.body_pose

    @property
    def transl(self) -> torch.Tensor:
        """(T, 3) root translation in metres."""
        return self.body.transl

    def cameras(self, image_size: int | None = None) -> OrthographicCamera:
        """The per-frame cameras, optionally rescaled to another crop size."""
        return camera_from_params(self.camera, self.image_size, image_size or self.image_size)

    def detach(self) -> BodyFit:
        return BodyFit(self.body.detach(), self.camera.detach(), self.image_size, self.losses.detach(),
                       self.keypoint_error_px.detach(), list(self.history))  # fmt: skip


def camera_from_params(camera: torch.Tensor, size: int, out_size: int | None = None) -> OrthographicCamera:
    """Build `OrthographicCamera` from (T, 3) (scale, cx, cy) params for crops of side `size` (rescaled to out_size)."""
    out_size = out_size or size
    k = out_size / size
    return OrthographicCamera(
        scale=camera[:, 0] * k, cx=camera[:, 1] * k, cy=camera[:, 2] * k, width=out_size, height=out_size
    )


def _check_inputs(keypoints: torch.Tensor, masks: torch.Tensor | None, image_size: int) -> None:
    if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
        raise ValueError(
            f"keypoints must be (T, 33, 3) (x, y, confidence) in crop pixels, got {tuple(keypoints.shape)}"
        )
    if masks is not None and (masks.ndim != 3 or masks.shape[0] != keypoints.shape[0]):
        raise ValueError(f"masks must be (T, S, S) with T={keypoints.shape[0]}, got {tuple(masks.shape)}")
    if masks is not None and masks.shape[1] != image_size:
        raise ValueError(f"masks are {masks.shape[1]} px but image_size is {image_size}")


def geman_mcclure(residual_sq: torch.Tensor, sigma: float) -> torch.Tensor:
    """Robust ρ(r) = σ² r² / (σ² + r²) of squared residuals (bounded: outliers barely pull)."""
    s2 = sigma * sigma
    return s2 * residual_sq / (s2 + residual_sq)


def pose_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """Small-angle prior: mean squared joint angle, (T, 69) → (T,)."""
    return (body_pose**2).mean(dim=-1)


def bend_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """Penalty for elbows and knees bent the anatomically wrong way, (T, 69) → (T,)."""
    sign = body_pose.new_tensor(_BEND_SIGN)
    return (torch.exp(body_pose[:, list(_BEND_IDX)] * sign) ** 2).mean(dim=-1) - 1.0


def temporal_smoothness(x: torch.Tensor) -> torch.Tensor:
    """Squared first differences along time, (T, D) → (T,) (frame t carries the t-1→t term; frame 0 zero)."""
    out = x.new_zeros(x.shape[0])
    if x.shape[0] > 1:
        out[1:] = ((x[1:] - x[:-1]) ** 2).mean(dim=-1)
    return out


def _axis_angle_about_y(angle: torch.Tensor) -> torch.Tensor:
    return torch.stack([torch.zeros_like(angle), angle, torch.zeros_like(angle)], dim=-1)


def initial_camera(keypoints: torch.Tensor, image_size: int, min_conf: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Guess per-frame scale (px/m) and body x/y translation (m) from the keypoints' vertical extent and centre.

    Args:
        keypoints: (T, 33, 3) crop pixels + confidence.
    Returns:
        scale (T,), transl_xy (T, 2).
    """
    conf = keypoints[..., 2] >= min_conf
    big = torch.full_like(keypoints[..., 1], float("inf"))
    v_min = torch.where(conf, keypoints[..., 1], big).amin(dim=1)
    v_max = torch.where(conf, keypoints[..., 1], -big).amax(dim=1)
    extent = (v_max - v_min).nan_to_num(0.0)
    # Nose-to-heel is ~0.9 of body height; a missing lower body makes this an underestimate, bounded below.
    scale = torch.clamp(extent / (0.9 * _MEAN_BODY_HEIGHT_M), min=0.3 * image_size / _MEAN_BODY_HEIGHT_M)
    scale = torch.where(torch.isfinite(scale) & (extent > 0), scale, torch.full_like(scale, 0.8 * image_size / 1.7))
    hips = keypoints[:, [23, 24], :2].mean(dim=1)
    centre = torch.full_like(hips, image_size / 2)
    hip_ok = conf[:, [23, 24]].all(dim=1, keepdim=True)
    hips = torch.where(hip_ok, hips, centre)
    tx = (hips[:, 0] - image_size / 2) / scale
    ty = -(hips[:, 1] - image_size / 2) / scale
    return scale, torch.stack([tx, ty], dim=-1)


def fit_body(
    model: torch.nn.Module,
    keypoints: torch.Tensor,
    masks: torch.Tensor | None,
    image_size: int,
    config: FitConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> BodyFit:
    """Fit the body model to a clip: shared β, per-frame pose, translation and weak-perspective camera.

    Args:
        model: `body.BodyModel` (its device and dtype are used).
        keypoints: (T, 33, 3) MediaPipe landmarks in crop pixels (x, y, confidence); confidence 0 = missing.
        masks: (T, S, S) bool person masks or None (keypoints only).
        image_size: S, the side of the square crops.
        config: `FitConfig`.
        progress: optional callback (stage, step, total).

    Returns:
        `BodyFit` with detached tensors on the model's device.
    """
    cfg = config or FitConfig()
    _check_inputs(keypoints, masks, image_size)
    device = model.device
    dtype = torch.float32
    kp = keypoints.to(device, dtype)
    T = kp.shape[0]
    conf = torch.where(kp[..., 2] >= cfg.min_confidence, kp[..., 2], torch.zeros_like(kp[..., 2]))
    lm_valid = mediapipe_landmark_mask(model)
    conf = conf * lm_valid.to(device, dtype)[None]
    kp_xy = torch.nan_to_num(kp[..., :2])
    sigma = cfg.robust_sigma_px * image_size / 512.0
    norm = image_size / 512.0  # residuals measured as if at 512 px so weights do not depend on S

    scale0, txy0 = initial_camera(kp, image_size, cfg.min_confidence)
    cx = torch.full((T,), image_size / 2, device=device, dtype=dtype)

    def forward(betas, orient, pose, transl, log_scale):
        out = model(betas=betas.expand(orient.shape[0], -1), global_orient=orient, body_pose=pose, transl=transl)
        lm3d, _ = mediapipe_landmarks_3d(model, out)
        c = cx.repeat(orient.shape[0] // T)
        cam = OrthographicCamera(scale=log_scale.exp(), cx=c, cy=c, width=image_size, height=image_size)
        uv = cam.project(lm3d)
        return out, uv, cam

    def keypoint_term(uv, weights, kp_target):
        r2 = ((uv - kp_target) / norm).pow(2).sum(-1)
        rho = geman_mcclure(r2, sigma / norm)
        return (rho * weights).sum(-1) / weights.sum(-1).clamp(min=1e-6)

    # Stage 1: several global-orientation hypotheses about the up axis, torso only, then keep the best per frame.
    H = cfg.n_orientations
    angles = [2 * math.pi * k / H for k in range(H)]
    # SMPL's zero orientation faces +Z (the camera); a body seen from behind needs a turn of π about Y.
    orient = torch.cat([_axis_angle_about_y(torch.full((T,), a, device=device, dtype=dtype)) for a in angles])
    orient = orient.clone().requires_grad_(True)
    transl = torch.cat([txy0, torch.zeros(T, 1, device=device, dtype=dtype)], dim=-1).repeat(H, 1).requires_grad_(True)
    log_scale = scale0.log().repeat(H).clone().requires_grad_(True)
    betas = torch.zeros(1, 10, device=device, dtype=dtype, requires_grad=True)
    pose = torch.zeros(H * T, 69, device=device, dtype=dtype)
    torso_w = torch.zeros_like(conf)
    torso_w[:, list(_TORSO)] = conf[:, list(_TORSO)]
    # face landmarks disambiguate front/back (the nose is in front of the head)
    face_w = torch.zeros_like(conf)
    face_w[:, :11] = conf[:, :11] * 0.3
    w1 = (torso_w + face_w).repeat(H, 1)
    target1 = kp_xy.repeat(H, 1, 1)
    opt = torch.optim.Adam([orient, transl, log_scale], lr=cfg.lr)
    history: list[float] = []
    for it in range(cfg.orient_iters):
        opt.zero_grad()
        _, uv, _ = forward(betas.detach(), orient, pose, transl, log_scale)
        loss_f = keypoint_term(uv, w1, target1)
        loss = loss_f.sum() / T
        loss.backward()
        opt.step()
        with torch.no_grad():
            transl[:, 2] = 0.0
        history.append(float(loss.detach()) / H)
        if progress:
            progress("orientation", it + 1, cfg.orient_iters)
    with torch.no_grad():
        _, uv, _ = forward(betas, orient, pose, transl, log_scale)
        per_h = keypoint_term(uv, w1, target1).view(H, T)
        best = per_h.argmin(dim=0)
        idx = best * T + torch.arange(T, device=device)
        orient0, transl0, log_scale0 = orient[idx].clone(), transl[idx].clone(), log_scale[idx].clone()

    orient = orient0.requires_grad_(True)
    transl = transl0.requires_grad_(True)
    log_scale = log_scale0.requires_grad_(True)
    pose = torch.zeros(T, 69, device=device, dtype=dtype, requires_grad=True)

    res = cfg.silhouette_resolution
    masks_lr = None
    if masks is not None and cfg.silhouette_iters > 0 and cfg.w_silhouette > 0:
        m = masks.to(device=device, dtype=dtype)[:, None]
        masks_lr = torch.nn.functional.interpolate(m, size=(res, res), mode="area")[:, 0]
    w_all = conf
    topo = edge_topology(model.faces) if masks_lr is not None else None

    def total_loss(use_sil: bool) -> tuple[torch.Tensor, torch.Tensor]:
        out, uv, cam = forward(betas, orient, pose, transl, log_scale)
        per = cfg.w_keypoints * keypoint_term(uv, w_all, kp_xy)
        per = per + cfg.w_pose_prior * pose_prior(pose)
        per = per + cfg.w_bend_prior * bend_prior(pose)
        per = per + cfg.w_shape_prior * (betas**2).sum()
        per = per + cfg.w_smooth * (temporal_smoothness(pose) + temporal_smoothness(transl * 10.0))
        if use_sil and masks_lr is not None:
            cam_lr = OrthographicCamera(
                scale=cam.scale * res / image_size, cx=cam.cx * res / image_size, cy=cam.cy * res / image_size,
                width=res, height=res,
            )
            sil = render_silhouette_soft(out.vertices, model.faces, cam_lr, res, res, sigma_px=1.0, topology=topo)
            per = per + cfg.w_silhouette * 100.0 * ((sil - masks_lr) ** 2).mean(dim=(1, 2))
        return per, uv

    sil_iters = cfg.silhouette_iters if masks_lr is not None else 0
    stages = [("pose", cfg.pose_iters, False), ("silhouette", sil_iters, True)]
    for name, iters, use_sil in stages:
        opt = torch.optim.Adam([orient, transl, log_scale, pose, betas], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=cfg.lr * 0.1)
        for it in range(iters):
            opt.zero_grad()
            per, _ = total_loss(use_sil)
            loss = per.mean()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                transl[:, 2] = 0.0
            history.append(float(loss.detach()))
            if progress:
                progress(name, it + 1, iters)

    with torch.no_grad():
        per, uv = total_loss(masks_lr is not None)
        err = (uv - kp_xy).norm(dim=-1)
        valid = (w_all > 0).to(dtype)
        kp_err = (err * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        camera = torch.stack([log_scale.exp(), cx, cx], dim=-1)
    return BodyFit(
        body=BodyParams(betas.detach().expand(T, -1).clone(), orient.detach().clone(), pose.detach().clone(),
                        transl.detach().clone()),
        camera=camera.detach(),
        image_size=image_size,
        losses=per.detach(),
        keypoint_error_px=kp_err.detach(),
        history=history,
    )
