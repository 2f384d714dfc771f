"""Readers for the independent validation set (../shared/validation: 24 people + a turning clip, see its README) and
the camera maths that maps its ground truth into the pipeline's person crops. Used by the *_validation benchmarks;
the set is for measuring only, never for training or tuning.
"""

from __future__ import annotations

import importlib.util
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch


def _default_root() -> Path:
    """$AVATARIZE_VALIDATION, else the nearest ``shared/validation`` beside a folder above this checkout."""
    if os.environ.get("AVATARIZE_VALIDATION"):
        return Path(os.environ["AVATARIZE_VALIDATION"])
    here = Path(__file__).resolve()
    for parent in here.parents:
        if (parent / "shared" / "validation" / "subjects").is_dir():
            return parent / "shared" / "validation"
    return here.parents[2] / "shared" / "validation"


DEFAULT_ROOT = _default_root()

# OpenCV camera (x right, y down, z forward) -> the project's OpenGL-style camera space (x right, y up, looks along -z).
CV_TO_GL = np.diag([1.0, -1.0, -1.0])


def load_scorer(root: Path = DEFAULT_ROOT):
    """The set's own scorer module (``root/eval_recon.py``: similarity ICP, Chamfer / P2S / S2P / NC)."""
    spec = importlib.util.spec_from_file_location("eval_recon", Path(root) / "eval_recon.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@dataclass
class ValidationSubject:
    """One validation person (numpy, source image frame).

    Attributes:
        index: Subject number (folder name).
        outfit: Outfit family from meta.json, e.g. "dress".
        image: (H, W, 3) uint8 RGB.
        mask: (H, W) bool person mask.
        K: (3, 3) OpenCV intrinsics; R: (3, 3), t: (3,) world -> OpenCV camera.
        gt_path: clothed ground-truth mesh (subject frame, metres); body_path: naked ground-truth body (Anny topology).
    """

    index: int
    outfit: str
    image: np.ndarray
    mask: np.ndarray
    K: np.ndarray
    R: np.ndarray
    t: np.ndarray
    gt_path: Path
    body_path: Path


def read_png(path: Path) -> np.ndarray:
    """(H, W, C) or (H, W) uint8 array of a PNG file."""
    from PIL import Image

    return np.asarray(Image.open(path))


def load_subject(folder: Path) -> ValidationSubject:
    """Read one subject folder (image.png, mask.png, camera.json, meta.json, gt.obj, body.obj)."""
    cam = json.loads((folder / "camera.json").read_text())
    meta = json.loads((folder / "meta.json").read_text())
    image = read_png(folder / "image.png")[..., :3]
    mask = read_png(folder / "mask.png")
    mask = (mask[..., 0] if mask.ndim == 3 else mask) > 127
    return ValidationSubject(
        index=int(folder.name), outfit=meta["outfit"], image=np.ascontiguousarray(image), mask=mask,
        K=np.asarray(cam["K"], np.float64), R=np.asarray(cam["R"], np.float64), t=np.asarray(cam["t"], np.float64),
        gt_path=folder / "gt.obj", body_path=folder / "body.obj",
    )  # fmt: skip


def load_subjects(root: Path = DEFAULT_ROOT, subjects: list[int] | None = None, limit: int | None = None):
    """Yield `ValidationSubject`s of ``root/subjects`` in index order (only ``subjects``, at most ``limit``)."""
    folders = sorted(p for p in (Path(root) / "subjects").iterdir() if p.is_dir() and p.name.isdigit())
    if not folders:
        raise SystemExit(f"no validation subjects under {root}/subjects (see ../shared/validation/README.md)")
    if subjects is not None:
        folders = [f for f in folders if int(f.name) in set(subjects)]
    for folder in folders[:limit]:
        yield load_subject(folder)


def world_to_camera_gl(points_world: np.ndarray, R: np.ndarray, t: np.ndarray) -> np.ndarray:
    """(N, 3) subject-frame points -> (N, 3) OpenGL-style camera space (x right, y up, camera looks along -z)."""
    return ((points_world @ R.T) + t) @ CV_TO_GL.T


def crop_intrinsics(K: np.ndarray, crop: np.ndarray, size: int) -> tuple[float, float, float]:
    """Focal and principal point (pixels) of the square crop ``crop`` = (cx, cy, side) in source pixels, resampled to
    ``size`` pixels: u_crop = (u_src - (cx - side / 2)) * size / side (continuous pixel coordinates, both frames).
    """
    cx_box, cy_box, side = (float(v) for v in crop)
    k = size / side
    focal = 0.5 * (K[0, 0] + K[1, 1]) * k
    return focal, (K[0, 2] - (cx_box - side / 2)) * k, (K[1, 2] - (cy_box - side / 2)) * k


def render_in_crop(vertices_world: np.ndarray, faces: np.ndarray, subject: ValidationSubject, crop: np.ndarray,
                   size: int):  # fmt: skip
    """Ray-cast a subject-frame mesh with the subject's true perspective camera into a person crop.

    Returns:
        `geometry.render.RenderResult` of batch 1 at size x size (camera-space normals, front and back).
    """
    from geometry.cameras import PerspectiveCamera
    from geometry.render import render_mesh

    focal, cx, cy = crop_intrinsics(subject.K, crop, size)
    cam = PerspectiveCamera(focal=torch.tensor([focal]), cx=torch.tensor([cx]), cy=torch.tensor([cy]),
                            width=size, height=size)  # fmt: skip
    verts = torch.as_tensor(world_to_camera_gl(vertices_world, subject.R, subject.t), dtype=torch.float32)[None]
    return render_mesh(verts, torch.as_tensor(faces, dtype=torch.long), cam)


def outfit_table_rows(values: dict[str, list[float]], outfits: list[str]) -> list[tuple[str, int, dict[str, float]]]:
    """(outfit, n, {column: mean}) rows, 'all' first, from per-subject ``values[column]`` aligned with ``outfits``."""
    rows = []
    arr = {k: np.asarray(v, np.float64) for k, v in values.items()}
    names = ["all", *sorted(set(outfits))]
    for name in names:
        sel = np.ones(len(outfits), bool) if name == "all" else np.asarray(outfits) == name
        rows.append((name, int(sel.sum()), {k: float(np.nanmean(v[sel])) for k, v in arr.items()}))
    return rows
