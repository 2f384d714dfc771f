"""Accuracy of per-frame ICON on held-out synthetic clothed people (ground truth known).

For each held-out subject: the *initial body fit* is the generator's perturbed fit (fit error simulated with the
generator's noise levels), the *refined body* comes from the SMPL feedback loop driven by the shipped normal net and,
as in the pipeline, anchored by the MediaPipe keypoints that ``icon.person.PersonDetector`` finds in the subject's
image (``--no-keypoints`` refines from normals and silhouette only), and the *reconstruction* is the full ICON output
(refinement + implicit surface). Each is compared with the ground-truth
clothed mesh: Chamfer and point-to-surface distance (cm) and normal consistency, as ICON reports.

Usage: python bench/icon_accuracy.py --data out/synth_eval [--n 50] [--resolution 256] [--device cpu]
       (make data with: python scripts/make_synth.py --heldout --n 50 --size 256 --out out/synth_eval)
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

from body import BodyModel
from geometry.metrics import reconstruction_metrics
from icon.fit import BodyFit
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net
from icon.person import PersonDetector, image_keypoints
from icon.reconstruct import ReconstructConfig, reconstruct
from icon.refine import RefineConfig
from icon.synth.shards import load_shard, shard_paths

WEIGHTS = Path(__file__).resolve().parent.parent / "weights"


def body_mesh(model, fit: BodyFit) -> torch.Tensor:
    with torch.no_grad():
        return model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                     transl=fit.transl).vertices[0]  # fmt: skip


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
    args = parser.parse_args()

    device = torch.device(args.device)
    model = BodyModel().to(device)
    normal_net = load_normal_net(args.normal_net, device)
    implicit_net = load_implicit_net(args.implicit_net, device)
    cfg = ReconstructConfig(resolution=args.resolution, refine=RefineConfig(iterations=args.iterations))
    faces = model.faces
    rows: dict[str, list[tuple[float, float, float]]] = {"initial body fit": [], "refined body fit": [],
                                                         "reconstruction": []}  # fmt: skip
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
    for name, vals in rows.items():
        a = np.nanmean(np.asarray(vals), axis=0)
        means[name] = a
        print(f"{name:<20} {a[0]:>11.3f} {a[1]:>8.3f} {a[2]:>6.3f}")
    init, rec = means["initial body fit"][0], means["reconstruction"][0]
    print(f"reconstruction Chamfer vs initial body fit: {100 * (1 - rec / init):+.1f} % lower")
    print(f"refined body closer than initial: {means['refined body fit'][0] < init}")


if __name__ == "__main__":
    main()
