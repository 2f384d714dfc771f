"""The normal net on people the project did not make (../shared/validation): mean angular error (degrees) of the
predicted clothed normals and of the body fit's own normals against the ground-truth clothed normals, front and back,
inside the person mask, per outfit. The ground truth is ray-cast from each subject's gt.obj with its true perspective
camera into the pipeline's person crop; the fit and the net run as `avatarize reconstruct` runs them (MediaPipe
detection, crop, initial fit, SMPL feedback loop). Measuring only: nothing here is trained or tuned on this set.

    python bench/normals_validation.py [--limit N] [--subjects 0 5 9] [--overlays out/normals_validation]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from validation_data import DEFAULT_ROOT, load_subjects, outfit_table_rows, render_in_crop

COLUMNS = [f"{src}_{side}" for side in ("front", "back") for src in ("body_init", "pred_init", "body_refined", "pred")]


def body_normal_maps(model, fit, size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(T, S, S, 3) front and back normal maps of a `BodyFit`'s bodies seen through its cameras."""
    from geometry.render import render_mesh

    with torch.no_grad():
        verts = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                      transl=fit.transl).vertices  # fmt: skip
    r = render_mesh(verts, model.faces, fit.cameras(size))
    return r.normal_front.cpu(), r.normal_back.cpu()


def measure_subject(subject, detector, model, normal_net, cfg, use_detected_mask: bool) -> tuple[dict, dict]:
    """Errors (degrees, keys of COLUMNS) and the maps for overlays of one subject."""
    from icon.fit import fit_body
    from icon.normal_net import angular_error_deg, predict_normals
    from icon.person import PersonTrackingConfig, compute_crop_boxes, crop_frames, detect_person
    from icon.refine import refine_body

    s = cfg.person.crop_size
    track = detect_person(subject.image[None], detector, PersonTrackingConfig(detect_size=cfg.person.detect_size))
    if not track.valid[0]:
        raise RuntimeError(f"subject {subject.index}: no person detected ({track.reasons[0]})")
    mask_src = track.masks if use_detected_mask else subject.mask[None]
    crops = compute_crop_boxes(track.boxes, track.valid, margin=cfg.person.crop_margin)
    cropped = crop_frames(subject.image[None], mask_src.reshape(1, *subject.mask.shape), track.keypoints, crops, size=s)
    device = model.device
    kp = torch.from_numpy(cropped.keypoints).to(device)
    masks = torch.from_numpy(cropped.masks).to(device)
    images = torch.from_numpy(cropped.images).to(device)

    fit = fit_body(model, kp, masks, s, cfg.fit)
    bf0, bb0 = body_normal_maps(model, fit, s)
    pf0, pb0 = predict_normals(normal_net, images.cpu(), masks.cpu(), bf0, bb0)
    predictor = lambda *a: predict_normals(normal_net, *a)  # noqa: E731
    refined = refine_body(model, fit, images, masks, predictor, cfg.reconstruct.refine, keypoints=kp)
    bf1, bb1 = body_normal_maps(model, refined.fit, s)
    pf1, pb1 = refined.normals_front.cpu().float(), refined.normals_back.cpu().float()

    gt_mesh = trimesh.load(subject.gt_path, process=False)
    gt = render_in_crop(np.asarray(gt_mesh.vertices), np.asarray(gt_mesh.faces), subject, cropped.crops[0], s)
    region = gt.mask.cpu() & masks.cpu()
    maps = {"front": (gt.normal_front.cpu(), bf0, pf0, bf1, pf1), "back": (gt.normal_back.cpu(), bb0, pb0, bb1, pb1)}
    errors = {}
    for side, (g, *preds) in maps.items():
        for name, p in zip(("body_init", "pred_init", "body_refined", "pred"), preds, strict=True):
            errors[f"{name}_{side}"] = float(angular_error_deg(p, g, region)[0])
    errors["mask_iou"] = float((gt.mask.cpu() & masks.cpu()).sum() / (gt.mask.cpu() | masks.cpu()).sum())
    return errors, {"image": cropped.images[0], "maps": maps}


def overlay(image: np.ndarray, maps: dict) -> np.ndarray:
    """Rows front/back: image | ground truth | net (refined) | body fit (refined), normals shaded as RGB."""

    def rgb(n: torch.Tensor) -> np.ndarray:
        n = n[0].numpy() if n.ndim == 4 else n.numpy()
        out = ((n * 0.5 + 0.5) * 255).clip(0, 255).astype(np.uint8)
        out[np.linalg.norm(n, axis=-1) == 0] = 255
        return out

    rows = []
    for side in ("front", "back"):
        g, _, _, bref, pred = maps[side]
        rows.append(np.concatenate([image, rgb(g), rgb(pred), rgb(bref)], axis=1))
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=DEFAULT_ROOT, help="validation folder (has subjects/)")
    parser.add_argument("--subjects", type=int, nargs="*", default=None, help="only these subject numbers")
    parser.add_argument("--limit", type=int, default=None, help="at most this many subjects")
    parser.add_argument("--config", default="default", help="pipeline preset or YAML")
    parser.add_argument("--detected-mask", action="store_true", help="use MediaPipe's mask instead of mask.png")
    parser.add_argument("--overlays", type=Path, default=Path("out/normals_validation"), help="PNG folder")
    parser.add_argument("--overlay-count", type=int, default=6, help="save overlays for this many subjects")
    args = parser.parse_args()

    from PIL import Image
    from rich.console import Console
    from rich.table import Table

    from flows.pipeline import body_model, load_networks, resolve_config
    from flows.runners import resolve_device
    from icon.person import PersonDetector

    cfg = resolve_config(args.config)
    device = resolve_device(cfg.device)
    model = body_model(cfg.body_model, device)
    normal_net, _ = load_networks(cfg, device)
    args.overlays.mkdir(parents=True, exist_ok=True)
    values: dict[str, list[float]] = {k: [] for k in [*COLUMNS, "mask_iou"]}
    outfits: list[str] = []
    console = Console()
    t0 = time.perf_counter()
    with PersonDetector() as detector:
        for i, subject in enumerate(load_subjects(args.root, args.subjects, args.limit)):
            errors, vis = measure_subject(subject, detector, model, normal_net, cfg, args.detected_mask)
            outfits.append(subject.outfit)
            for k in values:
                values[k].append(errors[k])
            console.print(f"{subject.index:03d} {subject.outfit:15s} " + " ".join(
                f"{k}={errors[k]:.1f}" for k in ("body_refined_front", "pred_front", "body_refined_back", "pred_back")))
            if i < args.overlay_count:
                Image.fromarray(overlay(vis["image"], vis["maps"])).save(args.overlays / f"{subject.index:03d}.png")

    table = Table(title=f"Clothed normals on {len(outfits)} validation people: mean angular error (deg) inside the mask"
                  f" ({time.perf_counter() - t0:.0f} s)")  # fmt: skip
    for col in ("outfit", "n", "front body", "front net", "front net vs body", "back body", "back net",
                "back net vs body", "init net front", "mask IoU"):  # fmt: skip
        table.add_column(col, justify="left" if col == "outfit" else "right")
    for name, n, m in outfit_table_rows(values, outfits):
        table.add_row(
            name, str(n), f"{m['body_refined_front']:.2f}", f"{m['pred_front']:.2f}",
            f"{100 * (1 - m['pred_front'] / m['body_refined_front']):.1f} %", f"{m['body_refined_back']:.2f}",
            f"{m['pred_back']:.2f}", f"{100 * (1 - m['pred_back'] / m['body_refined_back']):.1f} %",
            f"{m['pred_init_front']:.2f}", f"{m['mask_iou']:.3f}", style="bold" if name == "all" else None,
        )  # fmt: skip
    console.print(table)
    console.print(f"overlays (image | ground truth | net | body fit; rows front, back): {args.overlays}")


if __name__ == "__main__":
    main()
