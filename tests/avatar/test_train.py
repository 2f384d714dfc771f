"""Avatar training: skinning nets learn the body's weights; the SDF gives a closed canonical mesh that reposes onto
the training meshes; visibility weights; checkpoints and resume."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import trimesh

from avatar.config import AvatarConfig
from avatar.model import build_networks
from avatar.train import sample_training_frames, train_avatar, vertex_visibility
from body import Motion
from geometry.metrics import chamfer_distance
from icon.synth.sequence import turn_and_wave_motion


def _naked_sequence(model, n=4):
    fits = turn_and_wave_motion(n)
    with torch.no_grad():
        verts = model(global_orient=torch.as_tensor(fits.global_orient),
                      body_pose=torch.as_tensor(fits.body_pose)).vertices  # fmt: skip
    return [(v, model.faces) for v in verts], fits


def _weight_error(forward_net, avatar_like_norm, points, target) -> float:
    with torch.no_grad():
        w = forward_net(avatar_like_norm(points[None]))[0]
    return float((w - target).abs().sum(-1).mean())


def test_skinning_nets_learn_body_weights(body_model):
    frames, fits = _naked_sequence(body_model)
    config = AvatarConfig.fast(samples_per_frame=2000, points_per_frame=256, skin_steps=150, sdf_steps=0,
                               resolution=24, coarse_resolution=None or 9)  # fmt: skip
    avatar = train_avatar(body_model, frames, fits, config)
    from avatar.lbs import canonical_body_pose

    canon = body_model(body_pose=canonical_body_pose()).vertices[0]
    target = body_model.lbs_weights
    _, untrained, _ = build_networks(config, len(frames))
    before = _weight_error(untrained, avatar.normalise, canon, target)
    after = _weight_error(avatar.forward_net, avatar.normalise, canon, target)
    assert after < 0.35 < before  # L1 over 24 weights, in [0, 2]
    curve = avatar.history["skinning/body"]
    assert curve[-1] < 0.5 * curve[0]


def test_canonical_mesh_is_watertight_single_component(trained):
    av = trained.avatar
    mesh = trimesh.Trimesh(av.vertices.numpy(), av.faces.numpy(), process=False)
    assert mesh.is_watertight
    assert mesh.body_count == 1
    assert mesh.volume > 0.03  # m^3, a person (outward faces)
    torch.testing.assert_close(av.skin_weights.sum(-1), torch.ones(len(av.vertices)))
    # the canonical mesh stands in the Da-pose: the feet are apart
    low = av.vertices[av.vertices[:, 1] < av.vertices[:, 1].min() + 0.1]
    assert low[:, 0].max() - low[:, 0].min() > 0.6


def test_repose_fast_matches_training_meshes(body_model, trained):
    from avatar.repose import repose_fast

    seq, av = trained.sequence, trained.avatar
    motion = Motion.from_params(seq.fits, fps=10)
    posed = repose_fast(av, motion)
    assert posed.shape == (len(seq.frames), len(av.vertices), 3)
    with torch.no_grad():
        body = body_model(**seq.fits.as_dict()).vertices
    ours, naked = [], []
    for i, (v, f) in enumerate(seq.frames):
        ours.append(float(chamfer_distance(posed[i], av.faces, v, f, n_samples=3000)))
        naked.append(float(chamfer_distance(body[i], body_model.faces, v, f, n_samples=3000)))
    ours, naked = np.array(ours), np.array(naked)  # cm
    # Tiny training (seconds); bench/avatar_training.py measures the fast preset (~0.2 cm on 8 frames).
    assert ours.max() < 1.6, f"avatar Chamfer {ours} cm (naked body {naked})"
    assert ours.mean() < 0.6 * naked.mean(), f"avatar Chamfer {ours} cm (naked body {naked})"


def test_repose_full_gives_a_surface_near_the_frame(trained):
    from avatar.repose import repose_full

    seq, av = trained.sequence, trained.avatar
    pose = np.concatenate([seq.fits.global_orient[1], seq.fits.body_pose[1]])
    verts, faces = repose_full(av, pose, seq.fits.transl[1], resolution=48)
    assert float(chamfer_distance(verts, faces, *seq.frames[1], n_samples=3000)) < 1.5
    with pytest.raises(ValueError, match="72"):
        repose_full(av, np.zeros(69))


def test_visibility_weights_back_less(body_model, clothed_sequence):
    v, f = clothed_sequence.frames[0]
    vis = vertex_visibility(v, f, clothed_sequence.camera)
    assert 0.2 < float(vis.mean()) < 0.8
    # frame 0 faces the camera (+Z): visible points are in front
    assert v[vis > 0.5, 2].mean() > v[vis < 0.5, 2].mean()
    s = sample_training_frames(body_model, clothed_sequence.frames[:1], _slice_fits(clothed_sequence.fits, 1), 2000,
                               frame_weights=torch.tensor([0.5]), point_confidence=[vis], visibility_floor=0.1)
    assert torch.isclose(s.confidence.max(), torch.tensor(0.5))
    assert torch.isclose(s.confidence.min(), torch.tensor(0.05))


def _slice_fits(fits, n):
    return fits[:n]


def test_checkpoint_and_resume(body_model, tmp_path):
    frames, fits = _naked_sequence(body_model, 2)
    config = AvatarConfig.fast(samples_per_frame=1000, points_per_frame=128, body_points_per_frame=64,
                               skin_steps=20, sdf_steps=20, checkpoint_every=10, resolution=24,
                               coarse_resolution=9)  # fmt: skip
    first = train_avatar(body_model, frames, fits, config, checkpoint_dir=tmp_path)
    assert (tmp_path / "checkpoint.safetensors").is_file()
    assert first.history["sdf/step"][-1] == 20
    stages = []
    resumed = train_avatar(body_model, frames, fits, config, checkpoint_dir=tmp_path,
                           progress=lambda stage, step, total, losses: stages.append((stage, step)))  # fmt: skip
    assert all(stage == "extract" for stage, _ in stages)  # both stages were already complete
    torch.testing.assert_close(resumed.vertices, first.vertices)


def test_train_input_errors(body_model):
    frames, fits = _naked_sequence(body_model, 2)
    with pytest.raises(ValueError, match="at least one frame"):
        train_avatar(body_model, [], fits)
    bad = {**fits.as_dict(), "global_orient": fits.global_orient[:1]}
    with pytest.raises(ValueError, match="global_orient"):
        train_avatar(body_model, frames, bad, AvatarConfig.fast())
