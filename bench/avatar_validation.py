"""The avatar on the independent validation clip (../shared/validation/video: 32 frames of a turning person, per-frame
ground-truth meshes): geometry at the training frames, appearance on held-out frames, seconds per stage.

The pipeline runs on the **even** frames only (a 6 fps video of frames 0, 2, ...; reconstruction + avatar); the
**odd** frames go through the pipeline's body fit only (their crops, masks and fitted poses; no reconstruction), so
nothing of them reaches the avatar.

(a) Geometry, per even frame, each scored against that frame's ground truth with ``eval_recon.py``'s similarity ICP
    (scale, rotation, translation from 48 starts; the outputs live in the weak-perspective crop space): the frame's own
    reconstruction, the naked fitted body, the avatar before refinement (SCANimate's extracted mesh) and the refined
    avatar, both skinned into the pose they hold for that frame.
(b) Appearance, per odd frame: the coloured avatar skinned into the frame's fitted pose and rendered (albedo, no
    shading) with the frame's crop camera, against the crop: PSNR and SSIM inside the union of the two masks (each
    image black outside its own mask, so a silhouette mismatch counts as an error), and the mask IoU. Also with the
    avatar's pose fitted to the held-out frame's mask and normals first (pose only, the mesh and colours frozen:
    ``avatar.refine.fit_frame_poses``), as video-avatar papers do for test frames; and fitted to mask, normals and
    the frame's image through the avatar's colours (``w_refine_photometric``, 1 if the preset has 0; the PNGs show
    this one).
(c) Seconds per stage (pipeline stages summed over frames; SCANimate, refinement, colour).

Usage: nice python bench/avatar_validation.py --out OUT [--preset fast] [--frames 16] [--samples 10000] [--reuse]
       [--rerefine] [--avatar-set JSON] [--geometry-every 1]
Writes OUT/avatar_validation.json and OUT/appearance_*.png (rendered | real | |difference|).
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WARP_CACHE_PATH", str(ROOT / ".cache" / "warp"))
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
from validation_data import DEFAULT_ROOT, load_scorer  # noqa: E402

VALIDATION = DEFAULT_ROOT
POSE_KEYS = ("global_orient", "body_pose", "transl")




def write_clip(video_dir: Path, frames: list[int], path: Path, fps: float) -> Path:
    from flows.previews import read_png
    from flows.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, np.stack([read_png(video_dir / "frames" / f"{i:03d}.png") for i in frames]), fps)


def score_icp(scorer, v: np.ndarray, f: np.ndarray, v_gt: np.ndarray, f_gt: np.ndarray, samples: int) -> dict:
    """eval_recon's ICP alignment + metrics of one prediction (arrays)."""
    v, f = np.asarray(v, np.float64), np.asarray(f, np.int64)
    s, r, t, _ = scorer.similarity_icp(v, f, v_gt, f_gt, seed=0)
    return scorer.metrics(s * v @ r.T + t, f, v_gt, f_gt, samples, 0)


def posed_avatar(avatar, vertices: torch.Tensor, go, bp, tr, weights: torch.Tensor | None = None) -> torch.Tensor:
    """(T, V, 3) canonical ``vertices`` skinned (default weights: the avatar's) into poses go (T, 3), bp (T, 69),
    tr (T, 3)."""
    from body.lbs import skin_points

    weights = avatar.skin_weights if weights is None else weights
    with torch.no_grad():
        tf = avatar.transforms(go, bp, tr)
        n = len(go)
        return skin_points(vertices[None].expand(n, -1, -1), weights[None].expand(n, -1, -1), tf)


def render_albedo(vertices: torch.Tensor, faces: torch.Tensor, colours: torch.Tensor, camera):
    """Colour image (B, H, W, 3) and mask (B, H, W) of meshes (B, V, 3) with per-vertex colours (V, 3)."""
    from geometry.queries import interpolate_face_attributes
    from geometry.render import render_mesh

    r = render_mesh(vertices, faces, camera)
    img = interpolate_face_attributes(colours[None].expand(len(vertices), -1, -1), faces, r.face_index, r.barycentric)
    return img * r.mask[..., None], r.mask


def ssim_map(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """SSIM map (H, W) of two (H, W, 3) images in [0, 1] (Gaussian window 11, sigma 1.5; mean over channels)."""
    x = torch.arange(11, dtype=torch.float32) - 5
    g = torch.exp(-(x**2) / (2 * 1.5**2))
    g = g / g.sum()
    w = (g[:, None] * g[None]).expand(3, 1, 11, 11)

    def blur(z):
        return torch.nn.functional.conv2d(z, w, padding=5, groups=3)

    a, b = a.permute(2, 0, 1)[None], b.permute(2, 0, 1)[None]
    mu_a, mu_b = blur(a), blur(b)
    va, vb, cov = blur(a * a) - mu_a**2, blur(b * b) - mu_b**2, blur(a * b) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a**2 + mu_b**2 + c1) * (va + vb + c2))
    return s[0].mean(0)


def appearance(rendered, mask_r, real, mask_real) -> dict:
    """PSNR, SSIM (inside the union of the masks) and mask IoU; both images on black outside their own mask."""
    union = mask_r | mask_real
    rendered, real = rendered * mask_r[..., None], real * mask_real[..., None]
    mse = float(((rendered - real) ** 2).mean(-1)[union].mean())
    return {
        "psnr_db": float(10 * np.log10(1.0 / max(mse, 1e-12))),
        "ssim": float(ssim_map(rendered, real)[union].mean()),
        "mask_iou": float((mask_r & mask_real).sum() / union.sum().clamp(min=1)),
    }


def rerefine(avatar, unrefined, pre_poses, store, data, config, avatar_dir: Path, info: dict) -> dict:
    """Put the SCANimate mesh and held poses back into ``avatar``, refine and colour it again (the flow's stage), save
    it; returns the new stage info with the earlier SCANimate seconds."""
    from avatar.model import save_avatar
    from avatar.poses import FramePoses
    from flows.avatar_flow import refine_and_colour

    pre = np.load(avatar_dir.parent / "unrefined_mesh.npz")
    avatar.vertices = unrefined.to(avatar.device)
    avatar.faces = torch.from_numpy(pre["faces"]).to(avatar.device)
    avatar.skin_weights = torch.from_numpy(pre["weights"]).to(avatar.device)
    avatar.frame_poses = FramePoses(*(torch.from_numpy(pre_poses[k]).to(avatar.device) for k in POSE_KEYS))
    avatar.vertex_colours = torch.zeros(0, 3)
    new = refine_and_colour(avatar, store, data, config, avatar_dir)
    new["seconds"]["scanimate"] = info["seconds"].get("scanimate", float("nan"))
    save_avatar(avatar, avatar_dir)
    return new


def main() -> None:  # noqa: PLR0915 - a linear script
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--validation", type=Path, default=VALIDATION)
    ap.add_argument("--preset", default="fast", help="pipeline preset (fast/default/quality)")
    ap.add_argument("--frames", type=int, default=16, help="even frames used (the first N of 0, 2, 4, ...)")
    ap.add_argument("--samples", type=int, default=10000, help="surface samples per mesh in the scorer")
    ap.add_argument("--reuse", action="store_true", help="reuse the stores and avatar of an earlier run in --out")
    ap.add_argument("--pngs", type=int, default=4, help="rendered-vs-real PNGs written")
    ap.add_argument("--geometry-every", type=int, default=1, help="score every k-th even frame (ICP is ~10 s/mesh)")
    ap.add_argument("--avatar-set", type=json.loads, default={},
                    help='avatar settings over the preset, JSON, e.g. \'{"w_refine_carve": 300}\'')  # fmt: skip
    ap.add_argument("--rerefine", action="store_true",
                    help="with --reuse: rerun refinement + colour from the saved SCANimate mesh and poses")  # fmt: skip
    args = ap.parse_args()

    from avatar.colour import avatar_vertex_colours
    from avatar.model import load_avatar, save_avatar
    from avatar.refine import RefineTargets, fit_frame_poses
    from avatar.train import train_avatar
    from body import BodyModel
    from flows.avatar_data import frame_visibility, load_training_data
    from flows.avatar_flow import refine_and_colour
    from flows.config import load_config
    from flows.pipeline import process_video
    from flows.previews import write_png
    from flows.store import open_run
    from icon.fit import camera_from_params

    video_dir = args.validation / "video"
    scorer = load_scorer(args.validation)
    out = args.out
    out.mkdir(parents=True, exist_ok=True)
    n_all = len(json.loads((video_dir / "cameras.json").read_text()))
    even = list(range(0, n_all, 2))[: args.frames]
    odd = [i + 1 for i in even if i + 1 < n_all]
    seconds: dict[str, float] = {}

    # ---- pipeline: even frames reconstructed, odd frames fitted only
    overrides = {"frames": {"fps": None, "max_frames": len(even)}, "avatar_enabled": False, "avatar": args.avatar_set}
    cfg_even = load_config(args.preset, overrides)
    cfg_odd = load_config(args.preset, {**overrides, "reconstruct_enabled": False})
    runs = {}
    for name, frames, cfg in (("even", even, cfg_even), ("odd", odd, cfg_odd)):
        clip = write_clip(video_dir, frames, out / f"{name}.mp4", 6.0) if not args.reuse else out / f"{name}.mp4"
        t0 = time.perf_counter()
        if not args.reuse:
            res = process_video(clip, out, cfg, overwrite=True)
            runs[name] = {"seconds": res.seconds, "stage_seconds": res.stage_seconds, "done": res.n_done}
        if args.reuse:  # the earlier run's per-frame stage seconds, from its preview report
            rows = json.loads((out / f"{name}.preview" / "frames.json").read_text())
            stages = {k for r in rows for k in r.get("seconds", {})}
            runs[name] = {"stage_seconds": {k: sum(r["seconds"].get(k, 0.0) for r in rows) for k in sorted(stages)}}
        else:
            seconds[f"pipeline_{name}"] = time.perf_counter() - t0
    store_even, store_odd = open_run(out / "even.zarr", "r"), open_run(out / "odd.zarr", "r")

    # ---- avatar: SCANimate, then refinement + colour (the flow's stages, timed apart; unrefined mesh kept)
    config = cfg_even.avatar
    avatar_dir = out / "even.avatar"
    model = BodyModel()
    data = load_training_data(store_even, 2)
    if args.reuse and (avatar_dir / "avatar.json").is_file():
        avatar = load_avatar(avatar_dir)
        unrefined = torch.from_numpy(np.load(out / "unrefined_vertices.npy"))
        pre_poses = dict(np.load(out / "unrefined_poses.npz"))
        info = json.loads((out / "avatar_stages.json").read_text())
        if not (out / "unrefined_mesh.npz").is_file():  # runs before subdivision existed: the mesh is SCANimate's
            np.savez(out / "unrefined_mesh.npz", faces=avatar.faces.numpy(), weights=avatar.skin_weights.numpy())
        if args.rerefine:
            info = rerefine(avatar, unrefined, pre_poses, store_even, data, config, avatar_dir, info)
            (out / "avatar_stages.json").write_text(json.dumps(info, indent=1))
    else:
        t0 = time.perf_counter()
        avatar = train_avatar(model, data.meshes, data.fits, config, frame_weights=data.frame_weights,
                              point_confidence=frame_visibility(data), frame_times=data.times)  # fmt: skip
        seconds_scan = time.perf_counter() - t0
        unrefined = avatar.vertices.clone()
        np.save(out / "unrefined_vertices.npy", unrefined.numpy())
        np.savez(out / "unrefined_mesh.npz", faces=avatar.faces.numpy(), weights=avatar.skin_weights.numpy())
        pre_poses = {k: getattr(avatar.frame_poses, k).numpy().copy() for k in POSE_KEYS}
        np.savez(out / "unrefined_poses.npz", **pre_poses)
        info = refine_and_colour(avatar, store_even, data, config, avatar_dir)
        info["seconds"]["scanimate"] = round(seconds_scan, 2)
        save_avatar(avatar, avatar_dir)
        (out / "avatar_stages.json").write_text(json.dumps(info, indent=1))
    seconds.update({f"avatar_{k}": v for k, v in info["seconds"].items()})
    pre_mesh = {k: torch.from_numpy(v) for k, v in np.load(out / "unrefined_mesh.npz").items()}

    # ---- (b) appearance on the odd frames
    t0 = time.perf_counter()
    odd_frames = store_odd.read_frames()
    done = [t for t in range(store_odd.n_frames) if np.isfinite(store_odd.read_fit("init", [t]).camera).all()]
    fit_o = store_odd.read_fit("init", done)
    refined_o = store_odd.read_fit("refined", done)
    use = torch.isfinite(refined_o.global_orient).all(-1)
    go = torch.where(use[:, None], refined_o.global_orient, fit_o.global_orient)
    bp = torch.where(use[:, None], refined_o.body_pose, fit_o.body_pose)
    tr = torch.where(use[:, None], refined_o.transl, fit_o.transl)
    cams = torch.where(use[:, None], refined_o.camera, fit_o.camera)
    camera = camera_from_params(cams, store_odd.image_size)
    images = torch.from_numpy(odd_frames.image[done]).float() / 255.0
    masks = torch.from_numpy(odd_frames.mask[done])
    colours = avatar.vertex_colours
    if not avatar.has_colour:  # colour switched off: fuse it here so (b) still measures something
        colours = avatar_vertex_colours(avatar, camera_from_params(data.cameras, data.image_size),
                                        torch.from_numpy(store_even.read_frames(data.frames).image).float() / 255,
                                        torch.from_numpy(store_even.read_frames(data.frames).mask)).colours  # fmt: skip
    from avatar.poses import FramePoses

    poses_fit = FramePoses(go, bp, tr)
    normals = store_odd.read_normals(done)
    front = torch.from_numpy(np.asarray(normals.front, np.float32))
    has_n = bool(torch.isfinite(front).all())
    targets = RefineTargets(masks, camera, front * masks[..., None] if has_n else None,
                            images=images * masks[..., None])  # fmt: skip
    no_colour = config.model_copy(update={"w_refine_photometric": 0.0})
    poses_tuned = fit_frame_poses(avatar, targets, no_colour, poses=poses_fit)  # mask + normals, mesh frozen
    seconds["appearance_pose_fit"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    with_colour = config.model_copy(update={"w_refine_photometric": config.w_refine_photometric or 1.0})
    poses_colour = fit_frame_poses(avatar, targets, with_colour, poses=poses_fit)  # + the image through the colours
    seconds["appearance_pose_fit_colour"] = time.perf_counter() - t0
    appear = []
    variants = (("fitted_pose", poses_fit), ("pose_fitted_to_mask", poses_tuned),
                ("pose_fitted_to_mask_and_colour", poses_colour))  # fmt: skip
    for label, poses in variants:
        posed = posed_avatar(avatar, avatar.vertices, poses.global_orient, poses.body_pose, poses.transl)
        img, mask_r = render_albedo(posed, avatar.faces, colours, camera)
        for k, t in enumerate(done):
            row = {"frame": odd[t], "poses": label, **appearance(img[k], mask_r[k], images[k], masks[k])}
            appear.append(row)
            if label == "pose_fitted_to_mask_and_colour" and k < args.pngs:
                real = images[k] * masks[k][..., None]
                diff = (img[k] - real).abs().clamp(0, 1)
                tile = torch.cat([img[k], real, diff], 1)
                write_png(out / f"appearance_{odd[t]:03d}.png", (tile.numpy() * 255 + 0.5).astype(np.uint8))

    # ---- (a) geometry at the even frames
    fits = store_even.read_fit("refined", data.frames)
    geometry = []
    cache_path = out / "geometry_cache.json"  # scores of the meshes refinement does not change (with --reuse)
    cache = json.loads(cache_path.read_text()) if args.reuse and cache_path.is_file() else {}
    for i, t in enumerate(data.frames):
        if i % args.geometry_every:
            continue
        src = even[t]
        gt = scorer.load_mesh(str(video_dir / f"gt_{src:03d}.obj"))
        p = avatar.frame_poses
        held = (p.global_orient[i : i + 1], p.body_pose[i : i + 1], p.transl[i : i + 1])
        with torch.no_grad():
            body = model(betas=fits.betas[i : i + 1], global_orient=fits.global_orient[i : i + 1],
                         body_pose=fits.body_pose[i : i + 1], transl=fits.transl[i : i + 1]).vertices[0]  # fmt: skip
        pre = posed_avatar(avatar, unrefined, *(torch.from_numpy(pre_poses[k][i : i + 1]) for k in POSE_KEYS),
                           weights=pre_mesh["weights"])[0]  # fmt: skip
        mesh = store_even.read_mesh(t)
        row = {"frame": src}
        for name, (v, f) in {
            "own": (np.asarray(mesh.vertices), np.asarray(mesh.faces)),
            "naked": (body.numpy(), model.faces.numpy()),
            "avatar_scanimate": (pre.numpy(), pre_mesh["faces"].numpy()),
            "avatar_refined": (posed_avatar(avatar, avatar.vertices, *held)[0].numpy(), avatar.faces.numpy()),
        }.items():
            key = f"{src}/{name}/{args.samples}"
            if name == "avatar_refined" or key not in cache:
                m = score_icp(scorer, v, f, gt[0], gt[1], args.samples)
                cache[key] = {"chamfer_cm": m["chamfer_cm"], "nc": m["normal_consistency"]}
            row[name] = cache[key]
        geometry.append(row)
        cache_path.write_text(json.dumps(cache))
        print(f"frame {src:2d}: " + "  ".join(f"{k} {row[k]['chamfer_cm']:.2f}/{row[k]['nc']:.3f}" for k in row
                                              if k != "frame"), flush=True)  # fmt: skip

    # ---- report
    def mean(rows, key, sub=None):
        vals = [r[key][sub] if sub else r[key] for r in rows]
        return float(np.mean(vals))

    own = np.array([r["own"]["chamfer_cm"] for r in geometry])
    naked = np.array([r["naked"]["chamfer_cm"] for r in geometry])
    summary = {"frames_even": [r["frame"] for r in geometry], "preset": args.preset}
    print("\n| mesh (even frames, ICP) | Chamfer cm | NC | vs own | below naked |")
    print("|---|---|---|---|---|")
    for name in ("own", "naked", "avatar_scanimate", "avatar_refined"):
        ch = np.array([r[name]["chamfer_cm"] for r in geometry])
        nc = mean(geometry, name, "nc")
        summary[name] = {"chamfer_cm": float(ch.mean()), "nc": nc, "ratio_to_own": float(ch.mean() / own.mean()),
                         "below_naked_fraction": float((ch < naked).mean())}  # fmt: skip
        print(f"| {name} | {ch.mean():.2f} | {nc:.3f} | {ch.mean() / own.mean():.2f}x | {(ch < naked).mean():.0%} |")
    print("\n| held-out odd frames | PSNR dB | SSIM | mask IoU |")
    print("|---|---|---|---|")
    for label, _ in variants:
        rows = [r for r in appear if r["poses"] == label]
        summary[f"appearance_{label}"] = {k: mean(rows, k) for k in ("psnr_db", "ssim", "mask_iou")}
        s = summary[f"appearance_{label}"]
        print(f"| {label} ({len(rows)}) | {s['psnr_db']:.2f} | {s['ssim']:.3f} | {s['mask_iou']:.3f} |")
    print("\n| stage | seconds |")
    print("|---|---|")
    for name, run in runs.items():
        for k, v in run["stage_seconds"].items():
            print(f"| pipeline {name}: {k} | {v:.1f} |")
    for k, v in seconds.items():
        print(f"| {k} | {v:.1f} |")
    summary["seconds"] = seconds
    summary["pipeline_runs"] = runs
    summary["refine"] = info.get("refine")
    summary["colour"] = {k: v for k, v in info.get("colour", {}).items() if k != "gains"}
    (out / "avatar_validation.json").write_text(json.dumps({"summary": summary, "geometry": geometry,
                                                            "appearance": appear}, indent=1))  # fmt: skip
    print(f"\nwrote {out / 'avatar_validation.json'}")


if __name__ == "__main__":
    main()
