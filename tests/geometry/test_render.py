"""Ray-cast renders of spheres against ray-sphere intersection formulas (ortho and perspective), visibility."""

import pytest
import torch

from geometry.cameras import OrthographicCamera, PerspectiveCamera
from geometry.render import point_visibility, render_mesh, shade_normals

RES = 64


def analytic_sphere(camera, center, radius, height=RES, width=RES):
    """Exact front/back hits of each pixel ray with a sphere: mask, depths, outward normals."""
    o, d = camera.rays(height, width, dtype=torch.float64)
    c = torch.tensor(center, dtype=torch.float64)
    oc = o - c
    b = (oc * d).sum(-1)
    disc = b**2 - ((oc * oc).sum(-1) - radius**2)
    mask = disc > 0
    root = disc.clamp(min=0).sqrt()
    p_front = o + (-b - root)[..., None] * d
    p_back = o + (-b + root)[..., None] * d
    return mask, -p_front[..., 2], -p_back[..., 2], (p_front - c) / radius, (p_back - c) / radius, disc


def cameras():
    return [
        (
            OrthographicCamera(torch.tensor([RES / 2.5]), torch.tensor([RES / 2]), torch.tensor([RES / 2]), RES, RES),
            (0.1, -0.05, 0.0),
        ),
        (
            PerspectiveCamera(torch.tensor([RES * 1.2]), torch.tensor([RES / 2]), torch.tensor([RES / 2]), RES, RES),
            (0.1, -0.05, -3.0),
        ),
    ]


@pytest.mark.parametrize("camera,center", cameras(), ids=["ortho", "perspective"])
def test_sphere_render_matches_formula(camera, center, make_sphere, sagitta):
    v, f = make_sphere(4, center=center)
    gap = sagitta(v, f, 1.0)
    r = render_mesh(v, f, camera)
    mask, depth, depth_back, n_front, n_back, disc = analytic_sphere(camera, center, 1.0)
    assert r.mask.shape == (1, RES, RES) and r.normal_front.shape == (1, RES, RES, 3)
    # Away from the rim (where the inscribed mesh is a sagitta narrower) masks agree exactly.
    safe = (disc - 0.05).abs() > 0.05
    assert torch.equal(r.mask[safe], mask[safe])
    inner = disc > 0.1  # ray well inside the silhouette: the facet gap stays small along the ray
    assert (r.depth[inner] - depth[inner]).abs().max() < 3 * gap / 0.3
    assert (r.depth_back[inner] - depth_back[inner]).abs().max() < 3 * gap / 0.3
    assert (r.depth[inner] < r.depth_back[inner]).all()
    assert (r.normal_front[inner] - n_front[inner].float()).norm(dim=-1).max() < 0.05
    assert (r.normal_back[inner] - n_back[inner].float()).norm(dim=-1).max() < 0.05
    _, d = camera.rays(dtype=torch.float32)
    assert ((r.normal_front * d).sum(-1)[inner] < 0).all() and ((r.normal_back * d).sum(-1)[inner] > 0).all()
    # Outside the silhouette everything is zero / -1.
    out = ~r.mask
    assert (r.normal_front[out] == 0).all() and (r.depth[out] == 0).all() and (r.face_index[out] == -1).all()
    assert (r.face_index_back[r.mask] >= 0).all()


def test_resampled_render_and_batch(make_sphere):
    camera, center = cameras()[0]
    v, f = make_sphere(2, center=center)
    v2 = torch.cat([v, v + torch.tensor([0.5, 0.0, 0.0], dtype=v.dtype)])
    r = render_mesh(v2, f, camera, height=2 * RES, width=2 * RES)
    assert r.mask.shape == (2, 2 * RES, 2 * RES)
    # The shifted sphere appears 0.5 m * scale * 2 = 2 * RES / 2.5 * 0.5 pixels to the right.
    cols = r.mask.any(dim=1).float().argmax(dim=-1)
    assert abs((cols[1] - cols[0]).item() - RES / 2.5) <= 1


def test_point_visibility_sphere_and_occluder(make_sphere):
    for camera, center in cameras():
        v, f = make_sphere(3, center=center)
        vis = point_visibility(v, f, camera, v)[0]
        o = torch.zeros(3, dtype=v.dtype) if isinstance(camera, PerspectiveCamera) else None
        c = torch.tensor(center, dtype=v.dtype)
        n = v[0] - c
        to_cam = (o - v[0]) if o is not None else torch.tensor([0.0, 0.0, 1.0], dtype=v.dtype).expand_as(n)
        facing = (n * to_cam).sum(-1) / to_cam.norm(dim=-1)
        assert vis[facing > 0.1].all() and not vis[facing < -0.1].any()
    # A small sphere in front of a large one hides the points behind it.
    camera, _ = cameras()[0]
    big_v, big_f = make_sphere(3, radius=1.0)
    small_v, small_f = make_sphere(2, radius=0.2, center=(0.0, 0.0, 1.5))
    verts = torch.cat([big_v, small_v], dim=1)
    faces = torch.cat([big_f, small_f + big_v.shape[1]])
    pts = torch.tensor([[[0.0, 0.0, 1.0], [0.6, 0.0, 0.8], [0.0, 0.0, 1.7]]], dtype=verts.dtype)
    assert point_visibility(verts, faces, camera, pts)[0].tolist() == [False, True, True]


def test_shade_normals():
    n = torch.zeros(1, 2, 2, 3)
    n[0, 0, 0] = torch.tensor([0.0, 0.0, 1.0])
    n[0, 0, 1] = torch.tensor([1.0, 0.0, 0.0])
    img = shade_normals(n)
    assert img.shape == (1, 2, 2, 3)
    assert img[0, 0, 0, 0] == 1.0 and img[0, 0, 1, 0] == pytest.approx(0.25) and img[0, 1, 1, 0] == 0.0


def test_render_errors(make_sphere):
    v, f = make_sphere(1)
    camera, _ = cameras()[0]
    with pytest.raises(ValueError, match="camera"):
        render_mesh(v, f, object())
    with pytest.raises(ValueError, match="batch size"):
        cam2 = OrthographicCamera(torch.ones(2), torch.ones(2), torch.ones(2), 8, 8)
        render_mesh(torch.cat([v] * 3), f, cam2)
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        point_visibility(v, f, camera, torch.zeros(4, 3))
