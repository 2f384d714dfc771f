"""Where the initial body fit's error sits, on people the project never made (../shared/validation).

The embedded body model has Anny's topology, as the set's naked ground truth `body.obj` does, so the fit and the truth
correspond vertex by vertex. For every subject this bench runs the initial fit (detection cached under --cache) and
reports, after a similarity Procrustes alignment on all vertices (scale, rotation, translation, like the scorer's
ICP but with known correspondences; milliseconds instead of seconds):
- the mean vertex error (cm) overall and per body part (head, torso, arms, forearms, hands, thighs, shins, feet);
- oracle decompositions: the body model registered to `body.obj` by vertex correspondences (the model's floor), and
  hybrids that take the fit's shape with the registered pose ("pose fixed") or the registered shape with the fit's
  pose ("shape fixed") or the fit's pose with the registered root orientation ("root fixed").
The registrations are measurements only: nothing here feeds back into the fit, and no constant is chosen per subject.

Usage: python bench/fit_diagnosis.py [--subjects 0 5] [--set fit.w_bones3d=50 ...] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import trimesh
from fit_validation import config_from_args, prepare, read_rgb
from surface_errors import part_of_vertices
from validation_data import CV_TO_GL, DEFAULT_ROOT

from body import BodyModel
from icon.fit import fit_body
from icon.person import PersonDetector

ROOT = Path(__file__).resolve().parent.parent
# Body parts by the vertex's dominant skinning joint.
PARTS = {
    "head": ("neck", "head"),
    "torso": ("pelvis", "spine1", "spine2", "spine3", "left_collar", "right_collar"),
    "upper arms": ("left_shoulder", "right_shoulder"),
    "forearms": ("left_elbow", "right_elbow"),
    "hands": ("left_wrist", "right_wrist", "left_hand", "right_hand"),
    "thighs": ("left_hip", "right_hip"),
    "shins": ("left_knee", "right_knee"),
    "feet": ("left_ankle", "right_ankle", "left_foot", "right_foot"),
}


def detections(sdir: Path, cache: Path, cfg, detector_factory) -> dict[str, np.ndarray] | None:
    """Crop, mask, keypoints and 3D landmarks of one subject as `avatarize reconstruct` finds them (cached npz)."""
    path = cache / f"{sdir.name}.npz"
    if path.is_file():
        d = dict(np.load(path))
        return d if d["valid"] else None
    prep = prepare(read_rgb(sdir / "image.png")[None], detector_factory(), cfg.person.crop_size, cfg.person.crop_margin,
                   cfg.person.detect_size)  # fmt: skip
    d = {"images": prep.images, "masks": prep.masks, "keypoints": prep.keypoints, "valid": np.asarray(prep.valid[0])}
    if prep.keypoints3d is not None:
        d["keypoints3d"] = prep.keypoints3d
    cache.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, **d)
    return d if d["valid"] else None


def procrustes(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """``src`` (N, 3) moved onto ``dst`` (N, 3) by the least-squares similarity transform (Umeyama)."""
    ms, md = src.mean(0), dst.mean(0)
    a, b = src - ms, dst - md
    u, s, vt = np.linalg.svd(a.T @ b)
    d = np.sign(np.linalg.det(u @ vt))
    fix = np.diag([1.0, 1.0, d])
    rot = (u @ fix @ vt).T
    scale = (s * np.diag(fix)).sum() / (a**2).sum()
    return scale * a @ rot.T + md


def vertex_errors(pred: np.ndarray, gt: np.ndarray) -> np.ndarray:
    """(V,) distances (cm) after the similarity alignment of pred onto gt."""
    return np.linalg.norm(procrustes(pred, gt) - gt, axis=1) * 100.0


def register(model: BodyModel, gt: torch.Tensor, init: dict[str, torch.Tensor], steps: int) -> dict[str, torch.Tensor]:
    """Body parameters whose vertices match ``gt`` (V, 3) (same topology, camera frame), started from ``init``."""
    p = {k: v.detach().clone().requires_grad_(True) for k, v in init.items()}
    with torch.no_grad():
        out = model(**p)
        p["transl"] += gt.mean(0) - out.vertices[0].mean(0)
    opt = torch.optim.Adam(p.values(), lr=0.02)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps, eta_min=0.002)
    for _ in range(steps):
        opt.zero_grad()
        loss = ((model(**p).vertices[0] - gt) ** 2).sum(-1).mean()
        loss.backward()
        opt.step()
        sched.step()
    return {k: v.detach() for k, v in p.items()}


def verts(model: BodyModel, p: dict[str, torch.Tensor]) -> np.ndarray:
    with torch.no_grad():
        return model(**p).vertices[0].numpy().astype(np.float64)


def part_means(err: np.ndarray, labels: np.ndarray) -> dict[str, float]:
    """Mean of (V,) errors per body part, ``labels`` (V,) from `surface_errors.part_of_vertices` with `PARTS`."""
    return {name: float(err[labels == i].mean()) for i, name in enumerate(PARTS)}


def eval_subject(model, cfg, sdir: Path, args, detector_factory) -> dict:
    meta = json.loads((sdir / "meta.json").read_text())
    row: dict = {"subject": sdir.name, "outfit": meta["outfit"], "style": meta["pose"].get("style", "?")}
    d = detections(sdir, args.cache, cfg, detector_factory)
    if d is None:
        return {**row, "skipped": True}
    kp3 = torch.from_numpy(d["keypoints3d"]) if "keypoints3d" in d else None
    t0 = time.perf_counter()
    fit = fit_body(model, torch.from_numpy(d["keypoints"]), torch.from_numpy(d["masks"]), d["images"].shape[1],
                   cfg.fit, keypoints3d=kp3)  # fmt: skip
    row["s_fit"] = time.perf_counter() - t0
    cam = json.loads((sdir / "camera.json").read_text())
    body = trimesh.load(sdir / "body.obj", process=False)
    gt = (CV_TO_GL @ (np.asarray(cam["R"]) @ body.vertices.T + np.asarray(cam["t"])[:, None])).T
    labels = part_of_vertices(model, PARTS)
    fitted = {"betas": fit.betas[:1], "global_orient": fit.global_orient[:1], "body_pose": fit.body_pose[:1],
              "transl": fit.transl[:1]}  # fmt: skip
    err = vertex_errors(verts(model, fitted), gt)
    row["v2v"] = float(err.mean())
    row.update({f"part {k}": v for k, v in part_means(err, labels).items()})
    if args.oracle:
        reg = register(model, torch.as_tensor(gt, dtype=torch.float32), fitted, args.steps)
        row["oracle floor"] = float(vertex_errors(verts(model, reg), gt).mean())
        hybrids = {
            "pose fixed": {**reg, "betas": fitted["betas"]},
            "shape fixed": {**fitted, "betas": reg["betas"]},
            "root fixed": {**fitted, "global_orient": reg["global_orient"]},
        }
        for name, p in hybrids.items():
            row[f"oracle {name}"] = float(vertex_errors(verts(model, p), gt).mean())
        row["beta err"] = float((fitted["betas"] - reg["betas"]).norm())
    return row


def table(rows: list[dict]) -> str:
    ok = [r for r in rows if not r.get("skipped")]
    keys = [k for k in ok[0] if k.startswith(("v2v", "part", "oracle", "beta"))]
    lines = ["| group (n) | " + " | ".join(keys) + " |", "|---" * (len(keys) + 1) + "|"]
    groups = [("all", ok)] + [(o, [r for r in ok if r["outfit"] == o]) for o in sorted({r["outfit"] for r in ok})]
    for name, g in groups:
        vals = " | ".join(f"{np.mean([r[k] for r in g]):.2f}" for k in keys)
        lines.append(f"| {name} ({len(g)}) | {vals} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--validation", type=Path, default=DEFAULT_ROOT)
    parser.add_argument("--subjects", type=int, nargs="*", default=None)
    parser.add_argument("--cache", type=Path, default=ROOT / "out" / "fit_diagnosis" / "detections")
    parser.add_argument("--config", default="default")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE")
    parser.add_argument("--no-oracle", dest="oracle", action="store_false", help="skip the registrations")
    parser.add_argument("--steps", type=int, default=400, help="Adam steps of each registration")
    parser.add_argument("--table-landmarks", action="store_true",
                        help="the landmark table's joints/vertices instead of the learned MediaPipe regressor")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    torch.manual_seed(0)
    cfg = config_from_args(args.config, args.set)
    model = BodyModel(learned_landmarks=not args.table_landmarks)
    subjects = sorted((args.validation / "subjects").iterdir())
    if args.subjects is not None:
        subjects = [s for s in subjects if int(s.name) in set(args.subjects)]
    holder: list = []

    def detector_factory():
        if not holder:
            holder.append(PersonDetector().__enter__())
        return holder[0]

    rows = []
    for sdir in subjects:
        row = eval_subject(model, cfg, sdir, args, detector_factory)
        rows.append(row)
        print(json.dumps({k: (round(v, 2) if isinstance(v, float) else v) for k, v in row.items()}), flush=True)
    for det in holder:
        det.__exit__(None, None, None)
    print(table(rows))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
