"""Linear blend skinning on SMPL's 24-joint tree: shape and pose blend shapes, joint transforms, forward and inverse
skinning of points and normals, and the whole SMPL-format forward pass (``pose_body``) used by ``body.BodyModel``.

All functions are pure (tensors in, tensors out), batch first, and follow the inputs' device and dtype. A joint's
*global transform* ``M_j`` (4x4) maps the joint's local frame to the body frame: rotation = the accumulated rotations
along the chain, translation = the joint's posed position. Skinning from a reference pose to a pose uses
``T_j = M_j(pose) @ M_j(reference)^-1``, blended with per-point weights; from the zero pose (the model's rest pose)
``M_j(zero)`` is a pure translation by the rest joint, so ``T_j`` needs no inverse (``rest_skinning_transforms``).
"""

from __future__ import annotations

import torch

from body.rotations import axis_angle_to_matrix
from body.skeleton import NUM_JOINTS, SMPL_PARENTS

__all__ = [
    "NUM_JOINTS",
    "blend_shapes",
    "blend_transforms",
    "chain_transforms",
    "global_joint_transforms",
    "inverse_skin_points",
    "local_rotations",
    "pose_blend_shapes",
    "pose_body",
    "rest_skinning_transforms",
    "skin_normals",
    "skin_points",
    "skinning_transforms",
]


def _check(t: torch.Tensor, tail: tuple[int, ...], name: str, batched: bool = True) -> None:
    ok = isinstance(t, torch.Tensor) and tuple(t.shape[-len(tail) :]) == tail
    if not ok or t.ndim < len(tail) + int(batched):
        got = tuple(t.shape) if isinstance(t, torch.Tensor) else type(t).__name__
        raise ValueError(f"{name} must have shape (B, ..., {', '.join(map(str, tail))}), got {got}")


def local_rotations(global_orient: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
    """Local joint rotation matrices (B, 24, 3, 3) from axis-angle global_orient (B, 3) and body_pose (B, 69)."""
    _check(global_orient, (3,), "global_orient")
    _check(body_pose, (69,), "body_pose")
    aa = torch.cat([global_orient, body_pose], dim=-1).reshape(global_orient.shape[0], NUM_JOINTS, 3)
    return axis_angle_to_matrix(aa)


def chain_transforms(
    rotations: torch.Tensor, rest_joints: torch.Tensor, transl: torch.Tensor | None = None
) -> torch.Tensor:
    """Global joint transforms ``M_j`` (B, 24, 4, 4) of SMPL's kinematic tree from local rotations.

    Args:
        rotations: (B, 24, 3, 3) local joint rotations (root first).
        rest_joints: (B, 24, 3) or (24, 3) joints of the shaped body in the zero pose (metres).
        transl: optional (B, 3) root translation (as the body model's ``transl``).

    Returns:
        (B, 24, 4, 4) transforms; ``M[:, j, :3, 3]`` is joint j's posed position.
    """
    _check(rotations, (NUM_JOINTS, 3, 3), "rotations")
    b = rotations.shape[0]
    if rest_joints.ndim == 2:
        rest_joints = rest_joints[None]
    _check(rest_joints, (NUM_JOINTS, 3), "rest_joints")
    rest_joints = rest_joints.to(rotations).expand(b, -1, -1)
    parents = SMPL_PARENTS
    offsets = rest_joints.clone()
    offsets[:, 1:] = rest_joints[:, 1:] - rest_joints[:, list(parents[1:])]
    if transl is not None:
        _check(transl, (3,), "transl")
        offsets = torch.cat([offsets[:, :1] + transl.to(rotations)[:, None], offsets[:, 1:]], dim=1)
    local = torch.zeros(b, NUM_JOINTS, 4, 4, dtype=rotations.dtype, device=rotations.device)
    local[..., :3, :3] = rotations
    local[..., :3, 3] = offsets
    local[..., 3, 3] = 1.0
    chain = [local[:, 0]]
    for j in range(1, NUM_JOINTS):
        chain.append(chain[parents[j]] @ local[:, j])
    return torch.stack(chain, dim=1)


def global_joint_transforms(
    rest_joints: torch.Tensor,
    global_orient: torch.Tensor,
    body_pose: torch.Tensor,
    transl: torch.Tensor | None = None,
) -> torch.Tensor:
    """Global joint transforms ``M_j`` of SMPL's kinematic tree from an axis-angle pose.

    Args:
        rest_joints: (B, 24, 3) or (24, 3) joints of the shaped body in the zero pose (metres).
        global_orient: (B, 3) root rotation, axis-angle.
        body_pose: (B, 69) rotations of joints 1..23, axis-angle.
        transl: optional (B, 3) root translation (as the body model's ``transl``).

    Returns:
        (B, 24, 4, 4) transforms; ``M[:, j, :3, 3]`` is joint j's posed position.
    """
    return chain_transforms(local_rotations(global_orient, body_pose), rest_joints, transl)


def skinning_transforms(transforms_posed: torch.Tensor, transforms_canonical: torch.Tensor) -> torch.Tensor:
    """Per-joint transforms (B, 24, 4, 4) taking canonical-pose points to the posed frame: ``M_pose @ M_canon^-1``.

    Args:
        transforms_posed: (B, 24, 4, 4) global transforms of the target poses.
        transforms_canonical: (24, 4, 4) or (B, 24, 4, 4) global transforms of the canonical pose.
    """
    _check(transforms_posed, (NUM_JOINTS, 4, 4), "transforms_posed")
    _check(transforms_canonical, (NUM_JOINTS, 4, 4), "transforms_canonical", batched=False)
    return transforms_posed @ torch.linalg.inv(transforms_canonical.to(transforms_posed))


def rest_skinning_transforms(transforms_posed: torch.Tensor, rest_joints: torch.Tensor) -> torch.Tensor:
    """Per-joint transforms (B, 24, 4, 4) taking zero-pose points to the posed frame.

    The zero pose's global transform of joint j is a translation by its rest position ``J_j``, so
    ``M_j @ M_j(zero)^-1`` keeps ``M_j``'s rotation ``R_j`` and moves its translation to ``t_j - R_j J_j``.

    Args:
        transforms_posed: (B, 24, 4, 4) global transforms of the target poses (``chain_transforms``).
        rest_joints: (B, 24, 3) or (24, 3) joints of the shaped body in the zero pose.
    """
    _check(transforms_posed, (NUM_JOINTS, 4, 4), "transforms_posed")
    _check(rest_joints, (NUM_JOINTS, 3), "rest_joints", batched=False)
    rot = transforms_posed[..., :3, :3]
    moved = transforms_posed[..., :3, 3] - (rot @ rest_joints.to(rot)[..., None])[..., 0]
    out = transforms_posed.clone()
    out[..., :3, 3] = moved
    return out


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


def blend_shapes(betas: torch.Tensor, shapedirs: torch.Tensor) -> torch.Tensor:
    """Shape offsets (B, V, 3) = sum_k betas[:, k] * shapedirs[..., k].

    Args:
        betas: (B, K) shape coefficients.
        shapedirs: (V, 3, K) shape components (metres per unit coefficient).
    """
    _check(betas, (shapedirs.shape[-1],), "betas")
    return torch.einsum("bk,vck->bvc", betas, shapedirs)


def pose_blend_shapes(rotations: torch.Tensor, posedirs: torch.Tensor) -> torch.Tensor:
    """Pose-corrective offsets (B, V, 3) from the body joints' rotations (SMPL's pose blend shapes).

    Args:
        rotations: (B, 24, 3, 3) local joint rotations; the root's is not used.
        posedirs: (207, V * 3) correctives per entry of ``R_j - I`` for joints 1..23 (row-major 3x3 per joint).
    """
    _check(rotations, (NUM_JOINTS, 3, 3), "rotations")
    b = rotations.shape[0]
    eye = torch.eye(3, dtype=rotations.dtype, device=rotations.device)
    feature = (rotations[:, 1:] - eye).reshape(b, -1)
    return (feature @ posedirs).reshape(b, -1, 3)


def pose_body(
    betas: torch.Tensor,
    rotations: torch.Tensor,
    transl: torch.Tensor,
    *,
    v_template: torch.Tensor,
    shapedirs: torch.Tensor,
    posedirs: torch.Tensor | None,
    J_regressor: torch.Tensor,
    lbs_weights: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SMPL-format forward pass: shape, pose-correct, skin and translate the template.

    Args:
        betas: (B, K) shape coefficients.
        rotations: (B, 24, 3, 3) local joint rotations (root first).
        transl: (B, 3) translation in metres, added to every vertex and joint.
        v_template: (V, 3) rest vertices of the mean shape.
        shapedirs: (V, 3, K) shape components.
        posedirs: (207, V * 3) pose correctives, or None for a model without them.
        J_regressor: (24, V) joint regressor applied to the shaped rest vertices.
        lbs_weights: (V, 24) skinning weights.

    Returns:
        vertices (B, V, 3) and joints (B, 24, 3), posed, in metres.
    """
    _check(transl, (3,), "transl")
    b = betas.shape[0]
    v_shaped = v_template + blend_shapes(betas, shapedirs)
    rest_joints = torch.einsum("jv,bvc->bjc", J_regressor, v_shaped)
    v_posed = v_shaped if posedirs is None else v_shaped + pose_blend_shapes(rotations, posedirs)
    transforms = chain_transforms(rotations, rest_joints)
    skinning = rest_skinning_transforms(transforms, rest_joints)
    vertices = skin_points(v_posed, lbs_weights.expand(b, -1, -1), skinning)
    return vertices + transl[:, None], transforms[..., :3, 3] + transl[:, None]
