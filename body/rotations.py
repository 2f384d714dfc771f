"""Rotation conversions in pure torch: axis-angle, rotation matrices, the continuous 6D form and quaternions.

Conventions: right-handed, matrices act on column vectors; the 6D form is the first two columns of the
rotation matrix, concatenated (``[R[:, 0], R[:, 1]]``, Zhou et al. 2019); quaternions are ``(w, x, y, z)``.
All functions take any leading batch shape and follow the input's device and dtype.
"""

from __future__ import annotations

import torch

__all__ = [
    "axis_angle_to_matrix",
    "matrix_to_axis_angle",
    "matrix_to_quaternion",
    "matrix_to_rot6d",
    "quaternion_to_matrix",
    "rot6d_to_axis_angle",
    "rot6d_to_matrix",
]


def _check_last_dims(x: torch.Tensor, dims: tuple[int, ...], name: str) -> None:
    if not torch.is_tensor(x):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    if tuple(x.shape[-len(dims) :]) != dims:
        raise ValueError(f"{name} must have shape (..., {', '.join(map(str, dims))}), got {tuple(x.shape)}")


def axis_angle_to_matrix(axis_angle: torch.Tensor) -> torch.Tensor:
    """Rodrigues' formula, smooth at zero (series expansion for tiny angles).

    Args:
        axis_angle: (..., 3) rotation vectors (axis times angle in radians).

    Returns:
        (..., 3, 3) rotation matrices.
    """
    _check_last_dims(axis_angle, (3,), "axis_angle")
    theta2 = (axis_angle * axis_angle).sum(-1, keepdim=True)[..., None]  # (..., 1, 1)
    small = theta2 < 1e-8
    safe2 = torch.where(small, torch.ones_like(theta2), theta2)
    theta = safe2.sqrt()
    # sin(t)/t and (1-cos(t))/t^2 with their Taylor series near zero so gradients stay finite at the identity.
    a = torch.where(small, 1.0 - theta2 / 6.0, torch.sin(theta) / theta)
    b = torch.where(small, 0.5 - theta2 / 24.0, (1.0 - torch.cos(theta)) / safe2)
    x, y, z = axis_angle.unbind(-1)
    zero = torch.zeros_like(x)
    K = torch.stack([zero, -z, y, z, zero, -x, -y, x, zero], dim=-1).reshape(*axis_angle.shape[:-1], 3, 3)
    eye = torch.eye(3, dtype=axis_angle.dtype, device=axis_angle.device).expand_as(K)
    return eye + a * K + b * (K @ K)


def matrix_to_quaternion(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to unit quaternions ``(w, x, y, z)`` with ``w >= 0``.

    Args:
        matrix: (..., 3, 3) rotation matrices.

    Returns:
        (..., 4) unit quaternions.
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    m = matrix
    m00, m11, m22 = m[..., 0, 0], m[..., 1, 1], m[..., 2, 2]
    # Four candidate solutions; pick the numerically best-conditioned one per element.
    q_abs = torch.stack(
        [1.0 + m00 + m11 + m22, 1.0 + m00 - m11 - m22, 1.0 - m00 + m11 - m22, 1.0 - m00 - m11 + m22], dim=-1
    )
    q_abs = torch.sqrt(torch.clamp(q_abs, min=0.0))
    candidates = torch.stack(
        [
            torch.stack([q_abs[..., 0] ** 2, m[..., 2, 1] - m[..., 1, 2], m[..., 0, 2] - m[..., 2, 0],
                         m[..., 1, 0] - m[..., 0, 1]], dim=-1),
            torch.stack([m[..., 2, 1] - m[..., 1, 2], q_abs[..., 1] ** 2, m[..., 1, 0] + m[..., 0, 1],
                         m[..., 0, 2] + m[..., 2, 0]], dim=-1),
            torch.stack([m[..., 0, 2] - m[..., 2, 0], m[..., 1, 0] + m[..., 0, 1], q_abs[..., 2] ** 2,
                         m[..., 2, 1] + m[..., 1, 2]], dim=-1),
            torch.stack([m[..., 1, 0] - m[..., 0, 1], m[..., 0, 2] + m[..., 2, 0], m[..., 2, 1] + m[..., 1, 2],
                         q_abs[..., 3] ** 2], dim=-1),
        ],
        dim=-2,
    )  # (..., 4, 4)
    denom = 2.0 * torch.clamp(q_abs, min=0.1)[..., None]
    candidates = candidates / denom
    best = q_abs.argmax(dim=-1)
    quat = torch.gather(candidates, -2, best[..., None, None].expand(*best.shape, 1, 4)).squeeze(-2)
    quat = quat / quat.norm(dim=-1, keepdim=True)
    return torch.where(quat[..., :1] < 0, -quat, quat)


def quaternion_to_matrix(quaternion: torch.Tensor) -> torch.Tensor:
    """Quaternions ``(w, x, y, z)`` (normalised here) to rotation matrices.

    Args:
        quaternion: (..., 4) quaternions.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    _check_last_dims(quaternion, (4,), "quaternion")
    q = quaternion / quaternion.norm(dim=-1, keepdim=True)
    w, x, y, z = q.unbind(-1)
    rows = [
        1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y),
        2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x),
        2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y),
    ]
    return torch.stack(rows, dim=-1).reshape(*q.shape[:-1], 3, 3)


def matrix_to_axis_angle(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to rotation vectors with angle in [0, pi].

    Args:
        matrix: (..., 3, 3) rotation matrices.

    Returns:
        (..., 3) rotation vectors.
    """
    q = matrix_to_quaternion(matrix)
    xyz = q[..., 1:]
    sin_half = xyz.norm(dim=-1, keepdim=True)
    angle = 2.0 * torch.atan2(sin_half, q[..., :1])
    small = sin_half < 1e-6
    # angle / sin(angle/2) -> 2 as the angle -> 0
    safe = torch.where(small, torch.ones_like(sin_half), sin_half)
    scale = torch.where(small, 2.0 + angle * angle / 12.0, angle / safe)
    return xyz * scale


def rot6d_to_matrix(rot6d: torch.Tensor) -> torch.Tensor:
    """The 6D form (first two matrix columns) to rotation matrices by Gram-Schmidt.

    Args:
        rot6d: (..., 6) as ``[c0 (3), c1 (3)]``; need not be orthonormal.

    Returns:
        (..., 3, 3) rotation matrices.
    """
    _check_last_dims(rot6d, (6,), "rot6d")
    a1, a2 = rot6d[..., :3], rot6d[..., 3:]
    b1 = torch.nn.functional.normalize(a1, dim=-1)
    b2 = torch.nn.functional.normalize(a2 - (b1 * a2).sum(-1, keepdim=True) * b1, dim=-1)
    b3 = torch.linalg.cross(b1, b2, dim=-1)
    return torch.stack([b1, b2, b3], dim=-1)


def matrix_to_rot6d(matrix: torch.Tensor) -> torch.Tensor:
    """Rotation matrices to the 6D form (first two columns).

    Args:
        matrix: (..., 3, 3) rotation matrices.

    Returns:
        (..., 6) as ``[R[..., :, 0], R[..., :, 1]]``.
    """
    _check_last_dims(matrix, (3, 3), "matrix")
    return torch.cat([matrix[..., :, 0], matrix[..., :, 1]], dim=-1)


def rot6d_to_axis_angle(rot6d: torch.Tensor) -> torch.Tensor:
    """The 6D form to rotation vectors.

    Args:
        rot6d: (..., 6) first two matrix columns.

    Returns:
        (..., 3) rotation vectors.
    """
    return matrix_to_axis_angle(rot6d_to_matrix(rot6d))
