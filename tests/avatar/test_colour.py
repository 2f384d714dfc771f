"""Colour fusion against a sphere with known per-vertex colours rendered from several views (orthographic cameras)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from avatar.colour import diffuse_fill, edge_distance, fuse_vertex_colours, mesh_adjacency
from geometry.cameras import OrthographicCamera
from geometry.queries import interpolate_face_attributes
from geometry.render import render_mesh

SIZE = 96


def _sphere(subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=0.5)
    return torch.tensor(np.asarray(s.vertices), dtype=torch.float32), torch.tensor(np.asarray(s.faces))


def _truth(v: torch.Tensor) -> torch.Tensor:
    """A smooth colour field on the sphere: every side has its own colour."""
    return (0.5 + 0.8 * v * torch.tensor([0.9, 0.7, -0.8])).clamp(0.05, 0.95)


def _rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _views(v: torch.Tensor, f: torch.Tensor, colours: torch.Tensor, angles, gains=None):
    """The sphere turned about Y by each angle, rendered with its vertex colours; posed vertices, images, masks."""
    posed = torch.stack([v @ _rot_y(a).T for a in angles])
    cam = OrthographicCamera(scale=torch.tensor([SIZE / 1.2]), cx=torch.tensor([SIZE / 2]),
                             cy=torch.tensor([SIZE / 2]), width=SIZE, height=SIZE)  # fmt: skip
    r = render_mesh(posed, f, cam)
    img = interpolate_face_attributes(colours[None].expand(len(angles), -1, -1), f, r.face_index, r.barycentric)
    img = img * r.mask[..., None]
    if gains is not None:
        img = img * torch.as_tensor(gains, dtype=torch.float32)[:, None, None, :]
    return posed, cam, img.clamp(0, 1), r.mask


def test_colours_recovered_from_four_views():
    v, f = _sphere()
    truth = _truth(v)
    posed, cam, img, mask = _views(v, f, truth, [0.0, math.pi / 2, math.pi, 3 * math.pi / 2])
    out = fuse_vertex_colours(posed, f, cam, img, mask, gain_iterations=0)
    assert out.colours.shape == (v.shape[0], 3)
    assert out.seen.float().mean() > 0.95  # four views around Y see all but the poles' grazing caps
    err = (out.colours - truth).abs()
    assert float(err[out.seen].mean()) < 0.01
    assert float(err.max()) < 0.15  # the grazing polar caps are filled, not seen


def test_back_unseen_is_filled_from_the_border():
    v, f = _sphere()
    truth = torch.full_like(v, 0.3)
    truth[:, 1] = 0.6  # uniform colour: the filled back must equal it
    posed, cam, img, mask = _views(v, f, truth, [0.0])
    out = fuse_vertex_colours(posed, f, cam, img, mask)
    back = v[:, 2] < -0.2
    assert not bool(out.seen[back].any())
    assert torch.allclose(out.colours[back], truth[back], atol=0.02)


def test_per_frame_gain_removed():
    v, f = _sphere()
    truth = _truth(v)
    angles = [0.0, math.pi / 3, 2 * math.pi / 3, math.pi, 4 * math.pi / 3, 5 * math.pi / 3]
    gains = [[1.0, 1.0, 1.0], [0.6, 0.6, 0.6], [1.0, 0.8, 1.0], [1.0, 1.0, 1.0], [0.7, 0.7, 0.9], [1.0, 1.0, 1.0]]
    posed, cam, img, mask = _views(v, f, truth, angles, gains)
    plain = fuse_vertex_colours(posed, f, cam, img, mask, gain_iterations=0)
    fixed = fuse_vertex_colours(posed, f, cam, img, mask, gain_iterations=5)
    seen = fixed.seen

    def scaled_error(c: torch.Tensor) -> float:  # the overall exposure is free: compare up to one scale per channel
        s = (c[seen] * truth[seen]).sum(0) / (c[seen] ** 2).sum(0)
        return float((c[seen] * s - truth[seen]).abs().mean())

    assert scaled_error(fixed.colours) < 0.5 * scaled_error(plain.colours)
    assert scaled_error(fixed.colours) < 0.015
    ratio = fixed.gains[1] / fixed.gains[0]  # frame 1 was darkened by 0.6: its gain is ~1/0.6 of frame 0's
    assert torch.allclose(ratio, torch.full((3,), 1 / 0.6), rtol=0.05)


def _grid(n: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A regular n x n triangulated unit square in the z = 0 plane."""
    ij = torch.stack(torch.meshgrid(torch.arange(n), torch.arange(n), indexing="ij"), -1).reshape(-1, 2)
    v = torch.cat([ij.float() / (n - 1), torch.zeros(n * n, 1)], 1)
    a = (torch.arange(n - 1)[:, None] * n + torch.arange(n - 1)[None]).reshape(-1)
    f = torch.cat([torch.stack([a, a + n, a + 1], 1), torch.stack([a + 1, a + n, a + n + 1], 1)])
    return v, f


def test_diffuse_fill_recovers_a_linear_field_in_a_hole():
    v, f = _grid(21)  # on a regular grid a linear field is harmonic for the uniform Laplacian: recovered exactly
    values = (0.3 * v[:, :1] + 0.5 * v[:, 1:2]) + 0.1
    hole = ((v[:, :2] - 0.5).abs() < 0.26).all(1)
    known = ~hole
    filled = diffuse_fill(torch.where(known[:, None], values, torch.zeros_like(values)), known, f, iterations=3000)
    assert torch.equal(filled[known], values[known])
    assert float((filled[hole] - values[hole]).abs().max()) < 1e-3


def test_diffuse_fill_stays_within_the_border_values():
    v, f = _sphere(4)
    values = v[:, :1] * 2.0 + 0.1
    known = v[:, 0] < 0.35  # a cap around +X is unknown: harmonic fill obeys the maximum principle
    filled = diffuse_fill(torch.where(known[:, None], values, torch.zeros_like(values)), known, f, iterations=2000)
    assert float(filled[~known].max()) <= float(values[known].max()) + 1e-5
    assert float(filled[~known].min()) >= float(values[known].min()) - 1e-5
    assert float(filled[~known].min()) > 0.7  # close to the cap border's value (0.8), not the mean (0.1)


def test_edge_distance_and_adjacency():
    m = torch.zeros(1, 9, 9, dtype=torch.bool)
    m[0, 2:7, 2:7] = True
    d = edge_distance(m, 5)
    assert d[0, 4, 4] == 3 and d[0, 2, 2] == 1 and d[0, 0, 0] == 0
    v, f = _sphere(1)
    a = mesh_adjacency(f, v.shape[0]).to_dense()
    assert torch.allclose(a.sum(1), torch.ones(v.shape[0]))
    assert torch.equal(a > 0, (a > 0).T)


def test_bad_inputs_raise():
    v, f = _sphere(1)
    cam = OrthographicCamera(scale=torch.tensor([10.0]), cx=torch.tensor([8.0]), cy=torch.tensor([8.0]), width=16,
                             height=16)  # fmt: skip
    with pytest.raises(ValueError, match="images"):
        fuse_vertex_colours(v[None], f, cam, torch.zeros(2, 16, 16, 3))
    with pytest.raises(ValueError, match="camera"):
        fuse_vertex_colours(v[None], f, cam, torch.zeros(1, 8, 8, 3))


def _tiny_avatar(colours: bool):
    from avatar.config import AvatarConfig
    from avatar.lbs import canonical_body_pose
    from avatar.model import Avatar, build_networks

    cfg = AvatarConfig(skin_width=8, skin_depth=1, sdf_width=16, sdf_depth=2)
    v, f = _sphere(1)
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    return Avatar(
        cfg, *build_networks(cfg, 2), betas=torch.zeros(10), rest_joints=torch.zeros(24, 3),
        canonical_pose=canonical_body_pose()[0], center=torch.zeros(3), scale=1.0, vertices=v, faces=f,
        skin_weights=weights, reference_features=torch.zeros(23, 6), bounds=torch.tensor([[-1.0] * 3, [1.0] * 3]),
        vertex_colours=_truth(v) if colours else torch.zeros(0, 3),
    )  # fmt: skip


def test_avatar_colours_round_trip_and_old_avatars_load(tmp_path):
    import json

    from avatar.export import save_gltf, save_mesh
    from avatar.model import load_avatar, save_avatar

    avatar = _tiny_avatar(colours=True)
    assert avatar.has_colour
    back = load_avatar(save_avatar(avatar, tmp_path / "a"))
    assert torch.equal(back.vertex_colours, avatar.vertex_colours)
    # an avatar written before colours existed (no tensor, version 2) loads without colour
    from safetensors.torch import load_file, save_file

    tensors = load_file(str(tmp_path / "a" / "avatar.safetensors"))
    del tensors["data.vertex_colours"]
    save_file(tensors, str(tmp_path / "a" / "avatar.safetensors"))
    meta = json.loads((tmp_path / "a" / "avatar.json").read_text())
    meta["version"] = 2
    (tmp_path / "a" / "avatar.json").write_text(json.dumps(meta))
    old = load_avatar(tmp_path / "a")
    assert not old.has_colour and old.vertex_colours.shape == (0, 3)
    # exports: PLY vertex colours, glb COLOR_0 (linear)
    ply = trimesh.load(save_mesh(tmp_path / "m.ply", avatar.vertices, avatar.faces, avatar.vertex_colours),
                       process=False)  # fmt: skip
    expected = (avatar.vertex_colours.numpy() * 255 + 0.5).astype(np.uint8)
    assert np.array_equal(np.asarray(ply.visual.vertex_colors)[:, :3], expected)
    import pygltflib

    glb = pygltflib.GLTF2().load(str(save_gltf(tmp_path / "a.glb", avatar)))
    attrs = glb.meshes[0].primitives[0].attributes
    assert attrs.COLOR_0 is not None
    acc = glb.accessors[attrs.COLOR_0]
    assert acc.count == avatar.vertices.shape[0] and acc.type in ("VEC3", "VEC4")
    plain = pygltflib.GLTF2().load(str(save_gltf(tmp_path / "b.glb", old)))
    assert plain.meshes[0].primitives[0].attributes.COLOR_0 is None


def test_avatar_vertex_colours_from_posed_frames():
    from avatar.colour import avatar_vertex_colours
    from avatar.poses import FramePoses

    avatar = _tiny_avatar(colours=False)
    angles = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2]
    # joint 0 sits at the origin: the held root rotation turns the sphere like _views does
    poses = FramePoses(torch.tensor([[0.0, a, 0.0] for a in angles]), torch.zeros(4, 69), torch.zeros(4, 3))
    truth = _truth(avatar.vertices)
    _, cam, img, mask = _views(avatar.vertices, avatar.faces, truth, angles)
    out = avatar_vertex_colours(avatar, cam, img, mask, poses=poses)
    assert float((out.colours - truth)[out.seen].abs().mean()) < 0.03
