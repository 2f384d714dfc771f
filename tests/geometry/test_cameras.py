"""Cameras: projection formulas of docs/conventions.md, rays through pixel centres, round trips, shape errors."""

import pytest
import torch

from geometry.cameras import OrthographicCamera, PerspectiveCamera, pixel_centers


def ortho(b=1):
    return OrthographicCamera(torch.full((b,), 100.0), torch.full((b,), 32.0), torch.full((b,), 24.0), 64, 48)


def persp(b=1):
    return PerspectiveCamera(torch.full((b,), 80.0), torch.full((b,), 32.0), torch.full((b,), 24.0), 64, 48)


def test_pixel_centers():
    uv = pixel_centers(2, 3)
    assert uv.shape == (2, 3, 2)
    assert torch.equal(uv[1, 2], torch.tensor([2.5, 1.5]))


@pytest.mark.parametrize("batch", [1, 3])
def test_orthographic_formula_and_round_trip(batch):
    cam = ortho(batch)
    p = torch.randn(batch, 10, 3, dtype=torch.float64)
    uv = cam.project(p)
    assert uv.shape == (batch, 10, 2)
    assert torch.allclose(uv[..., 0], 32.0 + 100.0 * p[..., 0])
    assert torch.allclose(uv[..., 1], 24.0 - 100.0 * p[..., 1])
    assert torch.allclose(cam.unproject(uv, cam.depth(p)), p)


@pytest.mark.parametrize("batch", [1, 2])
def test_perspective_formula_and_round_trip(batch):
    cam = persp(batch)
    p = torch.randn(batch, 10, 3, dtype=torch.float64)
    p[..., 2] = -3.0 + 0.5 * p[..., 2]
    uv = cam.project(p)
    assert torch.allclose(uv[..., 0], 32.0 + 80.0 * p[..., 0] / -p[..., 2])
    assert torch.allclose(uv[..., 1], 24.0 - 80.0 * p[..., 1] / -p[..., 2])
    assert torch.allclose(cam.unproject(uv, cam.depth(p)), p)


@pytest.mark.parametrize("make", [ortho, persp])
def test_rays_pass_through_pixel_centres(make):
    cam = make(2)
    origins, directions = cam.rays(dtype=torch.float64)
    assert origins.shape == directions.shape == (2, 48, 64, 3)
    assert torch.allclose(directions.norm(dim=-1), torch.ones(2, 48, 64, dtype=torch.float64))
    points = (origins - 2.0 * directions).reshape(2, -1, 3)  # a point on each ray in front of the camera
    uv = cam.project(points).reshape(2, 48, 64, 2)
    assert torch.allclose(uv, pixel_centers(48, 64, dtype=torch.float64).expand(2, -1, -1, -1), atol=1e-9)


def test_rays_resampled_keep_the_view():
    cam = persp()
    o, d = cam.rays(96, 128, dtype=torch.float64)
    uv = cam.project((o - d).reshape(1, -1, 3)).reshape(96, 128, 2)
    assert torch.allclose(uv, pixel_centers(96, 128, dtype=torch.float64) / 2, atol=1e-9)


def test_projection_is_differentiable():
    p = torch.randn(1, 4, 3, dtype=torch.float64)
    p[..., 2] -= 4
    p.requires_grad_(True)
    assert torch.autograd.gradcheck(persp().project, (p,))


def test_shape_errors():
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        ortho().project(torch.zeros(5, 3))
    with pytest.raises(ValueError, match="batch size"):
        OrthographicCamera(torch.ones(2), torch.ones(3), torch.ones(2), 8, 8)
    with pytest.raises(ValueError, match="width/height"):
        PerspectiveCamera(torch.ones(1), torch.ones(1), torch.ones(1), 0, 8)
