"""Posing a trained avatar: fast (skin the canonical mesh with its weights; real time) and full (evaluate the
pose-conditioned SDF for the pose, extract, skin with the forward net's weights)."""

from __future__ import annotations

import numpy as np
import torch

from avatar.model import Avatar
from body.lbs import skin_points
from body.motion import Motion

__all__ = ["motion_tensors", "repose_fast", "repose_full"]


def motion_tensors(motion: Motion, device, dtype=torch.float32) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """global_orient (N, 3), body_pose (N, 69), transl (N, 3) tensors of a Motion."""
    return tuple(torch.as_tensor(np.asarray(a), dtype=dtype, device=device)
                 for a in (motion.global_orient, motion.body_pose, motion.transl))  # fmt: skip


@torch.no_grad()
def repose_fast(avatar: Avatar, motion: Motion, batch_size: int = 64) -> torch.Tensor:
    """Pose the canonical mesh for every frame of a motion (linear blend skinning with the mesh's weights).

    Args:
        avatar: trained avatar.
        motion: N frames of SMPL poses (Y-up, metres).
        batch_size: frames skinned at once.

    Returns:
        (N, V, 3) posed vertices on the avatar's device; faces are ``avatar.faces``.
    """
    go, bp, tr = motion_tensors(motion, avatar.device)
    out = []
    weights = avatar.skin_weights[None]
    for s in range(0, len(go), batch_size):
        tf = avatar.transforms(go[s : s + batch_size], bp[s : s + batch_size], tr[s : s + batch_size])
        out.append(skin_points(avatar.vertices[None].expand(len(tf), -1, -1), weights.expand(len(tf), -1, -1), tf))
    return torch.cat(out)


@torch.no_grad()
def repose_full(
    avatar: Avatar,
    pose: torch.Tensor | np.ndarray,
    transl: torch.Tensor | np.ndarray | None = None,
    resolution: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pose-dependent surface for one pose: extract the SDF's zero level for this pose in canonical space, then skin.

    Args:
        avatar: trained avatar.
        pose: (72,) axis-angle (global orient 3 + body pose 69).
        transl: optional (3,) translation (metres).
        resolution: marching-cubes resolution (default the training config's).

    Returns:
        vertices (V', 3) posed and faces (F', 3) int64 of a new mesh (its own topology).
    """
    from avatar.train import extract_canonical_mesh

    p = torch.as_tensor(np.asarray(pose) if not isinstance(pose, torch.Tensor) else pose, dtype=torch.float32)
    if p.shape != (72,):
        raise ValueError(f"pose must be (72,) axis-angle (global orient + 69 body pose), got {tuple(p.shape)}")
    p = p.to(avatar.device)[None]
    t = None if transl is None else torch.as_tensor(transl, dtype=torch.float32, device=avatar.device).reshape(1, 3)
    features = avatar.pose_features(p[:, :3], p[:, 3:])[0]
    cfg = avatar.config
    verts_c, faces = extract_canonical_mesh(avatar, features, avatar.bounds, resolution or cfg.resolution,
                                            cfg.coarse_resolution)  # fmt: skip
    weights = avatar.vertex_weights(verts_c)
    tf = avatar.transforms(p[:, :3], p[:, 3:], t)
    return skin_points(verts_c[None], weights[None], tf)[0], faces
