"""The whole per-video pipeline on the demo clip: frames → fit → ICON reconstruction → avatar → re-posed preview."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flows import pipeline
from flows.bundled import demo_clip_path, demo_truth_path
from flows.store import FrameStatus, open_run
from tests.quality import Floor, FloorChecks

ROOT = Path(__file__).resolve().parents[2]
DEMO = demo_clip_path()
PACKAGES = ("body", "geometry", "icon", "avatar", "flows")

# Run in a fresh interpreter where `import smplx` fails: every module of the packages, the body model and a body fit.
NO_SMPLX_SCRIPT = textwrap.dedent(
    """
    import importlib, pkgutil, sys
    sys.modules["smplx"] = None  # any `import smplx` / `from smplx... import` now raises ImportError
    import torch
    for pkg in PACKAGES:
        for info in pkgutil.walk_packages(importlib.import_module(pkg).__path__, pkg + "."):
            importlib.import_module(info.name)
    from body import BodyModel
    from icon.fit import FitConfig, fit_body
    from icon.synth.clip import make_clip
    model = BodyModel()
    out = model(betas=torch.randn(2, 10), body_pose=0.3 * torch.randn(2, 69), transl=torch.randn(2, 3))
    assert out.vertices.shape == (2, model.num_vertices, 3) and torch.isfinite(out.vertices).all()
    clip = make_clip(model, n_frames=2, size=128, seed=1)
    fit = fit_body(model, clip.keypoints, clip.masks, 128, FitConfig(orient_iters=10, pose_iters=30,
                                                                        silhouette_iters=3))
    print("fit error px", float(fit.keypoint_error_px.mean()))
    try:
        BodyModel(path=sys.argv[1])
    except ImportError as exc:
        assert "pip install '.[smpl]'" in str(exc), exc
    else:
        raise AssertionError("a user's .pkl loaded without smplx")
    print("smplx loaded:", "smplx" in sys.modules and sys.modules["smplx"] is not None)
    """
).replace("PACKAGES", repr(PACKAGES))


def test_default_path_needs_no_smplx(tmp_path):
    """smplx (non-commercial licence) is an optional extra: without it every module imports, the embedded body model
    poses and a body fit runs; a user's SMPL .pkl asks for `pip install '.[smpl]'`."""
    (tmp_path / "SMPL_NEUTRAL.pkl").write_bytes(b"not read")
    res = subprocess.run([sys.executable, "-c", NO_SMPLX_SCRIPT, str(tmp_path / "SMPL_NEUTRAL.pkl")], cwd=ROOT,
                         capture_output=True, text=True, timeout=600)  # fmt: skip
    assert res.returncode == 0, res.stderr[-3000:]
    assert "smplx loaded: False" in res.stdout
    error_px = float(res.stdout.split("fit error px")[1].split()[0])
    assert error_px < 6.0, res.stdout

# Quality floors of the demo run below (3 frames at 3 fps, 128-px crops, 48^3 surfaces, the fast preset's avatar with
# 150/250 instead of 300/500 steps): Chamfer (cm) to the clip's true clothed meshes after a per-frame similarity
# alignment (see demo_chamfers). History (all measured, deterministic on CPU):
# - 2026-12-03, implicit surface: reconstructions 4.99 / 3.73 / 3.20, avatar 5.15 / 3.56 / 2.79 (100/150 avatar
#   steps put the avatar's mean 0.74 cm above the frames', failing the last floor; 20/20 steps give 12-13 cm);
# - integrated surface + 3D-landmark fit: reconstructions 2.16 / 2.67 / 4.30, avatar 2.13 / 2.78 / 4.23 (+0.002);
# - fourth session: the fit's twist limits / limb hypotheses (2.36 / 2.85 / 4.61), then the surface's rejoined
#   small regions, silhouette hull, rounded sides and smoothing: reconstructions 2.50 / 3.00 / 5.16 (these surface
#   changes lower Chamfer on the independent validation set, 4.13 -> 3.87 cm on 15 subjects, but cost 0.55 cm on
#   this tiny third frame: with them off it is 4.62); the avatar with whole-batch pose alignment in its refinement
#   2.68 / 2.65 / 3.63, mean 0.57 cm below the frames' mean.
# Bounds: every reconstruction below 5.6 cm and every avatar frame below 4.5 cm (margins 0.44 / 0.87); the avatar's
# mean strictly below the frames' mean (issue 19), margin 0.57 cm.
DEMO_FLOORS = {
    "max_frame_reconstruction_chamfer_cm": Floor(5.6, measured=5.16),
    "max_frame_avatar_chamfer_cm": Floor(4.5, measured=3.63),
    "avatar_minus_frames_mean_cm": Floor(0.0, measured=-0.571),
}


@pytest.mark.slow
def test_demo_clip_end_to_end(prefect_server, tmp_path, monkeypatch):
    from flows.config import load_config

    monkeypatch.setitem(sys.modules, "smplx", None)  # the default path must not import smplx (optional extra)

    cfg = load_config(
        "fast",
        {
            "frames": {"fps": 3.0, "max_frames": 3},
            "person": {"crop_size": 128, "detect_size": 384},
            "fit": {"orient_iters": 20, "pose_iters": 40, "silhouette_iters": 5},
            "reconstruct": {"resolution": 48, "coarse_resolution": 16,
                            "refine": {"iterations": 4, "repredict_every": 2, "render_resolution": 64}},
            "avatar": {"skin_steps": 150, "sdf_steps": 250, "resolution": 64, "coarse_resolution": 17},
        },
    )  # fmt: skip
    result = pipeline.process_video(DEMO, tmp_path, cfg, batch_size=2)
    assert result.n_frames == 3 and result.n_done == 3, (result.message, open_run(result.store).reasons())
    store = open_run(result.store)
    assert (store.status() == FrameStatus.DONE).all()
    assert store.mesh_frames() == [0, 1, 2]
    refined = store.read_fit("refined")
    assert np.isfinite(refined.body_pose.numpy()).all()
    np.testing.assert_allclose(refined.betas.numpy(), store.read_fit("init").betas.numpy())  # β stays the video's
    loss = store.read_loss()
    assert np.isfinite(loss[:, 0]).all()
    normals = store.read_normals()
    assert np.abs(normals.front.astype(np.float32)).sum() > 0
    # the avatar stage ran and left its outputs
    assert result.avatar_error is None, result.avatar_error
    assert Path(result.avatar_dir, "avatar.safetensors").is_file()
    assert Path(result.avatar_video).is_file() and Path(result.avatar_gltf).is_file()
    assert len(store.read_avatar_mesh().faces) > 100
    # how close frames and avatar come to the clip's true clothed meshes
    rows = demo_chamfers(store, Path(result.avatar_dir))
    rec, av = np.array([r[0] for r in rows]), np.array([r[1] for r in rows])
    checks = FloorChecks("demo clip, 3 frames", f"Chamfer cm: reconstructions {rec.round(2)}, avatar {av.round(2)}")
    checks.check("max_frame_reconstruction_chamfer_cm", rec.max(), DEMO_FLOORS["max_frame_reconstruction_chamfer_cm"])
    checks.check("max_frame_avatar_chamfer_cm", av.max(), DEMO_FLOORS["max_frame_avatar_chamfer_cm"])
    checks.check("avatar_minus_frames_mean_cm", av.mean() - rec.mean(), DEMO_FLOORS["avatar_minus_frames_mean_cm"])
    checks.assert_all()


def demo_chamfers(store, avatar_dir: Path, grid: int = 96, samples: int = 5000) -> list[tuple[float, float]]:
    """(reconstruction, avatar) Chamfer (cm) to the true clothed mesh for each stored frame with a mesh.

    The truth is regenerated from flows/demo/demo_truth.npz (``icon.synth.sequence.clothed_mesh`` at ``grid``). Frames
    and avatar live in the crop's weak-perspective space, the truth in the clip's perspective camera: per frame one
    similarity (Umeyama) maps the refined fitted body onto the true body and is applied to both meshes. The avatar is
    posed (``repose_fast``) in the pose it holds for that frame.
    """
    import json

    import torch

    from avatar.model import load_avatar
    from avatar.repose import repose_fast
    from body import BodyModel, Motion
    from geometry.alignment import umeyama
    from geometry.metrics import reconstruction_metrics
    from icon.synth.poses import BodyParams
    from icon.synth.sample import body_vertices
    from icon.synth.sequence import clothed_mesh, make_person

    truth = np.load(demo_truth_path())
    model = BodyModel()
    person = make_person(model, int(truth["outfit_seed"]), betas=truth["betas"].astype(np.float32))
    frames = store.mesh_frames()
    fit = store.read_fit("refined", frames)
    names = ("global_orient", "body_pose", "transl")
    with torch.no_grad():
        fitted = model(betas=fit.betas, **{n: getattr(fit, n) for n in names}).vertices.double().numpy()
    avatar = load_avatar(avatar_dir, "cpu")
    order = json.loads((avatar_dir / "training.json").read_text())["frames"]
    held = {n: getattr(avatar.frame_poses, n)[[order.index(t) for t in frames]].detach().cpu() for n in names}
    posed = repose_fast(avatar, Motion(fps=float(store.attrs.fps), **{n: v.numpy() for n, v in held.items()})).cpu()
    rows = []
    for k, t in enumerate(frames):
        i = int(store.attrs.frame_indices[t])
        params = BodyParams(np.asarray(person.betas, np.float32).reshape(1, -1), truth["global_orient"][i : i + 1],
                            truth["body_pose"][i : i + 1], truth["transl"][i : i + 1])  # fmt: skip
        gt_v, gt_f = (torch.as_tensor(a) for a in clothed_mesh(model, person, params, grid))
        sim = umeyama(fitted[k], body_vertices(model, params)[0].double().numpy())
        mesh = store.read_mesh(t)
        chamfer = []
        for v, f in ((mesh.vertices, mesh.faces), (posed[k].numpy(), avatar.faces.cpu().numpy())):
            v = torch.as_tensor(sim.apply(v), dtype=torch.float32)
            m = reconstruction_metrics(v, torch.as_tensor(np.asarray(f)).long(), gt_v, gt_f.long(), n_samples=samples)
            chamfer.append(float(m.chamfer))
        rows.append((chamfer[0], chamfer[1]))
    return rows
