"""The per-video Zarr v3 run store (``<out>/<video-stem>.zarr``): its layout, schema check and typed read/write API.

Every array that parallel frame tasks write is chunked one frame per chunk along T, so tasks in different threads or
processes touch disjoint chunk files (zarr's LocalStore writes each file atomically via a temp file + rename).
"""

from __future__ import annotations

import hashlib
import json
import logging
import warnings
from collections.abc import Mapping, Sequence
from enum import IntEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import zarr
from pydantic import BaseModel, ConfigDict, Field, field_validator
from zarr.storage import LocalStore

from flows.run_lock import lock_run, run_lock_path
from flows.store_types import (
    FitArrays,
    FrameArrays,
    FrameNotWrittenError,
    NormalMaps,
    NotARunStoreError,
    ReadOnlyStoreError,
    RunStoreBusyError,
    RunStoreError,
    RunStoreExistsError,
    SchemaVersionError,
)

if TYPE_CHECKING:
    import trimesh

log = logging.getLogger(__name__)

__all__ = [
    "FIT_FIELDS",
    "FORMAT_NAME",
    "SCHEMA_VERSION",
    "FitArrays",
    "FrameArrays",
    "FrameNotWrittenError",
    "FrameStatus",
    "NormalMaps",
    "NotARunStoreError",
    "ReadOnlyStoreError",
    "RunAttrs",
    "RunStore",
    "RunStoreError",
    "RunStoreBusyError",
    "RunStoreExistsError",
    "SchemaVersionError",
    "create_run",
    "lock_run",
    "open_run",
    "run_lock_path",
    "sha256_file",
]

FORMAT_NAME = "avatarize.run"
"""Value of the root attribute ``format`` that marks a Zarr group as an avatarize run store."""

SCHEMA_VERSION = 1
"""Layout version written to the root attributes; bump it on any incompatible change of the layout."""

N_KEYPOINTS = 33
"""MediaPipe pose landmarks per frame."""

FitStage = Literal["init", "refined"]
FIT_STAGES: tuple[str, ...] = ("init", "refined")

FIT_FIELDS: dict[str, tuple[int, str]] = {
    "betas": (10, "beta"),
    "global_orient": (3, "axis_angle"),
    "body_pose": (69, "body_pose_param"),
    "transl": (3, "xyz"),
    "camera": (3, "camera_param"),
}
"""Body-fit arrays under ``/fits/<stage>``: name -> (width of the per-frame vector, name of that dimension)."""

# (trailing shape given S, dtype, fill value, dimension names) of the per-frame arrays under /frames.
_FRAME_ARRAYS: dict[str, tuple[Any, ...]] = {
    "image": (lambda s: (s, s, 3), np.uint8, 0, ("frame", "y", "x", "channel")),
    "mask": (lambda s: (s, s), np.bool_, False, ("frame", "y", "x")),
    "crop": (lambda s: (3,), np.float32, np.nan, ("frame", "crop_param")),
    "keypoints": (lambda s: (N_KEYPOINTS, 3), np.float32, np.nan, ("frame", "keypoint", "keypoint_component")),
    "timestamp": (lambda s: (), np.float64, np.nan, ("frame",)),
}


class FrameStatus(IntEnum):
    """Per-frame state in ``/status``."""

    PENDING = 0
    DONE = 1
    FAILED = 2
    SKIPPED = 3




# ------------------------------------------------------------------------------------------------------ data types
class RunAttrs(BaseModel):
    """Provenance of a run, stored as the root attributes of the store."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    source_path: str = Field(description="Path of the source video as given to the pipeline.")
    source_sha256: str = Field(description="SHA-256 of the source file's bytes, 64 lowercase hex digits.")
    fps: float = Field(gt=0, description="Frame rate of the source video (frames/s), as probed.")
    frame_indices: list[int] = Field(
        description="Source frame index of each stored frame: store position t holds source frame frame_indices[t]."
    )
    body_model_id: str = Field(description="Identifier of the body model used for the fits (e.g. file name + hash).")
    config: dict[str, Any] = Field(default_factory=dict, description="Effective pipeline config (JSON-serialisable).")
    code_version: str = Field(description="avatarize version (and git revision if known) that created the store.")
    schema_version: int = Field(SCHEMA_VERSION, description="Layout version of the store; set by avatarize.")

    @field_validator("source_path", mode="before")
    @classmethod
    def _path_to_str(cls, v: Any) -> Any:
        return str(v) if isinstance(v, Path) else v

    @field_validator("source_sha256")
    @classmethod
    def _check_sha(cls, v: str) -> str:
        v = v.lower()
        if len(v) != 64 or any(c not in "0123456789abcdef" for c in v):
            raise ValueError(f"source_sha256 must be 64 hex digits (use sha256_file), got {v!r}")
        return v

    @field_validator("frame_indices")
    @classmethod
    def _check_indices(cls, v: list[int]) -> list[int]:
        if any(i < 0 for i in v):
            raise ValueError("frame_indices must be non-negative source frame numbers")
        return v

    @field_validator("config")
    @classmethod
    def _check_json(cls, v: dict[str, Any]) -> dict[str, Any]:
        try:
            json.dumps(v, allow_nan=False)
        except (TypeError, ValueError) as e:
            raise ValueError(f"config must be JSON-serialisable (plain dicts, lists, str, finite numbers): {e}") from e
        return v


# --------------------------------------------------------------------------------------------------------- helpers
def sha256_file(path: str | Path, chunk_bytes: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes as 64 lowercase hex digits, read in ``chunk_bytes`` pieces (bounded memory)."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk_bytes):
            h.update(block)
    return h.hexdigest()


def _to_numpy(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach") and hasattr(x, "cpu"):  # torch.Tensor, without importing torch
        x = x.detach().cpu().numpy()
    try:
        return np.asarray(x)
    except Exception as e:  # noqa: BLE001 - report which argument failed
        raise ValueError(f"{name}: cannot convert {type(x).__name__} to a numpy array ({e})") from e


def _cast(x: np.ndarray, dtype: np.dtype | type, name: str) -> np.ndarray:
    dtype = np.dtype(dtype)
    if dtype == np.uint8:
        if x.dtype != np.uint8:
            raise ValueError(f"{name}: expected uint8 RGB values in [0, 255], got dtype {x.dtype} (convert explicitly)")
        return x
    if dtype == np.bool_:
        if x.dtype == np.bool_:
            return x
        if np.issubdtype(x.dtype, np.number) and np.isin(x, (0, 1)).all():
            return x.astype(np.bool_)
        raise ValueError(f"{name}: expected a bool mask (or 0/1 numbers), got dtype {x.dtype}")
    if not (np.issubdtype(x.dtype, np.number) or x.dtype == np.bool_):
        raise ValueError(f"{name}: expected numbers, got dtype {x.dtype}")
    return x.astype(dtype, copy=False)


def _check_shape(x: np.ndarray, expected: tuple[int, ...], name: str) -> None:
    if x.shape != expected:
        raise ValueError(f"{name}: expected shape {expected}, got {x.shape}")


def _mesh_key(frame: int) -> str:
    return f"{frame:06d}"


class _NoConsolidationWarning:
    """Silence zarr's "consolidated metadata is not part of the v3 spec" warning: we consolidate on purpose."""

    def __enter__(self) -> None:
        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.filterwarnings("ignore", message=".*[Cc]onsolidated metadata.*")

    def __exit__(self, *exc: object) -> None:
        self._ctx.__exit__(*exc)


# ------------------------------------------------------------------------------------------------------- the store
class RunStore:
    """Typed access to one run store. Get one from :func:`create_run` or :func:`open_run`, not by calling this.

    ``indices``/``frame`` arguments are store positions t in ``[0, n_frames)``; ``attrs.frame_indices[t]`` is the
    source video frame stored at t. Numpy arrays or torch tensors are accepted wherever data goes in.

    Resume protocol for frame tasks: write all of a frame's data first, then ``set_status(t, FrameStatus.DONE)``
    last, so a killed writer never leaves a frame marked done with partial data; ``pending()`` lists what to redo.
    Call :meth:`finalize` once after the last write (again after any later write) to consolidate metadata.
    """

    def __init__(self, path: Path, group: zarr.Group, mode: Literal["r", "r+"]) -> None:
        self._path = path
        self._group = group
        self._mode = mode
        self._arrays: dict[str, zarr.Array] = {}
        self._attrs = RunAttrs(**{k: v for k, v in group.attrs.asdict().items() if k in RunAttrs.model_fields})

    def __repr__(self) -> str:
        return (
            f"RunStore({str(self._path)!r}, mode={self._mode!r}, n_frames={self.n_frames}, "
            f"image_size={self.image_size})"
        )

    # ---- metadata
    @property
    def path(self) -> Path:
        """Directory of the store."""
        return self._path

    @property
    def mode(self) -> Literal["r", "r+"]:
        """``"r"`` (read-only) or ``"r+"`` (read/write)."""
        return self._mode

    @property
    def attrs(self) -> RunAttrs:
        """Provenance stored in the root attributes."""
        return self._attrs

    @property
    def group(self) -> zarr.Group:
        """The root Zarr group, for access beyond this API."""
        return self._group

    @property
    def n_frames(self) -> int:
        """Number of stored frames T."""
        return int(self._array("status").shape[0])

    @property
    def image_size(self) -> int:
        """Side S of the square crops."""
        return int(self._array("frames/image").shape[1])

    @property
    def refine_iters(self) -> int:
        """Width of ``/fits/loss``: the maximum number of refinement iterations recorded per frame."""
        return int(self._array("fits/loss").shape[1])

    # ---- internals
    def _array(self, key: str) -> zarr.Array:
        # Cached: the pre-created arrays never change metadata, and each lookup would re-read zarr.json files.
        if key not in self._arrays:
            try:
                node = self._group[key]
            except KeyError as e:
                raise RunStoreError(f"{self._path}: /{key} is missing; the store layout is damaged") from e
            if not isinstance(node, zarr.Array):
                raise RunStoreError(f"{self._path}: /{key} is not an array; the store layout is damaged")
            self._arrays[key] = node
        return self._arrays[key]

    def _frame(self, frame: Any) -> int:
        """Validate one store position."""
        f = _to_numpy(frame, "frame")
        if f.ndim != 0 or not np.issubdtype(f.dtype, np.integer):
            raise ValueError(f"frame: expected one integer store position, got {frame!r}")
        return int(self._indices(f)[0])

    def _writable(self) -> None:
        if self._mode != "r+":
            raise ReadOnlyStoreError(f"{self._path}: opened read-only; use open_run(path, mode='r+') to write")

    def _indices(self, indices: Any) -> np.ndarray:
        """Validate store positions: ``(n,) int64``, unique, in ``[0, T)``. ``None`` means all frames."""
        t = self.n_frames
        if indices is None:
            return np.arange(t, dtype=np.int64)
        idx = _to_numpy(indices, "indices")
        if idx.ndim == 0:
            idx = idx.reshape(1)
        if idx.ndim != 1:
            raise ValueError(f"indices: expected an int or a 1-D sequence of store positions, got shape {idx.shape}")
        if idx.size and not np.issubdtype(idx.dtype, np.integer):
            raise ValueError(f"indices: expected integers, got dtype {idx.dtype}")
        idx = idx.astype(np.int64, copy=False)
        if idx.size and (idx.min() < 0 or idx.max() >= t):
            raise ValueError(f"indices: store positions must lie in [0, {t}), got min {idx.min()} max {idx.max()}")
        if np.unique(idx).size != idx.size:
            raise ValueError("indices: duplicate store positions")
        return idx

    def _write_rows(self, key: str, idx: np.ndarray, values: Any, name: str) -> None:
        arr = self._array(key)
        x = _cast(_to_numpy(values, name), arr.dtype, name)
        _check_shape(x, (idx.size, *arr.shape[1:]), name)
        if idx.size:
            arr.set_orthogonal_selection((idx,), x)

    def _read_rows(self, key: str, idx: np.ndarray) -> np.ndarray:
        arr = self._array(key)
        if idx.size == 0:
            return np.empty((0, *arr.shape[1:]), dtype=arr.dtype)
        return np.asarray(arr.get_orthogonal_selection((idx,)))

    # ---- frames
    def write_frames(
        self,
        indices: Any,
        images: Any,
        masks: Any,
        crops: Any,
        keypoints: Any,
        timestamps: Any,
    ) -> None:
        """Write the per-frame inputs of frames ``indices``.

        Args:
            indices: ``(n,)`` store positions.
            images: ``(n, S, S, 3) uint8`` RGB crops.
            masks: ``(n, S, S) bool`` person masks.
            crops: ``(n, 3)`` crop boxes (cx, cy, size) in source pixels.
            keypoints: ``(n, 33, 3)`` (x, y, confidence) in crop pixels.
            timestamps: ``(n,)`` seconds.
        """
        self._writable()
        idx = self._indices(indices)
        values = {"image": images, "mask": masks, "crop": crops, "keypoints": keypoints, "timestamp": timestamps}
        # Validate everything before the first write so a bad argument leaves nothing half-written.
        checked = {}
        for name, v in values.items():
            arr = self._array(f"frames/{name}")
            x = _cast(_to_numpy(v, name + "s"), arr.dtype, name + "s")
            _check_shape(x, (idx.size, *arr.shape[1:]), name + "s")
            checked[name] = x
        for name, x in checked.items():
            self._write_rows(f"frames/{name}", idx, x, name + "s")

    def read_frames(self, indices: Any = None) -> FrameArrays:
        """Read the per-frame inputs of ``indices`` (default: all frames)."""
        idx = self._indices(indices)
        return FrameArrays(indices=idx, **{name: self._read_rows(f"frames/{name}", idx) for name in _FRAME_ARRAYS})

    def write_keypoints3d(self, indices: Any, keypoints3d: Any) -> None:
        """Write MediaPipe's metric 3D landmarks ``(n, 33, 4)`` (x right, y down, z away from the camera, metres,
        hip-centred; visibility) of frames ``indices`` to ``/frames/keypoints3d``."""
        self._write_checked("frames/keypoints3d", indices, keypoints3d, (N_KEYPOINTS, 4))

    def read_keypoints3d(self, indices: Any = None) -> np.ndarray:
        """``(n, 33, 4) float32`` 3D landmarks of ``indices`` (default: all); NaN where unwritten or absent."""
        return self._read_optional("frames/keypoints3d", self._indices(indices), (N_KEYPOINTS, 4))

    # ---- fits
    def write_fit_info(self, indices: Any, confidence: Any, focal_px: Any = None) -> None:
        """Write the initial fit's per-frame confidence ``(n,)`` in [0, 1] (low: the fit is unsure, e.g. of the
        facing) and its perspective focal length ``(n,)`` in crop pixels (None/NaN: weak perspective)."""
        n = self._indices(indices).size
        self._write_checked("fits/confidence", indices, confidence, ())
        self._write_checked("fits/focal", indices, np.full(n, np.nan) if focal_px is None else focal_px, ())

    def read_fit_info(self, indices: Any = None) -> tuple[np.ndarray, np.ndarray]:
        """``(confidence (n,), focal (n,))`` float32 of ``indices`` (default: all); NaN where unwritten or absent."""
        idx = self._indices(indices)
        return self._read_optional("fits/confidence", idx, ()), self._read_optional("fits/focal", idx, ())

    def _write_checked(self, key: str, indices: Any, values: Any, tail: tuple[int, ...]) -> None:
        self._writable()
        idx, name = self._indices(indices), key.split("/")[-1]
        x = _cast(_to_numpy(values, name), np.float32, name)
        _check_shape(x, (idx.size, *tail), name)
        self._write_rows(key, idx, x, name)

    def _read_optional(self, key: str, idx: np.ndarray, tail: tuple[int, ...]) -> np.ndarray:
        group, name = key.split("/")  # an array added to schema 1 later: NaN in stores that predate it
        if name not in self.group[group]:
            return np.full((idx.size, *tail), np.nan, np.float32)
        return self._read_rows(key, idx)

    def _stage(self, stage: str) -> str:
        if stage not in FIT_STAGES:
            raise ValueError(f"stage: expected one of {FIT_STAGES}, got {stage!r}")
        return stage

    def write_fit(
        self,
        stage: FitStage,
        indices: Any,
        *,
        betas: Any,
        global_orient: Any,
        body_pose: Any,
        transl: Any,
        camera: Any,
    ) -> None:
        """Write body-fit parameters of frames ``indices`` for ``stage`` ("init" before the feedback loop, "refined"
        after it). Shapes as in :class:`FitArrays`; stored as float32."""
        self._writable()
        stage = self._stage(stage)
        idx = self._indices(indices)
        given = {"betas": betas, "global_orient": global_orient, "body_pose": body_pose, "transl": transl}
        given["camera"] = camera
        checked = {}
        for name, (width, _) in FIT_FIELDS.items():
            x = _cast(_to_numpy(given[name], name), np.float32, name)
            _check_shape(x, (idx.size, width), name)
            checked[name] = x
        for name, x in checked.items():
            self._write_rows(f"fits/{stage}/{name}", idx, x, name)

    def read_fit(self, stage: FitStage, indices: Any = None) -> FitArrays:
        """Read body-fit parameters of ``stage`` for ``indices`` (default: all) as float32 CPU tensors."""
        import torch

        from body.params import BodyParams

        stage = self._stage(stage)
        idx = self._indices(indices)
        fields = {name: torch.from_numpy(self._read_rows(f"fits/{stage}/{name}", idx)) for name in FIT_FIELDS}
        camera = fields.pop("camera")
        return FitArrays(indices=torch.from_numpy(idx), body=BodyParams(**fields), camera=camera)

    def write_loss(self, indices: Any, losses: Any) -> None:
        """Write per-iteration refinement losses ``(n, k)`` with ``k <= refine_iters``; missing iterations
        (early stop) stay NaN."""
        self._writable()
        idx = self._indices(indices)
        x = _cast(_to_numpy(losses, "losses"), np.float32, "losses")
        iters = self.refine_iters
        if x.ndim != 2 or x.shape[0] != idx.size or x.shape[1] > iters:
            raise ValueError(f"losses: expected shape ({idx.size}, k) with k <= {iters}, got {x.shape}")
        if x.shape[1] < iters:
            x = np.concatenate([x, np.full((x.shape[0], iters - x.shape[1]), np.nan, np.float32)], axis=1)
        self._write_rows("fits/loss", idx, x, "losses")

    def read_loss(self, indices: Any = None) -> np.ndarray:
        """Refinement losses ``(n, refine_iters) float32`` of ``indices`` (default: all); NaN where not run."""
        return self._read_rows("fits/loss", self._indices(indices))

    # ---- normals
    def write_normals(self, indices: Any, front: Any, back: Any) -> None:
        """Write front/back normal maps ``(n, S, S, 3)`` in [-1, 1] (stored as float16)."""
        self._writable()
        idx = self._indices(indices)
        checked = {}
        for name, v in (("front", front), ("back", back)):
            arr = self._array(f"normals/{name}")
            x = _cast(_to_numpy(v, name), np.float16, name)
            _check_shape(x, (idx.size, *arr.shape[1:]), name)
            checked[name] = x
        for name, x in checked.items():
            self._write_rows(f"normals/{name}", idx, x, name)

    def read_normals(self, indices: Any = None) -> NormalMaps:
        """Read front/back normal maps of ``indices`` (default: all)."""
        idx = self._indices(indices)
        return NormalMaps(
            indices=idx, front=self._read_rows("normals/front", idx), back=self._read_rows("normals/back", idx)
        )

    # ---- meshes
    def _write_mesh_group(self, group: zarr.Group, vertices: Any, faces: Any) -> None:
        v = _cast(_to_numpy(vertices, "vertices"), np.float32, "vertices")
        f = _to_numpy(faces, "faces")
        if v.ndim != 2 or v.shape[1] != 3:
            raise ValueError(f"vertices: expected shape (V, 3), got {v.shape}")
        if f.ndim != 2 or f.shape[1] != 3 or (f.size and not np.issubdtype(f.dtype, np.integer)):
            raise ValueError(f"faces: expected integer shape (F, 3), got {f.dtype} {f.shape}")
        if f.size and (f.min() < 0 or f.max() >= v.shape[0]):
            raise ValueError(f"faces: vertex ids must lie in [0, {v.shape[0]}), got [{f.min()}, {f.max()}]")
        f = f.astype(np.int32)
        # Faces go last and an old "faces" is removed first: a mesh counts as written only once "faces" exists (see
        # mesh_frames), so a killed writer never leaves new vertices paired with old faces.
        if "faces" in group:
            del group["faces"]
        for name, x, dims in (("vertices", v, ("vertex", "xyz")), ("faces", f, ("face", "corner"))):
            arr = group.create_array(
                name,
                shape=x.shape,
                chunks=(max(x.shape[0], 1), 3),
                dtype=x.dtype,
                fill_value=0,
                dimension_names=dims,
                overwrite=True,
            )
            if x.size:
                arr[...] = x

    @staticmethod
    def _read_mesh_group(group: zarr.Group) -> trimesh.Trimesh:
        import trimesh

        v = np.asarray(group["vertices"][...])
        f = np.asarray(group["faces"][...]).astype(np.int64)
        return trimesh.Trimesh(vertices=v, faces=f, process=False)

    def write_mesh(self, frame: int, vertices: Any, faces: Any) -> None:
        """Write the reconstructed mesh of store position ``frame``: ``vertices (V, 3)`` metres (float32),
        ``faces (F, 3)`` vertex ids (stored int32). Replaces an earlier mesh of that frame."""
        self._writable()
        t = self._frame(frame)
        group = self._group.require_group("meshes").require_group(_mesh_key(t))
        self._write_mesh_group(group, vertices, faces)

    def read_mesh(self, frame: int) -> trimesh.Trimesh:
        """The mesh of store position ``frame`` as an unprocessed ``trimesh.Trimesh`` (faces int64)."""
        t = self._frame(frame)
        if t not in self.mesh_frames():
            raise FrameNotWrittenError(f"{self._path}: no mesh written for frame {t}")
        return self._read_mesh_group(self._group[f"meshes/{_mesh_key(t)}"])

    def mesh_frames(self) -> list[int]:
        """Sorted store positions that have a complete mesh (both vertices and faces written)."""
        meshes = self._group["meshes"]
        frames = []
        for name, node in meshes.groups():
            if name.isdigit() and {"vertices", "faces"} <= set(node.array_keys()):
                frames.append(int(name))
        return sorted(frames)

    # ---- status
    def set_status(
        self,
        indices: Any,
        status: FrameStatus | int,
        reason: str | Sequence[str] | None = None,
    ) -> None:
        """Set the status of frames ``indices``; ``reason`` (one for all, or one per frame) is kept for FAILED and
        SKIPPED and cleared otherwise. The reason is written before the status."""
        self._writable()
        idx = self._indices(indices)
        status = FrameStatus(int(status))
        if reason is None:
            reasons = [""] * idx.size
        elif isinstance(reason, str):
            reasons = [reason] * idx.size
        else:
            reasons = [str(r) for r in reason]
            if len(reasons) != idx.size:
                raise ValueError(f"reason: expected one string or {idx.size} strings, got {len(reasons)}")
        if status not in (FrameStatus.FAILED, FrameStatus.SKIPPED):
            if any(reasons):
                log.debug("%s: reason ignored for status %s", self._path, status.name)
            reasons = [""] * idx.size
        if idx.size == 0:
            return
        self._array("status_reason").set_orthogonal_selection((idx,), np.array(reasons, dtype=object))
        self._array("status").set_orthogonal_selection((idx,), np.full(idx.size, int(status), np.int8))

    def status(self) -> np.ndarray:
        """``(T,) int8`` status of every frame (values of :class:`FrameStatus`)."""
        return np.asarray(self._array("status")[...])

    def reasons(self) -> dict[int, str]:
        """Reason text of every FAILED or SKIPPED frame that has one: store position -> message."""
        status = self.status()
        text = np.asarray(self._array("status_reason")[...])
        keep = np.isin(status, (FrameStatus.FAILED, FrameStatus.SKIPPED))
        return {int(t): str(text[t]) for t in np.flatnonzero(keep) if text[t]}

    def pending(self, indices: Any = None) -> list[int]:
        """Store positions among ``indices`` (default: all) still to process: neither DONE nor SKIPPED."""
        idx = self._indices(indices)
        status = self._read_rows("status", idx)
        return [int(t) for t, s in zip(idx, status, strict=True) if s not in (FrameStatus.DONE, FrameStatus.SKIPPED)]

    # ---- avatar
    def write_avatar_mesh(self, vertices: Any, faces: Any) -> None:
        """Write the canonical avatar mesh under ``/avatar/mesh`` (``vertices (V, 3)``, ``faces (F, 3)``)."""
        self._writable()
        self._write_mesh_group(self._group.require_group("avatar").require_group("mesh"), vertices, faces)

    def read_avatar_mesh(self) -> trimesh.Trimesh:
        """The canonical avatar mesh; raises :class:`FrameNotWrittenError` if not written yet."""
        avatar = self._group["avatar"]
        if "mesh" not in avatar or {"vertices", "faces"} - set(avatar["mesh"].array_keys()):
            raise FrameNotWrittenError(f"{self._path}: no avatar mesh written yet")
        return self._read_mesh_group(avatar["mesh"])

    def write_avatar_curves(self, curves: Mapping[str, Any]) -> None:
        """Write training curves under ``/avatar/curves/<name>``, each a 1-D array (one value per step, float64).
        A curve with an existing name is replaced; others are kept."""
        self._writable()
        checked = {}
        for name, values in curves.items():
            if not name or not name.replace("_", "").replace("-", "").replace(".", "").isalnum():
                raise ValueError(f"curve name {name!r}: use letters, digits, '_', '-' or '.'")
            x = _cast(_to_numpy(values, f"curves[{name!r}]"), np.float64, f"curves[{name!r}]")
            if x.ndim != 1:
                raise ValueError(f"curves[{name!r}]: expected a 1-D array (one value per step), got shape {x.shape}")
            checked[name] = x
        group = self._group.require_group("avatar").require_group("curves")
        for name, x in checked.items():
            # Each curve has its own step dimension so curves of different lengths open together in xarray.
            arr = group.create_array(
                name,
                shape=x.shape,
                chunks=(max(x.size, 1),),
                dtype=np.float64,
                fill_value=np.nan,
                dimension_names=(f"{name}_step",),
                overwrite=True,
            )
            if x.size:
                arr[...] = x

    def read_avatar_curves(self) -> dict[str, np.ndarray]:
        """Training curves written so far: name -> ``(steps,) float64``."""
        avatar = self._group["avatar"]
        if "curves" not in avatar:
            return {}
        return {name: np.asarray(arr[...]) for name, arr in sorted(avatar["curves"].arrays())}

    # ---- pipeline bookkeeping (root attributes)
    @property
    def config_digest(self) -> str | None:
        """Digest of the pipeline config the store was made with (None before :meth:`start_pipeline`)."""
        return self._group.attrs.get("config_digest")

    def start_pipeline(self, config_digest: str) -> None:
        """Record the config digest of a new pipeline run and that no whole-video stage is done yet."""
        self._writable()
        self._group.attrs.update({"config_digest": config_digest, "pipeline_stages": []})

    def stages_done(self) -> set[str]:
        """The whole-video pipeline stages recorded as finished."""
        return set(self._group.attrs.get("pipeline_stages", []))

    def mark_stage_done(self, stage: str) -> None:
        """Record the whole-video pipeline stage ``stage`` as finished."""
        self._writable()
        self._group.attrs.update({"pipeline_stages": sorted(self.stages_done() | {stage})})

    # ---- end of run
    def finalize(self) -> None:
        """Consolidate all metadata into the root ``zarr.json`` (one read opens the whole store, e.g. in xarray).

        Call once after the last write; metadata written later (e.g. a mesh of a resumed frame) is not seen by
        consolidated readers until ``finalize`` runs again. Not safe to run while other processes write.
        """
        self._writable()
        with _NoConsolidationWarning():
            zarr.consolidate_metadata(LocalStore(self._path))
        log.info("%s: metadata consolidated", self._path)


# ------------------------------------------------------------------------------------------------- create and open
def create_run(
    path: str | Path,
    *,
    n_frames: int,
    image_size: int,
    attrs: RunAttrs,
    refine_iters: int = 100,
    overwrite: bool = False,
) -> RunStore:
    """Create a run store with the full layout, every array pre-created and unwritten (fill values: status 0 =
    PENDING, NaN for floats, 0/False for image and mask).

    Args:
        path: directory of the new store, conventionally ``<out>/<video-stem>.zarr``.
        n_frames: T, the number of sampled frames; must equal ``len(attrs.frame_indices)``.
        image_size: S, the side of the square crops in pixels.
        attrs: provenance for the root attributes.
        refine_iters: width of ``/fits/loss`` (iterations recorded per frame).
        overwrite: replace whatever is at ``path``; otherwise an existing path raises :class:`RunStoreExistsError`.

    Returns:
        The store opened read/write.
    """
    path = Path(path)
    if n_frames < 1 or image_size < 1 or refine_iters < 1:
        raise ValueError(
            f"create_run: n_frames, image_size and refine_iters must be >= 1, got {n_frames}, {image_size}, "
            f"{refine_iters}"
        )
    if len(attrs.frame_indices) != n_frames:
        raise ValueError(
            f"create_run: attrs.frame_indices has {len(attrs.frame_indices)} entries but n_frames is {n_frames}"
        )
    if attrs.schema_version != SCHEMA_VERSION:
        raise SchemaVersionError(
            f"create_run: this code writes schema {SCHEMA_VERSION}, attrs say {attrs.schema_version}"
        )
    if path.exists() and not overwrite:
        raise RunStoreExistsError(
            f"{path}: already exists; open it with open_run, or pass overwrite=True to replace it"
        )
    if path.exists() and not path.is_dir():
        raise RunStoreExistsError(f"{path}: exists and is not a directory; refusing to replace it")

    root_attrs = {"format": FORMAT_NAME, **attrs.model_dump(mode="json")}
    root = zarr.open_group(LocalStore(path), mode="w", zarr_format=3, attributes=root_attrs)
    t, s = n_frames, image_size

    def per_frame(group: zarr.Group, name: str, tail: tuple[int, ...], dtype: Any, fill: Any, dims: tuple) -> None:
        group.create_array(
            name,
            shape=(t, *tail),
            chunks=(1, *tail),  # one frame per chunk: parallel frame tasks write disjoint files
            dtype=dtype,
            fill_value=fill,
            dimension_names=dims,
        )

    frames = root.create_group("frames")
    for name, (tail, dtype, fill, dims) in _FRAME_ARRAYS.items():
        per_frame(frames, name, tail(s), dtype, fill, dims)
    kp3_dims = ("frame", "keypoint", "keypoint3d_component")
    per_frame(frames, "keypoints3d", (N_KEYPOINTS, 4), np.float32, np.nan, kp3_dims)
    fits = root.create_group("fits")
    for name in ("confidence", "focal"):
        per_frame(fits, name, (), np.float32, np.nan, ("frame",))
    for stage in FIT_STAGES:
        g = fits.create_group(stage)
        for name, (width, dim) in FIT_FIELDS.items():
            per_frame(g, name, (width,), np.float32, np.nan, ("frame", dim))
    per_frame(fits, "loss", (refine_iters,), np.float32, np.nan, ("frame", "iteration"))
    normals = root.create_group("normals")
    for name in ("front", "back"):
        per_frame(normals, name, (s, s, 3), np.float16, np.nan, ("frame", "y", "x", "channel"))
    root.create_group("meshes")
    root.create_group("avatar")
    per_frame(root, "status", (), np.int8, int(FrameStatus.PENDING), ("frame",))
    # Reasons live in a per-frame string array, not in attrs: a JSON attribute would be a racy read-modify-write.
    per_frame(root, "status_reason", (), str, "", ("frame",))
    log.info("%s: created run store (T=%d, S=%d, schema %d)", path, t, s, SCHEMA_VERSION)
    return RunStore(path, root, "r+")


def open_run(path: str | Path, mode: Literal["r", "r+"] = "r") -> RunStore:
    """Open an existing run store, checking that avatarize wrote it with a schema this code reads.

    Raises:
        NotARunStoreError: the path is missing, not a Zarr v3 group, or not an avatarize run store.
        SchemaVersionError: the store's schema version is not :data:`SCHEMA_VERSION` (newer: upgrade avatarize).
    """
    if mode not in ("r", "r+"):
        raise ValueError(f"open_run: mode must be 'r' or 'r+', got {mode!r}")
    path = Path(path)
    if not path.exists():
        raise NotARunStoreError(f"{path}: no such run store (create one with create_run / process_video)")
    if not path.is_dir():
        raise NotARunStoreError(f"{path}: not a run store (expected a directory <video-stem>.zarr, found a file)")
    meta_file = path / "zarr.json"
    if not meta_file.is_file():
        kind = "a Zarr v2 store" if (path / ".zgroup").exists() or (path / ".zarray").exists() else "no zarr.json"
        raise NotARunStoreError(f"{path}: not an avatarize run store ({kind}; expected a Zarr v3 group)")
    try:
        meta = json.loads(meta_file.read_text())
    except (OSError, ValueError) as e:
        raise NotARunStoreError(f"{path}: unreadable zarr.json ({e})") from e
    if meta.get("node_type") != "group":
        raise NotARunStoreError(f"{path}: a Zarr {meta.get('node_type', 'node')}, not a run store group")
    root_attrs = meta.get("attributes") or {}
    if root_attrs.get("format") != FORMAT_NAME:
        raise NotARunStoreError(f"{path}: a Zarr group, but not an avatarize run store (no format={FORMAT_NAME!r})")
    version = root_attrs.get("schema_version")
    if not isinstance(version, int):
        raise SchemaVersionError(f"{path}: run store without an integer schema_version ({version!r}); it is damaged")
    if version > SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: written with store schema {version}, newer than this avatarize reads ({SCHEMA_VERSION}); "
            "upgrade avatarize"
        )
    if version < SCHEMA_VERSION:
        raise SchemaVersionError(
            f"{path}: written with old store schema {version} (this avatarize reads {SCHEMA_VERSION}); "
            "re-run the pipeline with overwrite to rebuild it"
        )
    # Always read live metadata: consolidated metadata is a snapshot from finalize() and may predate later writes.
    store = LocalStore(path, read_only=(mode == "r"))
    group = zarr.open_group(store, mode="r" if mode == "r" else "r+", zarr_format=3, use_consolidated=False)
    try:
        return RunStore(path, group, mode)
    except (ValueError, TypeError) as e:
        raise NotARunStoreError(f"{path}: root attributes do not describe a run ({e})") from e
