"""Multi-frame refinement on analytic targets: a sphere refined towards an ellipsoid seen from several views."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import trimesh

from avatar.colour import mesh_adjacency
from avatar.config import AvatarConfig
from avatar.refine import (
    RefineTargets,
    align_poses,
    camera_subset,
    carve_energy,
    frame_weights_from_losses,
    laplacian_energy,
    outside_distance,
    refine_skinned_mesh,
    resample_targets,
    subdivide_avatar,
)
from body.rotations import axis_angle_to_matrix
from geometry.cameras import OrthographicCamera
from geometry.queries import signed_distance
from geometry.render import render_mesh

SIZE = 128
AXES = torch.tensor([0.36, 0.30, 0.25])  # the target ellipsoid's semi-axes (m)
ANGLES = [0.0, math.pi / 2, math.pi, 3 * math.pi / 2, math.pi / 4, 5 * math.pi / 4]


def _sphere(radius: float, subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    return torch.tensor(np.asarray(s.vertices), dtype=torch.float32), torch.tensor(np.asarray(s.faces))


def _turns(n_angles) -> torch.Tensor:
    """(T, 24, 4, 4) transforms turning about Y (joint 0; the others unused) and pushing the object to z = -1."""
    t = len(n_angles)
    tf = torch.eye(4).repeat(t, 24, 1, 1)
    aa = torch.tensor([[0.0, a, 0.0] for a in n_angles])
    tf[:, :, :3, :3] = axis_angle_to_matrix(aa)[:, None]
    tf[:, :, 2, 3] = -1.0
    return tf


def _camera(t: int) -> OrthographicCamera:
    return OrthographicCamera(scale=torch.full((t,), SIZE / 1.0), cx=torch.full((t,), SIZE / 2.0),
                              cy=torch.full((t,), SIZE / 2.0), width=SIZE, height=SIZE)  # fmt: skip


def _targets(shift: torch.Tensor | None = None) -> tuple[RefineTargets, torch.Tensor, torch.Tensor]:
    """Masks and normals of the ellipsoid posed like the sphere will be; ``shift`` (T, 3) displaces frames."""
    v, f = _sphere(1.0, 4)
    ell = v * AXES
    tf = _turns(ANGLES)
    posed = ell[None] @ tf[:, 0, :3, :3].transpose(1, 2) + tf[:, 0, :3, 3][:, None]
    if shift is not None:
        posed = posed + shift[:, None]
    r = render_mesh(posed, f, _camera(len(ANGLES)))
    return RefineTargets(r.mask, _camera(len(ANGLES)), r.normal_front, r.normal_back), ell, f


def _frame_transforms(idx: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    tf = _turns([ANGLES[i] for i in idx.tolist()])
    if delta.shape[1] == 6:
        rot = axis_angle_to_matrix(delta[:, :3])
        corr = torch.eye(4).repeat(len(idx), 1, 1)
        corr = torch.cat([torch.cat([rot, delta[:, 3:, None]], 2), corr[:, 3:]], 1)
        tf = corr[:, None] @ tf
    return tf


def _iou(vertices: torch.Tensor, faces: torch.Tensor, targets: RefineTargets) -> float:
    idx = torch.arange(len(ANGLES))
    tf = _frame_transforms(idx, torch.zeros(len(idx), 0))
    posed = vertices[None] @ tf[:, 0, :3, :3].transpose(1, 2) + tf[:, 0, :3, 3][:, None]
    m = render_mesh(posed, faces, targets.camera).mask
    return float((m & targets.masks).sum() / (m | targets.masks).sum())


def _distance(vertices: torch.Tensor, ell: torch.Tensor, f: torch.Tensor) -> float:
    return float(signed_distance(ell[None], f, vertices[None]).abs().mean())


def _config(**kw) -> AvatarConfig:
    # the visual-hull term is off here (its own test below): these tests measure the render-based terms
    base = dict(refine_iterations=60, refine_lr=3e-3, refine_pose_lr=0.0, refine_resolution=SIZE,
                refine_frames_per_step=3, refine_sigma_px=1.5, w_refine_carve=0.0)  # fmt: skip
    base.update(kw)
    return AvatarConfig(**base)


def test_sphere_approaches_the_ellipsoid():
    targets, ell, f_ell = _targets()
    v, f = _sphere(0.31, 3)
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    iou0, d0 = _iou(v, f, targets), _distance(v, ell, f_ell)
    out = refine_skinned_mesh(v, f, weights, _frame_transforms, 0, targets, _config())
    iou1, d1 = _iou(out.vertices, f, targets), _distance(out.vertices, ell, f_ell)
    assert iou1 > iou0 + 0.03 and iou1 > 0.95, (iou0, iou1)
    assert d1 < 0.5 * d0, (d0, d1)
    assert float(out.frame_losses.mean()) < float(out.initial_losses.mean())
    assert torch.allclose(out.offsets, out.vertices - v)


def test_bad_frame_is_down_weighted():
    shift = torch.zeros(len(ANGLES), 3)
    shift[2] = torch.tensor([0.08, 0.0, 0.0])  # frame 2's "pose" is 8 cm off: its mask cannot be matched
    targets, ell, f_ell = _targets(shift)
    v, f = _sphere(0.31, 3)
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    out = refine_skinned_mesh(v, f, weights, _frame_transforms, 0, targets, _config(refine_iterations=40))
    others = torch.cat([out.frame_weights[:2], out.frame_weights[3:]])
    assert float(out.frame_weights[2]) < 0.5 * float(others.min()), out.frame_weights
    assert _distance(out.vertices, ell, f_ell) < 0.6 * _distance(v, ell, f_ell)


def test_pose_correction_fixes_a_shifted_frame():
    shift = torch.zeros(len(ANGLES), 3)
    shift[1] = torch.tensor([0.03, 0.0, 0.0])
    targets, _, _ = _targets(shift)
    v, f = _sphere(1.0, 3)
    v = v * AXES  # the true shape: only the pose of frame 1 is wrong
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    cfg = _config(refine_iterations=80, refine_lr=1e-6, refine_pose_lr=5e-3, w_refine_pose=0.0)
    out = refine_skinned_mesh(v, f, weights, _frame_transforms, 6, targets, cfg)
    assert abs(float(out.pose_delta[1, 3]) - 0.03) < 0.01, out.pose_delta[1]
    assert float(out.pose_delta[0, 3:5].norm()) < 0.01  # (depth is unobservable in an orthographic view)


def test_align_poses_recovers_shifted_frames_with_the_mesh_frozen():
    """Full-batch pose alignment: two frames displaced by 3 cm / -2 cm (x, y) are put back, the others stay."""
    shift = torch.zeros(len(ANGLES), 3)
    shift[1] = torch.tensor([0.03, 0.0, 0.0])
    shift[4] = torch.tensor([0.0, -0.02, 0.0])
    targets, _, _ = _targets(shift)
    v, f = _sphere(1.0, 3)
    v = v * AXES  # the true shape: only the poses are wrong
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    cfg = _config(refine_align_steps=100, refine_align_lr=0.01, w_refine_pose=0.0, refine_align_resolution=SIZE)
    delta, losses = align_poses(v, f, weights, _frame_transforms, 6, targets, cfg)
    assert delta.shape == (len(ANGLES), 6) and losses.shape == (len(ANGLES),)
    assert abs(float(delta[1, 3]) - 0.03) < 0.005 and abs(float(delta[4, 4]) + 0.02) < 0.005, delta
    still = [0, 2, 3, 5]
    assert float(delta[still][:, 3:5].abs().max()) < 0.005, delta  # (depth is unobservable in an orthographic view)
    ref = refine_skinned_mesh(v, f, weights, _frame_transforms, 6, targets,
                              _config(refine_iterations=0, refine_align_steps=0))  # fmt: skip
    aligned = _config(refine_iterations=0, refine_align_steps=60, refine_align_lr=0.01, w_refine_pose=0.0)
    out = refine_skinned_mesh(v, f, weights, _frame_transforms, 6, targets, aligned)
    assert float(out.frame_losses[1]) < 0.7 * float(ref.frame_losses[1])  # the refinement starts from aligned poses
    assert torch.equal(out.vertices, v)
    zero, _ = align_poses(v, f, weights, _frame_transforms, 6, targets, _config(refine_align_steps=0))
    assert torch.equal(zero, torch.zeros(len(ANGLES), 6))


def test_carve_energy_measures_how_far_points_stick_out():
    """Mask = left half (columns < 64): a point at pixel column 80.5 is 17 px (chessboard) from the mask."""
    masks = torch.zeros(1, SIZE, SIZE, dtype=torch.bool)
    masks[:, :, :64] = True
    dist = outside_distance(masks)
    assert float(dist[0, 10, 63]) == 0.0 and float(dist[0, 10, 64]) == 1.0 and float(dist[0, 10, 80]) == 17.0
    cam = _camera(1)
    inside = torch.tensor([[[-0.2, 0.0, -1.0], [-0.01, 0.1, -1.0]]])  # columns 38.4 and 62.7: inside the mask
    outside = torch.tensor([[[(80.5 - 64.0) / SIZE, 0.0, -1.0]]])  # the centre of column 80
    assert float(carve_energy(inside, cam, dist, 1.0)) == 0.0
    assert abs(float(carve_energy(outside, cam, dist, 1.0)) - 16.0 / SIZE) < 1e-5


def test_carve_pulls_a_flap_back_into_the_silhouettes():
    """The true ellipsoid with a 12 cm spike: silhouettes alone barely see a few vertices, the visual-hull term pulls
    the spike in from all six views (the rest of the surface stays where it was)."""
    targets, ell, f_ell = _targets()
    v, f = _sphere(1.0, 3)
    v = v * AXES
    tip = int(torch.argmax(v[:, 0]))  # the vertex at +x
    spiky = v.clone()
    spiky[tip, 0] += 0.12
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    cfg = _config(refine_iterations=40, refine_lr=5e-3, w_refine_silhouette=0.0, w_refine_normal=0.0,
                  w_refine_normal_back=0.0, w_refine_carve=50.0, refine_smoothing=0,
                  w_refine_laplacian=0.1)  # fmt: skip
    out = refine_skinned_mesh(spiky, f, weights, _frame_transforms, 0, targets, cfg)
    assert float(out.vertices[tip, 0] - v[tip, 0]) < 0.03, float(out.vertices[tip, 0] - v[tip, 0])
    others = torch.ones(v.shape[0], dtype=torch.bool)
    others[tip] = False
    assert float((out.vertices - v)[others].norm(dim=-1).mean()) < 0.02
    off = refine_skinned_mesh(spiky, f, weights, _frame_transforms, 0, targets, cfg.model_copy(update={
        "w_refine_carve": 0.0}))  # fmt: skip
    assert float(off.vertices[tip, 0] - v[tip, 0]) > 0.09  # nothing else sees the spike
    assert "refine/carve" in out.history


def _texture(v: torch.Tensor) -> torch.Tensor:
    """Colours varying around the Y axis (a sphere turned about Y keeps its silhouette and normals, not these)."""
    a = torch.atan2(v[:, 0], v[:, 2])
    return torch.stack([0.5 + 0.4 * torch.sin(2 * a), 0.5 + 0.4 * torch.cos(2 * a), 0.5 + 0.3 * v[:, 1]], -1)


def test_photometric_alignment_recovers_a_turn_only_colour_shows():
    """A textured sphere turned 0.15 rad about Y in two frames (masks and normals hardly tell): the colours put the
    turns back, and the other frames stay."""
    v, f = _sphere(0.3, 4)
    colours = _texture(v)
    weights = torch.zeros(v.shape[0], 24)
    weights[:, 0] = 1.0
    turn = torch.zeros(len(ANGLES))
    turn[1], turn[3] = 0.15, -0.15
    tf = _turns([a + float(d) for a, d in zip(ANGLES, turn, strict=True)])
    posed = v[None] @ tf[:, 0, :3, :3].transpose(1, 2) + tf[:, 0, :3, 3][:, None]
    cam = _camera(len(ANGLES))
    r = render_mesh(posed, f, cam)
    from geometry.queries import interpolate_face_attributes

    images = interpolate_face_attributes(colours[None].expand(len(ANGLES), -1, -1), f, r.face_index, r.barycentric)
    targets = RefineTargets(r.mask, cam, r.normal_front, images=images * r.mask[..., None])
    cfg = _config(refine_align_steps=60, refine_align_lr=0.01, w_refine_pose=0.0, refine_align_resolution=SIZE,
                  w_refine_photometric=1.0)  # fmt: skip
    def turned(idx: torch.Tensor, d: torch.Tensor) -> torch.Tensor:  # the correction turns the sphere about its centre
        return _turns([ANGLES[i] for i in idx.tolist()]) @ _frame_transforms(idx, d) @ torch.linalg.inv(
            _turns([ANGLES[i] for i in idx.tolist()]))  # fmt: skip

    delta, _ = align_poses(v, f, weights, turned, 6, targets, cfg, colours=colours)
    assert abs(float(delta[1, 1]) - 0.15) < 0.03 and abs(float(delta[3, 1]) + 0.15) < 0.03, delta[:, :3]
    assert float(delta[[0, 2, 4, 5], 1].abs().max()) < 0.03, delta[:, :3]
    joint = refine_skinned_mesh(v, f, weights, turned, 6, targets, cfg.model_copy(update={"refine_iterations": 0}),
                                colours=colours)  # the refinement's alignment sees the colours too  # fmt: skip
    assert abs(float(joint.pose_delta[1, 1]) - 0.15) < 0.03, joint.pose_delta[:, :3]


def test_helpers():
    w = frame_weights_from_losses(torch.tensor([1.0, 1.0, 1.0, 3.0]))
    assert torch.allclose(w[:3], torch.ones(3)) and abs(float(w[3]) - math.exp(-2)) < 1e-6
    v, f = _sphere(1.0, 2)
    adj = mesh_adjacency(f, v.shape[0])
    assert float(laplacian_energy(torch.ones_like(v) * 0.3, adj)) < 1e-10  # a constant offset is free
    targets, _, _ = _targets()
    small = resample_targets(targets, 64)
    assert small.masks.shape == (len(ANGLES), 64, 64) and small.camera.width == 64
    assert abs(float(small.masks.float().mean()) - float(targets.masks.float().mean())) < 0.01
    sub = camera_subset(targets.camera, torch.tensor([1, 3]))
    assert sub.batch_size == 2
    with pytest.raises(ValueError, match="batch size"):
        RefineTargets(targets.masks[:2], targets.camera)


def test_refine_trained_avatar_towards_its_frames(trained):
    """The SCANimate avatar refined against its own training frames' true masks and normals fits them better."""
    import copy

    from avatar.refine import apply_refinement, refine_avatar

    seq, avatar = trained.sequence, copy.deepcopy(trained.avatar)
    t = len(seq.frames)
    cam = seq.camera
    camera = type(cam)(focal=cam.focal.expand(t), cx=cam.cx.expand(t), cy=cam.cy.expand(t), width=cam.width,
                       height=cam.height)  # fmt: skip
    truth = [render_mesh(v[None].float(), f, camera_subset(camera, torch.tensor([i]))) for i, (v, f) in
             enumerate(seq.frames)]  # fmt: skip
    targets = RefineTargets(torch.cat([r.mask for r in truth]), camera, torch.cat([r.normal_front for r in truth]),
                            torch.cat([r.normal_back for r in truth]))  # fmt: skip
    cfg = avatar.config.model_copy(update={"refine_iterations": 30, "refine_resolution": 96})
    result = refine_avatar(avatar, targets, cfg)
    # The silhouette term is summed over the image and divided by the mask's area: at 96 px its soft-edge floor
    # (~0.25, border pixels of a soft render vs a hard mask) dominates the loss, so a 5 % drop is real progress.
    assert float(result.frame_losses.mean()) < 0.95 * float(result.initial_losses.mean())
    before = avatar.vertices.clone()
    iou0 = _avatar_iou(avatar, camera, targets.masks)
    apply_refinement(avatar, result)
    iou1 = _avatar_iou(avatar, camera, targets.masks)
    assert float(iou1.mean()) > float(iou0.mean()) - 0.005 and float(iou1.min()) > 0.95, (iou0, iou1)
    assert torch.equal(avatar.vertices, result.vertices) and not torch.equal(before, avatar.vertices)
    assert avatar.vertices.shape == before.shape and len(avatar.frame_poses) == t
    assert "refine/total" in avatar.history


def _avatar_iou(avatar, camera, masks: torch.Tensor) -> torch.Tensor:
    """(T,) IoU of the avatar posed in its held poses against the frames' masks."""
    from body.lbs import skin_points

    p = avatar.frame_poses
    t = len(p)
    with torch.no_grad():
        tf = avatar.transforms(p.global_orient, p.body_pose, p.transl)
        v = skin_points(avatar.vertices[None].expand(t, -1, -1), avatar.skin_weights[None].expand(t, -1, -1), tf)
    m = render_mesh(v, avatar.faces, camera).mask
    return (m & masks).sum((1, 2)) / (m | masks).sum((1, 2))


def test_subdivided_avatar_poses_to_the_same_surface(trained):
    """Midpoint subdivision of the canonical mesh: 4x the faces, weights and colours carried, the posed surface and
    every old vertex unchanged."""
    import copy

    from body.lbs import skin_points

    avatar = copy.deepcopy(trained.avatar)
    avatar.vertex_colours = (avatar.vertices - avatar.vertices.amin(0)) / (avatar.vertices.amax(0)
                                                                            - avatar.vertices.amin(0))  # fmt: skip
    v0, f0 = avatar.vertices.clone(), avatar.faces.clone()
    subdivide_avatar(avatar, 1)
    assert avatar.faces.shape[0] == 4 * f0.shape[0] and avatar.has_colour
    assert torch.equal(avatar.vertices[: len(v0)], v0)
    assert torch.allclose(avatar.skin_weights.sum(-1), torch.ones(len(avatar.vertices)), atol=1e-5)
    p = avatar.frame_poses
    with torch.no_grad():
        tf = avatar.transforms(p.global_orient[:1], p.body_pose[:1], p.transl[:1])
        posed = skin_points(avatar.vertices[None], avatar.skin_weights[None], tf)[0]
    mid = posed[len(v0):]  # new vertices lie near their edge's posed midpoint (LBS is linear in the weights)
    assert float(signed_distance(posed[None, : len(v0)], f0, mid[None]).abs().max()) < 0.01
    assert torch.allclose(avatar.vertex_colours[len(v0):].clamp(0, 1), avatar.vertex_colours[len(v0):])
