"""The whole per-video pipeline on the demo clip: frames → fit → ICON reconstruction → avatar → re-posed preview."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

from flows import pipeline
from flows.store import FrameStatus, open_run

ROOT = Path(__file__).resolve().parents[2]
DEMO = ROOT / "assets" / "demo.mp4"
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
            "avatar": {"samples_per_frame": 1000, "points_per_frame": 128, "body_points_per_frame": 64,
                       "skin_steps": 20, "sdf_steps": 20, "checkpoint_every": 10, "skin_width": 32, "sdf_width": 32,
                       "resolution": 24, "coarse_resolution": 9},
        },
    )  # fmt: skip
    result = pipeline.process_video(DEMO, tmp_path, cfg, batch_size=2)
    assert result.n_frames == 3 and result.n_done == 3, (result.message, open_run(result.store).reasons())
    store = open_run(result.store)
    assert (store.status() == FrameStatus.DONE).all()
    assert store.mesh_frames() == [0, 1, 2]
    mesh = store.read_mesh(0)
    assert len(mesh.faces) > 100
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
