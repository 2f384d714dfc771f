"""Benchmark the initial body fit on synthetic clips: seconds per frame and accuracy at S=256 and S=512 (CPU).

Usage: python bench/fit.py [--frames 16] [--sizes 256 512] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from body import BodyModel
from geometry.render import render_mesh
from icon.fit import FitConfig, fit_body
from icon.synth.clip import make_clip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--sizes", type=int, nargs="+", default=[256, 512])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    model = BodyModel().to(args.device)
    rows = []
    for size in args.sizes:
        clip = make_clip(BodyModel(), n_frames=args.frames, size=size, seed=0)
        fit_body(model, clip.keypoints[:2], clip.masks[:2], size, FitConfig(orient_iters=2, pose_iters=2,
                                                                              silhouette_iters=2))  # warm-up
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        fit = fit_body(model, clip.keypoints, clip.masks, size, FitConfig())
        if args.device.startswith("cuda"):
            torch.cuda.synchronize()
        seconds = time.perf_counter() - t0
        fit_cpu = fit.detach()
        with torch.no_grad():
            out = model(betas=fit_cpu.betas, global_orient=fit_cpu.global_orient, body_pose=fit_cpu.body_pose,
                        transl=fit_cpu.transl)
        r = render_mesh(out.vertices.cpu(), model.faces.cpu(), fit_cpu.cameras().to("cpu"))
        m = clip.masks
        iou = ((r.mask & m).sum((1, 2)).float() / (r.mask | m).sum((1, 2)).float())
        rows.append((size, args.frames, seconds, seconds / args.frames,
                     float(fit_cpu.keypoint_error_px.mean().cpu()) * 512 / size, float(iou.mean()), float(iou.min())))
    print(f"device: {args.device}, torch threads: {torch.get_num_threads()}")
    print(f"{'S':>5} {'frames':>6} {'total s':>8} {'s/frame':>8} {'kp err px@512':>14} {'IoU mean':>9} {'IoU min':>8}")
    for r in rows:
        print(f"{r[0]:>5} {r[1]:>6} {r[2]:>8.1f} {r[3]:>8.2f} {r[4]:>14.2f} {r[5]:>9.3f} {r[6]:>8.3f}")


if __name__ == "__main__":
    main()
