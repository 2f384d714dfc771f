"""Where the integrated surface's error sits: per-sample normal and distance errors of the meshes written by
``bench/recon_validation.py --cache DIR`` (integrated, body_fit, ...), split by the part of the surface each sample
comes from. Measuring only (the validation set is never used to tune).

Each mesh (camera space of the fit) is aligned to ``gt.obj`` with the set's own similarity ICP, sampled as the scorer
samples it, and every prediction sample is labelled by where it projects in the integration's maps (recomputed from
the cached normals and fit): ``side`` (within ``--side-px`` map pixels of the silhouette), ``front`` / ``back``
(within 2 cm of the integrated front / back depth), ``middle`` (deeper: the body decides) — and by the body part of
its closest body vertex (head, torso, arms, legs, hands/feet). The table gives each label's share of the samples, its
normal consistency |n·n'| and its share of the NC deficit (1 - NC) and of P2S. Optional PNGs colour the samples by
their normal error, front and side view.

    python bench/surface_errors.py --cache out/cache --out out/base [--subjects 000 002] [--meshes integrated body_fit]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch
from validation_data import DEFAULT_ROOT, load_scorer

from body import BodyModel
from body.params import BodyParams
from flows.pipeline import resolve_config
from icon.fit import BodyFit, camera_from_params
from icon.surface_fusion import clothed_depth_maps, mask_signed_distance

PARTS = {
    "head": ("neck", "head"),
    "torso": ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"),
    "arms": ("left_shoulder", "right_shoulder", "left_elbow", "right_elbow"),
    "legs": ("left_hip", "right_hip", "left_knee", "right_knee"),
    "hands_feet": ("left_wrist", "right_wrist", "left_hand", "right_hand", "left_ankle", "right_ankle",
                   "left_foot", "right_foot"),
}  # fmt: skip


def part_of_vertices(model, parts: dict[str, tuple[str, ...]] = PARTS) -> np.ndarray:
    """(V,) index into ``parts`` (name → SMPL joint names) of each body vertex (its heaviest joint's part)."""
    from body.model import SMPL_JOINT_NAMES

    joint_part = np.zeros(len(SMPL_JOINT_NAMES), int)
    for i, joints in enumerate(parts.values()):
        for j in joints:
            joint_part[SMPL_JOINT_NAMES.index(j)] = i
    return joint_part[model.lbs_weights.argmax(1).cpu().numpy()]


def load_case(cache: Path, model, pipeline):
    """Fit, camera at the normal maps' size, body vertices (V, 3) and the integration's maps of one cached subject."""
    z = np.load(cache)
    body = BodyParams(*(torch.from_numpy(z[k]) for k in ("betas", "global_orient", "body_pose", "transl")))
    fit = BodyFit.from_params(body, torch.from_numpy(z["camera"]), int(z["image_size"]))
    nf, nb, m = (torch.from_numpy(z[k]) for k in ("normals_front", "normals_back", "mask"))
    with torch.no_grad():
        verts = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                      transl=fit.transl).vertices  # fmt: skip
    cam = camera_from_params(fit.camera, fit.image_size, nf.shape[1])
    depth = clothed_depth_maps(nf.float(), nb.float(), m, verts, model.faces, cam, pipeline.reconstruct.fusion)
    return cam, verts[0], depth


def label_samples(points: np.ndarray, cam, depth, side_px: float) -> np.ndarray:
    """(N,) labels 0 side, 1 front, 2 back, 3 middle, 4 outside the mask of camera-space points."""
    d = depth.depth
    size = d.mask.shape[-1]
    p = torch.from_numpy(points).float()[None]
    pix = cam.project(p)[0] * (size / cam.width)
    ij = pix.flip(-1).floor().long().clamp(0, size - 1)
    sdm = mask_signed_distance(d.mask)[0][ij[:, 0], ij[:, 1]]
    front, back = d.front[0][ij[:, 0], ij[:, 1]], d.back[0][ij[:, 0], ij[:, 1]]
    dd = -p[0, :, 2]
    labels = torch.full((len(points),), 3)
    labels[(back - dd).abs() < 0.02] = 2
    labels[(dd - front).abs() < 0.02] = 1
    labels[sdm > -side_px] = 0
    labels[sdm > 1.0] = 4
    return labels.numpy()


def sample_errors(scorer, vp, fp, vg, fg, n: int = 10000, seed: int = 0) -> dict:
    """ICP-align the prediction, sample both meshes as the scorer does: per prediction sample (camera frame point,
    |n·n'|, distance m) and per GT sample (point mapped back into the prediction's camera frame, |n·n'|, distance)."""
    s, rot, t, _ = scorer.similarity_icp(vp, fp, vg, fg, seed=seed)
    va = s * vp @ rot.T + t
    sp, sg = scorer.Surface(va, fp), scorer.Surface(vg, fg)
    pp, ip = scorer.sample_surface(va, fp, n, seed)
    pg, ig = scorer.sample_surface(vg, fg, n, seed + 1)
    np_, ng = scorer.face_normals(va, fp)[ip], scorer.face_normals(vg, fg)[ig]
    d_pg, n_pg = sg.query(pp)
    d_gp, n_gp = sp.query(pg)
    back = lambda x: (x - t) @ rot / s  # noqa: E731
    centres = va[fp].mean(1)
    _, n_c = sg.query(centres)
    face_nc = np.abs((scorer.face_normals(va, fp) * n_c).sum(1))
    return {"pred_pts": back(pp), "pred_nc": np.abs((np_ * n_pg).sum(1)), "pred_d": d_pg,
            "gt_pts": back(pg), "gt_nc": np.abs((ng * n_gp).sum(1)), "gt_d": d_gp,
            "face_pts": back(centres), "face_nc": face_nc}  # fmt: skip


def error_png(points: np.ndarray, err: np.ndarray, size: int = 512) -> np.ndarray:
    """(size, 2·size, 3) uint8 front | side (from +x) scatter of camera-space points coloured by err in [0, 1]
    (white 0 → red 1), nearest point wins."""
    img = np.full((size, 2 * size, 3), 40, np.uint8)
    c = points.mean(0)
    ext = np.abs(points - c).max() * 1.05
    for view in range(2):
        x = points[:, 0] - c[0] if view == 0 else -(points[:, 2] - c[2])
        depth = points[:, 2] if view == 0 else points[:, 0]
        u = ((x / ext * 0.5 + 0.5) * (size - 1)).astype(int) + view * size
        v = ((-(points[:, 1] - c[1]) / ext * 0.5 + 0.5) * (size - 1)).astype(int)
        order = np.argsort(depth)  # far first, near last
        e = np.clip(err[order], 0, 1)
        col = np.stack([np.full_like(e, 255), 255 * (1 - e), 255 * (1 - e)], 1).astype(np.uint8)
        img[np.clip(v[order], 0, size - 1), np.clip(u[order], 0, 2 * size - 1)] = col
    return img


LABELS = ("side", "front", "back", "middle", "outside")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--cache", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True, help="recon_validation --out folder with the meshes")
    parser.add_argument("--subjects", nargs="*")
    parser.add_argument("--meshes", nargs="*", default=["integrated", "body_fit"])
    parser.add_argument("--side-px", type=float, default=4.0)
    parser.add_argument("--pngs", action="store_true")
    args = parser.parse_args()
    import trimesh

    from flows.previews import write_png

    scorer = load_scorer(args.set)
    model = BodyModel()
    pipeline = resolve_config("default")
    vpart = part_of_vertices(model)
    subjects = args.subjects or sorted(p.stem for p in args.cache.glob("*.npz"))
    acc = {m: {"lab": [], "part": [], "nc": [], "d": []} for m in args.meshes}
    for sid in subjects:
        cam, body_v, depth = load_case(args.cache / f"{sid}.npz", model, pipeline)
        gt = trimesh.load(args.set / "subjects" / sid / "gt.obj", process=False)
        from scipy.spatial import cKDTree

        tree = cKDTree(body_v.numpy())
        for name in args.meshes:
            mesh = trimesh.load(args.out / sid / f"{name}.obj", process=False)
            e = sample_errors(scorer, np.asarray(mesh.vertices), np.asarray(mesh.faces), np.asarray(gt.vertices),
                              np.asarray(gt.faces))  # fmt: skip
            for key in ("pred", "gt"):
                pts = e[f"{key}_pts"]
                acc[name]["lab"].append(label_samples(pts, cam, depth, args.side_px))
                acc[name]["part"].append(vpart[tree.query(pts)[1]])
                acc[name]["nc"].append(e[f"{key}_nc"])
                acc[name]["d"].append(e[f"{key}_d"] * 100)
            if args.pngs:
                write_png(args.out / sid / f"errors_{name}.png", error_png(e["face_pts"], 1 - e["face_nc"]))
            print(f"{sid} {name}: NC {0.5 * (e['pred_nc'].mean() + e['gt_nc'].mean()):.3f}", flush=True)
    for name, a in acc.items():
        lab, part, nc, d = (np.concatenate(a[k]) for k in ("lab", "part", "nc", "d"))
        print(f"\n{name}: NC {nc.mean():.3f}, mean distance {d.mean():.2f} cm over {len(nc)} samples (both ways)")
        print("| group | share | NC | share of deficit | mean d (cm) | share of distance |")
        print("|---|---|---|---|---|---|")
        for title, groups, names in (("region", lab, LABELS), ("part", part, tuple(PARTS))):
            for i, g in enumerate(names):
                sel = groups == i
                if not sel.any():
                    continue
                print(f"| {title}:{g} | {sel.mean():.3f} | {nc[sel].mean():.3f} | "
                      f"{(1 - nc[sel]).sum() / (1 - nc).sum():.3f} | {d[sel].mean():.2f} | "
                      f"{d[sel].sum() / d.sum():.3f} |")  # fmt: skip
    summary = {n: {"nc": float(np.concatenate(a["nc"]).mean())} for n, a in acc.items()}
    (args.out / "surface_errors.json").write_text(json.dumps(summary))


if __name__ == "__main__":
    main()
