"""The whole per-video pipeline on the demo clip: frames → fit → ICON reconstruction → avatar → re-posed preview."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from flows import pipeline
from flows.bundled import demo_clip_path
from flows.store import FrameStatus, open_run

DEMO = demo_clip_path()


@pytest.mark.slow
def test_demo_clip_end_to_end(prefect_server, tmp_path):
    from flows.config import load_config

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
