"""Benchmark avatar training and re-posing on the synthetic turning clip (ground truth known).

Trains an avatar on the demo person (icon.synth.sequence, outfit seed 7, turn-and-wave motion) from the true
clothed meshes (or, when the pipeline provides them, from per-frame reconstructions), then reports: training time,
posed meshes/s for fast and full re-posing, Chamfer (cm) of the avatar posed into each training frame vs the ground
truth (and vs each frame's own reconstruction when given), the naked-body baseline, and the error in 3 unseen poses
relative to the training-pose error. Writes a JSON with all numbers.

Usage: python bench/avatar_training.py [--frames 12] [--grid 128] [--preset fast] [--device cpu]
    [--out out/bench_avatar.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

from avatar.config import AvatarConfig
from avatar.repose import repose_fast, repose_full
from avatar.train import train_avatar, vertex_visibility
from body import BodyModel, Motion, load_motion
from body.params import BodyParams
from geometry.cameras import PerspectiveCamera
from geometry.metrics import chamfer_distance
from icon.synth.appearance import Lighting
from icon.synth.sequence import make_background, make_person, render_frame, turn_and_wave_motion

OUTFIT_SEED = 7
DISTANCE_M = 4.0
ROOT = Path(__file__).resolve().parent.parent


def unseen_poses() -> dict[str, np.ndarray]:
    """Three (69,) body poses outside the training motion: arms forward, a step with knee bend, the wave's peak."""
    arms_forward = np.zeros((23, 3), np.float32)
    arms_forward[15, 2], arms_forward[16, 2] = -0.2, 0.2
    arms_forward[15, 1], arms_forward[16, 1] = -1.2, 1.2  # shoulders swing the arms forward
    step = np.zeros((23, 3), np.float32)
    step[0, 0], step[3, 0] = -0.6, 0.9  # left hip flexed, knee bent
    step[1, 0] = 0.25
    step[15, 2], step[16, 2] = -1.1, 1.1
    wave = load_motion(ROOT / "assets" / "motions" / "wave.npz")
    peak = wave.body_pose[wave.num_frames // 2]
    return {"arms_forward": arms_forward.reshape(69), "step": step.reshape(69), "wave_peak": peak}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--frames", type=int, default=12, help="training frames of the turning clip")
    parser.add_argument("--grid", type=int, default=128, help="marching-cubes resolution of the ground truth")
    parser.add_argument("--preset", choices=["fast", "default"], default="fast")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = torch default)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "bench_avatar.json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model = BodyModel()
    person = make_person(model, OUTFIT_SEED)
    width, height = 256, 320
    focal = 0.75 * height * DISTANCE_M / 1.75
    camera = PerspectiveCamera(focal=torch.tensor([focal]), cx=torch.tensor([width / 2]),
                               cy=torch.tensor([height / 2]), width=width, height=height)  # fmt: skip
    background = make_background(OUTFIT_SEED, height, width)
    light = Lighting(direction=np.array([0.0, 0.0, 1.0]), ambient=0.3, intensity=1.0)
    transl = np.array([0.0, 0.05, -DISTANCE_M], np.float32)

    def truth(params: BodyParams):
        f = render_frame(model, person, params.replace(transl=transl[None]), camera, background, light,
                         grid_resolution=args.grid)
        return torch.from_numpy(f.vertices), torch.from_numpy(f.faces)

    t0 = time.perf_counter()
    motion_params = turn_and_wave_motion(args.frames, turns=1.0)
    frames = [truth(motion_params[i]) for i in range(len(motion_params))]
    visibility = [vertex_visibility(v, f, camera) for v, f in frames]
    fits = motion_params.replace(betas=np.tile(person.betas, (args.frames, 1)),
                                 transl=np.tile(transl, (args.frames, 1)))
    print(f"ground truth: {args.frames} frames in {time.perf_counter() - t0:.1f} s "
          f"(outfit: {', '.join(g.family for g in person.garments)})")  # fmt: skip

    config = AvatarConfig.fast() if args.preset == "fast" else AvatarConfig()
    t0 = time.perf_counter()
    avatar = train_avatar(model, frames, fits, config, point_confidence=visibility, device=args.device)
    train_s = time.perf_counter() - t0
    avatar.to("cpu")

    motion = Motion.from_params(fits, fps=10.0)
    posed = repose_fast(avatar, motion)
    wave = load_motion(ROOT / "assets" / "motions" / "wave.npz")
    repose_fast(avatar, wave)  # warm-up
    t0 = time.perf_counter()
    reps = 3
    for _ in range(reps):
        repose_fast(avatar, wave)
    fast_per_s = reps * wave.num_frames / (time.perf_counter() - t0)

    with torch.no_grad():
        body = model(betas=torch.as_tensor(person.betas)[None].expand(args.frames, -1),
                     global_orient=torch.as_tensor(fits.global_orient), body_pose=torch.as_tensor(fits.body_pose),
                     transl=torch.as_tensor(fits.transl)).vertices  # fmt: skip
    ch_fast, ch_body = [], []
    for i, (v, f) in enumerate(frames):
        ch_fast.append(float(chamfer_distance(posed[i], avatar.faces, v, f)))
        ch_body.append(float(chamfer_distance(body[i], model.faces, v, f)))
    full_idx = list(range(0, args.frames, max(1, args.frames // 3)))[:3]
    ch_full, full_s = [], []
    for i in full_idx:
        pose = np.concatenate([fits.global_orient[i], fits.body_pose[i]])
        t0 = time.perf_counter()
        vf, ff = repose_full(avatar, pose, fits.transl[i])
        full_s.append(time.perf_counter() - t0)
        ch_full.append(float(chamfer_distance(vf, ff, *frames[i])))

    unseen = {}
    for name, bp in unseen_poses().items():
        go = np.array([0.0, 0.4, 0.0], np.float32)
        v_gt, f_gt = truth(BodyParams(np.zeros((1, 10), np.float32), go[None], bp.astype(np.float32)[None],
                                      transl[None]))
        one = Motion(fps=1.0, global_orient=go[None], body_pose=bp[None], transl=transl[None])
        fast = float(chamfer_distance(repose_fast(avatar, one)[0], avatar.faces, v_gt, f_gt))
        vf, ff = repose_full(avatar, np.concatenate([go, bp]), transl)
        full = float(chamfer_distance(vf, ff, v_gt, f_gt))
        with torch.no_grad():
            bv = model(betas=torch.as_tensor(person.betas)[None], global_orient=torch.as_tensor(go)[None],
                       body_pose=torch.as_tensor(bp)[None], transl=torch.as_tensor(transl)[None]).vertices[0]
        unseen[name] = {"fast": fast, "full": full, "naked_body": float(chamfer_distance(bv, model.faces, v_gt, f_gt))}

    train_fast = float(np.mean(ch_fast))
    results = {
        "device": args.device, "preset": args.preset, "frames": args.frames, "gt_grid": args.grid,
        "train_seconds": train_s, "canonical_vertices": len(avatar.vertices),
        "fast_meshes_per_s": fast_per_s, "full_seconds_per_mesh": float(np.mean(full_s)),
        "chamfer_train_fast_cm": ch_fast, "chamfer_train_full_cm": dict(zip(map(str, full_idx), ch_full, strict=True)),
        "chamfer_train_naked_body_cm": ch_body, "unseen_cm": unseen,
        "unseen_over_train_fast": float(np.mean([u["fast"] for u in unseen.values()]) / train_fast),
        "unseen_over_train_full": float(np.mean([u["full"] for u in unseen.values()]) / np.mean(ch_full)),
        "config": config.model_dump(mode="json"),
    }  # fmt: skip
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2))

    print(f"\n| avatar ({args.preset}, {args.device}, {args.frames} frames) | value |\n|---|---|")
    print(f"| training time | {train_s:.0f} s |")
    print(f"| canonical mesh | {len(avatar.vertices)} vertices |")
    print(f"| fast re-posing | {fast_per_s:.0f} meshes/s |")
    print(f"| full re-posing (res {config.resolution}) | {np.mean(full_s):.2f} s/mesh |")
    print(f"| Chamfer, training poses, fast | {train_fast:.2f} cm (max {max(ch_fast):.2f}) |")
    print(f"| Chamfer, training poses, full | {np.mean(ch_full):.2f} cm |")
    print(f"| Chamfer, training poses, naked body | {np.mean(ch_body):.2f} cm |")
    for name, u in unseen.items():
        print(f"| Chamfer, unseen '{name}' fast / full / body | {u['fast']:.2f} / {u['full']:.2f} / "
              f"{u['naked_body']:.2f} cm |")  # fmt: skip
    print(f"| unseen / training error (fast, full) | {results['unseen_over_train_fast']:.2f}, "
          f"{results['unseen_over_train_full']:.2f} |")  # fmt: skip
    print(f"\nwrote {args.out}")


if __name__ == "__main__":
    main()
