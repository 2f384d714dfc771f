"""`avatarize reconstruct IMAGE_OR_DIR`: ICON on single images, written as plain files (no store, no server).

For each image: person detection (or a given mask), square crop, body fit, SMPL feedback loop, implicit surface;
writes ``<stem>_recon.obj``, ``<stem>_body.obj``, ``<stem>_fit.npz`` and ``<stem>_overlay.png`` (crop | clothed
normals | reconstruction shaded from the front | from the side).
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.config import PipelineConfig
from flows.paths import roots_for

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff"}
OUTPUT_SUFFIXES = ("_recon.obj", "_body.obj", "_fit.npz", "_overlay.png")
"""Files written per image: ``<stem><suffix>`` in the output folder."""


@dataclass
class ImageResult:
    """Files written for one image (paths), or the reason it was skipped."""

    image: Path
    recon: Path | None = None
    body: Path | None = None
    fit: Path | None = None
    overlay: Path | None = None
    skipped: str | None = None


def find_images(source: Path) -> list[Path]:
    """The image itself, or the images of a folder (sorted, not recursive)."""
    if source.is_file():
        return [source]
    if source.is_dir():
        return sorted(p for p in source.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES)
    raise FileNotFoundError(f"{source}: no such image or folder")


def read_rgb(path: Path) -> np.ndarray:
    """(H, W, 3) uint8 RGB of an image file; a clear error if it is not an image."""
    import cv2

    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise ValueError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def read_mask(path: Path, shape: tuple[int, int]) -> np.ndarray:
    """(H, W) bool mask from a grey/RGB image (non-zero = person), checked against the image size."""
    import cv2

    m = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    if m is None:
        raise ValueError(f"{path}: not a readable mask image")
    if m.shape != shape:
        raise ValueError(f"{path}: mask is {m.shape[1]}x{m.shape[0]} but the image is {shape[1]}x{shape[0]}")
    return m > 127


def _turntable_render(vertices: np.ndarray, faces: np.ndarray, size: int, yaw: float) -> np.ndarray:
    """(size, size, 3) uint8 shaded render of a mesh rotated by ``yaw`` about its vertical axis (orthographic)."""
    import torch

    from geometry.cameras import OrthographicCamera
    from geometry.render import render_mesh, shade_normals

    v = torch.as_tensor(vertices, dtype=torch.float32)
    c = (v.amax(0) + v.amin(0)) / 2
    cs, sn = float(np.cos(yaw)), float(np.sin(yaw))
    rot = torch.tensor([[cs, 0.0, sn], [0.0, 1.0, 0.0], [-sn, 0.0, cs]])
    v = (v - c) @ rot.T
    extent = float((v.amax(0) - v.amin(0))[:2].max())
    cam = OrthographicCamera(scale=torch.tensor([0.9 * size / max(extent, 1e-6)]), cx=torch.tensor([size / 2]),
                             cy=torch.tensor([size / 2]), width=size, height=size)  # fmt: skip
    v[:, 2] -= float(v[:, 2].max()) + 1.0
    r = render_mesh(v[None], torch.as_tensor(faces, dtype=torch.long), cam)
    img = shade_normals(r.normal_front, light_dir=(0.3, 0.4, 1.0))[0]
    return (img.numpy() * 255).astype(np.uint8)


def overlay_panel(crop: np.ndarray, normals_front: np.ndarray, vertices: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """(S, 4S, 3) uint8: crop | clothed normals | reconstruction front | side."""
    s = crop.shape[0]
    normals = ((normals_front * 0.5 + 0.5) * (np.abs(normals_front).sum(-1, keepdims=True) > 0) * 255).astype(np.uint8)
    panels = [crop, normals]
    if len(faces):
        panels += [_turntable_render(vertices, faces, s, 0.0), _turntable_render(vertices, faces, s, np.pi / 2)]
    else:
        panels += [np.zeros_like(crop), np.zeros_like(crop)]
    return np.concatenate(panels, axis=1)


def check_paths(source: Path, images: list[Path], out: Path, config: PipelineConfig) -> None:
    """Confine every image to the input root (default: the source folder, or a single image's own folder) and every
    output file to the output root (default: ``out``), before any work starts.

    Raises:
        PathEscapeError: an image (e.g. a symlink in the folder) or an output (e.g. a planted symlink) escapes.
    """
    input_default = source if source.is_dir() else Path(os.path.realpath(source)).parent
    roots = roots_for(input_default, out, config.input_root, config.output_root)
    for image in images:
        roots.input_path(image, "image")
        for suffix in OUTPUT_SUFFIXES:
            roots.output_path(out / f"{image.stem}{suffix}", "output file")


def reconstruct_images(
    source: str | Path,
    out_dir: str | Path,
    config: PipelineConfig | str = "default",
    mask: str | Path | None = None,
) -> list[ImageResult]:
    """Reconstruct every image of ``source`` (a file or a folder) into ``out_dir``.

    Args:
        source: an image file or a folder of images.
        out_dir: output folder (created).
        config: pipeline config or preset name (person crop size, fit, reconstruct sections are used).
        mask: optional person mask image (only with a single image); else MediaPipe segments the person.
    """
    import torch
    import trimesh

    from flows.previews import write_png
    from flows.resources import body_model, load_networks, resolve_config
    from flows.runners import resolve_device
    from icon.fit import fit_body
    from icon.person import PersonDetector, PersonTrackingConfig, compute_crop_boxes, crop_frames, detect_person
    from icon.reconstruct import reconstruct

    cfg = resolve_config(config)
    out = Path(out_dir)
    images = find_images(Path(source))
    if mask is not None and len(images) != 1:
        raise ValueError("--mask applies to a single image, not a folder")
    check_paths(Path(source), images, out, cfg)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(cfg.device)
    model = body_model(cfg.body_model, device)
    normal_net, implicit_net = load_networks(cfg, device)
    s = cfg.person.crop_size
    tracking = PersonTrackingConfig(detect_size=cfg.person.detect_size)
    results = []
    with PersonDetector() as detector:
        for path in images:
            res = ImageResult(image=path)
            results.append(res)
            rgb = read_rgb(path)
            track = detect_person(rgb[None], detector, tracking)
            if not track.valid[0]:
                res.skipped = track.reasons[0] or "no person"
                log.warning("%s: skipped (%s)", path, res.skipped)
                continue
            person_mask = read_mask(Path(mask), rgb.shape[:2]) if mask is not None else track.masks
            person_mask = person_mask.reshape(1, *rgb.shape[:2])
            crops = compute_crop_boxes(track.boxes, track.valid, margin=cfg.person.crop_margin)
            cropped = crop_frames(rgb[None], person_mask, track.keypoints, crops, size=s)
            kp = torch.from_numpy(cropped.keypoints).to(device)
            m = torch.from_numpy(cropped.masks).to(device)
            kp3 = torch.from_numpy(track.keypoints3d).to(device) if track.keypoints3d is not None else None
            fit = fit_body(model, kp, m, s, cfg.fit, keypoints3d=kp3)
            rec = reconstruct(model, torch.from_numpy(cropped.images).to(device), m, fit, normal_net, implicit_net,
                              cfg.reconstruct, keypoints=kp)  # fmt: skip
            verts, faces = rec.meshes[0]
            stem = path.stem
            res.recon = out / f"{stem}_recon.obj"
            trimesh.Trimesh(verts, faces, process=False).export(res.recon)
            res.body = out / f"{stem}_body.obj"
            trimesh.Trimesh(rec.body_vertices[0].numpy(), model.faces.cpu().numpy(), process=False).export(res.body)
            res.fit = out / f"{stem}_fit.npz"
            rf = rec.fit
            np.savez_compressed(
                res.fit, **rf.body.to_npz_dict(), camera=rf.camera.cpu().numpy(), image_size=s, crop=cropped.crops,
                refine_loss=rec.losses.cpu().numpy(),
            )  # fmt: skip
            res.overlay = write_png(out / f"{stem}_overlay.png", overlay_panel(
                cropped.images[0], rec.normals_front[0].cpu().numpy(), verts, faces))  # fmt: skip
    return results
