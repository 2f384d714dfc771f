"""Mesh queries against analytic answers: a box (exact) and icospheres (own facets exactly, sphere within sagitta)."""

import numpy as np
import pytest
import torch
import trimesh

from geometry.queries import MeshBVH, closest_points, face_normals, signed_distance, vertex_normals


def box_sdf(p: torch.Tensor, half: torch.Tensor) -> torch.Tensor:
    q = p.abs() - half
    return q.clamp(min=0).norm(dim=-1) + q.max(dim=-1).values.clamp(max=0)


@pytest.mark.parametrize("sign_method", ["winding", "normal"])
def test_box_signed_distance_is_exact(box, sign_method):
    v, f, half = box
    p = (torch.rand(1, 2000, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 0.5) * 2.0
    sd = signed_distance(v, f, p, sign_method=sign_method)
    assert sd.shape == (1, 2000)
    assert (sd - box_sdf(p, half)).abs().max() < 1e-4


def test_box_closest_points_outside(box):
    v, f, half = box
    p = torch.tensor([[[1.0, 0.1, 0.0], [0.5, 0.9, 0.4], [-0.1, -0.2, -1.0]]], dtype=torch.float64)
    cp = closest_points(v, f, p)
    assert torch.allclose(cp.points, torch.maximum(torch.minimum(p, half), -half), atol=1e-6)
    assert not cp.inside.any()
    assert torch.allclose(cp.barycentric.sum(-1), torch.ones(1, 3, dtype=torch.float64), atol=1e-6)
    tri = v[0][f[cp.face_index[0]]]
    assert torch.allclose((tri * cp.barycentric[0, :, :, None]).sum(1), cp.points[0], atol=1e-6)


def test_box_face_normals_are_axes(box):
    v, f, _ = box
    n = face_normals(v, f)[0]
    centre = v[0][f].mean(dim=1)
    expected = torch.zeros_like(centre)
    axis = (centre.abs() / torch.tensor([0.3, 0.5, 0.2], dtype=torch.float64)).argmax(dim=-1)
    expected[torch.arange(len(f)), axis] = centre[torch.arange(len(f)), axis].sign()
    assert torch.allclose(n, expected, atol=1e-12)


def test_sphere_distance_matches_own_facets_exactly(make_sphere):
    v, f = make_sphere(2)
    p = torch.randn(1, 100, 3, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 0.8
    cp = closest_points(v, f, p)
    tri = v[0][f].numpy()
    pts = p[0].numpy()
    pairs_tri = np.repeat(tri[None], len(pts), axis=0).reshape(-1, 3, 3)
    pairs_pts = np.repeat(pts, len(tri), axis=0)
    brute = np.linalg.norm(trimesh.triangles.closest_point(pairs_tri, pairs_pts) - pairs_pts, axis=1)
    brute = brute.reshape(len(pts), len(tri)).min(axis=1)
    assert np.abs(cp.distance[0].numpy() - brute).max() < 1e-5
    inside = cp.inside[0].numpy()
    assert (inside == (np.linalg.norm(pts, axis=1) < 0.9)).mean() > 0.95


def test_sphere_against_analytic_within_sagitta(make_sphere, sagitta):
    v, f = make_sphere(4)
    gap = sagitta(v, f, 1.0)
    p = torch.randn(1, 3000, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    r = p.norm(dim=-1)
    cp = closest_points(v, f, p)
    # The inscribed mesh lies between the sphere and the sphere shrunk by the sagitta.
    err = cp.signed_distance - (r - 1.0)
    assert err.min() > -1e-5 and err.max() <= gap + 1e-5  # float32 BVH: 1e-5 slack
    far = (r - 1.0).abs() > gap
    assert torch.equal(cp.inside[far], (r < 1.0)[far])
    normal_err = (cp.normal - p / r[..., None]).norm(dim=-1)
    # Linearly interpolated area-weighted vertex normals of a 5k-face sphere deviate up to ~0.03 from radial.
    assert normal_err.max() < 0.05
    assert (cp.points.norm(dim=-1) - 1.0).abs().max() <= gap + 1e-5


def test_vertex_normals_of_sphere_are_radial(make_sphere):
    v, f = make_sphere(3)
    n = vertex_normals(v, f)
    # Area weighting on an icosphere's unequal triangles tilts normals by up to ~0.011.
    assert (n - v / v.norm(dim=-1, keepdim=True)).norm(dim=-1).max() < 0.02
    small_v, small_f = make_sphere(1)
    assert torch.autograd.gradcheck(lambda x: vertex_normals(x, small_f), (small_v.clone().requires_grad_(True),))


def test_batched_refit_and_gradients(make_sphere):
    v, f = make_sphere(2)
    v2 = torch.cat([v, v * 2.0], dim=0)
    bvh = MeshBVH(v2, f, sign_method="normal")
    p = torch.tensor([[[0.0, 0.0, 3.0]]], dtype=torch.float64).expand(2, -1, -1)
    assert torch.allclose(bvh.query(p).distance, torch.tensor([[2.0], [1.0]], dtype=torch.float64), atol=1e-6)
    bvh.refit(torch.cat([v * 2.0, v], dim=0))
    assert torch.allclose(bvh.query(p).distance, torch.tensor([[1.0], [2.0]], dtype=torch.float64), atol=1e-6)
    # Distances are differentiable w.r.t. query points and vertices (closest face fixed).
    q = torch.tensor([[[0.1, 0.2, 2.0]]], dtype=torch.float64, requires_grad=True)
    vg = v.clone().requires_grad_(True)
    d = MeshBVH(vg, f, sign_method="none").query(q).distance
    d.sum().backward()
    assert torch.allclose(q.grad.norm(), torch.tensor(1.0, dtype=torch.float64))
    assert vg.grad.abs().sum() > 0


def test_max_dist_misses(make_sphere):
    v, f = make_sphere(1)
    cp = closest_points(v, f, torch.tensor([[[0.0, 0.0, 5.0]]]), max_dist=1.0)
    assert cp.face_index.item() == -1 and torch.isinf(cp.distance).all()


def test_shape_errors(make_sphere):
    v, f = make_sphere(1)
    with pytest.raises(ValueError, match=r"\(B, V, 3\)"):
        MeshBVH(v[0], f)
    with pytest.raises(ValueError, match="faces"):
        MeshBVH(v, f.float())
    with pytest.raises(ValueError, match="outside"):
        MeshBVH(v, f + 1000)
    with pytest.raises(ValueError, match="sign_method"):
        MeshBVH(v, f, sign_method="parity")
    with pytest.raises(ValueError, match="batch size"):
        MeshBVH(v, f).query(torch.zeros(3, 4, 3))


def test_query_without_normals_matches_full_query(make_sphere):
    v, f = make_sphere(2)
    p = torch.tensor([[[0.1, 0.2, 2.0], [0.0, 0.3, 0.1], [5.0, 0.0, 0.0]]], dtype=torch.float64)
    bvh = MeshBVH(v, f)
    full = bvh.query(p)
    lean = bvh.query(p, normals=False)
    assert lean.normal is None
    for name in ("points", "distance", "signed_distance", "face_index", "barycentric", "inside"):
        assert torch.equal(getattr(lean, name), getattr(full, name))
    assert closest_points(v, f, p, normals=False).normal is None
