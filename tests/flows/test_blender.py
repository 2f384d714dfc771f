"""Blender as the client of the rigged glTF (flows/blender.py): import headless, bones, weights, action and frame
range, skinning equal to ``repose_fast``, a Workbench render, FBX export and re-import. Runs when ``bpy`` imports
(``pip install 'avatarize[blender]'``), skipped otherwise."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from flows import blender

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not blender.bpy_available(),
                                 reason="Blender's Python module is not installed (pip install 'avatarize[blender]')")]


@pytest.fixture(scope="module")
def body_avatar():
    """An untrained avatar whose surface is the mean body in the Da-pose, skinned with the body's own weights: the
    export and Blender see exactly what a trained avatar gives them, at no training cost."""
    from avatar.config import AvatarConfig
    from avatar.lbs import canonical_body_pose
    from avatar.model import Avatar, build_networks
    from body import BodyModel

    model = BodyModel()
    config = AvatarConfig.fast()
    inverse, forward, sdf = build_networks(config, 1)
    pose = canonical_body_pose().reshape(69)
    with torch.no_grad():
        rest = model(body_pose=torch.zeros(1, 69))
        canon = model(body_pose=pose[None])
    verts = canon.vertices[0]
    lo, hi = verts.min(0).values, verts.max(0).values
    return Avatar(config=config, inverse_net=inverse, forward_net=forward, sdf_net=sdf,
                  betas=torch.zeros(model.num_betas), rest_joints=rest.joints[0], canonical_pose=pose,
                  center=(lo + hi) / 2, scale=float((hi - lo).max()), vertices=verts,
                  faces=torch.as_tensor(np.asarray(model.faces), dtype=torch.int64),
                  skin_weights=model.lbs_weights.float(), reference_features=torch.zeros(23, 6),
                  bounds=torch.stack([lo, hi]))  # fmt: skip


def _motion(n: int = 12):
    from body import Motion

    t = np.linspace(0, 1, n, dtype=np.float32)
    bp = np.zeros((n, 69), np.float32)
    bp[:, 16 * 3 + 2] = 1.2 * np.sin(np.pi * t)  # right shoulder raises and lowers the arm
    bp[:, 3 * 3 + 0] = 0.6 * t  # left knee bends
    go = np.zeros((n, 3), np.float32)
    go[:, 1] = 0.4 * t
    tr = np.stack([0.2 * t, np.zeros(n), np.zeros(n)], -1).astype(np.float32)
    return Motion(fps=25.0, global_orient=go, body_pose=bp, transl=tr)


def test_blender_imports_poses_renders_and_exports_fbx(body_avatar, tmp_path):
    from scipy.spatial import cKDTree

    from avatar.export import save_gltf, top_k_avatar
    from avatar.repose import repose_fast
    from body import Motion
    from flows.previews import read_png

    motion = _motion()
    glb = save_gltf(tmp_path / "avatar.glb", body_avatar, motion, name="body", animation_name="raise_arm")
    info = blender.import_glb(glb)
    assert info.n_bones == 24 and info.n_vertices == len(body_avatar.vertices)
    assert info.action == "raise_arm"
    assert info.action_range == (0.0, motion.num_frames - 1.0)  # key i on frame i: fps taken from the extras
    assert info.scene_range == (0, motion.num_frames - 1) and info.fps == pytest.approx(25.0)
    np.testing.assert_allclose(blender.vertex_weight_sums(), 1.0, atol=1e-5)

    rest = blender.rest_vertices()
    dist, index = cKDTree(body_avatar.vertices.numpy()).query(rest)
    assert dist.max() < 1e-5  # Blender's bind pose is the canonical mesh, in glTF's Y-up frame
    av4 = top_k_avatar(body_avatar, 4)
    k = 6
    one = Motion(fps=25.0, global_orient=motion.global_orient[k : k + 1], body_pose=motion.body_pose[k : k + 1],
                 transl=motion.transl[k : k + 1])  # fmt: skip
    posed = blender.skinned_vertices(k)
    assert np.linalg.norm(posed - rest, axis=-1).max() > 0.3  # posing moves the mesh (the arm swings up)
    np.testing.assert_allclose(posed, repose_fast(av4, one)[0].numpy()[index], atol=1e-5)

    png = read_png(blender.render_workbench(tmp_path / "frame.png", k, size=128))
    assert png.shape == (128, 128, 3)
    body = png.max(-1) > 40  # grey body on a black background
    assert 0.05 < body.mean() < 0.6
    rows, cols = np.nonzero(body)
    assert rows.max() - rows.min() > 0.7 * 128  # framed: the body fills most of the height

    fbx = blender.glb_to_fbx(glb, tmp_path / "avatar.fbx")
    back = blender.import_fbx(fbx)
    assert back.n_bones == 24 and back.n_vertices == len(body_avatar.vertices)
    assert back.action is not None and back.action.endswith("raise_arm")
    assert back.action_range[1] - back.action_range[0] == motion.num_frames - 1


def test_glb_extras_and_errors(body_avatar, tmp_path):
    from avatar.export import save_gltf

    glb = save_gltf(tmp_path / "a.glb", body_avatar, _motion(5), animation_name="m")
    assert blender.glb_extras(glb) == {"frame_start": 0, "frame_end": 4, "fps": 25.0, "animation": "m"}
    assert blender.glb_extras(save_gltf(tmp_path / "b.glb", body_avatar)) == {}
    (tmp_path / "x.glb").write_bytes(b"not a glb")
    with pytest.raises(ValueError, match="not a binary glTF"):
        blender.glb_extras(tmp_path / "x.glb")


def test_cli_repose_writes_fbx(body_avatar, tmp_path, monkeypatch, prefect_server):
    from typer.testing import CliRunner

    from avatar.model import save_avatar
    from flows.avatar_flow import DEFAULT_MOTION
    from flows.cli import app

    avatar_dir = save_avatar(body_avatar, tmp_path / "body.avatar")
    args = ["repose", str(avatar_dir), str(DEFAULT_MOTION), "--out", str(tmp_path / "o"), "--max-frames", "3", "--fbx",
            "--device", "cpu"]  # fmt: skip
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    back = blender.import_fbx(tmp_path / "o" / "avatar.fbx")
    assert back.n_bones == 24 and back.action.endswith(DEFAULT_MOTION.stem)
    monkeypatch.setattr(blender, "bpy_available", lambda: False)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 1 and "make blender" in res.output
