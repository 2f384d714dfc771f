"""Accuracy of single-image reconstruction on the independent validation set (../shared/validation, 24 people).

Per subject, the same steps as ``avatarize reconstruct IMAGE --mask MASK``: MediaPipe keypoints on the image, the
person crop, the initial body fit, the SMPL feedback loop with the shipped normal net (``icon.reconstruct``), then
every clothed surface from that one refined fit: (a) the refined naked body, (b) the implicit surface, (c) the
integrated surface (and, with ``--fused``, the fused one). Each mesh is scored against ``gt.obj`` with the set's own
scorer (``eval_recon.py``, similarity-ICP alignment: the fit's camera is weak-perspective), checked for
watertightness and connected components, and written under ``--out``; overlays (image | normals | mesh front | mesh
side) are saved for the first ``--overlays`` subjects. The naked true-pose body row is read from the set's
``baseline_body.json`` (``body.obj`` vs ``gt.obj``, same scorer).

Usage: python bench/recon_validation.py [--set ../shared/validation] [--subjects 000 007] [--limit 4]
       [--out out/recon_validation] [--resolution 256] [--fused] [--device cpu]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
from validation_data import DEFAULT_ROOT, load_scorer

from body import BodyModel
from body.params import BodyParams
from flows.bundled import weights_path
from flows.pipeline import resolve_config
from flows.reconstruct_files import overlay_panel, read_mask, read_rgb
from icon.fit import BodyFit, fit_body
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net
from icon.person import PersonDetector, PersonTrackingConfig, compute_crop_boxes, crop_frames, detect_person
from icon.reconstruct import clothed_surfaces, reconstruct

REPO = Path(__file__).resolve().parent.parent
WEIGHTS = weights_path("normal_net").parent
DEFAULT_SET = DEFAULT_ROOT
KEYS = ("chamfer_cm", "p2s_cm", "s2p_cm", "normal_consistency")




def mesh_checks(vertices: np.ndarray, faces: np.ndarray) -> dict:
    """Watertightness and component count of a mesh."""
    import trimesh

    if len(faces) == 0:
        return {"watertight": False, "components": 0}
    m = trimesh.Trimesh(vertices, faces, process=True)
    return {"watertight": bool(m.is_watertight), "components": int(len(m.split(only_watertight=False)))}


def crop_subject(image: np.ndarray, mask: np.ndarray, detector, person) -> object | None:
    """Person crop of one image with its given mask, as ``avatarize reconstruct --mask`` does (``person`` is the
    pipeline config's person section)."""
    track = detect_person(image[None], detector, PersonTrackingConfig(detect_size=person.detect_size))
    if not track.valid[0]:
        return None
    crops = compute_crop_boxes(track.boxes, track.valid, margin=person.crop_margin)
    return crop_frames(image[None], mask[None], track.keypoints, crops, size=person.crop_size)


def reconstruct_subject(subject: Path, model, nets, detector, pipeline, surfaces: list[str],
                        cache: Path | None = None) -> dict | None:  # fmt: skip
    """Meshes (name -> (vertices, faces)) of one subject, the crop, the front normals and seconds per surface.

    With ``cache`` (a .npz path) the refined fit, normals, mask and crop are read from there when it exists (only the
    surfaces are rebuilt) and written there otherwise.
    """
    device = model.device
    size, cfg = pipeline.person.crop_size, pipeline.reconstruct
    seconds: dict[str, float] = {}
    if cache is not None and cache.exists():
        z = np.load(cache)
        body = BodyParams(*(torch.from_numpy(z[k]) for k in ("betas", "global_orient", "body_pose", "transl")))
        fit = BodyFit.from_params(body, torch.from_numpy(z["camera"]), int(z["image_size"]))
        nf, nb = torch.from_numpy(z["normals_front"]), torch.from_numpy(z["normals_back"])
        m, crop = torch.from_numpy(z["mask"]), z["crop"]
        meshes = {}
    else:
        image = read_rgb(subject / "image.png")
        mask = read_mask(subject / "mask.png", image.shape[:2])
        cropped = crop_subject(image, mask, detector, pipeline.person)
        if cropped is None:
            return None
        kp = torch.from_numpy(cropped.keypoints).to(device)
        m = torch.from_numpy(cropped.masks).to(device)
        fit = fit_body(model, kp, m, size, pipeline.fit)
        rec = reconstruct(model, torch.from_numpy(cropped.images).to(device), m, fit, nets[0], nets[1],
                          cfg.model_copy(update={"surface": surfaces[0]}), keypoints=kp)  # fmt: skip
        seconds = {"refine": rec.seconds["refine"], surfaces[0]: rec.seconds["surface"]}
        meshes = {surfaces[0]: rec.meshes[0]}
        fit, nf, nb, crop = rec.fit, rec.normals_front, rec.normals_back, cropped.images[0]
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            np.savez_compressed(cache, **{k: getattr(fit, k).detach().cpu().numpy()
                                          for k in ("betas", "global_orient", "body_pose", "transl", "camera")},
                                image_size=fit.image_size, normals_front=nf.detach().cpu().numpy(),
                                normals_back=nb.detach().cpu().numpy(), mask=m.cpu().numpy(), crop=crop)  # fmt: skip
    fit = BodyFit.from_params(fit.body, fit.camera.to(device), fit.image_size)
    m = m.to(device)
    for kind in surfaces:
        if kind in meshes:
            continue
        t0 = time.perf_counter()
        body_v, ms = clothed_surfaces(model, fit, nf, nb, m, nets[1], cfg, surface=kind)
        meshes[kind] = ms[0]
        seconds[kind] = time.perf_counter() - t0
    with torch.no_grad():
        body_v = model(betas=fit.betas.to(device), global_orient=fit.global_orient.to(device),
                       body_pose=fit.body_pose.to(device), transl=fit.transl.to(device)).vertices  # fmt: skip
    meshes["body_fit"] = (body_v[0].cpu().numpy(), model.faces.cpu().numpy())
    return {"meshes": meshes, "crop": crop, "normals": nf[0].cpu().numpy(), "seconds": seconds}


def score(scorer, pred: Path, gt: Path) -> dict:
    return scorer.evaluate(str(pred), str(gt), samples=10000, seed=0)["icp"]


def print_table(rows: list[dict], names: list[str], baseline: dict) -> None:
    outfits = sorted({r["outfit"] for r in rows})
    print(f"\nICP-aligned metrics (cm; NC = normal consistency), {len(rows)} subjects")
    print("| outfit (n) | mesh | Chamfer | P2S | S2P | NC | watertight | one component |")
    print("|---|---|---|---|---|---|---|---|")
    for outfit in ["all", *outfits]:
        rr = rows if outfit == "all" else [r for r in rows if r["outfit"] == outfit]
        base = [baseline[r["subject"]] for r in rr if r["subject"] in baseline]
        label = f"{outfit} ({len(rr)})"
        if base:
            vals = " | ".join(f"{np.mean([b[k] for b in base]):.3f}" for k in KEYS)
            print(f"| {label} | true-pose naked body | {vals} | | |")
        for name in names:
            ok = [r for r in rr if name in r["metrics"]]
            if not ok:
                continue
            vals = " | ".join(f"{np.mean([r['metrics'][name][k] for r in ok]):.3f}" for k in KEYS)
            wt = sum(r["checks"][name]["watertight"] for r in ok)
            one = sum(r["checks"][name]["components"] == 1 for r in ok)
            print(f"| {label} | {name} | {vals} | {wt}/{len(ok)} | {one}/{len(ok)} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--set", type=Path, default=DEFAULT_SET, help="validation set folder")
    parser.add_argument("--subjects", nargs="*", help="subject ids (default: all)")
    parser.add_argument("--limit", type=int, help="first N subjects only")
    parser.add_argument("--out", type=Path, default=REPO / "out" / "recon_validation")
    parser.add_argument("--preset", default="default", help="pipeline preset (crop size, fit, refinement)")
    parser.add_argument("--resolution", type=int, help="marching-cubes grid (default: the preset's)")
    parser.add_argument("--overlays", type=int, default=6, help="save overlays for the first N subjects")
    parser.add_argument("--fused", action="store_true", help="also the fused surface")
    parser.add_argument("--surfaces", nargs="*", help="surfaces to build (default: integrated implicit [fused])")
    parser.add_argument("--cache", type=Path, help="folder of per-subject refined fits + normals (read if there, "
                        "else written): reruns then rebuild only the surfaces")
    parser.add_argument("--table-only", action="store_true", help="print the table of the subjects under --out")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    import trimesh

    from flows.previews import write_png

    scorer = load_scorer(args.set)
    baseline = {s["subject"]: s["icp"] for s in json.loads((args.set / "baseline_body.json").read_text())["subjects"]}
    if args.table_only:
        rows = [json.loads(p.read_text()) for p in sorted(args.out.glob("*/metrics.json"))]
        names = [n for n in ("body_fit", "integrated", "implicit", "fused") if any(n in r["metrics"] for r in rows)]
        print_table(rows, names, baseline)
        return
    subjects = sorted(p for p in (args.set / "subjects").iterdir() if p.is_dir())
    if args.subjects:
        subjects = [p for p in subjects if p.name in set(args.subjects)]
    subjects = subjects[: args.limit] if args.limit else subjects
    device = torch.device(args.device)
    model = BodyModel().to(device)
    nets = (load_normal_net(WEIGHTS / "normal_net.safetensors", device),
            load_implicit_net(WEIGHTS / "implicit_net.safetensors", device))  # fmt: skip
    pipeline = resolve_config(args.preset)
    if args.resolution:
        pipeline.reconstruct.resolution = args.resolution
    surfaces = args.surfaces or ["integrated", "implicit"] + (["fused"] if args.fused else [])
    names = ["body_fit", *surfaces]
    rows = []
    with PersonDetector() as detector:
        for i, subject in enumerate(subjects):
            t0 = time.perf_counter()
            cache = args.cache / f"{subject.name}.npz" if args.cache else None
            out = reconstruct_subject(subject, model, nets, detector, pipeline, surfaces, cache)
            outfit = json.loads((subject / "meta.json").read_text())["outfit"]
            if out is None:
                print(f"{subject.name}: no person found", flush=True)
                continue
            folder = args.out / subject.name
            folder.mkdir(parents=True, exist_ok=True)
            row = {"subject": subject.name, "outfit": outfit, "metrics": {}, "checks": {}, "seconds": out["seconds"]}
            for name in names:
                v, f = out["meshes"][name]
                row["checks"][name] = mesh_checks(v, f)
                if len(f) == 0:
                    continue
                path = folder / f"{name}.obj"
                trimesh.Trimesh(v, f, process=False).export(path)
                row["metrics"][name] = score(scorer, path, subject / "gt.obj")
                if i < args.overlays and name != "body_fit":
                    write_png(folder / f"overlay_{name}.png", overlay_panel(out["crop"], out["normals"], v, f))
            rows.append(row)
            (folder / "metrics.json").write_text(json.dumps(row, indent=1))
            msg = " ".join(f"{n} {row['metrics'][n]['chamfer_cm']:.2f}/{row['metrics'][n]['normal_consistency']:.3f}"
                           f"{'' if row['checks'][n]['watertight'] else ' (open)'}"
                           for n in names if n in row["metrics"])  # fmt: skip
            secs = " ".join(f"{k} {v:.1f}s" for k, v in out["seconds"].items())
            print(f"{subject.name} {outfit}: Chamfer/NC {msg}; {secs}; {time.perf_counter() - t0:.0f} s", flush=True)
    print_table(rows, names, baseline)
    (args.out / "summary.json").write_text(json.dumps(rows, indent=1))


if __name__ == "__main__":
    main()
