"""Which SMPL joint or mesh vertex each of MediaPipe Pose's 33 landmarks corresponds to (tables only; no model).

:mod:`body.model` builds a loaded model's correspondences from these; :mod:`body.landmarks` evaluates them.
"""

from __future__ import annotations

import logging

import numpy as np

logger = logging.getLogger(__name__)

__all__ = ["MEDIAPIPE_LANDMARK_NAMES", "mediapipe_correspondences"]

#: MediaPipe Pose landmark names in MediaPipe's order (left/right are the subject's).
MEDIAPIPE_LANDMARK_NAMES: tuple[str, ...] = (
    "nose", "left_eye_inner", "left_eye", "left_eye_outer", "right_eye_inner", "right_eye", "right_eye_outer",
    "left_ear", "right_ear", "mouth_left", "mouth_right", "left_shoulder", "right_shoulder", "left_elbow",
    "right_elbow", "left_wrist", "right_wrist", "left_pinky", "right_pinky", "left_index", "right_index",
    "left_thumb", "right_thumb", "left_hip", "right_hip", "left_knee", "right_knee", "left_ankle", "right_ankle",
    "left_heel", "right_heel", "left_foot_index", "right_foot_index",
)  # fmt: skip

# Landmarks that are SMPL joints (index into the 24 SMPL joints).
_JOINT_LANDMARKS = {
    "left_shoulder": 16, "right_shoulder": 17, "left_elbow": 18, "right_elbow": 19, "left_wrist": 20,
    "right_wrist": 21, "left_hip": 1, "right_hip": 2, "left_knee": 4, "right_knee": 5, "left_ankle": 7,
    "right_ankle": 8,
}  # fmt: skip

# Landmarks available from smplx's own keypoint vertex tables for SMPL/SMPL-H (6890) and SMPL-X (10475) meshes.
# Eye corners, mouth corners and hand knuckles have no vertex in those tables (their finger ids are fingertips).
_SMPLX_TABLE_KEYS = {
    "nose": "nose", "left_eye": "leye", "right_eye": "reye", "left_ear": "lear", "right_ear": "rear",
    "left_heel": "LHeel", "right_heel": "RHeel", "left_foot_index": "LBigToe", "right_foot_index": "RBigToe",
}  # fmt: skip
_SMPLX_TABLES_BY_VERTEX_COUNT = {6890: "smplh", 10475: "smplx"}


def mediapipe_correspondences(num_vertices: int) -> tuple[np.ndarray, np.ndarray]:
    """Landmark correspondences for a standard SMPL-family mesh (used for a user's model file).

    Args:
        num_vertices: vertex count of the model (6890 for SMPL/SMPL-H, 10475 for SMPL-X; others get joints only).

    Returns:
        joint_index (33,) int64 and vertex_index (33,) int64, -1 where the landmark is not that kind.
    """
    try:  # the optional smplx package holds the vertex tables of SMPL-family meshes
        from smplx.vertex_ids import vertex_ids as smplx_vertex_ids
    except ImportError:
        logger.info("smplx is not installed: MediaPipe landmarks on this %d-vertex model come from joints only",
                    num_vertices)
        smplx_vertex_ids = {}

    joint_index = np.full(len(MEDIAPIPE_LANDMARK_NAMES), -1, dtype=np.int64)
    vertex_index = np.full(len(MEDIAPIPE_LANDMARK_NAMES), -1, dtype=np.int64)
    table = smplx_vertex_ids.get(_SMPLX_TABLES_BY_VERTEX_COUNT.get(num_vertices, ""), {})
    for i, name in enumerate(MEDIAPIPE_LANDMARK_NAMES):
        if name in _JOINT_LANDMARKS:
            joint_index[i] = _JOINT_LANDMARKS[name]
        elif table and name in _SMPLX_TABLE_KEYS:
            vertex_index[i] = table[_SMPLX_TABLE_KEYS[name]]
    return joint_index, vertex_index
