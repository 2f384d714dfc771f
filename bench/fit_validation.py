"""Body fit on people the project never made: ../shared/validation (24 subjects + a 32-frame turning clip).

Runs the fit as `avatarize reconstruct` does on an image (MediaPipe detection and mask, square crop, initial fit,
SMPL feedback loop with the normal net) and prints, per outfit and overall:
- body-fit Chamfer (cm, similarity ICP, eval_recon.py's functions) of the fitted naked body to the naked ground truth
  `body.obj` and to the clothed ground truth `gt.obj`, before ("init") and after ("ref") refinement;
- the share of refined fits closer to `body.obj` than the initial fit;
- facing errors: fits whose facing (the root's +Z) is more than 45 degrees (about the vertical) from the true one
  (camera.json R applied to the subject frame's +Z).
On the clip: per-frame facing error and whether β is identical across frames. Saves overlays (crop | fit over the
crop | side view of the fit at the same scale) under --out; also for any --images (e.g. Debian opencv-doc's messi5.jpg).

Usage: python bench/fit_validation.py [--subjects 0 5 7] [--limit N] [--no-video] [--images a.jpg b.png]
       [--samples 10000] [--set fit.camera=weak] [--out out/fit_validation] [--json results.json]
       python bench/fit_validation.py --summarise a.json b.json   (one table from split runs)
"""

from __future__ import annotations

import argparse
import functools
import json
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import yaml
from validation_data import DEFAULT_ROOT, load_scorer

from body import BodyModel
from flows.bundled import weights_path
from flows.config import load_config
from geometry.cameras import OrthographicCamera, PerspectiveCamera
from geometry.render import render_mesh, shade_normals
from icon.fit import BodyFit, fit_body
from icon.normal_net import load_normal_net, predict_normals
from icon.person import PersonDetector, PersonTrackingConfig, compute_crop_boxes, crop_frames, detect_person
from icon.refine import refine_body

ROOT = Path(__file__).resolve().parent.parent
VALIDATION = DEFAULT_ROOT
OPENCV_DATA = Path("/usr/share/doc/opencv-doc/examples/data")
GL_FROM_CV = np.diag([1.0, -1.0, -1.0])  # OpenCV camera (y down, z forward) <-> OpenGL camera (y up, looking at -z)




@dataclass
class Prepared:
    """One image (or clip) detected and cropped like `avatarize reconstruct` does."""

    images: np.ndarray  # (T, S, S, 3) uint8
    masks: np.ndarray  # (T, S, S) bool
    keypoints: np.ndarray  # (T, 33, 3)
    keypoints3d: np.ndarray | None  # (T, 33, 4) metric world landmarks + visibility, if the detector gives them
    valid: np.ndarray  # (T,) bool


def prepare(frames: np.ndarray, detector: PersonDetector, size: int, margin: float, detect_size: int) -> Prepared:
    """Detect, track and crop (T, H, W, 3) uint8 frames into person crops of side ``size``."""
    track = detect_person(frames, detector, PersonTrackingConfig(detect_size=detect_size))
    crops = compute_crop_boxes(track.boxes, track.valid, margin=margin)
    cropped = crop_frames(frames, track.masks, track.keypoints, crops, size=size)
    kp3 = getattr(track, "keypoints3d", None)
    return Prepared(cropped.images, cropped.masks, cropped.keypoints, kp3, track.valid)


def run_fit(model, prep: Prepared, cfg, normal_net, refine: bool) -> tuple[BodyFit, BodyFit | None, dict[str, float]]:
    """Initial fit (all frames together, one β) and optionally the SMPL feedback loop; seconds per stage."""
    kp = torch.from_numpy(prep.keypoints)
    m = torch.from_numpy(prep.masks)
    extra = {}
    if prep.keypoints3d is not None:
        extra["keypoints3d"] = torch.from_numpy(prep.keypoints3d)
    t0 = time.perf_counter()
    fit = fit_body(model, kp, m, prep.images.shape[1], cfg.fit, **extra).detach()
    secs = {"fit": time.perf_counter() - t0}
    if not refine:
        return fit, None, secs
    t0 = time.perf_counter()
    predictor = functools.partial(predict_normals, normal_net)
    ref = refine_body(model, fit, torch.from_numpy(prep.images), m, predictor, cfg.reconstruct.refine, keypoints=kp)
    secs["refine"] = time.perf_counter() - t0
    return fit, ref.fit.detach(), secs


def body_vertices(model, fit: BodyFit) -> np.ndarray:
    """(T, V, 3) posed body in the fit's (OpenGL) camera frame."""
    with torch.no_grad():
        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
    return out.vertices.cpu().numpy().astype(np.float64)


def _rotvec_to_matrix(rv: np.ndarray) -> np.ndarray:
    return cv2.Rodrigues(np.asarray(rv, np.float64).reshape(3, 1))[0]


def facing_error_deg(global_orient: np.ndarray, R_cv: np.ndarray) -> float:
    """Angle (degrees, about the subject frame's vertical) between the fit's facing and the true one (+Z).

    Args:
        global_orient: (3,) axis-angle of the fitted root in the OpenGL camera frame (zero faces +Z, the camera).
        R_cv: (3, 3) world-to-OpenCV-camera rotation of the view (camera.json R).
    """
    f_gl = _rotvec_to_matrix(global_orient) @ np.array([0.0, 0.0, 1.0])
    f_world = R_cv.T @ (GL_FROM_CV @ f_gl)
    yaw = np.degrees(np.arctan2(f_world[0], f_world[2]))  # 0 when facing +Z
    return float(abs((yaw + 180.0) % 360.0 - 180.0))


def chamfer(ev, verts: np.ndarray, faces: np.ndarray, gt_path: Path, samples: int, cache: dict) -> float:
    """Similarity-ICP Chamfer (cm) of a mesh to a ground-truth file, with eval_recon's ICP and metrics."""
    if gt_path not in cache:
        cache[gt_path] = ev.load_mesh(str(gt_path))
    vg, fg = cache[gt_path]
    # The fit's +Y is up (OpenGL camera frame): 8 yaw starts instead of 48 over all up axes.
    s, R, t, _ = ev.similarity_icp(verts, faces, vg, fg, seed=0, any_up=False)
    return float(ev.metrics(s * verts @ R.T + t, faces, vg, fg, samples, 0)["chamfer_cm"])


def _render_panel(verts: np.ndarray, faces: torch.Tensor, camera) -> tuple[np.ndarray, np.ndarray]:
    r = render_mesh(torch.as_tensor(verts, dtype=torch.float32)[None], faces, camera)
    shaded = shade_normals(r.normal_front, light_dir=(0.3, 0.4, 1.0))[0].numpy()
    return (shaded * 255).astype(np.uint8), r.mask[0].numpy()


def overlay(crop: np.ndarray, verts: np.ndarray, faces: torch.Tensor, fit: BodyFit, t: int) -> np.ndarray:
    """(S, 3S, 3) uint8: crop | fit over the crop | side view (rotated 90 degrees about the vertical, same scale)."""
    s = crop.shape[0]
    cam = fit.cameras(s)
    cam_t = OrthographicCamera(scale=cam.scale[t : t + 1], cx=cam.cx[t : t + 1], cy=cam.cy[t : t + 1], width=s,
                               height=s)  # fmt: skip
    if fit.focal_px is not None:  # the pose was fitted with this perspective camera: draw it with it
        f = fit.focal_px[t : t + 1].cpu() * s / fit.image_size
        depth = float(f[0] / cam.scale[t])
        persp = PerspectiveCamera(focal=f, cx=cam.cx[t : t + 1], cy=cam.cy[t : t + 1], width=s, height=s)
        front, mask = _render_panel(verts - np.array([0.0, 0.0, depth]), faces, persp)
    else:
        front, mask = _render_panel(verts, faces, cam_t)
    blend = crop.copy()
    blend[mask] = (0.35 * crop[mask] + 0.65 * front[mask]).astype(np.uint8)
    centre = (verts.max(0) + verts.min(0)) / 2
    rot = np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [-1.0, 0.0, 0.0]])  # seen from the body's left side
    side_v = (verts - centre) @ rot.T + centre
    side, side_mask = _render_panel(side_v, faces, cam_t)
    side[~side_mask] = 40
    return np.concatenate([crop, blend, side], axis=1)


def write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def read_rgb(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(path)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


@dataclass
class Bench:
    """What every evaluation needs: body model, config, normal net (None without refinement), the scorer module,
    the arguments, the model's faces (numpy and torch) and the person detector."""

    model: BodyModel
    cfg: object
    net: object
    ev: object
    args: argparse.Namespace
    faces_np: np.ndarray
    faces_t: torch.Tensor
    detector: PersonDetector


def eval_subject(ctx: Bench, sdir: Path) -> dict:
    """Fit + refine one validation subject; Chamfer to body.obj / gt.obj before and after, facing error."""
    model, cfg, net, ev, args = ctx.model, ctx.cfg, ctx.net, ctx.ev, ctx.args
    faces_np, faces_t = ctx.faces_np, ctx.faces_t
    cam = json.loads((sdir / "camera.json").read_text())
    meta = json.loads((sdir / "meta.json").read_text())
    prep = prepare(read_rgb(sdir / "image.png")[None], ctx.detector, cfg.person.crop_size, cfg.person.crop_margin,
                   cfg.person.detect_size)  # fmt: skip
    row = {"subject": sdir.name, "outfit": meta["outfit"], "pose": meta["pose"].get("style", "?")}
    if not prep.valid[0]:
        row["skipped"] = True
        return row
    init, ref, secs = run_fit(model, prep, cfg, net, refine=not args.no_refine)
    row.update({f"s_{k}": v for k, v in secs.items()})
    cache: dict = {}
    R = np.asarray(cam["R"])
    for name, fit in (("init", init), ("ref", ref)):
        if fit is None:
            continue
        v = body_vertices(model, fit)[0]
        row[f"{name}_body"] = chamfer(ev, v, faces_np, sdir / "body.obj", args.samples, cache)
        row[f"{name}_gt"] = chamfer(ev, v, faces_np, sdir / "gt.obj", args.samples, cache)
        row[f"{name}_facing"] = facing_error_deg(fit.global_orient[0].cpu().numpy(), R)
        row[f"{name}_kp_px"] = float(fit.keypoint_error_px[0])
    final = ref if ref is not None else init
    write_png(args.out / f"subject_{sdir.name}.png", overlay(prep.images[0], body_vertices(model, final)[0], faces_t,
                                                              final, 0))  # fmt: skip
    return row


def eval_video(ctx: Bench, vdir: Path) -> dict:
    """Fit the 32-frame clip as one (β shared): per-frame facing error, β spread; overlays of a few frames."""
    model, cfg, net, args, faces_t = ctx.model, ctx.cfg, ctx.net, ctx.args, ctx.faces_t
    cams = json.loads((vdir / "cameras.json").read_text())
    files = sorted((vdir / "frames").glob("*.png"))
    frames = np.stack([read_rgb(f) for f in files])
    prep = prepare(frames, ctx.detector, cfg.person.crop_size, cfg.person.crop_margin, cfg.person.detect_size)
    idx = np.flatnonzero(prep.valid)
    sub = Prepared(prep.images[idx], prep.masks[idx], prep.keypoints[idx],
                   None if prep.keypoints3d is None else prep.keypoints3d[idx], prep.valid[idx])  # fmt: skip
    init, _, secs = run_fit(model, sub, cfg, net, refine=False)
    errs = [facing_error_deg(init.global_orient[i].cpu().numpy(), np.asarray(cams[t]["R"])) for i, t in enumerate(idx)]
    verts = body_vertices(model, init)
    for i in range(0, len(idx), 8):
        write_png(args.out / f"video_{idx[i]:03d}.png", overlay(sub.images[i], verts[i], faces_t, init, i))
    beta_spread = float((init.betas - init.betas[:1]).abs().max())
    return {"frames": len(files), "detected": int(len(idx)), "facing_deg": [round(e, 1) for e in errs],
            "facing_errors": int(sum(e > 45 for e in errs)), "beta_max_abs_diff": beta_spread,
            "s_fit_per_frame": secs["fit"] / max(len(idx), 1)}


def eval_image(ctx: Bench, path: Path) -> dict:
    """Fit + refine an arbitrary photo; save its overlay (no ground truth)."""
    model, cfg, net, args, faces_t = ctx.model, ctx.cfg, ctx.net, ctx.args, ctx.faces_t
    prep = prepare(read_rgb(path)[None], ctx.detector, cfg.person.crop_size, cfg.person.crop_margin,
                   cfg.person.detect_size)  # fmt: skip
    if not prep.valid[0]:
        return {"image": path.name, "skipped": True}
    init, ref, secs = run_fit(model, prep, cfg, net, refine=not args.no_refine)
    for name, fit in (("init", init), ("ref", ref)):
        if fit is not None:
            write_png(args.out / f"image_{path.stem}_{name}.png",
                      overlay(prep.images[0], body_vertices(model, fit)[0], faces_t, fit, 0))  # fmt: skip
    return {"image": path.name, "kp_px": float((ref or init).keypoint_error_px[0]), **secs}


def _mean(rows: list[dict], key: str) -> float:
    vals = [r[key] for r in rows if key in r]
    return float(np.mean(vals)) if vals else float("nan")


def summary(rows: list[dict]) -> str:
    """Markdown table per outfit and overall."""
    ok = [r for r in rows if not r.get("skipped")]
    head = ("| outfit (n) | body init | body ref | max body ref | gt init | gt ref | ref better | facing err |\n"
            "|---|---|---|---|---|---|---|---|")  # fmt: skip
    lines = [head]
    groups = [("all", ok)] + [(o, [r for r in ok if r["outfit"] == o]) for o in sorted({r["outfit"] for r in ok})]
    for name, g in groups:
        if not g:
            continue
        better = [r["ref_body"] < r["init_body"] for r in g if "ref_body" in r]
        key = "ref" if "ref_facing" in g[0] else "init"
        facing = sum(r[f"{key}_facing"] > 45 for r in g)
        mx = max((r.get("ref_body", r.get("init_body", np.nan)) for r in g), default=np.nan)
        lines.append(
            f"| {name} ({len(g)}) | {_mean(g, 'init_body'):.2f} | {_mean(g, 'ref_body'):.2f} | {mx:.2f} | "
            f"{_mean(g, 'init_gt'):.2f} | {_mean(g, 'ref_gt'):.2f} | "
            f"{(np.mean(better) * 100 if better else float('nan')):.0f} % | {facing}/{len(g)} |"
        )
    skipped = len(rows) - len(ok)
    if skipped:
        lines.append(f"({skipped} subjects without a detected person)")
    return "\n".join(lines)


def config_from_args(preset: str, items: list[str]):
    """The pipeline config of ``preset`` with ``KEY=VALUE`` overrides (dotted keys, YAML values)."""
    overrides: dict = {}
    for item in items:
        key, value = item.split("=", 1)
        node = overrides
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return load_config(preset, overrides)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validation", type=Path, default=VALIDATION)
    parser.add_argument("--subjects", type=int, nargs="*", default=None, help="subject numbers (default: all)")
    parser.add_argument("--limit", type=int, default=None, help="first N subjects only")
    parser.add_argument("--no-video", action="store_true")
    parser.add_argument("--no-refine", action="store_true", help="initial fit only (no normal net)")
    parser.add_argument("--images", type=Path, nargs="*", default=None,
                        help="extra photos (default: messi5.jpg and basketball1.png from opencv-doc if installed)")
    parser.add_argument("--samples", type=int, default=10000, help="surface samples per mesh for the metrics")
    parser.add_argument("--config", default="default", help="pipeline preset or YAML (fit, reconstruct, person)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="config overrides, e.g. fit.camera=perspective (YAML values)")
    parser.add_argument("--out", type=Path, default=ROOT / "out" / "fit_validation")
    parser.add_argument("--table-landmarks", action="store_true",
                        help="the landmark table's joints/vertices instead of the learned MediaPipe regressor")
    parser.add_argument("--json", type=Path, default=None, help="write all rows as JSON here")
    parser.add_argument("--summarise", type=Path, nargs="+", default=None, metavar="JSON",
                        help="only print the table of rows saved with --json by earlier (e.g. split) runs")
    args = parser.parse_args()
    if args.summarise:
        rows = [r for f in args.summarise for r in json.loads(f.read_text())["subjects"]]
        print(summary(sorted(rows, key=lambda r: r["subject"])))
        return
    torch.manual_seed(0)
    cfg = config_from_args(args.config, args.set)
    model = BodyModel(learned_landmarks=not args.table_landmarks)
    net = None if args.no_refine else load_normal_net(weights_path("normal_net"), "cpu")
    ev = load_scorer(args.validation)
    subjects = sorted((args.validation / "subjects").iterdir())
    if args.subjects is not None:
        subjects = [s for s in subjects if int(s.name) in set(args.subjects)]
    if args.limit is not None:
        subjects = subjects[: args.limit]
    images = args.images
    if images is None:
        images = [p for p in (OPENCV_DATA / "messi5.jpg", OPENCV_DATA / "basketball1.png") if p.is_file()]
    results: dict = {"subjects": [], "images": []}
    with PersonDetector() as detector:
        ctx = Bench(model, cfg, net, ev, args, model.faces.cpu().numpy(), model.faces.cpu(), detector)
        for sdir in subjects:
            row = eval_subject(ctx, sdir)
            results["subjects"].append(row)
            print(json.dumps({k: (round(v, 3) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
        if not args.no_video and (args.validation / "video").is_dir():
            results["video"] = eval_video(ctx, args.validation / "video")
            print("video:", json.dumps(results["video"]), flush=True)
        for path in images:
            results["images"].append(eval_image(ctx, path))
            print("image:", json.dumps(results["images"][-1]), flush=True)
    if results["subjects"]:
        print(summary(results["subjects"]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=1))
    print(f"overlays in {args.out}")


if __name__ == "__main__":
    main()
