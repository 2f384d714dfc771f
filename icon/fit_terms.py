"""Loss terms and priors of the initial body fit (`icon.fit`): robust kernels, pose priors (small angles, bend
direction, per-joint anatomical limits), capsule interpenetration, and the terms comparing the body's landmarks with
MediaPipe's metric 3D landmarks (limb directions relative to the torso, torso facing, depth order).

Pure functions of tensors; each maps a batch to one value per item, (B, ...) → (B,).
"""

from __future__ import annotations

import math

import torch

# Indices (MediaPipe order) of the torso landmarks used to fix camera and global orientation first.
TORSO_LANDMARKS = (11, 12, 23, 24)  # left/right shoulder, left/right hip
# Limb bones whose direction relative to the torso the 3D landmarks constrain (upper/lower arms and legs, feet).
LIMB_BONES = ((11, 13), (13, 15), (12, 14), (14, 16), (23, 25), (25, 27), (24, 26), (26, 28), (29, 31), (30, 32))
# body_pose (69) entries and signs penalised when bent the wrong way (elbows about y, knees about x), SMPLify-style.
_BEND_IDX = (52, 55, 9, 12)
_BEND_SIGN = (1.0, -1.0, -1.0, -1.0)


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


def _joint_limits() -> torch.Tensor:
    """(23, 3, 2) soft limits (radians) of each body_pose joint's local axis-angle components (SMPL rest frames).

    Anatomical ranges with a margin: flexion axes wide, twist and side bend narrow; shoulders are left free.
    """
    lim = torch.tensor([-math.pi, math.pi]).expand(24, 3, 2).clone()

    def put(joints: tuple[int, ...], ranges: list[tuple[float, float]]) -> None:
        for j in joints:
            lim[j] = torch.tensor(ranges)

    put((1,), [(-2.2, 0.8), (-0.7, 0.7), (-0.5, 1.2)])  # left hip (rotation about the thigh ±40°)
    put((2,), [(-2.2, 0.8), (-0.7, 0.7), (-1.2, 0.5)])  # right hip
    put((4, 5), [(-0.1, 2.6), (-0.2, 0.2), (-0.2, 0.2)])  # knees: flexion about x only
    put((7, 8), [(-0.8, 0.9), (-0.3, 0.3), (-0.4, 0.4)])  # ankles
    put((10, 11), [(-0.4, 0.4), (-0.1, 0.1), (-0.1, 0.1)])  # toes: they flex, they do not turn the foot
    put((22, 23), [(-0.4, 0.4)] * 3)  # hands
    put((3, 6, 9), [(-0.4, 0.8), (-0.6, 0.6), (-0.45, 0.45)])  # spine
    put((12,), [(-0.6, 0.7), (-0.8, 0.8), (-0.5, 0.5)])  # neck
    put((15,), [(-0.5, 0.6), (-0.7, 0.7), (-0.4, 0.4)])  # head
    put((13, 14), [(-0.5, 0.5)] * 3)  # collars
    put((18,), [(-0.4, 0.4), (-2.7, 0.1), (-0.4, 0.4)])  # left elbow: flexion about -y
    put((19,), [(-0.4, 0.4), (-0.1, 2.7), (-0.4, 0.4)])  # right elbow: flexion about +y
    put((20, 21), [(-0.8, 0.8), (-0.6, 0.6), (-1.0, 1.0)])  # wrists
    return lim[1:]


_JOINT_LIMITS = _joint_limits()


def joint_limit_prior(body_pose: torch.Tensor) -> torch.Tensor:
    """Squared excess of each joint's axis-angle components beyond their limits, (T, 69) → (T,) (mean, rad²)."""
    lim = _JOINT_LIMITS.to(body_pose)
    theta = body_pose.view(-1, 23, 3)
    over = torch.relu(theta - lim[..., 1]) + torch.relu(lim[..., 0] - theta)
    return (over**2).sum(dim=(1, 2)) / 23.0


# Capsules of the interpenetration term (SMPL joint indices, radii in metres): the torso as the spine from the
# pelvis to the top of the spine; the arm points that must stay outside it; the lower legs, which must not cross.
_TORSO_AXIS = ((0, 3), (3, 6), (6, 9))
_ARM_POINTS = (18, 19, 20, 21, 22, 23)  # elbows, wrists, hands
_TORSO_RADIUS_M, _ARM_RADIUS_M, _SHIN_RADIUS_M = 0.11, 0.04, 0.045


def point_segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance of points to segments, broadcasting (..., 3) → (...)."""
    ab = b - a
    t = (((p - a) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    return (p - (a + t[..., None] * ab)).norm(dim=-1)


def segment_segment_distance(a0: torch.Tensor, a1: torch.Tensor, b0: torch.Tensor, b1: torch.Tensor, n: int = 9):
    """Approximate distance between segments a0-a1 and b0-b1, (..., 3) → (...): the least distance of ``n`` points
    along each segment to the other segment (exact for parallel, crossing and end-point-nearest cases up to 1/(n-1)
    of the length)."""
    s = torch.linspace(0.0, 1.0, n, device=a0.device, dtype=a0.dtype)[:, None]
    pa = a0[..., None, :] + s * (a1 - a0)[..., None, :]
    pb = b0[..., None, :] + s * (b1 - b0)[..., None, :]
    da = point_segment_distance(pa, b0[..., None, :], b1[..., None, :]).amin(-1)
    db = point_segment_distance(pb, a0[..., None, :], a1[..., None, :]).amin(-1)
    return torch.minimum(da, db)


def interpenetration_term(joints: torch.Tensor) -> torch.Tensor:
    """Squared overlaps (m²) of capsules around the skeleton, (B, 24, 3) joints → (B,): elbows, wrists and hands inside
    the torso (a capsule along the spine) and the two lower legs (knee-ankle capsules) through each other."""
    a = joints[:, [i for i, _ in _TORSO_AXIS]]  # (B, 3, 3) torso segments
    b = joints[:, [j for _, j in _TORSO_AXIS]]
    arms = joints[:, list(_ARM_POINTS)]  # (B, 6, 3)
    d = point_segment_distance(arms[:, :, None], a[:, None], b[:, None]).amin(-1)  # (B, 6)
    arm_cost = torch.relu(_TORSO_RADIUS_M + _ARM_RADIUS_M - d).pow(2).sum(-1)
    shins = segment_segment_distance(joints[:, 4], joints[:, 7], joints[:, 5], joints[:, 8])
    return arm_cost + torch.relu(2 * _SHIN_RADIUS_M - shins).pow(2)


def mediapipe_world_to_camera(keypoints3d: torch.Tensor, min_visibility: float) -> tuple[torch.Tensor, torch.Tensor]:
    """MediaPipe world landmarks (x right, y down, z away from the camera) → the fit's camera axes (x right, y up,
    z towards the camera), hip-centred, and their weights.

    Args:
        keypoints3d: (T, 33, 4) metres + visibility.
        min_visibility: landmarks below this get weight 0.

    Returns:
        points (T, 33, 3) and weights (T, 33) (visibility, or 0).
    """
    pts = torch.nan_to_num(keypoints3d[..., :3]) * keypoints3d.new_tensor([1.0, -1.0, -1.0])
    vis = torch.nan_to_num(keypoints3d[..., 3])
    return pts, torch.where(vis >= min_visibility, vis, torch.zeros_like(vis))


def kabsch_rotation(src: torch.Tensor, dst: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Rotations R (B, 3, 3) minimising Σ w |R (src - s̄) - (dst - d̄)|² (weighted centroids); identity without weight.

    Args:
        src, dst: (B, N, 3) corresponding points.
        weights: (B, N) non-negative.
    """
    wsum = weights.sum(-1, keepdim=True)
    w = weights / wsum.clamp(min=1e-9)
    mu_s = (w[..., None] * src).sum(1, keepdim=True)
    mu_d = (w[..., None] * dst).sum(1, keepdim=True)
    cov = ((src - mu_s) * w[..., None]).transpose(1, 2) @ (dst - mu_d)  # Σ w s dᵀ
    u, _, vh = torch.linalg.svd(cov)
    d = torch.sign(torch.det(vh.transpose(1, 2) @ u.transpose(1, 2)))
    d = torch.where(d == 0, torch.ones_like(d), d)
    fix = torch.diag_embed(torch.stack([torch.ones_like(d), torch.ones_like(d), d], dim=-1))
    rot = vh.transpose(1, 2) @ fix @ u.transpose(1, 2)
    eye = torch.eye(3, dtype=src.dtype, device=src.device).expand_as(rot)
    return torch.where((wsum[..., None] > 0), rot, eye)


def _pair_weights(weights: torch.Tensor, pairs: tuple[tuple[int, int], ...]) -> torch.Tensor:
    i = [a for a, _ in pairs]
    j = [b for _, b in pairs]
    return torch.minimum(weights[:, i], weights[:, j])


def bone_direction_term(landmarks: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Mean (1 - cos) between the body's limb directions and the 3D landmarks' after rotating those onto the torso.

    Orientation-invariant: the landmarks' torso (shoulders, hips) is aligned with the body's by `kabsch_rotation`
    (no gradient through the alignment), so only where the limbs point relative to the torso counts.

    Args:
        landmarks: (B, 33, 3) the body's landmarks (camera frame).
        target: (B, 33, 3) 3D landmarks (camera axes, `mediapipe_world_to_camera`).
        weights: (B, 33) landmark weights.

    Returns:
        (B,) in [0, 2]; 0 for frames without weighted bones.
    """
    torso = list(TORSO_LANDMARKS)
    with torch.no_grad():
        rot = kabsch_rotation(target[:, torso], landmarks[:, torso].detach(), weights[:, torso])
    aligned = target @ rot.transpose(1, 2)
    i = [a for a, _ in LIMB_BONES]
    j = [b for _, b in LIMB_BONES]
    d_body = torch.nn.functional.normalize(landmarks[:, j] - landmarks[:, i], dim=-1)
    d_lm = torch.nn.functional.normalize(aligned[:, j] - aligned[:, i], dim=-1)
    w = _pair_weights(weights, LIMB_BONES)
    cost = 1.0 - (d_body * d_lm).sum(-1)
    return (w * cost).sum(-1) / w.sum(-1).clamp(min=1e-6)


def torso_facing(points: torch.Tensor) -> torch.Tensor:
    """Unit facing direction of a torso, (B, 33, 3) landmarks → (B, 3): (left - right shoulder) × (shoulders - hips),
    +Z for a body facing the camera in the fit's camera axes."""
    across = points[:, 11] - points[:, 12]
    up = (points[:, 11] + points[:, 12] - points[:, 23] - points[:, 24]) / 2
    return torch.nn.functional.normalize(torch.cross(across, up, dim=-1), dim=-1)


def facing_term(landmarks: torch.Tensor, target: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """(1 - cos) / 2 between the body's and the 3D landmarks' torso facing (camera frame), weighted by the least
    visible torso landmark, (B,)."""
    w = weights[:, list(TORSO_LANDMARKS)].amin(dim=-1)
    return w * (1.0 - (torso_facing(landmarks) * torso_facing(target)).sum(-1)) / 2


def depth_order_term(
    landmarks: torch.Tensor,
    target: torch.Tensor,
    weights: torch.Tensor,
    pairs: tuple[tuple[int, int], ...],
    min_gap: float,
    margin: float,
) -> torch.Tensor:
    """Hinge on the depth order of landmark pairs: where the 3D landmarks put one of a pair clearly nearer the
    camera (by > ``min_gap`` m), the body must too, by ``margin`` m; cost (margin - signed gap)₊ / margin.

    Args:
        landmarks: (B, 33, 3) the body's landmarks, camera frame (z towards the camera).
        target: (B, 33, 3) 3D landmarks in the same axes.
        weights: (B, 33) landmark weights.
        pairs: landmark index pairs.

    Returns:
        (B,) weighted mean cost; 0 for frames without an ordered pair.
    """
    i = [a for a, _ in pairs]
    j = [b for _, b in pairs]
    dz_t = target[:, i, 2] - target[:, j, 2]
    dz_b = landmarks[:, i, 2] - landmarks[:, j, 2]
    w = _pair_weights(weights, pairs) * (dz_t.abs() > min_gap).to(landmarks)
    cost = torch.relu(margin - torch.sign(dz_t) * dz_b) / margin
    return (w * cost).sum(-1) / w.sum(-1).clamp(min=1e-6)
