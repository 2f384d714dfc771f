"""Accuracy of per-frame ICON on held-out synthetic clothed people (ground truth known).

For each held-out subject: the *initial body fit* is the generator's perturbed fit (fit error simulated with the
generator's noise levels), the *refined body* comes from the SMPL feedback loop driven by the shipped normal net and,
as in the pipeline, anchored by the MediaPipe keypoints that ``icon.person.PersonDetector`` finds in the subject's
image (``--no-keypoints`` refines from normals and silhouette only), and the *reconstruction* is the full ICON output
(refinement + clothed surface: the default integrated one, and the implicit one from the same refined fit). Each is
compared with the ground-truth clothed mesh: Chamfer and point-to-surface distance (cm) and normal consistency, as
ICON reports.

Variants of the implicit stage (weights/README.md "Other measurements") add a row "variant reconstruction": the
implicit surface extracted again after the same refinement, with ``--true-body`` (features from the generator's exact
body instead of the refined one), ``--exact-normals`` (the ground-truth clothed normals instead of the normal net's) and
``--band IN,OUT`` (the body band prior in metres, or ``none``; default 0.03,0.08).

Usage: python bench/icon_accuracy.py --data out/synth_eval [--n 50] [--resolution 256] [--device cpu]
           [--true-body] [--exact-normals] [--band 0.03,0.08] [--no-keypoints]
       (make data with: python scripts/make_synth.py --heldout --n 50 --size 256 --out out/synth_eval;
        the validation seeds of weights/README.md: --heldout --start 500 --n 24 --points 64 --out out/synth_val)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from body import BodyModel
from flows.bundled import weights_path
from geometry.metrics import reconstruction_metrics
from icon.fit import BodyFit, camera_from_params
from icon.implicit import load_implicit_net, reconstruct_surface
from icon.normal_net import load_normal_net
from icon.person import PersonDetector, image_keypoints
from icon.reconstruct import ReconstructConfig, clothed_surfaces, reconstruct
from icon.refine import RefineConfig
from icon.synth.shards import load_shard, shard_paths

WEIGHTS = weights_path("normal_net").parent
DEFAULT_BAND = (0.03, 0.08)  # icon.implicit.reconstruct_surface's default body band (inside, outside) in metres


def body_mesh(model, fit: BodyFit) -> torch.Tensor:
    with torch.no_grad():
        return model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                     transl=fit.transl).vertices[0]  # fmt: skip


def variant_surface(model, implicit_net, sample, rec, cfg: ReconstructConfig, *, true_body: bool,
                    exact_normals: bool, band, device) -> tuple[torch.Tensor, torch.Tensor]:
    """The implicit surface of one subject again, from the exact or refined body and exact or predicted normals."""
    if true_body:
        body = body_mesh(model, sample_true_fit(sample, device))
        params = torch.as_tensor(sample.camera[None], device=device)
    else:
        body = rec.body_vertices[0].to(device)
        params = rec.fit.camera[:1].to(device)
    size = sample.rgb.shape[0]
    camera = camera_from_params(params, size, size)
    if exact_normals:
        front, back = (torch.as_tensor(a, device=device) for a in (sample.normal_front, sample.normal_back))
    else:
        front, back = rec.normals_front[0].to(device).float(), rec.normals_back[0].to(device).float()
    v, f = reconstruct_surface(implicit_net, body, model.faces, front, back, camera, resolution=cfg.resolution,
                               coarse_resolution=cfg.coarse_resolution, replace_hands_feet=cfg.replace_hands_feet,
                               lbs_weights=model.lbs_weights, margin=cfg.margin, body_band=band)  # fmt: skip
    return torch.as_tensor(v, device=device), torch.as_tensor(f, device=device)


def sample_true_fit(sample, device) -> BodyFit:
    """The generator's exact body of a sample as a one-frame BodyFit (the sample's camera)."""
    fit = sample.fitted_body(device)

    return BodyFit(body=sample.body.torch(dtype=torch.float32, device=device), camera=fit.camera,
                   image_size=fit.image_size, losses=fit.losses, keypoint_error_px=fit.keypoint_error_px)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out synthetic shards")
    parser.add_argument("--n", type=int, default=50)
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=50)
    parser.add_argument("--normal-net", type=Path, default=WEIGHTS / "normal_net.safetensors")
    parser.add_argument("--implicit-net", type=Path, default=WEIGHTS / "implicit_net.safetensors")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--samples", type=int, default=20000, help="surface samples per mesh for the metrics")
    parser.add_argument("--no-keypoints", action="store_true", help="refine without the MediaPipe keypoints")
    parser.add_argument("--true-body", action="store_true", help="variant: implicit features from the exact body")
    parser.add_argument("--exact-normals", action="store_true", help="variant: ground-truth clothed normals")
    parser.add_argument("--band", default=None, help="variant: body band 'IN,OUT' metres or 'none'")
    args = parser.parse_args()
    band = DEFAULT_BAND
    if args.band is not None:
        band = None if args.band == "none" else tuple(float(x) for x in args.band.split(","))
    variant = args.true_body or args.exact_normals or args.band is not None

    device = torch.device(args.device)
    model = BodyModel().to(device)
    normal_net = load_normal_net(args.normal_net, device)
    implicit_net = load_implicit_net(args.implicit_net, device)
    cfg = ReconstructConfig(resolution=args.resolution, refine=RefineConfig(iterations=args.iterations))
    faces = model.faces
    rows: dict[str, list[tuple[float, float, float]]] = {"initial body fit": [], "refined body fit": [],
                                                         "reconstruction": [], "implicit surface": []}  # fmt: skip
    if variant:
        rows["variant reconstruction"] = []
    detector = None if args.no_keypoints else PersonDetector()
    n_done, t0, n_keypoints = 0, time.perf_counter(), 0
    for shard in shard_paths(args.data):
        for sample in load_shard(shard, with_mesh=True):
            if n_done >= args.n:
                break
            gt_v = torch.as_tensor(sample.vertices, device=device)
            gt_f = torch.as_tensor(sample.faces, device=device)
            fit = sample.fitted_body(device)
            found = image_keypoints(detector, sample.rgb) if detector is not None else None
            keypoints = None if found is None else torch.as_tensor(found[None], device=device)
            n_keypoints += keypoints is not None
            rec = reconstruct(
                model, torch.as_tensor(sample.rgb[None], device=device), torch.as_tensor(sample.mask[None],
                device=device), fit, normal_net, implicit_net, cfg, keypoints=keypoints,
            )  # fmt: skip
            candidates = {
                "initial body fit": (body_mesh(model, fit), faces),
                "refined body fit": (rec.body_vertices[0].to(device), faces),
                "reconstruction": tuple(torch.as_tensor(a, device=device) for a in rec.meshes[0]),
            }
            if variant:
                candidates["variant reconstruction"] = variant_surface(
                    model, implicit_net, sample, rec, cfg, true_body=args.true_body, exact_normals=args.exact_normals,
                    band=band, device=device,
                )  # fmt: skip
            if cfg.surface != "implicit":
                _, implicit_meshes = clothed_surfaces(
                    model, rec.fit, rec.normals_front, rec.normals_back, torch.as_tensor(sample.mask[None]),
                    implicit_net, cfg, surface="implicit",
                )  # fmt: skip
                candidates["implicit surface"] = tuple(torch.as_tensor(a, device=device) for a in implicit_meshes[0])
            for name, (v, f) in candidates.items():
                if len(f) == 0:
                    rows[name].append((float("nan"),) * 3)
                    continue
                m = reconstruction_metrics(v.float(), f.long(), gt_v, gt_f, n_samples=args.samples, seed=n_done)
                rows[name].append((float(m.chamfer), float(m.p2s), float(m.normal_consistency)))
            n_done += 1
            print(f"\r{n_done}/{args.n} subjects ({time.perf_counter() - t0:.0f} s)", end="", flush=True)
        if n_done >= args.n:
            break
    print()
    print(f"held-out synthetic subjects: {n_done}, grid {args.resolution}^3, refinement {args.iterations} steps, "
          f"device {args.device}, {(time.perf_counter() - t0) / max(n_done, 1):.1f} s/subject, "
          f"MediaPipe keypoints on {n_keypoints}/{n_done} subjects")
    print(f"{'':<20} {'Chamfer cm':>11} {'P2S cm':>8} {'NC':>6}")
    means = {}
    print(f"(reconstruction = the {cfg.surface} surface)")
    for name, vals in rows.items():
        if not vals:
            continue
        a = np.nanmean(np.asarray(vals), axis=0)
        means[name] = a
        print(f"{name:<20} {a[0]:>11.3f} {a[1]:>8.3f} {a[2]:>6.3f}")
    init, rec = means["initial body fit"][0], means["reconstruction"][0]
    print(f"reconstruction Chamfer vs initial body fit: {100 * (1 - rec / init):+.1f} % lower")
    print(f"refined body closer than initial: {means['refined body fit'][0] < init}")
    if variant:
        var = means["variant reconstruction"][0]
        print(f"variant ({'true body' if args.true_body else 'refined body'}, "
              f"{'exact' if args.exact_normals else 'predicted'} normals, band {band}): Chamfer {var:.3f}, "
              f"{100 * (1 - var / init):+.1f} % lower than the initial body fit")  # fmt: skip


if __name__ == "__main__":
    main()
