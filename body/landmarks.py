"""MediaPipe Pose's 33 landmarks on the body model: which joint or surface vertex each corresponds to.

The body fit compares these 3D points, projected, with detected 2D keypoints; the mask says which landmarks have a
correspondence on the loaded model (all 33 on the embedded model; fewer on a user's SMPL-family model).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

from body.landmark_table import MEDIAPIPE_LANDMARK_NAMES, mediapipe_correspondences

if TYPE_CHECKING:
    from body.model import BodyModel, BodyOutput

__all__ = ["MEDIAPIPE_LANDMARK_NAMES", "mediapipe_correspondences", "mediapipe_landmark_mask", "mediapipe_landmarks_3d"]


def mediapipe_landmark_mask(model: BodyModel) -> torch.Tensor:
    """(33,) bool: True where the MediaPipe landmark has a correspondence (joint or vertex) on ``model``."""
    return (model.mediapipe_joint_index >= 0) | (model.mediapipe_vertex_index >= 0)


def mediapipe_landmarks_3d(model: BodyModel, output: BodyOutput) -> tuple[torch.Tensor, torch.Tensor]:
    """The 33 MediaPipe landmarks on a posed body: the model's learned regressor (weights over surrounding vertices,
    `scripts/calibrate_landmarks.py`) when it has one, else the table's joints and surface vertices.

    Args:
        model: the body model that produced ``output``.
        output: its forward result (vertices (B, V, 3), joints (B, 24, 3)).

    Returns:
        landmarks (B, 33, 3) in the output's frame (zeros where there is no correspondence) and
        mask (33,) bool, True where the landmark has a correspondence on this model.
    """
    joint_index = model.mediapipe_joint_index
    vertex_index = model.mediapipe_vertex_index
    vertices, joints = output.vertices, output.joints
    if vertices.ndim != 3 or vertices.shape[1] != model.num_vertices or joints.ndim != 3 or joints.shape[1] != 24:
        raise ValueError(
            f"output does not come from this model: vertices {tuple(vertices.shape)}, joints {tuple(joints.shape)}; "
            f"expected (B, {model.num_vertices}, 3) and (B, 24, 3)"
        )
    reg_index = getattr(model, "mediapipe_regressor_index", None)
    if reg_index is not None:  # learned regressor: weighted surrounding vertices (Σ w = 1) per landmark
        weights = model.mediapipe_regressor_weights.to(vertices.dtype)
        landmarks = (vertices[:, reg_index] * weights[None, :, :, None]).sum(dim=2)
        return landmarks, mediapipe_landmark_mask(model)
    from_joint = joint_index >= 0
    from_vertex = vertex_index >= 0
    by_joint = joints[:, joint_index.clamp(min=0)]
    by_vertex = vertices[:, vertex_index.clamp(min=0)]
    zeros = torch.zeros_like(by_joint)
    landmarks = torch.where(from_vertex[None, :, None], by_vertex, zeros)
    landmarks = torch.where(from_joint[None, :, None], by_joint, landmarks)
    return landmarks, mediapipe_landmark_mask(model)
