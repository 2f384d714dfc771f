"""Per-frame poses the avatar holds for its training frames: the pipeline's body fits, refined by temporal smoothing
of the joint rotations and re-registered onto each frame's fitted body.

Single-view body fits jitter from frame to frame (a limb's depth is barely observable in one view), while a person
moves smoothly. The body pose (joints 1..23) is smoothed in time with a Whittaker smoother (weighted least squares:
stay near each frame's fit, weighted by the frame's quality, and penalise the second time derivative), which keeps
linear motion and removes jitter. Changing the joint rotations moves the body in its frame, so the root (global
orientation + translation) is then re-solved in closed form: the rigid transform that best maps the refined body onto
the frame's fitted body (least squares over the vertices, Kabsch/Umeyama without scale) is folded into the root. The
avatar thus stays in the coordinates of the frame's fitted body and reconstruction (same place, same overall
orientation) while its limbs follow the smoothed motion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from body.params import BodyParams
from body.rotations import axis_angle_to_matrix, matrix_to_axis_angle

__all__ = ["FramePoses", "anchor_root", "pose_change", "refine_frame_poses", "rigid_fit", "smooth_in_time"]


@dataclass
class FramePoses:
    """Body poses of T frames (SMPL axis-angle, metres).

    Attributes:
        global_orient: (T, 3) root rotation.
        body_pose: (T, 69) rotations of joints 1..23.
        transl: (T, 3) root translation.
    """

    global_orient: torch.Tensor
    body_pose: torch.Tensor
    transl: torch.Tensor

    def __post_init__(self) -> None:
        t = self.global_orient.shape[0]
        if self.global_orient.shape != (t, 3) or self.body_pose.shape != (t, 69) or self.transl.shape != (t, 3):
            raise ValueError(
                f"FramePoses needs global_orient (T, 3), body_pose (T, 69), transl (T, 3); got "
                f"{tuple(self.global_orient.shape)}, {tuple(self.body_pose.shape)}, {tuple(self.transl.shape)}"
            )

    def __len__(self) -> int:
        return int(self.global_orient.shape[0])

    def to(self, device) -> FramePoses:
        return FramePoses(self.global_orient.to(device), self.body_pose.to(device), self.transl.to(device))

    @classmethod
    def from_params(cls, params: BodyParams) -> FramePoses:
        """The poses of T rows of body parameters (their betas dropped), as torch tensors."""
        p = BodyParams.of(params).torch()
        return cls(p.global_orient, p.body_pose, p.transl)

    def with_betas(self, betas: torch.Tensor) -> BodyParams:
        """These poses with a shape: betas (K,) shared by every frame or (T, K)."""
        betas = torch.as_tensor(betas, dtype=self.global_orient.dtype, device=self.global_orient.device)
        if betas.ndim == 1:
            betas = betas[None].expand(len(self), -1)
        return BodyParams(betas, self.global_orient, self.body_pose, self.transl)

    @classmethod
    def empty(cls, device=None) -> FramePoses:
        """No frames (an avatar saved before per-frame poses were stored)."""
        z = torch.zeros
        return cls(z(0, 3, device=device), z(0, 69, device=device), z(0, 3, device=device))


def _posed_body(model, betas: torch.Tensor, poses: FramePoses):
    """Body model output (no gradients) for T poses with one shape (num_betas,)."""
    with torch.no_grad():
        return model(**poses.with_betas(betas).to(model.device, model.dtype).as_dict())


def smooth_in_time(
    values: torch.Tensor, times: torch.Tensor, time_scale: float, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """Whittaker smoother along the first axis: argmin_y sum_t w_t |y_t - x_t|^2 + time_scale^4 sum |y''(t)|^2.

    ``y''`` is the second divided difference over (possibly uneven) times, so the smoothing acts over
    ``time_scale`` seconds whatever the frame rate: at a frame spacing equal to ``time_scale`` it is the classic
    smoother with lambda = 1. Constant and linear motions are kept exactly; frames far apart in time barely couple.

    Joint rotations are smoothed as axis-angle vectors, which is accurate for the moderate, continuous rotations of
    body joints (a joint swinging through +-180 degrees between frames would need a rotation-aware smoother).

    Args:
        values: (T, D) per-frame values (e.g. axis-angle joint rotations).
        times: (T,) seconds (any order; duplicates allowed).
        time_scale: seconds (> 0).
        weights: (T,) data weights > 0 (default ones): low-weight frames follow their neighbours more.

    Returns:
        (T, D) smoothed values (dtype and device of ``values``).
    """
    if values.ndim != 2:
        raise ValueError(f"values must be (T, D), got {tuple(values.shape)}")
    t = values.shape[0]
    if times.shape != (t,):
        raise ValueError(f"times must be (T,) = ({t},), got {tuple(times.shape)}")
    if time_scale <= 0:
        raise ValueError(f"time_scale must be positive, got {time_scale}")
    if t < 3:
        return values.clone()
    w = torch.ones(t, dtype=torch.float64) if weights is None else weights.detach().double().cpu().clamp(min=1e-3)
    order = torch.argsort(times.detach().cpu())
    ts = times.detach().double().cpu()[order]
    gaps = torch.diff(ts).clamp(min=0.05 * time_scale)  # (repeated times: tightly coupled, not singular)
    a, b = gaps[:-1], gaps[1:]
    d = torch.zeros(t - 2, t, dtype=torch.float64)
    rows = torch.arange(t - 2)
    d[rows, rows] = 2.0 / (a * (a + b))
    d[rows, rows + 1] = -2.0 / (a * b)
    d[rows, rows + 2] = 2.0 / (b * (a + b))
    ws = torch.diag(w[order])
    system = ws + time_scale**4 * d.T @ d
    x = values.detach().double().cpu()[order]
    y = torch.linalg.solve(system, ws @ x)
    out = torch.empty_like(y)
    out[order] = y
    return out.to(values)


def rigid_fit(source: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Rotation R (B, 3, 3) and translation t (B, 3) minimising sum_i |R source_i + t - target_i|^2 (Kabsch).

    Args:
        source: (B, N, 3) points.
        target: (B, N, 3) corresponding points.
    """
    if source.shape != target.shape or source.ndim != 3 or source.shape[-1] != 3:
        raise ValueError(f"source and target must both be (B, N, 3), got {tuple(source.shape)}, {tuple(target.shape)}")
    mu_s, mu_t = source.mean(1, keepdim=True), target.mean(1, keepdim=True)
    cov = (target - mu_t).transpose(1, 2) @ (source - mu_s)  # (B, 3, 3)
    u, _, vt = torch.linalg.svd(cov)
    sign = torch.ones(source.shape[0], 3, dtype=source.dtype, device=source.device)
    sign[:, 2] = torch.sign(torch.linalg.det(u) * torch.linalg.det(vt))
    rot = u @ torch.diag_embed(sign) @ vt
    return rot, (mu_t - mu_s @ rot.transpose(1, 2))[:, 0]


def anchor_root(
    model,
    betas: torch.Tensor,
    poses: FramePoses,
    reference_vertices: torch.Tensor,
) -> FramePoses:
    """Re-solve each frame's root so the posed body best overlaps ``reference_vertices`` (rigidly, all vertices).

    The rigid transform (R, t) from :func:`rigid_fit` is folded into the root: the new global orientation is
    ``R @ R_root`` and the translation moves the posed pelvis ``p`` to ``R p + t``, so the body model gives exactly the
    transformed body.

    Args:
        model: body model (``body.BodyModel``).
        betas: (num_betas,) shape.
        poses: T poses whose body pose is kept.
        reference_vertices: (T, V, 3) bodies to overlap (e.g. the fitted bodies, same model and shape).
    """
    out = _posed_body(model, betas, poses)
    verts, pelvis = out.vertices.double(), out.joints[:, 0].double()
    ref = reference_vertices.to(verts)
    if ref.shape != verts.shape:
        raise ValueError(f"reference_vertices must be {tuple(verts.shape)} (T, V, 3), got {tuple(ref.shape)}")
    rot, shift = rigid_fit(verts, ref)
    root = axis_angle_to_matrix(poses.global_orient.to(verts))
    orient = matrix_to_axis_angle(rot @ root)
    transl = poses.transl.to(verts) + (rot @ pelvis[..., None])[..., 0] + shift - pelvis
    src = poses.global_orient
    return FramePoses(orient.to(src), poses.body_pose.clone(), transl.to(src))


def refine_frame_poses(
    model,
    betas: torch.Tensor,
    fitted: FramePoses,
    times: torch.Tensor | np.ndarray | None,
    time_scale: float,
    weights: torch.Tensor | None = None,
) -> FramePoses:
    """Smooth the body pose in time (:func:`smooth_in_time`), then anchor the root on the fitted body.

    Args:
        model: body model of the fits.
        betas: (num_betas,) the avatar's shape.
        fitted: the pipeline's per-frame poses.
        times: (T,) frame times in seconds; None returns the fitted poses unchanged (smoothing needs the times).
        time_scale: smoothing time scale (s); 0 returns the fitted poses unchanged.
        weights: (T,) per-frame quality (data weight of the smoother).
    """
    t = len(fitted)
    if time_scale <= 0 or t < 3 or times is None:
        return FramePoses(fitted.global_orient.clone(), fitted.body_pose.clone(), fitted.transl.clone())
    times = torch.as_tensor(np.asarray(times) if not isinstance(times, torch.Tensor) else times, dtype=torch.float64)
    body_pose = smooth_in_time(fitted.body_pose, times, time_scale, weights)
    reference = _posed_body(model, betas, fitted).vertices
    smoothed = FramePoses(fitted.global_orient.clone(), body_pose, fitted.transl.clone())
    return anchor_root(model, betas, smoothed, reference)


def pose_change(a: FramePoses, b: FramePoses) -> dict[str, np.ndarray]:
    """Per-frame change from poses ``a`` to ``b`` (same T): mean joint rotation over joints 1..23 (deg), root
    rotation (deg) and translation (m), each (T,)."""
    if len(a) != len(b):
        raise ValueError(f"pose sets differ in length: {len(a)} and {len(b)} frames")

    def angle(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rel = axis_angle_to_matrix(x.double()).transpose(-1, -2) @ axis_angle_to_matrix(y.double())
        return torch.rad2deg(torch.arccos(((rel.diagonal(dim1=-2, dim2=-1).sum(-1) - 1) / 2).clamp(-1, 1)))

    t = len(a)
    joints = angle(a.body_pose.reshape(t, 23, 3), b.body_pose.reshape(t, 23, 3).to(a.body_pose))
    return {
        "joint_deg": joints.mean(-1).cpu().numpy(),
        "root_deg": angle(a.global_orient, b.global_orient.to(a.global_orient)).cpu().numpy(),
        "transl_m": (a.transl.double() - b.transl.to(a.transl).double()).norm(dim=-1).cpu().numpy(),
    }
