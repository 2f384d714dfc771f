"""Differentiable renders: agreement with the ray caster, gradients vs finite differences, losses."""

import math

import pytest
import torch

from geometry.cameras import OrthographicCamera, PerspectiveCamera
from geometry.diffrender import (
    edge_topology,
    normal_l1_loss,
    render_differentiable,
    render_normals_differentiable,
    render_silhouette_soft,
    silhouette_loss,
)
from geometry.render import render_mesh

RES = 16


def octahedron(z_offset=0.0):
    """A generically rotated octahedron (so no pixel centre sits on an edge), float64 (1, 6, 3)."""
    v = torch.tensor([[1, 0, 0], [-1, 0, 0], [0, 1, 0], [0, -1, 0], [0, 0, 1], [0, 0, -1]], dtype=torch.float64)
    f = torch.tensor([[0, 2, 4], [2, 1, 4], [1, 3, 4], [3, 0, 4], [2, 0, 5], [1, 2, 5], [3, 1, 5], [0, 3, 5]])
    a, b = 0.37, 0.61
    rx = torch.tensor([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]], dtype=torch.float64)
    ry = torch.tensor([[math.cos(b), 0, math.sin(b)], [0, 1, 0], [-math.sin(b), 0, math.cos(b)]], dtype=torch.float64)
    v = v @ (rx @ ry).T * torch.tensor([0.8, 0.9, 0.7], dtype=torch.float64)
    v[:, 2] += z_offset
    return v[None], f


def small_cameras():
    c = torch.tensor([RES / 2])
    return [
        (OrthographicCamera(torch.tensor([RES / 2.6]), c, c, RES, RES), 0.0),
        (PerspectiveCamera(torch.tensor([RES * 1.3]), c, c, RES, RES), -3.0),
    ]


def test_edge_topology_of_closed_mesh():
    _, f = octahedron()
    topo = edge_topology(f)
    assert topo.edges.shape == (12, 2) and (topo.faces >= 0).all()
    open_topo = edge_topology(f[:4])
    assert (open_topo.faces[:, 1] < 0).sum() == 4


@pytest.mark.parametrize("camera,z", small_cameras(), ids=["ortho", "perspective"])
def test_normals_match_ray_caster(camera, z, make_sphere):
    v, f = make_sphere(3, center=(0.0, 0.0, z))
    ref = render_mesh(v, f, camera, 48, 48)
    front, back, mask = render_normals_differentiable(v, f, camera, 48, 48)
    assert torch.equal(mask, ref.mask)
    assert (front.float() - ref.normal_front).abs().max() < 1e-4
    assert (back.float() - ref.normal_back).abs().max() < 1e-4


@pytest.mark.parametrize("camera,z", small_cameras(), ids=["ortho", "perspective"])
def test_normal_render_gradcheck(camera, z):
    v, f = octahedron(z)
    v.requires_grad_(True)

    def fn(x):
        r = render_differentiable(x, f, camera, normals=True, silhouette=False)
        return r.normal_front, r.normal_back, r.depth

    assert torch.autograd.gradcheck(fn, (v,), eps=1e-6, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("camera,z", small_cameras(), ids=["ortho", "perspective"])
def test_soft_silhouette_gradcheck(camera, z):
    v, f = octahedron(z)
    v.requires_grad_(True)
    soft = render_silhouette_soft(v, f, camera, sigma_px=1.0)
    assert ((soft > 0.01) & (soft < 0.99)).sum() > 10  # a real boundary band exists
    assert torch.autograd.gradcheck(
        lambda x: render_silhouette_soft(x, f, camera, sigma_px=1.0), (v,), eps=1e-6, atol=1e-5, rtol=1e-3
    )


def test_soft_silhouette_matches_disc(make_sphere):
    camera, _ = small_cameras()[0]
    v, f = make_sphere(3)
    soft = render_silhouette_soft(v, f, camera, 64, 64, sigma_px=1.0)[0]
    uv = torch.stack(torch.meshgrid(torch.arange(64) + 0.5, torch.arange(64) + 0.5, indexing="ij"), -1)
    r_px = (uv - 32).norm(dim=-1)
    radius_px = 64 / 2.6  # scale resampled to 64 px
    expected = torch.sigmoid(radius_px - r_px)  # signed distance to the circle, sigma = 1 px
    assert (soft - expected).abs().max() < 0.1  # polygonal silhouette vs circle
    assert (soft[r_px < radius_px - 8] == 1).all() and (soft[r_px > radius_px + 8] == 0).all()


def test_batch_matches_single_renders():
    camera, _ = small_cameras()[0]
    v, f = octahedron()
    v2 = torch.cat([v, 0.7 * v])
    both = render_differentiable(v2, f, camera)
    for i in range(2):
        one = render_differentiable(v2[i : i + 1], f, camera)
        assert torch.allclose(both.normal_front[i], one.normal_front[0])
        assert torch.allclose(both.normal_back[i], one.normal_back[0])
        assert torch.allclose(both.silhouette[i], one.silhouette[0])


def test_silhouette_gradient_moves_boundary_outward():
    camera, _ = small_cameras()[0]
    v, f = octahedron()
    scale = torch.tensor(1.0, dtype=torch.float64, requires_grad=True)
    soft = render_silhouette_soft(v * scale, f, camera)
    soft.sum().backward()
    assert scale.grad > 0  # a larger mesh covers more pixels


@pytest.mark.parametrize("camera,z", small_cameras(), ids=["ortho", "perspective"])
def test_attributes_interpolate_linear_fields_exactly_and_are_differentiable(camera, z):
    """Attributes = the vertices' own positions: the rendered attribute is the hit point (a linear field is exact under
    barycentric interpolation), so its z is the render's -depth; gradients reach attributes and vertices."""
    v, f = octahedron(z)
    v = v.clone().requires_grad_(True)
    attrs = v.detach().clone().requires_grad_(True)
    r = render_differentiable(v, f, camera, normals=True, silhouette=False, attributes=attrs)
    m = r.mask
    assert r.attributes.shape == (1, RES, RES, 3) and bool(m.any())
    assert torch.allclose(r.attributes[..., 2][m], -r.depth[m], atol=1e-9)
    assert float(r.attributes.detach()[~m].abs().max()) == 0.0
    (r.attributes[..., 0] * m).sum().backward()
    assert float(attrs.grad.abs().sum()) > 0 and float(v.grad.abs().sum()) > 0
    with pytest.raises(ValueError, match="attributes"):
        render_differentiable(v, f, camera, attributes=torch.zeros(1, 5, 3))


def test_losses():
    pred = torch.zeros(1, 4, 4, 3)
    target = torch.zeros(1, 4, 4, 3)
    target[0, 0, 0] = 3.0
    mask = torch.zeros(1, 4, 4, dtype=torch.bool)
    mask[0, :2] = True
    assert normal_l1_loss(pred, target, mask).item() == pytest.approx(3.0 / 8)
    assert normal_l1_loss(pred, target).item() == pytest.approx(3.0 / 16)
    soft = mask.float()
    assert silhouette_loss(soft, mask).item() == 0.0
    assert silhouette_loss(soft, mask, kind="iou").item() == pytest.approx(0.0)
    assert silhouette_loss(torch.zeros(1, 4, 4), mask).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="kind"):
        silhouette_loss(soft, mask, kind="dice")
    with pytest.raises(ValueError, match=r"\(B, H, W, 3\)"):
        normal_l1_loss(pred[0], target[0])
