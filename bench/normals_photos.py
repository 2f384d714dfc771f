"""Clothed normals on real photos and a real clip (issue 15): Debian opencv-doc's messi5.jpg, basketball1.png and
Megamind.avi.

Each input goes through what `avatarize reconstruct` does before the surface: MediaPipe detection and the pipeline's
square crop, the initial body fit, then the SMPL feedback loop with the normal net (the clip's frames are fitted
together, one β). Saved per frame (PNG, under --out): crop | refined body normals | net front | net back.
Printed per frame (no ground truth exists for these inputs; the numbers say how far the net departs from the body, the
pictures say whether it is right):
- ``detail_net`` / ``detail_body``: mean angle (deg) between horizontally and vertically neighbouring normals inside
  both masks, front side: folds, hems, sleeve and shorts edges raise it above the smooth body's value;
- ``clothing_pct``: % of the clothed mask's pixels where the net's front normal is > 20 deg from the body's (or where
  the body does not reach).

Usage: python bench/normals_photos.py [--out out/normals_photos] [--megamind-frames 4] [--weights W.safetensors]
                                      [--inputs a.jpg b.png c.avi]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from fit_validation import OPENCV_DATA, Prepared, prepare, read_rgb, write_png

from body import BodyModel
from flows.bundled import weights_path
from flows.config import load_config
from flows.video import read_frames
from flows.video_types import FrameSampling
from icon.fit import fit_body
from icon.normal_net import load_normal_net, predict_normals
from icon.person import PersonDetector
from icon.refine import refine_body

ROOT = Path(__file__).resolve().parent.parent


def neighbour_angle_deg(normals: torch.Tensor, mask: torch.Tensor) -> float:
    """Mean angle (deg) between each pixel's normal and its right and lower neighbours where both are in ``mask``.

    normals: (S, S, 3) unit vectors; mask: (S, S) bool.
    """
    angles = []
    for a, b, m in (
        (normals[:, :-1], normals[:, 1:], mask[:, :-1] & mask[:, 1:]),
        (normals[:-1], normals[1:], mask[:-1] & mask[1:]),
    ):
        cos = (a * b).sum(-1).clamp(-1.0, 1.0)
        angles.append(torch.rad2deg(torch.acos(cos))[m])
    both = torch.cat(angles)
    return float(both.mean()) if both.numel() else float("nan")


def clothing_share(net: torch.Tensor, body: torch.Tensor, mask: torch.Tensor, threshold_deg: float = 20.0) -> float:
    """% of ``mask`` pixels where ``net`` (S, S, 3) is over ``threshold_deg`` from ``body`` or the body is absent."""
    body_there = body.norm(dim=-1) > 0.5
    cos = (net * body).sum(-1).clamp(-1.0, 1.0)
    off = (torch.rad2deg(torch.acos(cos)) > threshold_deg) | ~body_there
    return float(100.0 * off[mask].float().mean()) if mask.any() else float("nan")


def to_rgb(normals: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """(S, S, 3) normals → uint8 colours ((n + 1) / 2), dark grey outside ``mask``."""
    rgb = ((normals.clamp(-1, 1) + 1.0) * 127.5).to(torch.uint8).numpy()
    rgb[~mask.numpy()] = 40
    return rgb


def fit_and_predict(model, prep: Prepared, cfg, net) -> dict[str, torch.Tensor]:
    """Initial fit + feedback loop; the net's last front/back prediction and the body normals it was given."""
    seen: dict[str, torch.Tensor] = {}

    def predictor(images, masks, body_front, body_back):
        seen["body_front"], seen["body_back"] = body_front, body_back
        return predict_normals(net, images, masks, body_front, body_back)

    kp = torch.from_numpy(prep.keypoints)
    masks = torch.from_numpy(prep.masks)
    extra = {} if prep.keypoints3d is None else {"keypoints3d": torch.from_numpy(prep.keypoints3d)}
    fit = fit_body(model, kp, masks, prep.images.shape[1], cfg.fit, **extra).detach()
    ref = refine_body(model, fit, torch.from_numpy(prep.images), masks, predictor, cfg.reconstruct.refine,
                      keypoints=kp)  # fmt: skip
    return {"front": ref.normals_front, "back": ref.normals_back, "body_front": seen["body_front"], "masks": masks}


def load_input(path: Path, frames: int) -> np.ndarray:
    """(T, H, W, 3) uint8: one photo, or ``frames`` frames spread over a video."""
    if path.suffix.lower() in (".jpg", ".jpeg", ".png"):
        return read_rgb(path)[None]
    every = read_frames(path, FrameSampling(fps=1.0)).images
    pick = np.linspace(0, len(every) - 1, min(frames, len(every))).round().astype(int)
    return every[pick]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default_inputs = [OPENCV_DATA / n for n in ("messi5.jpg", "basketball1.png", "Megamind.avi")]
    parser.add_argument("--inputs", type=Path, nargs="*", default=[p for p in default_inputs if p.is_file()])
    parser.add_argument("--megamind-frames", type=int, default=4, help="frames taken from each video input")
    parser.add_argument("--weights", type=Path, default=None, help="normal-net weights (default: the shipped ones)")
    parser.add_argument("--config", default="default", help="pipeline preset (person, fit, reconstruct)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "normals_photos")
    args = parser.parse_args()
    if not args.inputs:
        raise SystemExit("no inputs: install Debian's opencv-doc or pass --inputs")
    torch.manual_seed(0)
    cfg = load_config(args.config)
    model = BodyModel()
    net = load_normal_net(args.weights or weights_path("normal_net"), "cpu")
    rows = []
    with PersonDetector() as detector:
        for path in args.inputs:
            prep = prepare(load_input(path, args.megamind_frames), detector, cfg.person.crop_size,
                           cfg.person.crop_margin, cfg.person.detect_size)  # fmt: skip
            keep = np.flatnonzero(prep.valid)
            if len(keep) == 0:
                print(json.dumps({"input": path.name, "skipped": "no person found"}))
                continue
            sub = Prepared(prep.images[keep], prep.masks[keep], prep.keypoints[keep],
                           None if prep.keypoints3d is None else prep.keypoints3d[keep], prep.valid[keep])  # fmt: skip
            out = fit_and_predict(model, sub, cfg, net)
            for i, t in enumerate(keep):
                m = out["masks"][i]
                body, front, back = out["body_front"][i].float(), out["front"][i].float(), out["back"][i].float()
                body_mask = body.norm(dim=-1) > 0.5
                row = {
                    "input": path.name, "frame": int(t),
                    "detail_net": neighbour_angle_deg(front, m & body_mask),
                    "detail_body": neighbour_angle_deg(body, m & body_mask),
                    "clothing_pct": clothing_share(front, body, m),
                }  # fmt: skip
                rows.append(row)
                print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
                panel = np.concatenate([sub.images[i], to_rgb(body, body_mask), to_rgb(front, m), to_rgb(back, m)], 1)
                write_png(args.out / f"{path.stem}_{int(t):03d}.png", panel)
    for key in ("detail_net", "detail_body", "clothing_pct"):
        print(f"mean {key}: {np.nanmean([r[key] for r in rows]):.2f}")
    print(f"panels (crop | body normals | net front | net back) in {args.out}")


if __name__ == "__main__":
    main()
