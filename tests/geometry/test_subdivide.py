"""Midpoint subdivision: counts, the surface kept, values averaged, orientation kept."""

from __future__ import annotations

import pytest
import torch
import trimesh

from geometry.subdivide import subdivide_midpoint


def _box() -> tuple[torch.Tensor, torch.Tensor]:
    b = trimesh.creation.box(extents=(1.0, 2.0, 3.0))
    return torch.tensor(b.vertices, dtype=torch.float64), torch.tensor(b.faces)


def test_counts_area_volume_and_orientation():
    v, f = _box()
    v2, f2, _ = subdivide_midpoint(v, f)
    edges = 3 * f.shape[0] // 2  # closed mesh: every edge has two faces
    assert v2.shape == (v.shape[0] + edges, 3) and f2.shape == (4 * f.shape[0], 3)
    m, m2 = trimesh.Trimesh(v.numpy(), f.numpy()), trimesh.Trimesh(v2.numpy(), f2.numpy(), process=False)
    assert m2.is_watertight and m2.is_winding_consistent
    assert abs(m2.area - m.area) < 1e-9 and abs(m2.volume - 6.0) < 1e-9  # outward faces: positive volume
    assert torch.equal(v2[: v.shape[0]], v)


def test_values_are_edge_means_and_linear_fields_stay_linear():
    v, f = _box()
    field = torch.stack([2 * v[:, 0] + v[:, 1], v[:, 2] - 1.0], -1)  # linear in position
    v2, _, field2 = subdivide_midpoint(v, f, field)
    assert torch.allclose(field2, torch.stack([2 * v2[:, 0] + v2[:, 1], v2[:, 2] - 1.0], -1))
    w = torch.softmax(torch.randn(v.shape[0], 5, dtype=torch.float64), -1)
    _, _, w2 = subdivide_midpoint(v, f, w)
    assert torch.allclose(w2.sum(-1), torch.ones(w2.shape[0], dtype=torch.float64))


def test_bad_inputs_raise():
    v, f = _box()
    with pytest.raises(ValueError, match="values"):
        subdivide_midpoint(v, f, torch.zeros(3, 2))
    with pytest.raises(ValueError, match="vertices"):
        subdivide_midpoint(v[:, :2], f)
