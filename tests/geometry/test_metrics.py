"""Metrics: zero for identical meshes, analytic values for concentric spheres, determinism, batching."""

import pytest
import torch

from geometry.metrics import (
    chamfer_distance,
    normal_consistency,
    point_to_surface,
    reconstruction_metrics,
    sample_surface,
)


def test_identical_meshes_score_perfectly(make_sphere):
    v, f = make_sphere(3)
    m = reconstruction_metrics(v, f, v, f, n_samples=2000)
    assert m.chamfer.shape == (1,)
    assert m.chamfer.item() < 1e-4 and m.p2s.item() < 1e-4  # cm; float32 BVH round-off only
    assert m.normal_consistency.item() == pytest.approx(1.0, abs=1e-6)


def test_concentric_spheres_one_centimetre(make_sphere):
    v, f = make_sphere(4)
    # Same tessellation scaled by 1.01: every facet is 1 cm * (facet distance from centre) further out.
    assert chamfer_distance(v[0], f, 1.01 * v[0], f, n_samples=5000).item() == pytest.approx(1.0, abs=0.02)
    assert point_to_surface(1.01 * v, f, v, f, n_samples=5000).item() == pytest.approx(1.0, abs=0.02)
    assert normal_consistency(v, f, 1.01 * v, f, n_samples=2000).item() == pytest.approx(1.0, abs=1e-4)


def test_sampling_is_uniform_and_deterministic(make_sphere):
    v, f = make_sphere(3)
    a = sample_surface(v, f, 20000, seed=3)
    b = sample_surface(v, f, 20000, seed=3)
    assert torch.equal(a.points, b.points)
    assert not torch.equal(a.points, sample_surface(v, f, 20000, seed=4).points)
    # Uniform on a sphere: each coordinate has mean 0 and variance 1/3.
    assert a.points.mean(dim=1).abs().max() < 0.02
    assert (a.points.pow(2).mean(dim=1) - 1 / 3).abs().max() < 0.02
    assert ((a.normals * a.points).sum(-1) > 0.99).all()


def test_batched_metrics(make_sphere):
    v, f = make_sphere(3)
    rec = torch.cat([v, 1.02 * v])
    m = reconstruction_metrics(rec, f, torch.cat([v, v]), f, n_samples=3000)
    assert m.chamfer.shape == (2,)
    assert m.chamfer[0].item() < 1e-4 and m.chamfer[1].item() == pytest.approx(2.0, abs=0.05)
    with pytest.raises(ValueError, match="batch sizes"):
        reconstruction_metrics(rec, f, v, f)
