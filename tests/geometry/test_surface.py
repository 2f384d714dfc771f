"""Surface extraction: sphere radius within a voxel, coarse-to-fine equals dense, orientation, largest component."""

import numpy as np
import pytest
import torch
import trimesh

from geometry.surface import evaluate_grid, extract_surface

BOUNDS = [[-1.0, -1.0, -1.0], [1.0, 1.0, 1.0]]


def sphere_sdf(p: torch.Tensor) -> torch.Tensor:
    return p.norm(dim=-1) - 0.6


def blobs_occupancy(p: torch.Tensor) -> torch.Tensor:
    """Two separate balls (radii 0.45 and 0.2) as a smooth occupancy in [0, 1]."""
    d1 = (p - torch.tensor([-0.4, 0.0, 0.0])).norm(dim=-1) - 0.45
    d2 = (p - torch.tensor([0.6, 0.3, 0.0])).norm(dim=-1) - 0.2
    return torch.sigmoid(-torch.minimum(d1, d2) * 40.0)


@pytest.mark.parametrize("resolution,coarse", [(65, 9), (50, 8)])
def test_coarse_to_fine_equals_dense(resolution, coarse):
    dense_v, dense_f = extract_surface(sphere_sdf, BOUNDS, resolution, None, level=0.0, inside="below")
    c2f_v, c2f_f = extract_surface(sphere_sdf, BOUNDS, resolution, coarse, level=0.0, inside="below")
    assert dense_v.shape == c2f_v.shape and np.array_equal(dense_f, c2f_f)
    assert np.abs(dense_v - c2f_v).max() < 1e-6
    grid = evaluate_grid(sphere_sdf, BOUNDS, resolution, coarse, level=0.0)
    assert grid.num_evaluated < 0.6 * resolution**3


def test_sphere_radius_within_one_voxel():
    v, f = extract_surface(sphere_sdf, BOUNDS, 48, 7, level=0.0, inside="below")
    voxel = 2.0 / 47
    assert v.dtype == np.float32 and f.dtype == np.int64
    assert np.abs(np.linalg.norm(v, axis=1) - 0.6).max() < voxel
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.is_watertight and mesh.volume > 0  # outward-facing triangles
    assert mesh.volume == pytest.approx(4 / 3 * np.pi * 0.6**3, rel=0.03)


def test_occupancy_orientation_and_largest_component():
    v, f = extract_surface(blobs_occupancy, BOUNDS, 48, 12, level=0.5, inside="above")
    mesh = trimesh.Trimesh(v, f, process=False)
    assert mesh.volume > 0
    assert np.abs(np.linalg.norm(v - np.array([-0.4, 0.0, 0.0]), axis=1) - 0.45).max() < 2.0 / 47
    v_all, f_all = extract_surface(blobs_occupancy, BOUNDS, 48, 12, keep_largest=False)
    assert len(trimesh.Trimesh(v_all, f_all).split(only_watertight=False)) == 2


def test_numpy_field_and_empty_result():
    v, f = extract_surface(lambda p: np.zeros(len(p)), BOUNDS, 16, 5)
    assert v.shape == (0, 3) and f.shape == (0, 3)


def test_errors():
    with pytest.raises(ValueError, match="bounds"):
        extract_surface(sphere_sdf, [[0, 0, 0], [0, 1, 1]], 16)
    with pytest.raises(ValueError, match="inside"):
        extract_surface(sphere_sdf, BOUNDS, 16, inside="outside")
    with pytest.raises(ValueError, match=r"\(N,\)"):
        extract_surface(lambda p: p, BOUNDS, 16, None)
