"""Errors and read results of the run store (:mod:`flows.store`); the busy error is raised by :mod:`flows.run_lock`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from body.params import HoldsBodyParams

if TYPE_CHECKING:
    import torch

    from body.params import BodyParams


class RunStoreError(ValueError):
    """A run store could not be created, opened, read or written; the message names the store and the reason."""


class NotARunStoreError(RunStoreError, FileNotFoundError):
    """The path is missing, not a Zarr v3 group, or a Zarr group that avatarize did not create."""


class SchemaVersionError(RunStoreError):
    """The store was written with another (newer or unsupported) layout version than this code reads."""


class RunStoreExistsError(RunStoreError, FileExistsError):
    """``create_run`` found something at the path and ``overwrite`` was not set."""


class ReadOnlyStoreError(RunStoreError):
    """A write was attempted on a store opened with ``mode="r"``."""


class FrameNotWrittenError(RunStoreError, LookupError):
    """Data asked for (a frame's mesh, the avatar) has not been written yet."""


class RunStoreBusyError(RunStoreError, TimeoutError):
    """Another run (process or thread) holds the store's run lock; the message names the holder."""


@dataclass
class FrameArrays:
    """Per-frame inputs read from ``/frames`` (numpy).

    Attributes:
        indices: ``(n,) int64`` store positions t of the rows below.
        image: ``(n, S, S, 3) uint8`` RGB crops.
        mask: ``(n, S, S) bool`` person masks in the crops.
        crop: ``(n, 3) float32`` crop box (cx, cy, size) in source pixels; NaN where unwritten.
        keypoints: ``(n, 33, 3) float32`` (x, y, confidence) in crop pixels; NaN where unwritten.
        timestamp: ``(n,) float64`` presentation time in seconds; NaN where unwritten.
    """

    indices: np.ndarray
    image: np.ndarray
    mask: np.ndarray
    crop: np.ndarray
    keypoints: np.ndarray
    timestamp: np.ndarray


@dataclass
class NormalMaps:
    """Front/back normal maps read from ``/normals`` (numpy float16, camera space, in [-1, 1]; NaN where unwritten).

    Attributes:
        indices: ``(n,) int64`` store positions t of the rows.
        front: ``(n, S, S, 3) float16`` normals of the nearest surface.
        back: ``(n, S, S, 3) float16`` normals of the farthest surface, in the front image frame.
    """

    indices: np.ndarray
    front: np.ndarray
    back: np.ndarray


@dataclass
class FitArrays(HoldsBodyParams):
    """Body-fit parameters of one stage (torch, float32, CPU); rows of never-written frames are NaN.

    Attributes:
        indices: ``(n,) int64`` store positions t of the rows.
        body: the body parameters of the n rows (:class:`body.params.BodyParams`: betas ``(n, 10)``, global_orient
            ``(n, 3)``, body_pose ``(n, 69)`` axis-angle, transl ``(n, 3)`` metres); also readable as ``.betas`` etc.
        camera: ``(n, 3)`` camera parameters (e.g. weak-perspective scale, tx, ty).
    """

    indices: torch.Tensor
    body: BodyParams
    camera: torch.Tensor

