"""SMPLify-style initial body fit: 2D keypoints + silhouettes of a clip → one shared β, per-frame θ, t and camera.

Pure compute (tensors in, `BodyFit` out). The camera is weak-perspective (`OrthographicCamera` per frame): crops are
square and person-centred, so a per-frame scale plus the body's x/y translation explains the projection well and keeps
the problem well-conditioned (as ICON does).

Depth comes from MediaPipe's metric 3D landmarks (``pose_world_landmarks``, a model trained on real people) when they
are given: limb bone directions relative to the torso (orientation-invariant: the landmarks are rotated onto the
body's torso first) and the relative depth order of landmark pairs in the camera frame, both weighted by visibility.
The facing is chosen among discrete hypotheses about the up axis, per frame or, in a clip, as one track without
sudden flips; the margin between the best and the next facing is the frame's confidence.

Stages (`fit_body`): `fit_orientations` (camera + root, torso only, all hypotheses in one batch) →
`select_facing_track` → `optimise_pose` (keypoints, then + silhouette) → `finish_fit`.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from pydantic import BaseModel, ConfigDict, Field

from body.landmarks import mediapipe_landmark_mask, mediapipe_landmarks_3d
from body.params import BodyParams, HoldsBodyParams
from geometry.cameras import OrthographicCamera, PerspectiveCamera
from geometry.diffrender import edge_topology, render_silhouette_soft
from icon.fit_terms import (
    LIMB_BONES,
    TORSO_LANDMARKS,
    bend_prior,
    bone_direction_term,
    depth_order_term,
    facing_term,
    geman_mcclure,
    interpenetration_term,
    joint_limit_prior,
    mediapipe_world_to_camera,
    pose_prior,
    temporal_smoothness,
)

log = logging.getLogger(__name__)

# Landmark pairs whose depth order (which one is nearer the camera) the 3D landmarks constrain.
_FACING_PAIRS = ((11, 12), (23, 24), (0, 7), (0, 8))
_DEPTH_PAIRS = _FACING_PAIRS + ((13, 14), (15, 16), (25, 26), (27, 28)) + LIMB_BONES[:8]
# Left-right label swaps tried per frame (MediaPipe indices): legs (knee, ankle, heel, foot), arms (elbow, wrist, hand).
_LEG_SWAP = ((25, 26), (27, 28), (29, 30), (31, 32))
_ARM_SWAP = ((13, 14), (15, 16), (17, 18), (19, 20), (21, 22))
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
    camera: Literal["weak", "perspective", "auto"] = Field(
        "auto",
        description="weak-perspective, perspective (focal from `focal_px` or the field-of-view prior), or auto: both "
        "after the orientation stage, keeping the one with the lower keypoint residual.",
    )
    fov_prior_deg: float = Field(
        50.0, gt=1, lt=150, description="Field of view across the crop assumed when no focal length is given."
    )
    n_orientations: int = Field(4, ge=1, le=16, description="Global-orientation hypotheses (about the up axis).")
    w_bones3d: float = Field(
        100.0, ge=0, description="Weight of the 3D limb-direction term (1 - cos per bone, torso-aligned landmarks)."
    )
    w_facing3d: float = Field(
        100.0, ge=0, description="Weight of the torso-facing term against the 3D landmarks ((1 - cos) / 2)."
    )
    w_depth_order: float = Field(
        10.0, ge=0, description="Weight of the depth-order hinge (per pair, in units of depth_margin_m)."
    )
    depth_min_gap_m: float = Field(
        0.08, ge=0, description="Pairs whose 3D-landmark depths differ by less than this carry no order."
    )
    depth_margin_m: float = Field(0.03, gt=0, description="The body must agree with the order by this much (m).")
    min_visibility3d: float = Field(0.5, ge=0, le=1, description="3D landmarks below this visibility are ignored.")
    w_joint_limits: float = Field(50.0, ge=0, description="Weight of the per-joint angle-limit prior.")
    w_interpenetration: float = Field(
        1e4, ge=0, description="Weight of the limb-torso / leg-leg capsule overlap (sum of squared overlaps, m²)."
    )
    swap_iters: int = Field(
        30, ge=0, description="Keypoint steps of the left-right limb-label hypotheses (0 = keep the detector's labels)."
    )
    swap_margin: float = Field(
        0.2,
        ge=0,
        lt=1,
        description="A limb-label swap is taken only when its loss is lower than the detector's labelling by this "
        "fraction (near-ties, e.g. side views, keep the labels).",
    )
    facing_jump_cost: float = Field(
        50.0, ge=0, description="Cost of turning the facing between consecutive frames (x (1 - cos Δyaw) / 2)."
    )


@dataclass
class BodyFit(HoldsBodyParams):
    """Per-frame body parameters of a clip (β shared by all frames) and their cameras.

    Attributes:
        body: T frames of body parameters (torch): betas (T, 10) identical rows, global_orient (T, 3),
            body_pose (T, 69) axis-angle, transl (T, 3) metres. Also readable as ``fit.betas`` etc.
        camera: (T, 3) weak-perspective camera (scale px/m, cx px, cy px) for crops of `image_size`.
        image_size: side S of the square crops the camera refers to.
        losses: (T,) final total loss per frame.
        keypoint_error_px: (T,) mean 2D error of the confident keypoints (px at `image_size`).
        history: per-iteration mean loss (for plots).
        confidence: (T,) in [0, 1]: how much better the chosen facing explains the frame than the best other one
            (> 45° apart); low values flag frames where the fit is unsure. None for fits made elsewhere.
        focal_px: (T,) focal length (px at `image_size`) of the perspective camera the pose was fitted with, None
            for a weak-perspective fit. Either way `camera` is the weak-perspective camera (scale = focal / depth of
            the root) that the refinement and the implicit surface use.
    """

    body: BodyParams
    camera: torch.Tensor
    image_size: int
    losses: torch.Tensor
    keypoint_error_px: torch.Tensor
    history: list[float] = field(default_factory=list)
    confidence: torch.Tensor | None = None
    focal_px: torch.Tensor | None = None

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


    def cameras(self, image_size: int | None = None) -> OrthographicCamera:
        """The per-frame cameras, optionally rescaled to another crop size."""
        return camera_from_params(self.camera, self.image_size, image_size or self.image_size)

    def detach(self) -> BodyFit:
        opt = {k: None if getattr(self, k) is None else getattr(self, k).detach() for k in ("confidence", "focal_px")}
        return BodyFit(self.body.detach(), self.camera.detach(), self.image_size, self.losses.detach(),
                       self.keypoint_error_px.detach(), list(self.history), **opt)  # fmt: skip


def camera_from_params(camera: torch.Tensor, size: int, out_size: int | None = None) -> OrthographicCamera:
    """Build `OrthographicCamera` from (T, 3) (scale, cx, cy) params for crops of side `size` (rescaled to out_size)."""
    out_size = out_size or size
    k = out_size / size
    return OrthographicCamera(
        scale=camera[:, 0] * k, cx=camera[:, 1] * k, cy=camera[:, 2] * k, width=out_size, height=out_size
    )


def _check_inputs(
    keypoints: torch.Tensor, masks: torch.Tensor | None, image_size: int, keypoints3d: torch.Tensor | None = None
) -> None:
    if keypoints.ndim != 3 or keypoints.shape[1:] != (33, 3):
        raise ValueError(
            f"keypoints must be (T, 33, 3) (x, y, confidence) in crop pixels, got {tuple(keypoints.shape)}"
        )
    if keypoints3d is not None and tuple(keypoints3d.shape) != (keypoints.shape[0], 33, 4):
        raise ValueError(
            f"keypoints3d must be (T, 33, 4) (x, y, z metres, visibility) with T={keypoints.shape[0]}, "
            f"got {tuple(keypoints3d.shape)}"
        )
    if masks is not None and (masks.ndim != 3 or masks.shape[0] != keypoints.shape[0]):
        raise ValueError(f"masks must be (T, S, S) with T={keypoints.shape[0]}, got {tuple(masks.shape)}")
    if masks is not None and masks.shape[1] != image_size:
        raise ValueError(f"masks are {masks.shape[1]} px but image_size is {image_size}")


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


def facing_yaw(global_orient: torch.Tensor) -> torch.Tensor:
    """Yaw (radians, about the camera's up axis) of the root's facing direction +Z, (B, 3) → (B,); 0 = facing the
    camera."""
    angle = global_orient.norm(dim=-1, keepdim=True).clamp(min=1e-12)
    axis = global_orient / angle
    z = global_orient.new_tensor([0.0, 0.0, 1.0]).expand_as(axis)
    c, s = torch.cos(angle), torch.sin(angle)
    f = z * c + torch.cross(axis, z, dim=-1) * s + axis * (axis * z).sum(-1, keepdim=True) * (1 - c)  # Rodrigues
    return torch.atan2(f[:, 0], f[:, 2])


def select_facing_track(
    scores: torch.Tensor, yaws: torch.Tensor, jump_cost: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """One facing per frame from H hypotheses: the path minimising score + jump_cost · (1 - cos Δyaw)/2 (Viterbi),
    and each frame's confidence.

    Args:
        scores: (H, T) per-hypothesis loss (lower is better).
        yaws: (H, T) each hypothesis's facing yaw (radians).
        jump_cost: cost of a half turn between consecutive frames.

    Returns:
        chosen (T,) hypothesis index and confidence (T,) in [0, 1]: 1 - best / (best other facing, > 45° away),
        the frame's own scores only.
    """
    H, T = scores.shape
    cost = scores[:, 0].clone()
    back = torch.zeros(H, T, dtype=torch.long, device=scores.device)
    for t in range(1, T):
        turn = (1.0 - torch.cos(yaws[None, :, t] - yaws[:, None, t - 1])) / 2  # (H_prev, H_now)
        total = cost[:, None] + jump_cost * turn
        cost, back[:, t] = total.min(dim=0)
        cost = cost + scores[:, t]
    chosen = torch.empty(T, dtype=torch.long, device=scores.device)
    chosen[-1] = int(cost.argmin())
    for t in range(T - 1, 0, -1):
        chosen[t - 1] = back[chosen[t], t]
    frames = torch.arange(T, device=scores.device)
    best = scores[chosen, frames]
    apart = torch.cos(yaws - yaws[chosen, frames][None]) < math.cos(math.radians(45.0))
    other = torch.where(apart, scores, torch.full_like(scores, math.inf)).amin(dim=0)
    conf = torch.where(torch.isfinite(other), 1.0 - best.clamp(min=0) / other.clamp(min=1e-9), torch.ones_like(best))
    return chosen, conf.clamp(0.0, 1.0)


# ------------------------------------------------------------------------------------------------------ the stages
@dataclass
class FitData:
    """Everything the stages share: targets, weights and sizes (tensors on the model's device).

    Attributes:
        kp_xy: (T, 33, 2) keypoints in crop pixels; conf: (T, 33) their weights (0 = unused).
        lm3d: (T, 33, 3) 3D landmarks in camera axes or None; w3d: (T, 33) their weights.
        masks_lr: (T, R, R) float masks at the silhouette resolution, or None.
        cx: (T,) principal point (crop centre); sigma, norm: robust scale and px normalisation (to 512 px).
        focal: (T,) focal length in crop pixels for a perspective camera, None for weak perspective.
    """

    kp_xy: torch.Tensor
    conf: torch.Tensor
    lm3d: torch.Tensor | None
    w3d: torch.Tensor | None
    masks_lr: torch.Tensor | None
    cx: torch.Tensor
    image_size: int
    sigma: float
    norm: float
    focal: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return int(self.kp_xy.shape[0])


@dataclass
class FitParams:
    """The optimised variables: betas (1, 10); orient (B, 3); pose (B, 69); transl (B, 3); log_scale (B,)."""

    betas: torch.Tensor
    orient: torch.Tensor
    pose: torch.Tensor
    transl: torch.Tensor
    log_scale: torch.Tensor

    def take(self, index: torch.Tensor) -> FitParams:
        """Rows ``index`` of the per-frame variables (β kept), as new leaf tensors."""
        return FitParams(self.betas.detach().clone(), self.orient[index].detach().clone(),
                         self.pose[index].detach().clone(), self.transl[index].detach().clone(),
                         self.log_scale[index].detach().clone())  # fmt: skip


def prepare_fit_data(
    model: torch.nn.Module,
    keypoints: torch.Tensor,
    masks: torch.Tensor | None,
    image_size: int,
    cfg: FitConfig,
    keypoints3d: torch.Tensor | None,
    focal_px: torch.Tensor | None = None,
) -> FitData:
    """Targets and weights of `fit_body` on the model's device (see `FitData`)."""
    device, dtype = model.device, torch.float32
    kp = keypoints.to(device, dtype)
    T = kp.shape[0]
    conf = torch.where(kp[..., 2] >= cfg.min_confidence, kp[..., 2], torch.zeros_like(kp[..., 2]))
    conf = conf * mediapipe_landmark_mask(model).to(device, dtype)[None]
    lm3d = w3d = None
    if keypoints3d is not None:
        lm3d, w3d = mediapipe_world_to_camera(keypoints3d.to(device, dtype), cfg.min_visibility3d)
        w3d = w3d * mediapipe_landmark_mask(model).to(device, dtype)[None]
    masks_lr = None
    if masks is not None and cfg.silhouette_iters > 0 and cfg.w_silhouette > 0:
        res = cfg.silhouette_resolution
        m = masks.to(device=device, dtype=dtype)[:, None]
        masks_lr = torch.nn.functional.interpolate(m, size=(res, res), mode="area")[:, 0]
    cx = torch.full((T,), image_size / 2, device=device, dtype=dtype)
    focal = None
    if cfg.camera != "weak":
        prior = image_size / (2.0 * math.tan(math.radians(cfg.fov_prior_deg) / 2.0))
        focal = torch.full((T,), prior, device=device, dtype=dtype) if focal_px is None else focal_px.to(device, dtype)
    return FitData(torch.nan_to_num(kp[..., :2]), conf, lm3d, w3d, masks_lr, cx, image_size,
                   cfg.robust_sigma_px * image_size / 512.0, image_size / 512.0, focal)  # fmt: skip


def _forward(model: torch.nn.Module, data: FitData, p: FitParams):
    """Posed body, its 33 landmarks (B, 33, 3), their pixels (B, 33, 2) and the cameras, for B = k·T rows."""
    out = model(betas=p.betas.expand(p.orient.shape[0], -1), global_orient=p.orient, body_pose=p.pose,
                transl=p.transl)  # fmt: skip
    lm3d, _ = mediapipe_landmarks_3d(model, out)
    k = p.orient.shape[0] // data.frames
    c = data.cx.repeat(k)
    s = data.image_size
    if data.focal is None:
        cam = OrthographicCamera(scale=p.log_scale.exp(), cx=c, cy=c, width=s, height=s)
        return out, lm3d, cam.project(lm3d), cam
    # Perspective: the body sits at the depth focal / scale where the weak-perspective scale holds for the root, so
    # both cameras share the same variables (x, y in metres at the body, log scale).
    f = data.focal.repeat(k)
    depth = torch.stack([torch.zeros_like(f), torch.zeros_like(f), -f / p.log_scale.exp()], dim=-1)
    cam = PerspectiveCamera(focal=f, cx=c, cy=c, width=s, height=s)
    shifted = dataclasses.replace(out, vertices=out.vertices + depth[:, None], joints=out.joints + depth[:, None])
    return shifted, lm3d + depth[:, None], cam.project(lm3d + depth[:, None]), cam


def _keypoint_term(data: FitData, uv: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    k = uv.shape[0] // data.frames
    r2 = ((uv - data.kp_xy.repeat(k, 1, 1)) / data.norm).pow(2).sum(-1)
    rho = geman_mcclure(r2, data.sigma / data.norm)
    return (rho * weights).sum(-1) / weights.sum(-1).clamp(min=1e-6)


def _depth_terms(data: FitData, cfg: FitConfig, lm: torch.Tensor, pairs, bones: bool) -> torch.Tensor:
    """Weighted 3D-landmark terms (B,) for B = k·T rows (zeros without 3D landmarks)."""
    if data.lm3d is None:
        return lm.new_zeros(lm.shape[0])
    k = lm.shape[0] // data.frames
    target, w = data.lm3d.repeat(k, 1, 1), data.w3d.repeat(k, 1)
    out = cfg.w_depth_order * depth_order_term(lm, target, w, pairs, cfg.depth_min_gap_m, cfg.depth_margin_m)
    out = out + cfg.w_facing3d * facing_term(lm, target, w)
    if bones:
        out = out + cfg.w_bones3d * bone_direction_term(lm, target, w)
    return out


def fit_orientations(
    model: torch.nn.Module, data: FitData, cfg: FitConfig, history: list[float], progress=None
) -> tuple[FitParams, torch.Tensor]:
    """Stage 1: camera scale, x/y translation and root orientation from H facing hypotheses about the up axis, all in
    one batch, on the torso keypoints (+ face, + the depth order of shoulders, hips and face when 3D landmarks exist).

    Returns:
        params of all H·T rows (hypothesis-major) and their scores (H, T).
    """
    T, device, dtype = data.frames, data.kp_xy.device, data.kp_xy.dtype
    H = cfg.n_orientations
    scale0, txy0 = initial_camera(torch.cat([data.kp_xy, data.conf[..., None]], -1), data.image_size, 1e-6)
    # SMPL's zero orientation faces +Z (the camera); a body seen from behind needs a turn of π about Y.
    angles = torch.arange(H, device=device, dtype=dtype) * (2 * math.pi / H)
    p = FitParams(
        betas=torch.zeros(1, 10, device=device, dtype=dtype),
        orient=_axis_angle_about_y(angles.repeat_interleave(T)).requires_grad_(True),
        pose=torch.zeros(H * T, 69, device=device, dtype=dtype),
        transl=torch.cat([txy0, torch.zeros(T, 1, device=device, dtype=dtype)], -1).repeat(H, 1).requires_grad_(True),
        log_scale=scale0.log().repeat(H).clone().requires_grad_(True),
    )
    w = torch.zeros_like(data.conf)
    w[:, list(TORSO_LANDMARKS)] = data.conf[:, list(TORSO_LANDMARKS)]
    w[:, :11] = data.conf[:, :11] * 0.3  # the face tells front from back (the nose is in front of the head)
    w = w.repeat(H, 1)

    def score() -> torch.Tensor:
        _, lm, uv, _ = _forward(model, data, p)
        return _keypoint_term(data, uv, w) + _depth_terms(data, cfg, lm, _FACING_PAIRS, bones=False)

    opt = torch.optim.Adam([p.orient, p.transl, p.log_scale], lr=cfg.lr)
    for it in range(cfg.orient_iters):
        opt.zero_grad()
        loss = score().sum() / T
        loss.backward()
        opt.step()
        with torch.no_grad():
            p.transl[:, 2] = 0.0
        history.append(float(loss.detach()) / H)
        if progress:
            progress("orientation", it + 1, cfg.orient_iters)
    with torch.no_grad():
        scores = score().view(H, T)
    return p, scores


def _resized_camera(cam, k: float, size: int):
    """The same view at ``size`` px (pixel units scaled by ``k``)."""
    if isinstance(cam, PerspectiveCamera):
        return PerspectiveCamera(focal=cam.focal * k, cx=cam.cx * k, cy=cam.cy * k, width=size, height=size)
    return OrthographicCamera(scale=cam.scale * k, cx=cam.cx * k, cy=cam.cy * k, width=size, height=size)


def frame_loss(model: torch.nn.Module, data: FitData, cfg: FitConfig, p: FitParams, use_sil: bool, topo=None):
    """Per-row loss (B,) of the pose stages and the landmark pixels (B, 33, 2)."""
    out, lm, uv, cam = _forward(model, data, p)
    k = p.orient.shape[0] // data.frames
    per = cfg.w_keypoints * _keypoint_term(data, uv, data.conf.repeat(k, 1))
    per = per + _depth_terms(data, cfg, lm, _DEPTH_PAIRS, bones=True)
    per = per + cfg.w_pose_prior * pose_prior(p.pose) + cfg.w_bend_prior * bend_prior(p.pose)
    per = per + cfg.w_joint_limits * joint_limit_prior(p.pose) + cfg.w_shape_prior * (p.betas**2).sum()
    per = per + cfg.w_interpenetration * interpenetration_term(out.joints)
    if k == 1:
        per = per + cfg.w_smooth * (temporal_smoothness(p.pose) + temporal_smoothness(p.transl * 10.0))
    if use_sil and data.masks_lr is not None:
        res, s = data.masks_lr.shape[-1], data.image_size
        cam_lr = _resized_camera(cam, res / s, res)
        sil = render_silhouette_soft(out.vertices, model.faces, cam_lr, res, res, sigma_px=1.0, topology=topo)
        per = per + cfg.w_silhouette * 100.0 * ((sil - data.masks_lr.repeat(k, 1, 1)) ** 2).mean(dim=(1, 2))
    return per, uv


def optimise_pose(
    model: torch.nn.Module,
    data: FitData,
    cfg: FitConfig,
    p: FitParams,
    history: list[float],
    progress=None,
    stages: tuple[str, ...] = ("pose", "silhouette"),
) -> FitParams:
    """Stages 2-3: pose, shape, translation and camera on all keypoints (+ 3D landmarks), then + the silhouette."""
    for t in (p.orient, p.transl, p.log_scale, p.pose, p.betas):
        t.requires_grad_(True)
    topo = edge_topology(model.faces) if data.masks_lr is not None else None
    sil_iters = cfg.silhouette_iters if data.masks_lr is not None else 0
    plan = {"pose": (cfg.pose_iters, False), "silhouette": (sil_iters, True)}
    for name in stages:
        iters, use_sil = plan[name]
        opt = torch.optim.Adam([p.orient, p.transl, p.log_scale, p.pose, p.betas], lr=cfg.lr)
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(iters, 1), eta_min=cfg.lr * 0.1)
        for it in range(iters):
            opt.zero_grad()
            per, _ = frame_loss(model, data, cfg, p, use_sil, topo)
            loss = per.mean()
            loss.backward()
            opt.step()
            sched.step()
            with torch.no_grad():
                p.transl[:, 2] = 0.0
            history.append(float(loss.detach()))
            if progress:
                progress(name, it + 1, iters)
    return p


def limb_swap_permutations(device: torch.device | None = None) -> torch.Tensor:
    """(3, 33) landmark index permutations of the label hypotheses: the detector's labels, legs swapped left-right,
    arms swapped left-right (the torso and face keep theirs: they fix the facing)."""
    perms = torch.arange(33).repeat(3, 1)
    for h, pairs in ((1, _LEG_SWAP), (2, _ARM_SWAP)):
        for a, b in pairs:
            perms[h, a], perms[h, b] = b, a
    return perms.to(device)


def permute_landmarks(data: FitData, perm: torch.Tensor) -> FitData:
    """The targets with each frame's landmarks relabelled, ``perm`` (T, 33) → a `FitData` of the same frames."""
    def take(x: torch.Tensor | None) -> torch.Tensor | None:
        if x is None:
            return None
        idx = perm.view(*perm.shape, *([1] * (x.ndim - 2))).expand(-1, -1, *x.shape[2:])
        return torch.gather(x, 1, idx)

    return dataclasses.replace(data, kp_xy=take(data.kp_xy), conf=take(data.conf), lm3d=take(data.lm3d),
                               w3d=take(data.w3d))  # fmt: skip


def _repeat_frames(data: FitData, k: int) -> FitData:
    """``k`` copies of the frames as one longer clip (no masks): rows of batched hypotheses."""

    def rep(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.repeat(k, *([1] * (x.ndim - 1)))

    return dataclasses.replace(data, kp_xy=rep(data.kp_xy), conf=rep(data.conf), lm3d=rep(data.lm3d),
                               w3d=rep(data.w3d), masks_lr=None, cx=rep(data.cx), focal=rep(data.focal))  # fmt: skip


def select_limb_labels(
    model: torch.nn.Module, data: FitData, cfg: FitConfig, p: FitParams, history: list[float], progress=None
) -> tuple[FitData, torch.Tensor, torch.Tensor]:
    """Left-right limb-label hypotheses (detector's labels, legs swapped, arms swapped), all frames in one batch: each
    is fitted for ``cfg.swap_iters`` keypoint steps from the same start (``p``, facing chosen) and scored by the
    keypoint loss (2D + 3D landmarks + joint limits + interpenetration: the body's anatomy relative to its torso is
    what tells a crossed labelling). A swap replaces the labels where it beats the detector's by ``cfg.swap_margin``.

    Returns:
        the relabelled data, the chosen hypothesis per frame (T,) (0 = kept) and the scores (3, T).
    """
    T = data.frames
    perms = limb_swap_permutations(data.kp_xy.device)
    H = perms.shape[0]
    rows = perms.repeat_interleave(T, dim=0)  # (H·T, 33), hypothesis-major
    big = permute_landmarks(_repeat_frames(data, H), rows)
    hcfg = cfg.model_copy(update={"pose_iters": cfg.swap_iters, "w_smooth": 0.0})
    q = FitParams(p.betas.detach().clone(), p.orient.detach().repeat(H, 1), p.pose.detach().repeat(H, 1),
                  p.transl.detach().repeat(H, 1), p.log_scale.detach().repeat(H))  # fmt: skip
    q = optimise_pose(model, big, hcfg, q, history, progress, stages=("pose",))
    with torch.no_grad():
        scores = frame_loss(model, big, hcfg, q, use_sil=False)[0].view(H, T)
    best = scores.argmin(dim=0)
    frames = torch.arange(T, device=scores.device)
    chosen = torch.where(scores[best, frames] < (1.0 - cfg.swap_margin) * scores[0], best, torch.zeros_like(best))
    if bool((chosen > 0).any()):
        log.info("fit_body: left-right limb labels swapped in %d of %d frames", int((chosen > 0).sum()), T)
    return permute_landmarks(data, perms[chosen]), chosen, scores


def choose_camera(
    model: torch.nn.Module, data: FitData, cfg: FitConfig, p: FitParams, history: list[float], progress=None
) -> tuple[FitData, FitParams]:
    """Fit the pose on the keypoints for half the pose steps with the weak-perspective and the perspective camera from
    the same start; keep the camera whose fit explains the keypoints better: the lower mean keypoint loss over the
    clip (2D robust residual + the 3D-landmark terms + priors, no silhouette) (``cfg.camera == "auto"``)."""
    weak = dataclasses.replace(data, focal=None)
    half = cfg.model_copy(update={"pose_iters": max(cfg.pose_iters // 2, 1)})
    fits = []
    for d in (weak, data):
        q = optimise_pose(model, d, half, p.take(torch.arange(d.frames, device=p.orient.device)), history, progress,
                          stages=("pose",))  # fmt: skip
        with torch.no_grad():
            fits.append((float(frame_loss(model, d, cfg, q, use_sil=False)[0].mean()), d, q))
    log.info("fit_body: keypoint loss weak-perspective %.4g, perspective %.4g", fits[0][0], fits[1][0])
    _, d, q = min(fits, key=lambda f: f[0])
    return d, q


def finish_fit(
    model: torch.nn.Module, data: FitData, cfg: FitConfig, p: FitParams, history: list[float], confidence
) -> BodyFit:
    """Final per-frame losses and keypoint errors; the detached `BodyFit`."""
    T = data.frames
    with torch.no_grad():
        topo = edge_topology(model.faces) if data.masks_lr is not None else None
        per, uv = frame_loss(model, data, cfg, p, data.masks_lr is not None, topo)
        err = (uv - data.kp_xy).norm(dim=-1)
        valid = (data.conf > 0).to(err)
        kp_err = (err * valid).sum(-1) / valid.sum(-1).clamp(min=1)
        camera = torch.stack([p.log_scale.exp(), data.cx, data.cx], dim=-1)
    return BodyFit(
        body=BodyParams(p.betas.detach().expand(T, -1).clone(), p.orient.detach().clone(), p.pose.detach().clone(),
                        p.transl.detach().clone()),
        camera=camera.detach(),
        image_size=data.image_size,
        losses=per.detach(),
        keypoint_error_px=kp_err.detach(),
        history=history,
        confidence=confidence.detach(),
        focal_px=None if data.focal is None else data.focal.clone(),
    )


def fit_body(
    model: torch.nn.Module,
    keypoints: torch.Tensor,
    masks: torch.Tensor | None,
    image_size: int,
    config: FitConfig | None = None,
    progress: Callable[[str, int, int], None] | None = None,
    keypoints3d: torch.Tensor | None = None,
    focal_px: torch.Tensor | None = None,
) -> BodyFit:
    """Fit the body model to a clip: shared β, per-frame pose, translation and weak-perspective camera.

    Args:
        model: `body.BodyModel` (its device and dtype are used).
        keypoints: (T, 33, 3) MediaPipe landmarks in crop pixels (x, y, confidence); confidence 0 = missing.
        masks: (T, S, S) bool person masks or None (keypoints only).
        image_size: S, the side of the square crops.
        config: `FitConfig`.
        progress: optional callback (stage, step, total).
        keypoints3d: optional (T, 33, 4) MediaPipe world landmarks (metres, x right, y down, z away from the camera,
            hip-centred) + visibility; visibility 0 = missing.
        focal_px: optional (T,) known focal length in crop pixels (EXIF or calibration) for the perspective camera.

    Returns:
        `BodyFit` with detached tensors on the model's device.
    """
    cfg = config or FitConfig()
    _check_inputs(keypoints, masks, image_size, keypoints3d)
    data = prepare_fit_data(model, keypoints, masks, image_size, cfg, keypoints3d, focal_px)
    history: list[float] = []
    hyp, scores = fit_orientations(model, data, cfg, history, progress)
    T, H = data.frames, scores.shape[0]
    yaws = facing_yaw(hyp.orient.detach()).view(H, T)
    chosen, confidence = select_facing_track(scores, yaws, cfg.facing_jump_cost)
    p = hyp.take(chosen * T + torch.arange(T, device=chosen.device))
    p.pose = torch.zeros(T, 69, device=p.orient.device, dtype=p.orient.dtype)
    if cfg.swap_iters > 0:
        data, _, _ = select_limb_labels(model, data, cfg, p, history, progress)
    if cfg.camera == "auto":
        data, p = choose_camera(model, data, cfg, p, history, progress)
        rest = cfg.model_copy(update={"pose_iters": cfg.pose_iters - max(cfg.pose_iters // 2, 1)})
        p = optimise_pose(model, data, rest, p, history, progress)
    else:
        p = optimise_pose(model, data, cfg, p, history, progress)
    return finish_fit(model, data, cfg, p, history, confidence)
