"""Seconds per frame of each per-frame ICON stage: body fit, normal prediction, refinement, implicit field evaluation
+ marching cubes, for 1 frame and for a batch of 8, on synthetic frames at 512² with a 256³ grid.

Usage: python bench/icon_speed.py [--size 512] [--resolution 256] [--batches 1 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from body import BodyModel
from geometry.render import render_mesh
from icon.fit import FitConfig, fit_body
from icon.implicit import load_implicit_net, reconstruct_surface
from icon.normal_net import load_normal_net, predict_normals
from icon.refine import RefineConfig, refine_body
from icon.synth.clip import make_clip

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run(batch: int, size: int, resolution: int, device: torch.device, iterations: int) -> dict[str, float]:
    model = BodyModel().to(device)
    clip = make_clip(BodyModel(), n_frames=batch, size=size, seed=0)
    images = (clip.normals.abs() * 255).to(torch.uint8)  # stand-in RGB: the stages' cost does not depend on it
    masks = clip.masks
    normal_net = load_normal_net(WEIGHTS / "normal_net.safetensors", device)
    implicit_net = load_implicit_net(WEIGHTS / "implicit_net.safetensors", device)
    secs: dict[str, float] = {}

    _sync(device)
    t0 = time.perf_counter()
    fit = fit_body(model, clip.keypoints.to(device), masks.to(device), size, FitConfig())
    _sync(device)
    secs["fit"] = time.perf_counter() - t0

    with torch.no_grad():
        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
    ren = render_mesh(out.vertices, model.faces, fit.cameras())
    _sync(device)
    t0 = time.perf_counter()
    front, back = predict_normals(normal_net, images.to(device), masks.to(device), ren.normal_front, ren.normal_back)
    _sync(device)
    secs["normals"] = time.perf_counter() - t0

    t0 = time.perf_counter()
    ref = refine_body(model, fit, images.to(device), masks.to(device),
                      lambda *a: predict_normals(normal_net, *a), RefineConfig(iterations=iterations))  # fmt: skip
    _sync(device)
    secs["refine"] = time.perf_counter() - t0

    rf = ref.fit
    with torch.no_grad():
        body = model(betas=rf.betas, global_orient=rf.global_orient, body_pose=rf.body_pose, transl=rf.transl)
    cams = rf.cameras(size)
    t0 = time.perf_counter()
    for t in range(batch):
        cam = type(cams)(scale=cams.scale[t : t + 1], cx=cams.cx[t : t + 1], cy=cams.cy[t : t + 1], width=size,
                         height=size)  # fmt: skip
        reconstruct_surface(implicit_net, body.vertices[t], model.faces, ref.normals_front[t].float(),
                            ref.normals_back[t].float(), cam, resolution=resolution)  # fmt: skip
    _sync(device)
    secs["implicit+mc"] = time.perf_counter() - t0
    return {k: v / batch for k, v in secs.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, crops {args.size}², grid {args.resolution}³, refinement {args.iterations} steps, "
          f"torch threads {torch.get_num_threads()}")
    stages = ["fit", "normals", "refine", "implicit+mc"]
    print(f"{'batch':>5} " + " ".join(f"{s:>12}" for s in stages) + f" {'total':>8}   (seconds per frame)")
    for b in args.batches:
        r = run(b, args.size, args.resolution, device, args.iterations)
        print(f"{b:>5} " + " ".join(f"{r[s]:>12.2f}" for s in stages) + f" {float(np.sum(list(r.values()))):>8.2f}")


if __name__ == "__main__":
    main()
