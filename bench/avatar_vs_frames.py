"""Avatar vs per-frame reconstructions on the synthetic turning clip (ground truth known).

For a pipeline run on ``flows/demo/demo.mp4`` (``avatarize demo --out OUT``), compares against the true clothed mesh of
each stored frame (regenerated with ``icon.synth.sequence`` from ``flows/demo/demo_truth.npz``):

(a) the frame's own reconstruction (store mesh),
(b) the trained avatar in the pose it holds for that frame (``avatar.frame_poses``: the fitted pose smoothed in time,
    its root re-anchored on the fitted body; see avatar/poses.py), posed with ``repose_fast`` -- the criterion,
(c) the avatar in the pipeline's refined-fit pose itself,
(d) the naked fitted body.

Reconstructions, avatar and fits live in the weak-perspective crop camera space; the ground truth lives in the
perspective camera space of the clip. Per frame, one similarity transform (Umeyama: scale, rotation, translation) maps
the fitted body's vertices onto the ground-truth body's vertices (same topology) and is applied to (a), (b) and (c)
alike; the Chamfer is also reported with a scale + translation only alignment (no rotation). The GT -> surface
distance is also split into GT points the clip's camera saw and those it did not (the back side).

Then 3 unseen poses (``bench/avatar_training.py``'s ``unseen_poses``): the avatar is posed into each, aligned by the
Umeyama transform between its own body (avatar betas, same pose) and the ground-truth body, and its Chamfer is compared
with its training-pose mean.

Usage: python bench/avatar_vs_frames.py --store OUT/demo.zarr [--avatar OUT/demo.avatar] [--grid 160]
       [--samples 10000] [--json OUT/avatar_vs_frames.json]
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("WARP_CACHE_PATH", str(ROOT / ".cache" / "warp"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from avatar.model import load_avatar  # noqa: E402
from avatar.repose import repose_fast  # noqa: E402
from body import BodyModel, Motion  # noqa: E402
from flows.avatar_flow import avatar_dir_for  # noqa: E402
from flows.bundled import demo_truth_path  # noqa: E402
from flows.store import open_run  # noqa: E402
from geometry.alignment import umeyama as similarity  # noqa: E402
from geometry.cameras import PerspectiveCamera  # noqa: E402
from geometry.metrics import reconstruction_metrics, sample_surface  # noqa: E402
from geometry.queries import closest_points  # noqa: E402
from geometry.render import point_visibility  # noqa: E402
from icon.synth.poses import BodyParams  # noqa: E402
from icon.synth.sequence import ClothedPerson, clothed_mesh, make_person, turn_and_wave_motion  # noqa: E402

UNSEEN_ORIENT = np.array([0.0, 0.4, 0.0], np.float32)  # as in bench/avatar_training.py


def unseen_poses() -> dict[str, np.ndarray]:
    """The three unseen (69,) body poses of bench/avatar_training.py (loaded from the file: bench/ is no package)."""
    spec = importlib.util.spec_from_file_location("_bench_avatar", ROOT / "bench" / "avatar_training.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.unseen_poses()


def umeyama(src: np.ndarray, dst: np.ndarray, rotation: bool = True) -> tuple[float, np.ndarray, np.ndarray]:
    """(s, R, t) of ``geometry.alignment.umeyama``."""
    sim = similarity(src, dst, rotation)
    return sim.scale, sim.rotation, sim.translation


def apply(sim: tuple[float, np.ndarray, np.ndarray], v: torch.Tensor) -> torch.Tensor:
    s, r, t = sim
    out = s * np.asarray(v, np.float64) @ r.T + t
    return torch.from_numpy(out.astype(np.float32))


def rotation_deg(r: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip((np.trace(r) - 1.0) / 2.0, -1.0, 1.0))))


class Truth:
    """Ground-truth clothed and naked meshes of the demo person (perspective camera space, metres)."""

    def __init__(self, model: BodyModel, truth_path: Path, grid: int | None) -> None:
        self.model = model
        d = np.load(truth_path)
        self.d = d
        self.person: ClothedPerson = make_person(model, int(d["outfit_seed"]), betas=d["betas"].astype(np.float32))
        self.grid = int(grid or d["grid"])
        # The clip's motion regenerated (the poses in the truth file must be these).
        motion = turn_and_wave_motion(len(d["global_orient"]), turns=1.0)
        regen = motion.poses
        stored = np.concatenate([d["global_orient"], d["body_pose"]], axis=1)
        if not np.allclose(regen, stored, atol=1e-5):
            raise RuntimeError(f"{truth_path}: poses differ from turn_and_wave_motion({len(stored)})")

    def body(self, go: np.ndarray, bp: np.ndarray, transl: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            out = self.model(betas=torch.as_tensor(self.person.betas)[None], global_orient=torch.as_tensor(go)[None],
                             body_pose=torch.as_tensor(bp)[None], transl=torch.as_tensor(transl)[None])  # fmt: skip
        return out.vertices[0].double().numpy()

    def clothed(self, go: np.ndarray, bp: np.ndarray, transl: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """The ground-truth clothed mesh of ``render_frame`` for this pose (``icon.synth.sequence.clothed_mesh``)."""
        params = BodyParams(*(np.asarray(x, np.float32).reshape(1, -1) for x in (self.person.betas, go, bp, transl)))
        verts, tri = clothed_mesh(self.model, self.person, params, self.grid)
        return torch.from_numpy(verts), torch.from_numpy(np.asarray(tri)).long()


def metrics(v, f, v_gt, f_gt, n: int) -> tuple[float, float]:
    m = reconstruction_metrics(v, f, v_gt, f_gt, n_samples=n)
    return float(m.chamfer), float(m.p2s)


def avatar_at_true_pose(
    avatar,
    model: BodyModel,
    truth: Truth,
    go: np.ndarray,
    bp: np.ndarray,
    transl_gt: np.ndarray,
    transl_av: np.ndarray,
    v_gt,
    f_gt,
    n: int,
) -> dict[str, float]:
    """The avatar posed (repose_fast) into a ground-truth pose in its own space, aligned by the Umeyama transform
    between its own body (avatar betas, that pose) and the ground-truth body; Chamfer/P2S vs the GT clothed mesh."""
    go, bp, transl_av = (np.asarray(a, np.float32) for a in (go, bp, transl_av))
    body_gt = truth.body(go, bp, transl_gt)
    one = Motion(fps=1.0, global_orient=go[None], body_pose=bp[None], transl=transl_av[None])
    v_av = repose_fast(avatar, one)[0].cpu()
    with torch.no_grad():
        body_av = model(betas=avatar.betas.detach().cpu()[None].to(model.dtype),
                        global_orient=torch.as_tensor(go)[None], body_pose=torch.as_tensor(bp)[None],
                        transl=torch.as_tensor(transl_av)[None]).vertices[0].double().numpy()  # fmt: skip
    sim = umeyama(body_av, body_gt)
    ch, p2s = metrics(apply(sim, v_av), avatar.faces.cpu().long(), v_gt, f_gt, n)
    ch_body, _ = metrics(apply(sim, torch.from_numpy(body_av).float()), model.faces.cpu().long(), v_gt, f_gt, n)
    return {"avatar_chamfer": ch, "avatar_p2s": p2s, "body_chamfer": ch_body, "scale": sim[0],
            "rot_deg": rotation_deg(sim[1])}  # fmt: skip


def side_distances(v_gt, f_gt, meshes: dict, camera, n: int) -> dict[str, tuple[float, float]]:
    """GT -> surface distance (cm) at GT samples the clip's camera saw and at those it did not (the back side)."""
    s = sample_surface(v_gt[None], f_gt, n, seed=1)
    probe = s.points + 2e-3 * s.normals
    seen = point_visibility(v_gt[None], f_gt, camera, probe)[0]
    out = {}
    for key, (v, f) in meshes.items():
        d = closest_points(v[None].float(), f, s.points, sign_method="none", normals=False).distance[0] * 100
        out[key] = (float(d[seen].mean()), float(d[~seen].mean()))
    return out


def held_poses(avatar, avatar_dir: Path, frames: list[int]) -> tuple[dict[str, np.ndarray] | None, str]:
    """The poses the avatar holds in the store frames ``frames`` (from its training order in training.json)."""
    poses = avatar.frame_poses
    if len(poses) == 0:
        return None, "the avatar stores no per-frame poses (saved before format 2)"
    info_path = avatar_dir / "training.json"
    order = json.loads(info_path.read_text())["frames"] if info_path.is_file() else list(range(len(poses)))
    if len(order) != len(poses) or any(t not in order for t in frames):
        return None, f"the avatar's training frames {order} do not cover the store frames {frames}"
    idx = [order.index(t) for t in frames]
    return {n: getattr(poses, n)[idx].detach().cpu().numpy().astype(np.float32)
            for n in ("global_orient", "body_pose", "transl")}, ""  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--store", type=Path, required=True, help="run store of the demo clip (OUT/demo.zarr)")
    parser.add_argument("--avatar", type=Path, default=None, help="avatar folder (default OUT/<stem>.avatar)")
    parser.add_argument("--truth", type=Path, default=demo_truth_path())
    parser.add_argument("--grid", type=int, default=0, help="marching-cubes resolution of the GT (0 = the clip's)")
    parser.add_argument("--samples", type=int, default=10000, help="surface samples per mesh for the metrics")
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument("--json", type=Path, default=None, help="also write all numbers here")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    t_start = time.perf_counter()

    store = open_run(args.store, "r")
    avatar_dir = args.avatar or avatar_dir_for(args.store)
    avatar = load_avatar(avatar_dir, "cpu")
    model = BodyModel(store.attrs.config.get("body_model"))
    truth = Truth(model, args.truth, args.grid or None)
    d = truth.d
    gt_camera = PerspectiveCamera(focal=torch.tensor([float(d["focal"])]), cx=torch.tensor([float(d["width"]) / 2]),
                                  cy=torch.tensor([float(d["height"]) / 2]), width=int(d["width"]),
                                  height=int(d["height"]))  # fmt: skip

    frames = store.mesh_frames()
    refined, init = store.read_fit("refined", frames), store.read_fit("init", frames)
    names = ("betas", "global_orient", "body_pose", "transl")
    ok = np.stack([np.isfinite(getattr(refined, n).numpy()).all(-1) for n in names]).all(0)
    fit = {
        n: np.where(ok[:, None], getattr(refined, n).numpy(), getattr(init, n).numpy()).astype(np.float32)
        for n in names
    }
    if not ok.all():
        print(f"note: frames {[t for t, k in zip(frames, ok, strict=True) if not k]} have no refined fit; using init")
    with torch.no_grad():
        fitted_body = model(**{n: torch.as_tensor(fit[n]) for n in names}).vertices.double().numpy()
    fps = float(store.attrs.fps)
    posed_fit = repose_fast(avatar, Motion(fps=fps, global_orient=fit["global_orient"], body_pose=fit["body_pose"],
                                           transl=fit["transl"])).cpu()  # fmt: skip
    held, why = held_poses(avatar, avatar_dir, frames)
    if held is None:
        print(f"note: {why}; the avatar holds the fitted poses")
        held = {n: fit[n] for n in ("global_orient", "body_pose", "transl")}
    posed_held = repose_fast(avatar, Motion(fps=fps, **held)).cpu()
    betas_av = avatar.betas.detach().cpu()[None].expand(len(frames), -1).to(model.dtype)
    with torch.no_grad():
        held_body = model(betas=betas_av, **{n: torch.as_tensor(v) for n, v in held.items()}).vertices.double().numpy()
    faces_body, faces_av = model.faces.cpu().long(), avatar.faces.cpu().long()
    print(f"store {args.store}: {len(frames)} frames with a mesh; avatar {avatar_dir} ({len(avatar.vertices)} verts); "
          f"GT grid {truth.grid}; outfit {', '.join(g.family for g in truth.person.garments)}")  # fmt: skip

    rows = []
    for k, t in enumerate(frames):
        i = int(store.attrs.frame_indices[t])
        go, bp, tr = d["global_orient"][i], d["body_pose"][i], d["transl"][i]
        v_gt, f_gt = truth.clothed(go, bp, tr)
        body_gt = truth.body(go, bp, tr)
        # The one alignment of this frame: the pipeline's fitted body onto the GT body (applied to every mesh).
        sim = umeyama(fitted_body[k], body_gt)
        sim_nr = umeyama(fitted_body[k], body_gt, rotation=False)
        mesh = store.read_mesh(t)
        rec_v = torch.as_tensor(np.asarray(mesh.vertices), dtype=torch.float32)
        rec_f = torch.as_tensor(np.asarray(mesh.faces), dtype=torch.long)
        row = {"t": t, "source_frame": i, "scale": sim[0], "rot_deg": rotation_deg(sim[1])}
        for key, body in (("fit", fitted_body[k]), ("held", held_body[k])):
            row[f"body_v2v_{key}_cm"] = float(np.linalg.norm(apply(sim, body).double().numpy() - body_gt, axis=1)
                                              .mean() * 100)  # fmt: skip
        meshes = {
            "rec": (rec_v, rec_f),
            "avatar_fit": (posed_fit[k], faces_av),
            "avatar_held": (posed_held[k], faces_av),
            "body": (torch.from_numpy(fitted_body[k]).float(), faces_body),
        }
        for key, (v, f) in meshes.items():
            row[f"{key}_chamfer"], row[f"{key}_p2s"] = metrics(apply(sim, v), f, v_gt, f_gt, args.samples)
            if key != "body":
                row[f"{key}_chamfer_norot"], _ = metrics(apply(sim_nr, v), f, v_gt, f_gt, args.samples)
        sides = side_distances(v_gt, f_gt, {key: (apply(sim, v), f) for key, (v, f) in meshes.items() if key != "body"},
                               gt_camera, args.samples)  # fmt: skip
        for key, (seen, unseen) in sides.items():
            row[f"{key}_gt2s_seen"], row[f"{key}_gt2s_unseen"] = seen, unseen
        at_true = avatar_at_true_pose(avatar, model, truth, go, bp, tr, fit["transl"][k], v_gt, f_gt, args.samples)
        row["avatar_truepose_chamfer"] = at_true["avatar_chamfer"]
        rows.append(row)
        print(f"  frame t={t} (source {i}): rec {row['rec_chamfer']:.2f} avatar@held {row['avatar_held_chamfer']:.2f} "
              f"avatar@fit {row['avatar_fit_chamfer']:.2f} body {row['body_chamfer']:.2f} cm "
              f"({time.perf_counter() - t_start:.0f} s)", flush=True)  # fmt: skip

    print(
        "\nChamfer / P2S in cm against the GT clothed mesh; every mesh of a frame is mapped by the same similarity "
        "(Umeyama: the pipeline's fitted body onto the GT body). avatar@held = the avatar in the pose it holds for the "
        "frame (fitted pose smoothed in time, root re-anchored on the fitted body); avatar@fit = the avatar in the "
        "pipeline's fitted pose; body v2v = that pose's naked body vs the GT body (same alignment).\n"
    )
    print("| t | src | align s / rot° | body v2v fit / held | rec Ch / P2S | avatar@held Ch / P2S | "
          "avatar@fit Ch / P2S | naked Ch / P2S | no rot: rec / held / fit | avatar @ true pose Ch |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")

    def line(r: dict, bold: bool = False) -> str:
        b = "**" if bold else ""
        return (
            f"| {r['scale']:.3f} / {r['rot_deg']:.1f} | {r['body_v2v_fit_cm']:.2f} / {r['body_v2v_held_cm']:.2f} | "
            f"{b}{r['rec_chamfer']:.2f}{b} / {r['rec_p2s']:.2f} | {b}{r['avatar_held_chamfer']:.2f}{b} / "
            f"{r['avatar_held_p2s']:.2f} | {r['avatar_fit_chamfer']:.2f} / {r['avatar_fit_p2s']:.2f} | "
            f"{r['body_chamfer']:.2f} / {r['body_p2s']:.2f} | {r['rec_chamfer_norot']:.2f} / "
            f"{r['avatar_held_chamfer_norot']:.2f} / {r['avatar_fit_chamfer_norot']:.2f} | "
            f"{r['avatar_truepose_chamfer']:.2f} |"
        )

    for r in rows:
        print(f"| {r['t']} | {r['source_frame']} " + line(r))
    mean = {k: float(np.mean([r[k] for r in rows])) for k in rows[0] if k not in ("t", "source_frame")}
    print("| **mean** | " + line(mean, bold=True))

    print("\nGT -> surface (cm) at GT points the camera saw / did not see (back side), mean over frames:")
    print("| | seen | unseen (back) |\n|---|---|---|")
    for key, label in (("rec", "frame's reconstruction"), ("avatar_held", "avatar@held"), ("avatar_fit", "avatar@fit")):
        print(f"| {label} | {mean[f'{key}_gt2s_seen']:.2f} | {mean[f'{key}_gt2s_unseen']:.2f} |")
    back_wins = sum(r["avatar_held_gt2s_unseen"] < r["rec_gt2s_unseen"] for r in rows)
    print(f"avatar@held closer than the reconstruction on the unseen side in {back_wins}/{len(rows)} frames")

    verdict = {}
    for key, label in (("avatar_held", "avatar in its held pose"), ("avatar_fit", "avatar in the fitted pose")):
        wins = sum(r[f"{key}_chamfer"] < r["rec_chamfer"] for r in rows)
        better = mean[f"{key}_chamfer"] < mean["rec_chamfer"]
        verdict[key] = {"better": bool(better), "frames_better": int(wins)}
        print(f"{label}: {mean[f'{key}_chamfer']:.2f} vs reconstruction {mean['rec_chamfer']:.2f} cm Chamfer "
              f"({'better' if better else 'NOT better'}, per frame {wins}/{len(rows)}); without rotation "
              f"{mean[f'{key}_chamfer_norot']:.2f} vs {mean['rec_chamfer_norot']:.2f} cm")  # fmt: skip
    avatar_wins = verdict["avatar_held"]["better"]
    print(f"\ncriterion (the avatar posed into each training frame's pose = the pose it holds for that frame) closer "
          f"than the frame's own reconstruction on average: {'YES' if avatar_wins else 'NO'} "
          f"({mean['avatar_held_chamfer']:.2f} vs {mean['rec_chamfer']:.2f} cm)")  # fmt: skip

    # Unseen poses: the avatar posed in its own (crop camera) space at the mean fitted translation, aligned by its body.
    unseen = {}
    for name, bp in unseen_poses().items():
        v_gt, f_gt = truth.clothed(UNSEEN_ORIENT, np.asarray(bp, np.float32), d["transl"][0])
        unseen[name] = avatar_at_true_pose(avatar, model, truth, UNSEEN_ORIENT, bp, d["transl"][0],
                                           fit["transl"].mean(0), v_gt, f_gt, args.samples)  # fmt: skip
    unseen_mean = float(np.mean([u["avatar_chamfer"] for u in unseen.values()]))
    ratio = unseen_mean / mean["avatar_held_chamfer"]
    ratio_fit = unseen_mean / mean["avatar_fit_chamfer"]
    ratio_true = unseen_mean / mean["avatar_truepose_chamfer"]
    print("\n| unseen pose | avatar Ch / P2S | naked (avatar betas) Ch | align s / rot° |\n|---|---|---|---|")
    for name, u in unseen.items():
        print(f"| {name} | {u['avatar_chamfer']:.2f} / {u['avatar_p2s']:.2f} | {u['body_chamfer']:.2f} | "
              f"{u['scale']:.3f} / {u['rot_deg']:.1f} |")  # fmt: skip
    print(
        f"\nunseen-pose mean Chamfer {unseen_mean:.2f} cm; training-pose mean (held) {mean['avatar_held_chamfer']:.2f} "
        f"cm: ratio {ratio:.2f} ({'within' if ratio <= 1.5 else 'NOT within'} 1.5x); vs the fitted poses "
        f"{mean['avatar_fit_chamfer']:.2f} cm: ratio {ratio_fit:.2f}"
    )
    print(
        f"like for like (training frames also posed at their TRUE pose, body-aligned): training mean "
        f"{mean['avatar_truepose_chamfer']:.2f} cm, ratio {ratio_true:.2f} "
        f"({'within' if ratio_true <= 1.5 else 'NOT within'} 1.5x)"
    )
    print(f"bench time {time.perf_counter() - t_start:.0f} s")

    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({
            "store": str(args.store), "avatar": str(avatar_dir), "gt_grid": truth.grid, "samples": args.samples,
            "frames": rows, "mean": mean, "criterion_pose": "held", "avatar_beats_reconstruction": bool(avatar_wins),
            "verdict": verdict, "unseen": unseen, "unseen_mean_chamfer": unseen_mean, "unseen_over_train": ratio,
            "unseen_over_train_fitted_pose": ratio_fit, "unseen_over_train_truepose": ratio_true,
        }, indent=2))  # fmt: skip
        print(f"wrote {args.json}")


if __name__ == "__main__":
    main()
