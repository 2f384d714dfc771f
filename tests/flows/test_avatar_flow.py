"""Tests for the avatar flows (flows/avatar_flow.py): training from a hand-built run store of a synthetic clothed
sequence, resume, re-posing into PLY / MP4 / glTF, artifacts, the CLI commands and their errors."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch

from avatar.config import AvatarConfig
from flows.avatar_data import QUALITY_FLOOR
from flows.avatar_flow import (
    DEFAULT_MOTION,
    _prepare_checkpoints,
    avatar_dir_for,
    frame_quality_weights,
    load_training_data,
    repose,
    train_avatar_flow,
    train_avatar_from_store,
)
from flows.config import preset_avatar_config
from flows.store import FrameStatus, RunAttrs, create_run, open_run

CROP = 64
N_FRAMES = 4
REFINE_ITERS = 5
TINY = dict(samples_per_frame=1000, points_per_frame=128, body_points_per_frame=64, skin_steps=20, sdf_steps=20,
            checkpoint_every=10, skin_width=32, sdf_width=32, resolution=24, coarse_resolution=9)  # fmt: skip


def build_store(path: Path, n_done: int = N_FRAMES, refined_missing: tuple[int, ...] = (),
                frames: bool = False) -> Path:  # fmt: skip
    """A run store of a synthetic clothed person turning and waving: T = n_done + 1 frames (the last one FAILED,
    without a mesh). Meshes are in the space of the orthographic crop camera written with each fit. ``frames``: also
    the rendered crops and masks (the avatar is then refined and coloured)."""
    from body import BodyModel
    from geometry.cameras import OrthographicCamera
    from icon.synth.appearance import Lighting
    from icon.synth.sequence import make_background, make_person, render_frame, turn_and_wave_motion

    model = BodyModel()
    person = make_person(model, 7)
    scale = CROP / 2.3  # px per metre: a ~1.8 m person fills most of the crop
    camera = OrthographicCamera(scale=torch.tensor([scale]), cx=torch.tensor([CROP / 2]), cy=torch.tensor([CROP / 2]),
                                width=CROP, height=CROP)  # fmt: skip
    background = make_background(7, CROP, CROP)
    light = Lighting(direction=np.array([0.0, 0.0, 1.0]), ambient=0.3, intensity=1.0)
    t_total = n_done + 1
    attrs = RunAttrs(source_path="synthetic.mp4", source_sha256="0" * 64, fps=10.0, frame_indices=list(range(t_total)),
                     body_model_id="anny-smpl-v1", config={}, code_version="test")  # fmt: skip
    store = create_run(path, n_frames=t_total, image_size=CROP, attrs=attrs, refine_iters=REFINE_ITERS)
    cam = np.array([[scale, CROP / 2, CROP / 2]], np.float32)
    motion = turn_and_wave_motion(n_done, turns=0.75, transl=(0.0, 0.2, 0.0))  # transl centres the person
    for t in range(n_done):
        params = motion[t]
        frame = render_frame(model, person, params, camera, background, light, grid_resolution=64)
        store.write_mesh(t, frame.vertices, frame.faces)
        if frames:
            store.write_frames([t], frame.rgb[None], frame.mask[None], np.array([[CROP / 2, CROP / 2, CROP]]),
                               np.zeros((1, 33, 3)), np.array([t / 10.0]))  # fmt: skip
        fit = dict(params.replace(betas=person.betas[None]).as_dict(), camera=cam)
        store.write_fit("init", [t], **fit)
        if t not in refined_missing:
            store.write_fit("refined", [t], **fit)
            store.write_loss([t], np.linspace(1.0, 0.5 + 0.25 * t, REFINE_ITERS)[None])
        store.set_status([t], FrameStatus.DONE)
    store.set_status([n_done], FrameStatus.FAILED, "no person")
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory) -> Path:
    return build_store(tmp_path_factory.mktemp("avatar") / "clip.zarr", refined_missing=(1,))


@pytest.fixture(scope="module")
def tiny_avatar_config() -> AvatarConfig:
    return preset_avatar_config("fast", **TINY)


@pytest.fixture(scope="module")
def avatar_dir(store_path, tiny_avatar_config) -> Path:
    return train_avatar_from_store.fn(store_path, tiny_avatar_config)


# ------------------------------------------------------------------------------------------------ training inputs
def test_frame_quality_weights():
    nan = np.nan
    losses = np.array([[2.0, 1.0, nan], [3.0, 2.0, 1.0], [4.0, 3.0, 2.0], [nan, nan, nan], [9.0, 8.0, 9.0]])
    w, last = frame_quality_weights(losses)
    np.testing.assert_allclose(last[[0, 1, 2, 4]], [1.0, 1.0, 2.0, 9.0])
    assert np.isnan(last[3])
    med = 1.5  # median of 1, 1, 2, 9
    np.testing.assert_allclose(w[[0, 1, 2]], [1.0, 1.0, np.exp(-(2.0 / med - 1.0))], rtol=1e-6)
    assert w[4] == pytest.approx(QUALITY_FLOOR)  # 6x the median: clipped to the floor
    assert w[3] == pytest.approx(float(np.median(w[[0, 1, 2, 4]])))  # no loss: the others' median weight
    assert (frame_quality_weights(np.full((2, 3), nan))[0] == 1.0).all()
    with pytest.raises(ValueError, match="T, iters"):
        frame_quality_weights(np.ones(3))


def test_load_training_data_falls_back_to_init_fits(store_path):
    data = load_training_data(open_run(store_path))
    assert data.frames == list(range(N_FRAMES))  # the FAILED frame without a mesh is left out
    assert data.fit_stage == ["refined", "init", "refined", "refined"]
    assert data.image_size == CROP and data.cameras.shape == (N_FRAMES, 3)
    assert torch.isfinite(data.fits.body_pose).all() and data.fits.body_pose.shape == (N_FRAMES, 69)
    w = data.frame_weights.numpy()
    # final losses 0.5, -, 1.0, 1.25: median 1.0; above the median, weight exp(-(l / median - 1))
    np.testing.assert_allclose(w[[0, 2, 3]], [1.0, 1.0, np.exp(-0.25)], rtol=1e-6)
    assert w[1] == pytest.approx(float(np.median(w[[0, 2, 3]])))
    # meshes project into the crop through their cameras
    v = data.meshes[0][0]
    u = data.cameras[0, 1] + data.cameras[0, 0] * v[:, 0]
    row = data.cameras[0, 2] - data.cameras[0, 0] * v[:, 1]
    assert 0 < float(u.min()) and float(u.max()) < CROP and 0 < float(row.min()) and float(row.max()) < CROP
    # no timestamps in this store: frame times are the source frame indices over the fps
    np.testing.assert_allclose(data.times, np.arange(N_FRAMES) / 10.0)


def test_too_few_frames_is_a_clear_error(tmp_path, tiny_avatar_config):
    path = build_store(tmp_path / "short.zarr", n_done=1)
    with pytest.raises(ValueError, match="at least 2 reconstructed frames, but only 1"):
        train_avatar_from_store.fn(path, tiny_avatar_config)
    with pytest.raises(ValueError, match="at least 3"):
        load_training_data(open_run(build_store(tmp_path / "two.zarr", n_done=2)), min_frames=3)


# ------------------------------------------------------------------------------------------------------ training
def test_train_writes_avatar_and_store(store_path, avatar_dir):
    from avatar.model import load_avatar

    assert avatar_dir == avatar_dir_for(store_path) == store_path.parent / "clip.avatar"
    for name in ("avatar.json", "avatar.safetensors", "training.json", "checkpoints/checkpoint.safetensors",
                 "checkpoints/inputs.json"):  # fmt: skip
        assert (avatar_dir / name).is_file(), name
    av = load_avatar(avatar_dir)
    info = json.loads((avatar_dir / "training.json").read_text())
    assert info["frames"] == list(range(N_FRAMES)) and info["canonical_vertices"] == len(av.vertices)
    # the poses the avatar holds per training frame: the fits smoothed over pose_smoothing_s, recorded with the change
    data = load_training_data(open_run(store_path))
    torch.testing.assert_close(av.fitted_poses.body_pose, data.fits.body_pose.float())
    assert len(av.frame_poses) == N_FRAMES and info["frame_times"] == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert info["pose_smoothing_s"] == preset_avatar_config("fast").pose_smoothing_s > 0
    joint_deg = info["pose_change"]["joint_deg"]
    assert len(joint_deg) == N_FRAMES and 0 < max(joint_deg) < 30
    store = open_run(store_path)
    mesh = store.read_avatar_mesh()
    np.testing.assert_allclose(np.asarray(mesh.vertices), av.vertices.numpy(), atol=1e-6)
    curves = store.read_avatar_curves()
    assert {"skinning.total", "skinning.step", "sdf.total", "sdf.step"} <= set(curves)
    assert curves["sdf.step"][-1] == TINY["sdf_steps"]


def test_rerun_resumes_from_checkpoint(store_path, avatar_dir, tiny_avatar_config, caplog):
    from avatar.model import load_avatar

    before = load_avatar(avatar_dir)
    with caplog.at_level(logging.INFO):
        again = train_avatar_from_store.fn(store_path, tiny_avatar_config)
    assert again == avatar_dir
    assert any("resuming from" in r.getMessage() and f"step {TINY['sdf_steps']}" in r.getMessage()
               for r in caplog.records)  # fmt: skip
    after = load_avatar(avatar_dir)
    torch.testing.assert_close(after.vertices, before.vertices)
    assert after.history == before.history and after.history["sdf/step"][-1] == TINY["sdf_steps"]
    curves = open_run(store_path).read_avatar_curves()
    np.testing.assert_allclose(curves["skinning.total"], before.history["skinning/total"])


def test_resumed_history_keeps_curves_up_to_the_checkpoint(tmp_path):
    from flows.avatar_flow import _resumable_history

    ckpt = tmp_path / "checkpoints"
    ckpt.mkdir()
    history = {"skinning/total": [3.0, 2.0], "skinning/step": [25.0, 50.0], "sdf/total": [5.0, 4.0, 3.0],
               "sdf/step": [25.0, 50.0, 75.0]}  # fmt: skip
    (ckpt / "history.json").write_text(json.dumps(history))
    assert _resumable_history(ckpt) == {}  # no checkpoint: nothing to resume
    (ckpt / "checkpoint.json").write_text(json.dumps({"stage": "sdf", "step": 50}))
    kept = _resumable_history(ckpt)
    assert kept["skinning/total"] == [3.0, 2.0] and kept["sdf/step"] == [25.0, 50.0] and kept["sdf/total"] == [5.0, 4.0]
    (ckpt / "checkpoint.json").write_text(json.dumps({"stage": "skinning", "step": 25}))
    assert _resumable_history(ckpt) == {"skinning/total": [3.0], "skinning/step": [25.0]}


def test_checkpoint_of_other_inputs_is_discarded(tmp_path):
    ckpt = tmp_path / "checkpoints"
    assert not _prepare_checkpoints(ckpt, {"config": 1})
    (ckpt / "checkpoint.json").write_text("{}")
    assert _prepare_checkpoints(ckpt, {"config": 1})  # same inputs: resume
    assert not _prepare_checkpoints(ckpt, {"config": 2})  # other inputs: start afresh
    assert not (ckpt / "checkpoint.json").exists()
    assert json.loads((ckpt / "inputs.json").read_text()) == {"config": 2}


# ------------------------------------------------------------------------------------------------------- repose
def _check_glb(path: Path, n_frames: int) -> None:
    import pygltflib

    from tests.gltf_validator import assert_valid_glb

    gltf = pygltflib.GLTF2().load(str(path))
    assert len(gltf.skins) == 1 and len(gltf.skins[0].joints) == 24
    assert len(gltf.animations) == 1
    assert gltf.animations[0].name == DEFAULT_MOTION.stem  # named after the motion file
    times = gltf.accessors[gltf.animations[0].samplers[0].input]
    assert times.count == n_frames
    assert_valid_glb(path)  # the Khronos validator: no error, no warning


def test_repose_fast_writes_meshes_video_and_gltf(avatar_dir, tmp_path):
    import trimesh

    from avatar.model import load_avatar
    from flows.video import read_frames

    result = repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "out", max_frames=5)
    assert result.n_frames == 5 and result.fps == 30.0 and result.quality == "fast"
    plys = sorted((tmp_path / "out" / "meshes").glob("*.ply"))
    assert plys == result.mesh_paths and len(plys) == 5
    mesh = trimesh.load(plys[0], process=False)
    assert len(mesh.vertices) == len(load_avatar(avatar_dir).vertices)
    video = read_frames(result.video_path)
    assert len(video) == 5 and video.images.shape[1:] == (512, 512, 3)
    assert video.images[0].max() > 200  # the body is lit
    _check_glb(result.gltf_path, 5)
    assert {"load", "repose", "meshes", "video", "gltf", "total"} <= set(result.seconds)
    # a shorter re-run into the same folder leaves no stale frames
    assert len(repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "out", max_frames=2).mesh_paths) == 2
    assert len(list((tmp_path / "out" / "meshes").glob("*.ply"))) == 2


def test_repose_full_and_resampled(avatar_dir, tmp_path):
    from flows.video import read_frames

    full = repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "full", quality="full", max_frames=2)
    assert len(full.mesh_paths) == 2 and len(read_frames(full.video_path)) == 2
    _check_glb(full.gltf_path, 2)
    slow = repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "slow", fps=5.0)  # the 3 s wave at 5 fps
    assert slow.fps == 5.0 and slow.n_frames == 16 and len(read_frames(slow.video_path)) == 16


def test_repose_errors(avatar_dir, tmp_path):
    with pytest.raises(ValueError, match="motion file not found"):
        repose.fn(avatar_dir, tmp_path / "nope.npz", tmp_path / "o")
    with pytest.raises(ValueError, match="quality must be 'fast' or 'full'"):
        repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "o", quality="best")
    with pytest.raises(ValueError, match="max_frames"):
        repose.fn(avatar_dir, DEFAULT_MOTION, tmp_path / "o", max_frames=0)
    with pytest.raises(ValueError, match="not an avatar directory"):
        repose.fn(tmp_path, DEFAULT_MOTION, tmp_path / "o")


# --------------------------------------------------------------------------------------------- flow, artifacts, CLI
def test_train_avatar_flow_with_preview_and_artifacts(prefect_server, tmp_path, tiny_avatar_config):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    from flows.video import read_frames

    path = build_store(tmp_path / "walk.zarr", n_done=2)
    result = train_avatar_flow(path, tiny_avatar_config, preview_frames=3)
    assert result.avatar_dir == tmp_path / "walk.avatar"
    assert result.curves_png is not None and result.curves_png.stat().st_size > 0
    assert result.preview is not None and len(result.preview.mesh_paths) == 3
    assert len(read_frames(result.preview.video_path)) == 3
    keys = ["walk-avatar-summary", "walk-avatar-wave-repose", "walk-avatar-wave-repose-timings"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_key = {a.key: a for a in arts}
    assert set(keys) <= set(by_key)
    summary = by_key["walk-avatar-summary"].data
    assert "Training curves" in summary and str(result.preview.video_path) in summary
    assert by_key["walk-avatar-wave-repose-timings"].type == "table"


def test_cli_repose_and_errors(prefect_server, avatar_dir, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    res = runner.invoke(app, ["repose", str(avatar_dir), str(DEFAULT_MOTION), "--out", str(tmp_path / "o"),
                              "--max-frames", "2", "--device", "cpu"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "avatar.glb" in res.output and len(list((tmp_path / "o" / "meshes").glob("*.ply"))) == 2
    res = runner.invoke(app, ["repose", str(avatar_dir), str(DEFAULT_MOTION), "--out", "o", "--quality", "best"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["repose", str(avatar_dir), str(tmp_path / "none.npz"), "--out", str(tmp_path / "p")])
    assert res.exit_code == 1 and "motion file not found" in res.output
    res = runner.invoke(app, ["avatar", str(tmp_path / "missing.zarr"), "--config", "fast", "--device", "cpu"])
    assert res.exit_code == 1 and "no such run store" in res.output
    for cmd in ("repose", "avatar"):
        assert runner.invoke(app, [cmd, "--help"]).exit_code == 0


def test_photometric_refinement_and_subdivided_colour(tmp_path, tiny_avatar_config):
    """With w_refine_photometric the colours are fused before the refinement (which then compares them with the frames)
    and again after it; colour_subdivisions = 1 splits the canonical mesh 1-to-4 before the final colour."""
    from avatar.model import load_avatar

    path = build_store(tmp_path / "clip.zarr", frames=True)
    config = tiny_avatar_config.model_copy(update={"w_refine_photometric": 1.0, "colour_subdivisions": 1,
                                                   "refine_iterations": 3, "refine_align_steps": 2})  # fmt: skip
    out = train_avatar_from_store.fn(path, config)
    av = load_avatar(out)
    n = len(av.faces)
    assert n % 4 == 0 and av.has_colour
    assert int(av.faces[: n // 4, 0].max()) < int(av.faces[3 * n // 4 :].min())  # old corners, then midpoint faces
    assert torch.allclose(av.skin_weights.sum(-1), torch.ones(len(av.vertices)), atol=1e-4)
    assert float(av.vertex_colours.std(0).min()) > 0.01  # coloured from the frames, not a flat fill
    info = json.loads((out / "training.json").read_text())
    assert info["canonical_faces"] == len(av.faces) and "refine" in info and "colour" in info
    assert len(open_run(path).read_avatar_mesh().faces) == len(av.faces)
