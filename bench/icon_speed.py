"""Seconds per frame of each per-frame ICON stage: body fit, normal prediction, refinement, and the clothed surface
(implicit: field evaluation + marching cubes; integrated: normal integration + depth fusion + marching cubes), for 1
frame and for a batch of 8, on synthetic frames at 512² with a 256³ grid.

Usage: python bench/icon_speed.py [--size 512] [--resolution 256] [--batches 1 8] [--device cpu]
"""

from __future__ import annotations

import argparse
import time

import torch

from body import BodyModel
from flows.bundled import weights_path
from geometry.render import render_mesh
from icon.fit import FitConfig, fit_body
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net, predict_normals
from icon.reconstruct import ReconstructConfig, clothed_surfaces
from icon.refine import RefineConfig, refine_body
from icon.synth.clip import make_clip

WEIGHTS = weights_path("normal_net").parent


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

    cfg = ReconstructConfig(resolution=resolution)
    for kind in ("implicit", "integrated"):
        _sync(device)
        t0 = time.perf_counter()
        clothed_surfaces(model, ref.fit, ref.normals_front, ref.normals_back, masks.to(device), implicit_net, cfg,
                         surface=kind)  # fmt: skip
        _sync(device)
        secs[kind] = time.perf_counter() - t0
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
    print(
        f"device {device}, crops {args.size}², grid {args.resolution}³, refinement {args.iterations} steps, "
        f"torch threads {torch.get_num_threads()}"
    )
    stages = ["fit", "normals", "refine", "implicit", "integrated"]
    print(f"{'batch':>5} " + " ".join(f"{s:>12}" for s in stages) + f" {'total':>8}   (seconds per frame)")
    for b in args.batches:
        r = run(b, args.size, args.resolution, device, args.iterations)
        total = sum(r[s] for s in stages[:-1])  # one surface per frame (the implicit one, as before)
        print(f"{b:>5} " + " ".join(f"{r[s]:>12.2f}" for s in stages) + f" {total:>8.2f}")


if __name__ == "__main__":
    main()
