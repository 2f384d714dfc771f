"""Tests for icon.integrate: analytic sphere, cylinder and step with known depth, orthographic and perspective,
front and back surfaces, discontinuities, the two solvers and batching."""

from __future__ import annotations

import math

import pytest
import torch

from geometry.cameras import OrthographicCamera, PerspectiveCamera
from icon.integrate import (
    IntegrationConfig,
    contour_average,
    contour_thickness,
    integrate_front_back,
    integrate_normals,
)

S = 96


def ortho(size: int = S, scale: float = S / 1.2) -> OrthographicCamera:
    return OrthographicCamera(scale=torch.tensor([scale]), cx=torch.tensor([size / 2]), cy=torch.tensor([size / 2]),
                              width=size, height=size)  # fmt: skip


def persp(size: int = S, fov_deg: float = 50.0) -> PerspectiveCamera:
    f = size / 2 / math.tan(math.radians(fov_deg / 2))
    return PerspectiveCamera(focal=torch.tensor([f]), cx=torch.tensor([size / 2]), cy=torch.tensor([size / 2]),
                             width=size, height=size)  # fmt: skip


def sphere_ortho(cam: OrthographicCamera, radius=0.5, centre_depth=3.0, back=False):
    """(1, S, S, 3) normals, (1, S, S) mask and depth of a sphere seen by an orthographic camera."""
    o, _ = cam.rays(dtype=torch.float64)
    x, y = o[..., 0], o[..., 1]
    r2 = x**2 + y**2
    mask = r2 < 0.97 * radius**2
    h = torch.sqrt((radius**2 - r2).clamp(min=0))
    z = -centre_depth + (-h if back else h)
    n = torch.stack([x, y, z + centre_depth], -1) / radius
    return n * mask[..., None], mask, -z * mask


def cylinder_persp(cam: PerspectiveCamera, radius=0.3, centre_depth=2.0, back=False):
    """A vertical cylinder (axis along y at z = -centre_depth) seen by a pinhole camera: normals, mask, depth."""
    _, d = cam.rays(dtype=torch.float64)
    a = d[..., 0] ** 2 + d[..., 2] ** 2
    b = 2 * d[..., 2] * centre_depth
    c = centre_depth**2 - radius**2
    disc = b**2 - 4 * a * c
    mask = (disc > 0.05 * disc.max()) & (d[..., 1].abs() / -d[..., 2] < 0.35)
    t = (-b + (1 if back else -1) * torch.sqrt(disc.clamp(min=0))) / (2 * a)
    p = t[..., None] * d
    n = torch.stack([p[..., 0], torch.zeros_like(t), p[..., 2] + centre_depth], -1) / radius
    return n * mask[..., None], mask, -p[..., 2] * mask


def smooth_error(amplitude: float, size: int = S) -> torch.Tensor:
    u = torch.arange(size, dtype=torch.float64) / size
    return amplitude * (torch.sin(2 * math.pi * u)[:, None] + torch.cos(2 * math.pi * u)[None, :])[None] / 2


@pytest.mark.parametrize("back", [False, True])
def test_sphere_orthographic_recovers_shape(back):
    cam = ortho()
    n, mask, depth = sphere_ortho(cam, back=back)
    noise = 0.02 * torch.randn(n.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    n = torch.nn.functional.normalize(n + noise, dim=-1) * mask[..., None]
    prior = depth + 0.02  # a body 2 cm behind (front) / in front of (back) the surface: sets the absolute level
    est = integrate_normals(n, mask, cam, prior, mask)
    err = (est - depth)[mask]
    assert err.mean() == pytest.approx(0.02, abs=2e-3)
    # the shape (error minus its mean): below 1 mm RMS and 1 cm anywhere (the steep rim) with 2 % normal noise
    assert (err - err.mean()).pow(2).mean().sqrt() < 1e-3
    assert (err - err.mean()).abs().max() < 1e-2
    assert (est[~mask] == 0).all()


@pytest.mark.parametrize("back", [False, True])
def test_cylinder_perspective_recovers_shape_up_to_the_prior_scale(back):
    cam = persp()
    n, mask, depth = cylinder_persp(cam, back=back)
    est = integrate_normals(n, mask, cam, depth * 1.01, mask)
    ratio = est[mask] / depth[mask]
    # perspective integration is in log-depth: the shape is exact up to the prior's global scale
    assert ratio.mean() == pytest.approx(1.01, abs=1e-4)
    assert ratio.std() < 1e-4
    # a smooth prior error of +-1 cm (2 cm peak to peak) leaves < 6 mm after removing the mean offset: the normals
    # keep the shape where the prior varies
    est = integrate_normals(n, mask, cam, depth + smooth_error(0.01), mask)
    err = (est - depth)[mask]
    assert (err - err.mean()).abs().max() < 6e-3


def test_orthographic_with_perspective_equations_disagree():
    """The camera model matters: perspective normals integrated as orthographic bend the cylinder."""
    cam = persp()
    n, mask, depth = cylinder_persp(cam)
    good = integrate_normals(n, mask, cam, depth, mask)
    f = float(cam.focal[0])
    wrong_cam = OrthographicCamera(scale=torch.tensor([f / 2.0]), cx=cam.cx, cy=cam.cy, width=S, height=S)
    wrong = integrate_normals(n, mask, wrong_cam, depth, mask, IntegrationConfig(prior_weight=1e-4))
    assert (good - depth)[mask].abs().max() < 1e-4
    assert (wrong - depth)[mask].abs().max() > 3 * (good - depth)[mask].abs().max()


def _step_scene():
    cam = OrthographicCamera(scale=torch.tensor([100.0]), cx=torch.tensor([S / 2]), cy=torch.tensor([S / 2]), width=S,
                             height=S)  # fmt: skip
    mask = torch.ones(1, S, S, dtype=torch.bool)
    mask[..., :6] = False
    mask[..., -6:] = False
    depth = torch.full((1, S, S), 2.0, dtype=torch.float64)
    depth[..., S // 2 :] = 2.1  # a 10 cm step (e.g. an arm in front of the torso)
    n = torch.zeros(1, S, S, 3, dtype=torch.float64)
    n[..., 2] = 1.0
    return cam, n, mask, depth, depth + smooth_error(0.01)


def test_step_is_kept_by_the_body_depth_jump():
    cam, n, mask, depth, prior = _step_scene()
    est = integrate_normals(n, mask, cam, prior, mask)
    assert (est - depth)[mask].abs().max() < 0.01  # within the prior's own 1 cm error, no smearing across the step
    smeared = integrate_normals(n, mask, cam, prior, mask, IntegrationConfig(body_jump=10.0, reweight_iterations=0))
    assert (smeared - depth)[mask].abs().max() > 0.04


def test_step_is_recovered_by_reweighting_alone():
    cam, n, mask, depth, prior = _step_scene()
    irls = IntegrationConfig(body_jump=10.0, reweight_iterations=8, robust_scale=0.1)
    est = integrate_normals(n, mask, cam, prior, mask, irls)
    assert (est - depth)[mask].abs().max() < 0.012


def test_cg_matches_direct_and_batches():
    cam = ortho()
    n1, m1, d1 = sphere_ortho(cam)
    cam2 = persp()
    n2, m2, d2 = cylinder_persp(cam2)
    cfg_d = IntegrationConfig(solver="direct")
    cfg_c = IntegrationConfig(solver="cg", cg_iterations=5000, cg_tolerance=1e-10)
    a = integrate_normals(n1, m1, cam, d1 + 0.01, m1, cfg_d)
    c = integrate_normals(n1, m1, cam, d1 + 0.01, m1, cfg_c)
    assert (a - c).abs().max() < 1e-5
    # a batch of two orthographic cameras = each image alone
    cam_b = OrthographicCamera(scale=torch.tensor([S / 1.2, S / 1.5]), cx=torch.tensor([S / 2] * 2),
                               cy=torch.tensor([S / 2] * 2), width=S, height=S)  # fmt: skip
    cam_1 = OrthographicCamera(scale=torch.tensor([S / 1.5]), cx=torch.tensor([S / 2]), cy=torch.tensor([S / 2]),
                               width=S, height=S)  # fmt: skip
    n3, m3, d3 = sphere_ortho(cam_1, radius=0.4)
    both = integrate_normals(torch.cat([n1, n3]), torch.cat([m1, m3]), cam_b, torch.cat([d1, d3]) + 0.01,
                             torch.cat([m1, m3]), cfg_d)  # fmt: skip
    alone = integrate_normals(n3, m3, cam_1, d3 + 0.01, m3, cfg_d)
    assert (both[1] - alone[0]).abs().max() < 1e-9
    assert (both[0] - a[0]).abs().max() < 1e-9
    # perspective also through cg
    e = integrate_normals(n2, m2, cam2, d2, m2, cfg_c)
    assert (e - d2)[m2].abs().max() < 1e-4


def test_maps_at_another_resolution_than_the_camera():
    cam = ortho(size=2 * S, scale=2 * S / 1.2)  # same view at twice the pixels
    n, mask, depth = sphere_ortho(ortho())
    est = integrate_normals(n, mask, cam, depth + 0.01, mask)
    assert (est - depth - 0.01)[mask].abs().max() < 1e-6


def test_front_back_and_errors():
    cam = ortho()
    nf, m, df = sphere_ortho(cam)
    nb, _, db = sphere_ortho(cam, back=True)
    maps = integrate_front_back(nf, nb, m, cam, df, db, m, IntegrationConfig(boundary_weight=0.0))
    assert (maps.front - df)[m].abs().max() < 1e-6
    assert (maps.back - db)[m].abs().max() < 1e-6
    assert (maps.back >= maps.front).all()
    with pytest.raises(ValueError, match="normals"):
        integrate_normals(nf[0], m, cam, df, m)
    with pytest.raises(ValueError, match="prior_depth"):
        integrate_normals(nf, m, cam, df[:, :10], m)
    with pytest.raises(ValueError, match="positive"):
        integrate_normals(nf, m, persp(), -df, m)


def test_contour_term_recovers_the_thickness_the_prior_misses():
    """Body 4 cm inside a clothing sphere (mask up to its contour): the contour term pushes front and back apart."""
    cam = ortho()
    o, _ = cam.rays(dtype=torch.float64)
    r2 = o[..., 0] ** 2 + o[..., 1] ** 2
    mask = r2 < 0.45**2  # the whole silhouette: its boundary pixels lie half a pixel inside the contour
    h = torch.sqrt((0.45**2 - r2).clamp(min=0))
    nf = torch.stack([o[..., 0], o[..., 1], h], -1) / 0.45 * mask[..., None]
    nb = torch.stack([o[..., 0], o[..., 1], -h], -1) / 0.45 * mask[..., None]
    df, db = (3.0 - h) * mask, (3.0 + h) * mask
    body = r2 < 0.41**2
    hb = torch.sqrt((0.41**2 - r2).clamp(min=0))
    bf, bb = (3.0 - hb) * body, (3.0 + hb) * body
    alone = integrate_front_back(nf, nb, mask, cam, bf, bb, body, IntegrationConfig(boundary_weight=0.0))
    tied = integrate_front_back(nf, nb, mask, cam, bf, bb, body, IntegrationConfig(boundary_weight=1.0))
    err_alone = ((alone.front - df).abs() + (alone.back - db).abs())[mask].mean()
    err_tied = ((tied.front - df).abs() + (tied.back - db).abs())[mask].mean()
    assert err_tied < 0.7 * err_alone  # 8.0 vs 12.8 cm (front + back error, mean over the mask)
    thick = contour_thickness(nf, nb, torch.full(nf.shape[:-1], float(cam.scale[0]), dtype=torch.float64))
    edge = mask & ~(torch.nn.functional.max_pool2d((~mask).double()[None], 3, 1, 1)[0] == 0)
    true = (db - df)[edge]
    # exact for pixels half a pixel inside the contour (1 % here); staircase pixels of the discrete disc lie closer to
    # it and are overestimated (up to 4x where the true thickness is small): the median relative error is below 50 %
    assert ((thick[edge] - true).abs() / true).min() < 0.02
    assert ((thick[edge] - true).abs() / true).median() < 0.5


def test_a_few_pixels_cut_off_by_the_body_stay_joined():
    """The body pokes 30 cm out of a flat cloth at a 2x2 patch (a finger towards the camera): the patch is too small to
    be an occluding part, so the normals keep it on the cloth instead of a spike at the body's depth."""
    cam, n, mask, _, _ = _step_scene()
    depth = torch.full((1, S, S), 2.0, dtype=torch.float64)
    prior = depth.clone()
    prior[:, 40:42, 50:52] = 1.7
    est = integrate_normals(n, mask, cam, prior, mask)
    assert (est - depth)[mask].abs().max() < 0.005
    spike = integrate_normals(n, mask, cam, prior, mask, IntegrationConfig(min_region=0))
    assert spike[0, 40, 50] == pytest.approx(1.7, abs=0.01)
    # a region larger than min_region keeps its cuts (the step test's arm is 45 x 84 pixels)
    big = IntegrationConfig(min_region=4)
    est = integrate_normals(n, mask, cam, prior, mask, big)
    assert est[0, 40, 50] == pytest.approx(1.7, abs=0.01)


def test_guide_replaces_the_prior_target_but_not_the_cuts():
    """A guide depth takes over the prior's target where it is finite (pixels outside the body included); the cuts
    still come from the body's depth."""
    cam, n, mask, depth, _ = _step_scene()
    body = depth.clone()
    body_mask = mask.clone()
    body_mask[..., :20] = False  # the body does not reach the left columns
    guide = torch.full_like(depth, float("nan"))
    guide[..., :20] = 2.05  # a hull there, 5 cm behind the plane the normals and body agree on
    est = integrate_normals(n, mask, cam, body, body_mask, IntegrationConfig(), guide)
    plain = integrate_normals(n, mask, cam, body, body_mask, IntegrationConfig())
    assert (plain - depth)[mask].abs().max() < 1e-6
    # the guide pulls its pixels back against flat normals that tie them to the body's plane: part of the 5 cm
    assert 0.005 < (est - depth)[mask][:10].mean() < 0.05
    right = mask & (torch.arange(S) >= S // 2)[None, None, :]
    assert (est - depth)[right].abs().max() < 0.002  # the step is still cut: the part beyond it keeps its depth
    same = integrate_normals(n, mask, cam, body, body_mask, IntegrationConfig(), torch.full_like(depth, torch.nan))
    assert torch.allclose(same, plain)


def test_body_jump_cuts_only_where_the_normals_show_a_boundary():
    """With ``cut_normal_angle`` a body-depth jump cuts only where the clothed normals change across the edge.
    A real step (an arm's side, normals turned 90 degrees on its edge column) is cut exactly as by plain cuts;
    a phantom 10 cm bump of the body (a misplaced hand, 12 x 12 px) under flat clothing whose normals all face the
    camera is no longer printed into the clothing: it stays joined and the weak prior barely lifts it."""
    cam, n, mask, depth, prior = _step_scene()
    n_edge = n.clone()
    n_edge[..., S // 2, :] = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)  # the step's side faces +x
    est = integrate_normals(n_edge, mask, cam, prior, mask, IntegrationConfig(cut_normal_angle=30.0))
    plain = integrate_normals(n_edge, mask, cam, prior, mask)
    assert torch.allclose(est, plain, atol=1e-9) and (est - depth)[mask].abs().max() < 0.015
    flat = torch.full((1, S, S), 2.0, dtype=torch.float64)
    bump = flat.clone()
    bump[:, 20:32, 20:32] = 1.9  # the body's hand 10 cm in front of the clothing
    errors = []
    for angle in (0.0, 30.0):
        est = integrate_normals(n, mask, cam, bump, mask, IntegrationConfig(cut_normal_angle=angle))
        errors.append(float((est - flat)[:, 20:32, 20:32].abs().mean()))
    assert errors[0] > 0.08 and errors[1] < 0.3 * errors[0]


def test_contour_average_smooths_along_the_contour_only():
    """On a square's boundary ring, alternating values 1 / 3 average to 2 (away from the corners), a constant stays
    exact, and pixels off the contour keep their values."""
    mask = torch.zeros(1, 40, 40, dtype=torch.bool)
    mask[:, 5:35, 5:35] = True
    ring = mask.clone()
    ring[:, 6:34, 6:34] = False
    values = torch.full((1, 40, 40), 7.0, dtype=torch.float64)
    values[:, 5, :] = torch.where(torch.arange(40) % 2 == 0, 1.0, 3.0).double()
    values[:, 6:34, 5] = 2.0
    out = contour_average(values, ring, 2.0)
    assert torch.allclose(out[0, 5, 12:28], torch.full((16,), 2.0, dtype=torch.float64), atol=0.02)
    assert torch.allclose(out[0, 12:28, 5], torch.full((16,), 2.0, dtype=torch.float64), atol=1e-9)
    assert torch.equal(out[~ring], values[~ring])
