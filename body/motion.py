"""Motion files (AMASS SMPL-H / SMPL-X, plain SMPL npz) read into one canonical, Y-up :class:`Motion`.

Every foreign pose format is converted here, at the boundary, to SMPL's 24-joint axis-angle form (the hand joints
of SMPL-H/SMPL-X are dropped; SMPL's two hand joints get zero rotation). Files are read with
``allow_pickle=False``; pickles are refused unless the caller says they trust the file.
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from scipy.spatial.transform import Rotation

from body.params import BodyParams

__all__ = [
    "Motion",
    "Z_UP_TO_Y_UP",
    "load_motion",
    "resample_motion",
    "save_motion",
    "upright_score",
    "wrap_rotations",
    "z_up_to_y_up",
]

logger = logging.getLogger(__name__)

#: Rotation of -90 degrees about X: (x, y, z) -> (x, z, -y). Takes Z-up data (AMASS) to the Y-up body frame.
Z_UP_TO_Y_UP = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

DEFAULT_FPS = 30.0
UpAxis = Literal["auto", "y", "z"]

#: Largest joint rotation angle (rad) accepted from a file. Angles up to it are wrapped to [0, pi] (the same
#: rotation); larger ones mean degrees stored as radians or a corrupt file, and are refused.
MAX_ROTATION_RAD = 4 * np.pi

#: Largest array (uncompressed bytes) read from a motion npz: 512 MiB is hours of SMPL-X motion; a bigger member is
#: refused before it is decompressed, so a crafted file cannot exhaust memory.
MAX_MOTION_ARRAY_BYTES = 512 << 20

#: Below this median "up" component of the root (1 upright, 0 lying, -1 upside down) a motion is reported as
#: probably read with the wrong up axis.
MIN_UPRIGHT = 0.5


@dataclass(frozen=True)
class Motion:
    """A sequence of SMPL poses in the Y-up body frame.

    Attributes:
        fps: frames per second (> 0).
        global_orient: (N, 3) float32 root rotation, axis-angle, radians.
        body_pose: (N, 69) float32 rotations of SMPL joints 1..23, axis-angle, radians.
        transl: (N, 3) float32 root translation in metres, Y up.
    """

    fps: float
    global_orient: np.ndarray
    body_pose: np.ndarray
    transl: np.ndarray

    def __post_init__(self) -> None:
        if not np.isfinite(self.fps) or self.fps <= 0:
            raise ValueError(f"Motion.fps must be a positive number, got {self.fps!r}")
        n = None
        for name, width in (("global_orient", 3), ("body_pose", 69), ("transl", 3)):
            value = np.asarray(getattr(self, name), dtype=np.float32)
            if value.ndim != 2 or value.shape[1] != width:
                raise ValueError(f"Motion.{name} must have shape (N, {width}), got {value.shape}")
            if n is None:
                n = value.shape[0]
            elif value.shape[0] != n:
                raise ValueError(f"Motion.{name} has {value.shape[0]} frames, expected {n} like global_orient")
            if not np.isfinite(value).all():
                raise ValueError(f"Motion.{name} contains NaN or infinite values")
            object.__setattr__(self, name, value)
        if n == 0:
            raise ValueError("Motion must have at least one frame")
        object.__setattr__(self, "fps", float(self.fps))

    @property
    def num_frames(self) -> int:
        return int(self.global_orient.shape[0])

    @property
    def duration(self) -> float:
        """Seconds from the first to the last frame."""
        return (self.num_frames - 1) / self.fps

    @property
    def poses(self) -> np.ndarray:
        """(N, 72) global orientation followed by the body pose."""
        return np.concatenate([self.global_orient, self.body_pose], axis=1)

    @classmethod
    def from_params(cls, params: BodyParams, fps: float) -> Motion:
        """The poses of N rows of body parameters (their betas dropped) played at ``fps``."""
        p = BodyParams.of(params).numpy()
        return cls(fps=fps, global_orient=p.global_orient, body_pose=p.body_pose, transl=p.transl)

    def with_betas(self, betas: np.ndarray) -> BodyParams:
        """The frames as body parameters (numpy float32) with a shape: betas (K,) shared by every frame or (N, K)."""
        betas = np.asarray(betas, np.float32)
        if betas.ndim == 1:
            betas = np.repeat(betas[None], self.num_frames, axis=0)
        return BodyParams(betas, self.global_orient, self.body_pose, self.transl)


def z_up_to_y_up(motion: Motion) -> Motion:
    """Rotate a Z-up motion into the Y-up frame: both the root orientation and the translation.

    Exact for a body whose rest pelvis is at the origin (the embedded model); for other bodies the pelvis
    offset ``(C - I) @ J_pelvis`` is not compensated, a few centimetres at most.
    """
    C = Z_UP_TO_Y_UP
    root = Rotation.from_matrix(C) * Rotation.from_rotvec(motion.global_orient.astype(np.float64))
    return Motion(
        fps=motion.fps,
        global_orient=root.as_rotvec(),
        body_pose=motion.body_pose,
        transl=motion.transl.astype(np.float64) @ C.T,
    )


def resample_motion(motion: Motion, fps: float) -> Motion:
    """Resample to a new frame rate: slerp for every joint rotation, linear for the translation.

    The new frames sit at ``k / fps`` seconds for every ``k`` within the motion's duration.
    """
    if not np.isfinite(fps) or fps <= 0:
        raise ValueError(f"target fps must be a positive number, got {fps!r}")
    n = motion.num_frames
    if n == 1 or abs(fps - motion.fps) < 1e-9:
        return Motion(fps, motion.global_orient, motion.body_pose, motion.transl)
    m = int(np.floor(motion.duration * fps + 1e-6)) + 1
    src = np.arange(m, dtype=np.float64) * (motion.fps / fps)  # in source-frame units
    i0 = np.clip(np.floor(src).astype(np.int64), 0, n - 1)
    i1 = np.minimum(i0 + 1, n - 1)
    alpha = (src - i0)[:, None]

    rotvecs = motion.poses.astype(np.float64).reshape(n, 24, 3)
    quat = Rotation.from_rotvec(rotvecs.reshape(-1, 3)).as_quat().reshape(n, 24, 4)
    q0, q1 = quat[i0], quat[i1]
    dot = (q0 * q1).sum(-1)
    q1 = np.where(dot[..., None] < 0, -q1, q1)  # shortest arc
    dot = np.abs(dot)
    theta = np.arccos(np.clip(dot, -1.0, 1.0))
    sin_theta = np.sin(theta)
    near = sin_theta < 1e-6
    a = alpha  # (m, 1) broadcast over joints
    w0 = np.where(near, 1.0 - a, np.sin((1.0 - a) * theta) / np.where(near, 1.0, sin_theta))
    w1 = np.where(near, a, np.sin(a * theta) / np.where(near, 1.0, sin_theta))
    q = w0[..., None] * q0 + w1[..., None] * q1
    q /= np.linalg.norm(q, axis=-1, keepdims=True)
    poses = Rotation.from_quat(q.reshape(-1, 4)).as_rotvec().reshape(m, 72)

    transl = (1.0 - alpha) * motion.transl[i0] + alpha * motion.transl[i1]
    return Motion(fps=float(fps), global_orient=poses[:, :3], body_pose=poses[:, 3:], transl=transl)


def wrap_rotations(rotvecs: np.ndarray) -> np.ndarray:
    """The same rotations with their angle in [0, pi]: ``(..., 3)`` axis-angle in, same shape float64 out."""
    rotvecs = np.asarray(rotvecs, dtype=np.float64)
    flat = rotvecs.reshape(-1, 3)
    if flat.shape[0] == 0:
        return rotvecs
    return Rotation.from_rotvec(flat).as_rotvec().reshape(rotvecs.shape)


def _check_angles(poses: np.ndarray, path: Path, key: str, first_joint: int = 0) -> np.ndarray:
    """Refuse axis-angle values beyond ``MAX_ROTATION_RAD``, naming the key, frame and joint; wrap the rest.

    Args:
        poses: (N, 3K) axis-angle rotations of K consecutive SMPL joints starting at ``first_joint``.
    """
    n = poses.shape[0]
    angles = np.linalg.norm(poses.reshape(n, -1, 3), axis=-1)
    if angles.size and (worst := float(angles.max())) > MAX_ROTATION_RAD:
        from body.model import SMPL_JOINT_NAMES

        frame, joint = np.unravel_index(int(np.argmax(angles)), angles.shape)
        joint += first_joint
        name = SMPL_JOINT_NAMES[joint] if joint < len(SMPL_JOINT_NAMES) else f"joint {joint}"
        raise ValueError(
            f"{path}: key {key!r} holds a rotation of {worst:.3g} rad (frame {frame}, {name}); axis-angle values "
            f"must be radians with angles up to {MAX_ROTATION_RAD:.3g} (4 pi). Is the file in degrees, or corrupt?"
        )
    return wrap_rotations(poses)


def upright_score(global_orient: np.ndarray) -> float:
    """How upright a Y-up motion stands: median over frames of the world Y component of the root's up axis.

    SMPL bodies stand along +Y at zero rotation, so this is about 1 for standing or walking, about 0 for a body
    lying down and about -1 upside down. A Z-up file read as Y-up (or the reverse) scores about 0.

    Args:
        global_orient: (N, 3) root axis-angle, radians.
    """
    up = Rotation.from_rotvec(np.asarray(global_orient, dtype=np.float64).reshape(-1, 3)).apply([0.0, 1.0, 0.0])
    return float(np.median(up[:, 1]))


def _up_axis_warning(raw: Motion, up: str, path: Path) -> str | None:
    """A warning when the motion read with ``up`` is not upright but would be with the other axis, else None."""
    z_read = z_up_to_y_up(raw)
    score = upright_score((z_read if up == "z" else raw).global_orient)
    if score >= MIN_UPRIGHT:
        return None
    other = "y" if up == "z" else "z"
    other_score = upright_score((raw if up == "z" else z_read).global_orient)
    if other_score < MIN_UPRIGHT:
        return None  # lying or upside down either way: a floor or acrobatic motion, not an axis mix-up
    return (
        f"{path}: read as {up.upper()}-up the body is not upright (score {score:.2f}; 1 = standing), but read as "
        f"{other.upper()}-up it would be ({other_score:.2f}): the file's up axis is probably {other.upper()}; "
        f"pass up_axis={other!r} if the avatar lies on the floor"
    )


def _read_array(data, key: str, path: Path, ncols: int | None = None) -> np.ndarray:
    if key not in data:
        alias = {"trans": " (or 'transl')", "transl": " (or 'trans')"}.get(key, "")
        raise ValueError(f"{path}: missing key {key!r}{alias} (keys present: {sorted(data.keys())})")
    try:
        value = np.asarray(data[key], dtype=np.float64)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"{path}: key {key!r} is not a numeric array ({exc})") from exc
    if ncols is not None and (value.ndim != 2 or value.shape[1] != ncols):
        raise ValueError(f"{path}: key {key!r} must have shape (N, {ncols}), got {value.shape}")
    if not np.isfinite(value).all():
        raise ValueError(f"{path}: key {key!r} contains NaN or infinite values")
    return value


def _read_fps(data, path: Path, keys: tuple[str, ...]) -> float | None:
    for key in keys:
        if key in data:
            fps = float(np.asarray(data[key]).reshape(-1)[0])
            if not np.isfinite(fps) or fps <= 0:
                raise ValueError(f"{path}: key {key!r} must be a positive frame rate, got {fps}")
            return fps
    return None


def _translation_key(keys: set[str], preferred: str) -> str:
    for key in (preferred, "trans", "transl"):
        if key in keys:
            return key
    return preferred


def _pad_hands(body63: np.ndarray) -> np.ndarray:
    return np.concatenate([body63, np.zeros((body63.shape[0], 6))], axis=1)


def _parse(data, path: Path) -> tuple[Motion, str, str]:
    """Returns the motion as stored, its format name and the up axis that format implies."""
    keys = set(data.keys())
    amass_fps = _read_fps(data, path, ("mocap_frame_rate", "mocap_framerate"))
    if "root_orient" in keys or "pose_body" in keys:  # AMASS SMPL-X (stageii)
        root = _read_array(data, "root_orient", path, 3)
        body = _read_array(data, "pose_body", path, 63)
        trans = _read_array(data, "trans", path, 3)
        fmt, up = "amass-smplx", "z"
        body = _pad_hands(body)
    elif "smpl_poses" in keys:  # AIST++ (pickled), Y-up, translation scaled
        poses = _read_array(data, "smpl_poses", path, 72)
        trans = _read_array(data, "smpl_trans", path, 3)
        scale = float(np.asarray(data["smpl_scaling"]).reshape(-1)[0]) if "smpl_scaling" in keys else 1.0
        trans = trans / scale
        root, body = poses[:, :3], poses[:, 3:]
        fmt, up = "aist++", "y"
        amass_fps = amass_fps or 60.0
    elif "poses" in keys:
        poses = _read_array(data, "poses", path)
        if poses.ndim != 2 or poses.shape[1] not in (72, 156, 165):
            raise ValueError(
                f"{path}: key 'poses' must have shape (N, 72) (SMPL), (N, 156) (AMASS SMPL-H) or (N, 165) "
                f"(SMPL-X), got {poses.shape}"
            )
        trans = _read_array(data, _translation_key(keys, "trans"), path, 3)
        root = poses[:, :3]
        if poses.shape[1] == 72:
            body = poses[:, 3:]
            fmt, up = "smpl", "z" if amass_fps is not None else "y"
        else:
            body = _pad_hands(poses[:, 3:66])
            fmt, up = ("amass-smplh" if poses.shape[1] == 156 else "amass-smplx"), "z"
    elif "global_orient" in keys or "body_pose" in keys:
        root = _read_array(data, "global_orient", path, 3)
        body = _read_array(data, "body_pose", path, 69)
        trans = _read_array(data, _translation_key(keys, "transl"), path, 3)
        fmt, up = "smpl", "y"
    else:
        raise ValueError(
            f"{path}: not a recognised motion file: expected 'poses' + 'trans' (AMASS SMPL-H / SMPL), "
            f"'root_orient' + 'pose_body' + 'trans' (AMASS SMPL-X) or 'global_orient' + 'body_pose' + 'transl'; "
            f"keys present: {sorted(keys)}"
        )
    root_key = next(k for k in ("root_orient", "smpl_poses", "poses", "global_orient") if k in keys)
    if root.shape[0] == 0:
        raise ValueError(f"{path}: the motion has no frames (key {root_key!r} is empty); it needs at least one frame")
    root = _check_angles(root, path, root_key)
    body = _check_angles(body, path, next(k for k in ("pose_body", "smpl_poses", "poses", "body_pose") if k in keys), 1)
    if "up_axis" in keys:  # written by save_motion
        up = str(np.asarray(data["up_axis"]).reshape(-1)[0]).lower()
    n = root.shape[0]
    for name, arr in (("body pose", body), ("translation", trans)):
        if arr.shape[0] != n:
            raise ValueError(f"{path}: {name} has {arr.shape[0]} frames but the root orientation has {n}")
    fps = amass_fps or _read_fps(data, path, ("fps", "frame_rate", "framerate"))
    if fps is None:
        logger.warning("%s: no frame rate stored; assuming %.0f fps", path, DEFAULT_FPS)
        fps = DEFAULT_FPS
    return Motion(fps=fps, global_orient=root, body_pose=body, transl=trans), fmt, up


def _read_npz(path: Path) -> tuple[Motion, str, str]:
    """``_parse`` an npz archive; anything else under that name (a pickle, a bare .npy, a cut zip) is a ValueError
    naming the file, and nothing is ever unpickled."""
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile) as exc:  # ValueError: a pickle refused
        raise ValueError(f"{path}: not a readable .npz archive ({exc})") from exc
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: holds a single .npy array, not an .npz archive of named arrays")
    for info in data.zip.infolist():
        if info.file_size > MAX_MOTION_ARRAY_BYTES:
            data.close()
            raise ValueError(
                f"{path}: array {info.filename!r} is {info.file_size / 2**20:.1f} MiB uncompressed, more than the "
                f"{MAX_MOTION_ARRAY_BYTES >> 20} MiB a motion file may hold; split the motion into shorter files"
            )
    try:
        with data:
            return _parse(data, path)
    except (OSError, EOFError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a readable .npz file ({exc})") from exc


def load_motion(
    path: str | Path,
    up_axis: UpAxis = "auto",
    target_fps: float | None = None,
    trust_pickle: bool = False,
) -> Motion:
    """Read a motion file into a Y-up :class:`Motion`.

    Args:
        path: an ``.npz`` file: AMASS SMPL-H (``poses`` (N, 156), ``trans``, ``mocap_framerate``), AMASS SMPL-X
            (``root_orient``, ``pose_body`` (N, 63), ``trans``, ``mocap_frame_rate``) or plain SMPL (``poses``
            (N, 72) or ``global_orient`` + ``body_pose``, ``trans``/``transl``, optional ``fps``). A ``.pkl``
            (same keys, or AIST++'s ``smpl_poses``/``smpl_trans``/``smpl_scaling``) only with ``trust_pickle``.
        up_axis: the file's up axis. ``"auto"``: Z for AMASS files (they store a mocap frame rate), Y otherwise.
        target_fps: resample to this frame rate (slerp) if given.
        trust_pickle: allow reading a pickle; unpickling runs code from the file, so only for files you trust.

    Returns:
        The motion in the Y-up body frame.
    """
    path = Path(path)
    if up_axis not in ("auto", "y", "z"):
        raise ValueError(f"up_axis must be 'auto', 'y' or 'z', got {up_axis!r}")
    if not path.is_file():
        raise ValueError(f"{path}: motion file not found")
    suffix = path.suffix.lower()
    if suffix == ".pkl":
        if not trust_pickle:
            raise ValueError(
                f"{path}: refusing to unpickle (a pickle can run arbitrary code). Convert it to .npz, or pass "
                "trust_pickle=True if you trust this file."
            )
        with path.open("rb") as f:
            data = pickle.load(f, encoding="latin1")
        if not isinstance(data, dict):
            raise ValueError(f"{path}: expected a pickled dict of arrays, got {type(data).__name__}")
        motion, fmt, up = _parse(data, path)
    elif suffix == ".npz":
        motion, fmt, up = _read_npz(path)
    else:
        raise ValueError(f"{path}: unsupported motion file type {suffix!r}; expected .npz (or a trusted .pkl)")
    up = up if up_axis == "auto" else up_axis
    if up not in ("y", "z"):
        raise ValueError(f"{path}: stored up_axis must be 'y' or 'z', got {up!r}")
    logger.debug("%s: read %s motion, %d frames at %.2f fps, %s-up", path, fmt, motion.num_frames, motion.fps, up)
    if warning := _up_axis_warning(motion, up, path):
        logger.warning(warning)
    if up == "z":
        motion = z_up_to_y_up(motion)
    if target_fps is not None:
        motion = resample_motion(motion, target_fps)
    return motion


def save_motion(motion: Motion, path: str | Path) -> Path:
    """Write a plain SMPL npz (``poses`` (N, 72), ``trans``, ``fps``, ``up_axis='y'``) that load_motion reads back."""
    path = Path(path)
    if path.suffix != ".npz":
        path = path.with_name(path.name + ".npz")  # numpy would append it anyway
    np.savez_compressed(
        path,
        poses=motion.poses.astype(np.float32),
        trans=motion.transl.astype(np.float32),
        fps=np.float32(motion.fps),
        up_axis=np.array("y"),
    )
    return path
