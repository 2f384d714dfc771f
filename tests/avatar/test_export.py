"""Exports: posed mesh files, the rigged animated glTF (read back and re-skinned), avatar save/load."""

from __future__ import annotations

import numpy as np
import pygltflib
import pytest
import torch
import trimesh

from avatar.export import MATERIAL_COLOUR, save_gltf, save_mesh, save_mesh_glb, save_posed_meshes, top_k_weights
from avatar.model import load_avatar, save_avatar
from avatar.repose import repose_fast
from body import Motion
from body.lbs import skin_points
from tests.gltf_validator import assert_valid_glb

_COMPONENTS = {pygltflib.FLOAT: np.float32, pygltflib.UNSIGNED_SHORT: np.uint16, pygltflib.UNSIGNED_INT: np.uint32,
               pygltflib.UNSIGNED_BYTE: np.uint8}  # fmt: skip
_WIDTH = {"SCALAR": 1, "VEC3": 3, "VEC4": 4, "MAT4": 16}


def _accessor(gltf: pygltflib.GLTF2, index: int) -> np.ndarray:
    acc = gltf.accessors[index]
    view = gltf.bufferViews[acc.bufferView]
    blob = gltf.binary_blob()
    dtype = _COMPONENTS[acc.componentType]
    width = _WIDTH[acc.type]
    start = view.byteOffset + (acc.byteOffset or 0)
    data = np.frombuffer(blob, dtype=dtype, count=acc.count * width, offset=start)
    return data.reshape(acc.count, width) if width > 1 else data


def _quat_to_matrix(q: np.ndarray) -> np.ndarray:
    x, y, z, w = q / np.linalg.norm(q)
    return np.array([[1 - 2 * (y * y + z * z), 2 * (x * y - w * z), 2 * (x * z + w * y)],
                     [2 * (x * y + w * z), 1 - 2 * (x * x + z * z), 2 * (y * z - w * x)],
                     [2 * (x * z - w * y), 2 * (y * z + w * x), 1 - 2 * (x * x + y * y)]])  # fmt: skip


def _wave(n: int = 5) -> Motion:
    t = np.linspace(0, 1, n, dtype=np.float32)
    bp = np.zeros((n, 69), np.float32)
    bp[:, 16 * 3 + 2] = 1.0 * np.sin(2 * np.pi * t)  # right shoulder (joint 17)
    bp[:, 18 * 3 + 1] = 0.8 * t  # right elbow (joint 19)
    go = np.zeros((n, 3), np.float32)
    go[:, 1] = 0.5 * t
    tr = np.stack([0.1 * t, np.zeros(n), -0.2 * t], -1).astype(np.float32)
    return Motion(fps=10.0, global_orient=go, body_pose=bp, transl=tr)


def test_gltf_round_trip_reproduces_skinning(trained, tmp_path):
    av = trained.avatar
    motion = _wave()
    path = save_gltf(tmp_path / "avatar.glb", av, motion, animation_name="wave")
    gltf = pygltflib.GLTF2().load(str(path))
    assert gltf.animations[0].name == "wave"
    assert {s.interpolation for s in gltf.animations[0].samplers} == {"LINEAR"}  # the string, not 9729
    frames = {"frame_start": 0, "frame_end": motion.num_frames - 1, "fps": motion.fps}
    assert gltf.animations[0].extras == frames and gltf.scenes[0].extras == {**frames, "animation": "wave"}
    assert len(gltf.skins) == 1 and len(gltf.skins[0].joints) == 24
    prim = gltf.meshes[0].primitives[0]
    pos = _accessor(gltf, prim.attributes.POSITION)
    joints = _accessor(gltf, prim.attributes.JOINTS_0).astype(np.int64)
    weights = _accessor(gltf, prim.attributes.WEIGHTS_0)
    assert pos.shape == (len(av.vertices), 3)
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-5)
    assert joints.max() < 24
    anim = gltf.animations[0]
    paths = {(c.target.node, c.target.path) for c in anim.channels}
    assert {(j, "rotation") for j in range(24)} <= paths and (0, "translation") in paths
    assert len(_accessor(gltf, anim.samplers[0].input)) == motion.num_frames

    # Re-skin frame k from the file alone (node TRS at key k, inverse bind matrices) and compare with repose_fast.
    k = 3
    ibm = _accessor(gltf, gltf.skins[0].inverseBindMatrices).reshape(24, 4, 4).transpose(0, 2, 1)
    local = {}
    for j, node in enumerate(gltf.nodes[:24]):
        local[j] = (np.array(node.translation, np.float64), np.array(node.rotation, np.float64))
    for ch in anim.channels:
        value = _accessor(gltf, anim.samplers[ch.sampler].output)[k]
        t, r = local[ch.target.node]
        local[ch.target.node] = (value, r) if ch.target.path == "translation" else (t, value)
    parents = {c: j for j, n in enumerate(gltf.nodes[:24]) for c in (n.children or [])}
    glob = np.zeros((24, 4, 4))
    for j in range(24):  # SMPL order lists parents first
        m = np.eye(4)
        m[:3, :3] = _quat_to_matrix(local[j][1])
        m[:3, 3] = local[j][0]
        glob[j] = glob[parents[j]] @ m if j in parents else m
    joint_mats = torch.as_tensor(glob @ ibm, dtype=torch.float32)[None]
    w_dense = torch.zeros(len(pos), 24).scatter_(1, torch.from_numpy(joints.copy()), torch.from_numpy(weights.copy()))
    from_file = skin_points(torch.from_numpy(pos.copy())[None], w_dense[None], joint_mats)[0]
    frame_k = Motion(fps=10.0, global_orient=motion.global_orient[k : k + 1], body_pose=motion.body_pose[k : k + 1],
                     transl=motion.transl[k : k + 1])  # fmt: skip
    j4, w4 = top_k_weights(av.skin_weights, 4)
    av4 = type(av)(**{**av.__dict__, "skin_weights": torch.zeros_like(av.skin_weights).scatter_(1, j4, w4)})
    expected = repose_fast(av4, frame_k)[0]
    torch.testing.assert_close(from_file, expected, atol=2e-4, rtol=0)
    # top-4 weights barely change the fast repose
    assert (repose_fast(av, frame_k)[0] - expected).norm(dim=-1).mean() < 0.005

    scene = trimesh.load(path)
    assert sum(len(g.vertices) for g in scene.geometry.values()) == len(av.vertices)


def test_gltf_without_motion(trained, tmp_path):
    gltf = pygltflib.GLTF2().load(str(save_gltf(tmp_path / "rest.glb", trained.avatar)))
    assert not gltf.animations
    assert gltf.skins[0].inverseBindMatrices is not None
    assert gltf.materials[0].pbrMetallicRoughness.baseColorFactor == list(MATERIAL_COLOUR)


def test_every_glb_passes_the_khronos_validator(trained, tmp_path):
    """All glb writers (rigged with and without motion, with colours; static meshes) validate with 0 errors and 0
    warnings; the validator also sees the animation, the skin and the vertex colours it was given."""
    av = trained.avatar
    colours = np.linspace(0, 1, len(av.vertices) * 3, dtype=np.float32).reshape(-1, 3)
    paths = [save_gltf(tmp_path / "rigged.glb", av, _wave(), animation_name="wave"),
             save_gltf(tmp_path / "rest.glb", av),
             save_gltf(tmp_path / "coloured.glb", av, _wave(3), vertex_colors=colours),
             save_mesh_glb(tmp_path / "mesh.glb", av.vertices, av.faces),
             save_mesh(tmp_path / "mesh_coloured.glb", av.vertices, av.faces, vertex_colors=colours),
             *save_posed_meshes(tmp_path / "posed", repose_fast(av, _wave(2)), av.faces, fmt="glb")]  # fmt: skip
    reports = assert_valid_glb(*paths)
    info = reports[str(paths[0])]["info"]
    assert info["animationCount"] == 1 and info["hasSkins"] and info["materialCount"] == 1
    assert info["totalVertexCount"] == len(av.vertices)
    assert reports[str(paths[2])]["info"]["maxAttributes"] == 5  # POSITION, NORMAL, JOINTS_0, WEIGHTS_0, COLOR_0
    gltf = pygltflib.GLTF2().load(str(paths[4]))
    stored = _accessor(gltf, gltf.meshes[0].primitives[0].attributes.COLOR_0)
    np.testing.assert_array_equal(stored[:, :3], np.round(colours * 255).astype(np.uint8))
    assert gltf.accessors[gltf.meshes[0].primitives[0].attributes.COLOR_0].normalized


def test_ply_carries_vertex_colours(trained, tmp_path):
    av = trained.avatar
    colours = np.zeros((len(av.vertices), 3), np.uint8)
    colours[:, 0] = 200
    mesh = trimesh.load(save_mesh(tmp_path / "c.ply", av.vertices, av.faces, vertex_colors=colours), process=False)
    np.testing.assert_array_equal(mesh.visual.vertex_colors[:, :3], colours)
    with pytest.raises(ValueError, match="vertex_colors"):
        save_mesh(tmp_path / "bad.ply", av.vertices, av.faces, vertex_colors=colours[:5])


def test_save_posed_meshes(trained, tmp_path):
    av = trained.avatar
    verts = repose_fast(av, _wave(2))
    paths = save_posed_meshes(tmp_path / "ply", verts, av.faces)
    assert [p.name for p in paths] == ["frame_000000.ply", "frame_000001.ply"]
    mesh = trimesh.load(paths[1], process=False)
    np.testing.assert_allclose(mesh.vertices, verts[1].numpy(), atol=1e-5)
    objs = save_posed_meshes(tmp_path / "obj", verts, av.faces, fmt="obj")
    assert len(trimesh.load(objs[0], process=False).faces) == len(av.faces)
    with pytest.raises(ValueError, match="fmt"):
        save_posed_meshes(tmp_path, verts, av.faces, fmt="fbx")


def test_top_k_weights():
    w = torch.softmax(torch.randn(10, 24), -1)
    j, wk = top_k_weights(w, 4)
    assert j.shape == wk.shape == (10, 4)
    torch.testing.assert_close(wk.sum(-1), torch.ones(10))
    assert (wk[:, :-1] >= wk[:, 1:]).all()


def test_save_load_round_trip(trained, tmp_path):
    av = trained.avatar
    save_avatar(av, tmp_path / "av")
    assert not list((tmp_path / "av").glob("*.pt")) and not list((tmp_path / "av").glob("*.pkl"))
    back = load_avatar(tmp_path / "av", device="cpu")
    for name in ("vertices", "faces", "skin_weights", "betas", "rest_joints", "canonical_pose", "bounds"):
        torch.testing.assert_close(getattr(back, name), getattr(av, name))
    assert back.config == av.config and back.scale == av.scale
    assert back.history.keys() == av.history.keys()
    pts = av.vertices[None, :500]
    feats = av.reference_features[None]
    with torch.no_grad():
        torch.testing.assert_close(back.canonical_sdf(pts, feats), av.canonical_sdf(pts, feats))
        torch.testing.assert_close(back.canonical_weights(pts), av.canonical_weights(pts))
    motion = _wave(3)
    torch.testing.assert_close(repose_fast(back, motion), repose_fast(av, motion))
    with pytest.raises(ValueError, match="not an avatar"):
        load_avatar(tmp_path / "missing")
