"""Run the SMPL feedback loop (icon.refine, driven by the shipped normal net) on synthetic samples and keep the
refined fits and the predicted clothed normals, so the implicit net can be trained on the fits and normals it meets
at test time (``avatarize train implicit --refined DIR``). Like the pipeline, the loop is anchored by the MediaPipe
keypoints that ``icon.person.PersonDetector`` finds in the sample's image.

One small npz per sample (``<seed>.npz``: betas, global_orient, body_pose, transl, normal_front, normal_back as
float16), so an interrupted run resumes where it stopped.

Usage: python scripts/refine_synth.py --data out/synth_implicit/train --out out/synth_implicit/train_refined
"""

from __future__ import annotations

import argparse
import functools
import os
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WARP_CACHE_PATH", str(REPO / ".cache" / "warp"))


def main() -> None:
    import torch

    from body import BodyModel
    from icon.normal_net import load_normal_net, predict_normals
    from icon.person import PersonDetector, image_keypoints
    from icon.refine import RefineConfig, refine_body
    from icon.synth.shards import SynthDataset, shard_paths

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="folder of synthetic shards")
    parser.add_argument("--out", type=Path, required=True, help="output folder of per-sample npz files")
    parser.add_argument("--normal-net", type=Path, default=REPO / "weights" / "normal_net.safetensors")
    parser.add_argument("--iterations", type=int, default=RefineConfig().iterations)
    parser.add_argument("--max-samples", type=int, default=None)
    parser.add_argument("--start", type=int, default=0, help="first sample index (split a run over processes)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--no-keypoints", action="store_true", help="refine without MediaPipe keypoints")
    args = parser.parse_args()

    torch.set_num_threads(1)
    device = torch.device(args.device)
    model = BodyModel().to(device)
    net = load_normal_net(args.normal_net, device)
    config = RefineConfig(iterations=args.iterations)
    data = SynthDataset(shard_paths(args.data))
    n = min(len(data), args.max_samples or len(data))
    args.out.mkdir(parents=True, exist_ok=True)
    detector = None if args.no_keypoints else PersonDetector()
    t0, done = time.perf_counter(), 0
    for i in range(args.start, n):
        s = data[i]
        path = args.out / f"{s.seed}.npz"
        if path.exists():
            continue
        fit = s.fitted_body(device)
        found = image_keypoints(detector, s.rgb) if detector is not None else None
        keypoints = None if found is None else torch.as_tensor(found[None], device=device)
        ref = refine_body(model, fit, torch.as_tensor(s.rgb[None], device=device),
                          torch.as_tensor(s.mask[None], device=device), functools.partial(predict_normals, net),
                          config, keypoints=keypoints)  # fmt: skip
        rf = ref.fit
        tmp = path.with_suffix(".tmp.npz")
        np.savez(
            tmp, betas=rf.betas[0].cpu().numpy(), global_orient=rf.global_orient[0].cpu().numpy(),
            body_pose=rf.body_pose[0].cpu().numpy(), transl=rf.transl[0].cpu().numpy(),
            normal_front=ref.normals_front[0].cpu().numpy().astype(np.float16),
            normal_back=ref.normals_back[0].cpu().numpy().astype(np.float16),
        )  # fmt: skip
        tmp.rename(path)
        done += 1
        print(f"{i + 1}/{n} seed {s.seed} ({(time.perf_counter() - t0) / done:.1f} s/sample)", flush=True)
    print(f"refined {done} samples into {args.out}")


if __name__ == "__main__":
    main()
