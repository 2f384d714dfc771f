"""The avatar's side of skinning: the canonical ("Da") pose, the per-joint pose features the implicit surface sees and
which joints a point sees. The skinning itself (joint transforms, forward/inverse LBS) is ``body.lbs``.

All functions are pure (tensors in, tensors out), batch first, and follow the inputs' device and dtype.
"""

from __future__ import annotations

import math

import torch

from body.lbs import local_rotations
from body.rotations import matrix_to_rot6d
from body.skeleton import NUM_JOINTS, SMPL_PARENTS

__all__ = ["DA_POSE_HIP_ANGLE", "canonical_body_pose", "joint_neighbourhood", "pose_features"]

DA_POSE_HIP_ANGLE = math.radians(30.0)
"""Hip abduction of the canonical pose (SCANimate's "Da-pose": T-pose arms, legs apart), radians."""


def canonical_body_pose(hip_angle: float = DA_POSE_HIP_ANGLE, dtype=torch.float32, device=None) -> torch.Tensor:
    """Body pose (1, 69) axis-angle of the canonical Da-pose: the T-pose with hips abducted by ``hip_angle``.

    The left hip (joint 1, at +X) turns by +angle about Z, the right hip by -angle, so the legs move apart.
    """
    pose = torch.zeros(1, 23, 3, dtype=dtype, device=device)
    pose[0, 0, 2] = hip_angle
    pose[0, 1, 2] = -hip_angle
    return pose.reshape(1, 69)


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
