"""Blender as the client of the rigged glTF (flows/blender.py): import headless, bones, weights, action and frame
range, skinning equal to ``repose_fast``, a Workbench render, FBX export and re-import. Runs when ``bpy`` imports
(``pip install 'avatarize[blender]'``), skipped otherwise."""

from __future__ import annotations

import numpy as np
import pytest

from flows import blender
from tests.flows.body_run import make_body_avatar, wave_motion

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not blender.bpy_available(),
                                 reason="Blender's Python module is not installed (pip install 'avatarize[blender]')")]


@pytest.fixture(scope="module")
def body_avatar():
    return make_body_avatar()


def test_blender_imports_poses_renders_and_exports_fbx(body_avatar, tmp_path):
    from scipy.spatial import cKDTree

    from avatar.export import save_gltf, top_k_avatar
    from avatar.repose import repose_fast
    from body import Motion
    from flows.previews import read_png

    motion = wave_motion(12)
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

    glb = save_gltf(tmp_path / "a.glb", body_avatar, wave_motion(5), animation_name="m")
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
