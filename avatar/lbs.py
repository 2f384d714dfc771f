"""Linear blend skinning between a canonical ("Da") pose and posed frames: joint transforms from the kinematic tree,
forward and inverse skinning of points and normals, and the per-joint pose features the implicit surface sees.

All functions are pure (tensors in, tensors out), batch first, and follow the inputs' device and dtype. A joint's
*global transform* ``M_j`` (4x4) maps the joint's local frame to the body frame: rotation = the accumulated rotations
along the chain, translation = the joint's posed position. Skinning from the canonical pose to a pose uses
``T_j = M_j(pose) @ M_j(canonical)^-1``, blended with per-point weights.
"""

from __future__ import annotations

import math

import torch

from body.model import SMPL_PARENTS
from body.rotations import axis_angle_to_matrix, matrix_to_rot6d

__all__ = [
    "NUM_JOINTS",
    "blend_transforms",
    "canonical_body_pose",
    "global_joint_transforms",
    "inverse_skin_points",
    "joint_neighbourhood",
    "local_rotations",
    "pose_features",
    "skin_normals",
    "skin_points",
    "skinning_transforms",
]

NUM_JOINTS = 24
DA_POSE_HIP_ANGLE = math.radians(30.0)
"""Hip abduction of the canonical pose (SCANimate's "Da-pose": T-pose arms, legs apart), radians."""


def _check(t: torch.Tensor, tail: tuple[int, ...], name: str, batched: bool = True) -> None:
    ok = isinstance(t, torch.Tensor) and tuple(t.shape[-len(tail) :]) == tail
    if not ok or t.ndim < len(tail) + int(batched):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape (B, ..., {', '.join(map(str, tail))}), got {got}")


def canonical_body_pose(hip_angle: float = DA_POSE_HIP_ANGLE, dtype=torch.float32, device=None) -> torch.Tensor:
    """Body pose (1, 69) axis-angle of the canonical Da-pose: the T-pose with hips abducted by ``hip_angle``.

    The left hip (joint 1, at +X) turns by +angle about Z, the right hip by -angle, so the legs move apart.
    """
    pose = torch.zeros(1, 23, 3, dtype=dtype, device=device)
    pose[0, 0, 2] = hip_angle
    pose[0, 1, 2] = -hip_angle
    return pose.reshape(1, 69)


def local_rotations(global_orient: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
    """Local joint rotation matrices (B, 24, 3, 3) from axis-angle global_orient (B, 3) and body_pose (B, 69)."""
    _check(global_orient, (3,), "global_orient")
    _check(body_pose, (69,), "body_pose")
    aa = torch.cat([global_orient, body_pose], dim=-1).reshape(global_orient.shape[0], NUM_JOINTS, 3)
    return axis_angle_to_matrix(aa)


def global_joint_transforms(
    rest_joints: torch.Tensor,
    global_orient: torch.Tensor,
    body_pose: torch.Tensor,
    transl: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global joint transforms ``M_j`` of SMPL's kinematic tree (as smplx's ``batch_rigid_transform``).

    Args:
        rest_joints: (B, 24, 3) or (24, 3) joints of the shaped body in the zero pose (metres).
        global_orient: (B, 3) root rotation, axis-angle.
        body_pose: (B, 69) rotations of joints 1..23, axis-angle.
        transl: optional (B, 3) root translation (as the body model's ``transl``).

    Returns:
        (B, 24, 4, 4) transforms; ``M[:, j, :3, 3]`` is joint j's posed position.
    """
    rot = local_rotations(global_orient, body_pose)
    b = rot.shape[0]
    if rest_joints.ndim == 2:
        rest_joints = rest_joints[None]
    _check(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    rest_joints = rest_joints.to(rot).expand(b, -1, -1)
    parents = SMPL_PARENTS
    offsets = rest_joints.clone()
    offsets[:, 1:] = rest_joints[:, 1:] - rest_joints[:, list(parents[1:])]
    if transl is not None:
        _check(transl, (3,), "transl")
        offsets = torch.cat([offsets[:, :1] + transl.to(rot)[:, None], offsets[:, 1:]], dim=1)
    local = torch.zeros(b, NUM_JOINTS, 4, 4, dtype=rot.dtype, device=rot.device)
    local[..., :3, :3] = rot
    local[..., :3, 3] = offsets
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for j in range(1, NUM_JOINTS):
        chain.append(chain[parents[j]] @ local[:, j])
    return torch.stack(chain, dim=1)


def skinning_transforms(transforms_posed: torch.Tensor, transforms_canonical: torch.Tensor) -> torch.Tensor:
    """Per-joint transforms (B, 24, 4, 4) taking canonical-pose points to the posed frame: ``M_pose @ M_canon^-1``.

    Args:
        transforms_posed: (B, 24, 4, 4) global transforms of the target poses.
        transforms_canonical: (24, 4, 4) or (B, 24, 4, 4) global transforms of the canonical pose.
    """
    _check(transforms_posed, (NUM_JOINTS, 4, 4), "transforms_posed")
    _check(transforms_canonical, (NUM_JOINTS, 4, 4), "transforms_canonical", batched=False)
    return transforms_posed @ torch.linalg.inv(transforms_canonical.to(transforms_posed))


def blend_transforms(weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Blend per-joint transforms with per-point weights.

    Args:
        weights: (B, N, 24) skinning weights (rows summing to 1).
        transforms: (B, 24, 4, 4) per-joint transforms.

    Returns:
        (B, N, 4, 4) blended transforms.
    """
    _check(weights, (NUM_JOINTS,), "weights")
    _check(transforms, (NUM_JOINTS, 4, 4), "transforms")
    b = weights.shape[0]
    return (weights @ transforms.reshape(b, NUM_JOINTS, 16)).reshape(b, -1, 4, 4)


def skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Forward LBS: points (B, N, 3) with weights (B, N, 24) under transforms (B, 24, 4, 4) -> (B, N, 3)."""
    _check(points, (3,), "points")
    blended = blend_transforms(weights, transforms)
    return (blended[..., :3, :3] @ points[..., None])[..., 0] + blended[..., :3, 3]


def inverse_skin_points(points: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """Inverse LBS: undo the blended transform of each posed point (B, N, 3) -> canonical points (B, N, 3).

    ``weights`` (B, N, 24) are the weights of the posed points (as predicted by an inverse skinning network); with the
    true weights of the canonical point this exactly inverts ``skin_points``.
    """
    _check(points, (3,), "points")
    blended = blend_transforms(weights, transforms)
    rot, trans = blended[..., :3, :3], blended[..., :3, 3]
    return torch.linalg.solve(rot, (points - trans)[..., None])[..., 0]


def skin_normals(normals: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor, inverse: bool = False):
    """Transform unit normals (B, N, 3) by the blended linear part (inverse-transpose rule); unit normals out.

    ``inverse=True`` maps posed normals to the canonical pose (the blended matrix's transpose, as normals transform
    with the inverse transpose of the point map).
    """
    blended = blend_transforms(weights, transforms)[..., :3, :3]
    if inverse:
        out = (blended.transpose(-1, -2) @ normals[..., None])[..., 0]
    else:
        out = torch.linalg.solve(blended.transpose(-1, -2), normals[..., None])[..., 0]
    return torch.nn.functional.normalize(out, dim=-1)


def pose_features(global_orient: torch.Tensor, body_pose: torch.Tensor, canonical_pose: torch.Tensor) -> torch.Tensor:
    """Per-joint pose features (B, 23, 6): 6D form of each body joint's local rotation relative to the canonical
    pose, minus the identity's, so the canonical pose itself gives zeros. The root is left out (a global rotation
    does not change the clothing's shape).

    Args:
        global_orient: (B, 3) axis-angle.
        body_pose: (B, 69) axis-angle.
        canonical_pose: (1, 69) canonical body pose (e.g. ``canonical_body_pose()``).
    """
    rot = local_rotations(global_orient, body_pose)[:, 1:]
    zero = torch.zeros(1, 3, dtype=canonical_pose.dtype, device=canonical_pose.device)
    rot_c = local_rotations(zero, canonical_pose)[:, 1:].to(rot)
    rel = rot @ rot_c.transpose(-1, -2)
    eye6 = torch.tensor([1.0, 0.0, 0.0, 0.0, 1.0, 0.0], dtype=rot.dtype, device=rot.device)
    return matrix_to_rot6d(rel) - eye6


def joint_neighbourhood(dtype=torch.float32, device=None) -> torch.Tensor:
    """(24, 23) 0/1 matrix: which body joints' rotations (columns, joints 1..23) a point skinned to joint i (row) sees.

    A point sees its own joint, its parent and its children: the rotations that bend the surface around its bone.
    """
    m = torch.zeros(NUM_JOINTS, NUM_JOINTS, dtype=dtype, device=device)
    for j in range(NUM_JOINTS):
        m[j, j] = 1.0
        p = SMPL_PARENTS[j]
        if p >= 0:
            m[j, p] = 1.0
            m[p, j] = 1.0
    return m[:, 1:]
