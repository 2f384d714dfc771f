"""Frames and body fit of a short clip as plain files, without a store or Prefect (``avatarize extract``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from flows.config import PipelineConfig
from flows.detection import crop_boxes, detect_frames, iter_crops
from flows.frame_batch import PREVIEW_TILE_PX
from flows.resources import body_model, resolve_config
from flows.resume import sheet_pick
from flows.runners import resolve_device


# -------------------------------------------------------------------------------------------- plain-file variant
def extract_to_files(video: str | Path, out_dir: str | Path, config: PipelineConfig | str | None = "default") -> Path:
    """Frames and body fit of a short clip as plain files, without a store or Prefect.

    Writes ``<out_dir>/<stem>/``: ``crops/NNNNNN.png``, ``masks/NNNNNN.png``, ``keypoints.npz`` (keypoints in crop
    pixels, crops, source indices, timestamps, valid, reasons), ``fit.npz`` (BodyFit fields for the valid frames,
    with their positions) and ``contact_sheet.png``.

    Returns:
        The output folder.
    """
    import torch

    from flows.previews import contact_sheet, preview_tile, write_png
    from geometry.render import render_mesh
    from icon.fit import fit_body

    cfg = resolve_config(config)
    video = Path(video)
    folder = Path(out_dir) / video.stem
    folder.mkdir(parents=True, exist_ok=True)
    det = detect_frames(video, cfg)
    crops = crop_boxes(det, cfg)
    n, s = len(det.indices), cfg.person.crop_size
    images = np.zeros((n, s, s, 3), np.uint8)
    masks = np.zeros((n, s, s), bool)
    keypoints = np.zeros((n, 33, 3), np.float32)
    for rows, cropped, _ in iter_crops(video, cfg, det, crops):
        images[rows], masks[rows], keypoints[rows] = cropped.images, cropped.masks, cropped.keypoints
        for i, t in enumerate(rows):
            write_png(folder / "crops" / f"{t:06d}.png", cropped.images[i])
            write_png(folder / "masks" / f"{t:06d}.png", cropped.masks[i])
    np.savez_compressed(
        folder / "keypoints.npz",
        keypoints=keypoints,
        crops=crops,
        source_indices=det.indices,
        timestamps=det.timestamps,
        valid=det.valid,
        reasons=np.array([r or "" for r in det.reasons]),
    )
    valid = np.flatnonzero(det.valid)
    tiles = []
    if valid.size:
        device = resolve_device(cfg.device)
        model = body_model(cfg.body_model, device)
        fit = fit_body(model, torch.from_numpy(keypoints[valid]), torch.from_numpy(masks[valid]), s, cfg.fit)
        np.savez_compressed(
            folder / "fit.npz",
            positions=valid,
            **{
                k: getattr(fit, k).cpu().numpy()
                for k in ("betas", "global_orient", "body_pose", "transl", "camera", "losses", "keypoint_error_px")
            },
            image_size=s,
        )
        with torch.no_grad():
            body = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
            render = render_mesh(body.vertices, model.faces, fit.cameras())
        pick = sheet_pick(valid)
        row_of = {int(t): i for i, t in enumerate(valid)}
        for t in pick:
            i = row_of[int(t)]
            normals, mask = render.normal_front[i].cpu().numpy(), render.mask[i].cpu().numpy()
            tiles.append(preview_tile(images[t], keypoints[t], normals, mask, size=PREVIEW_TILE_PX, label=str(int(t))))
    if tiles:
        write_png(folder / "contact_sheet.png", contact_sheet(tiles))
    return folder
