"""Shared fixtures for geometry tests: analytic meshes and a Warp kernel cache inside the repo."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[2] / ".cache" / "warp"))

import warp as wp  # noqa: E402  (after WARP_CACHE_PATH)

wp.config.quiet = True


def sphere_mesh(subdivisions: int = 3, radius: float = 1.0, center=(0.0, 0.0, 0.0), dtype=torch.float64):
    """Icosphere as (1, V, 3) vertices and (F, 3) int64 faces; all vertices lie exactly on the sphere."""
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=radius)
    v = torch.tensor(np.asarray(s.vertices) + np.asarray(center), dtype=dtype)[None]
    return v, torch.tensor(np.asarray(s.faces), dtype=torch.long)


def sphere_sagitta(vertices: torch.Tensor, faces: torch.Tensor, radius: float) -> float:
    """Upper bound on the gap between an inscribed triangle mesh and its sphere (largest face circumradius)."""
    tri = vertices[0][faces]
    a = (tri[:, 1] - tri[:, 2]).norm(dim=-1)
    b = (tri[:, 2] - tri[:, 0]).norm(dim=-1)
    c = (tri[:, 0] - tri[:, 1]).norm(dim=-1)
    area = 0.5 * torch.linalg.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0], dim=-1).norm(dim=-1)
    circum = (a * b * c / (4 * area)).max().item()
    return radius - float(np.sqrt(radius**2 - circum**2))


@pytest.fixture
def sphere():
    return sphere_mesh(3)


@pytest.fixture
def box():
    half = np.array([0.3, 0.5, 0.2])
    m = trimesh.creation.box(extents=2 * half)
    v = torch.tensor(np.asarray(m.vertices), dtype=torch.float64)[None]
    return v, torch.tensor(np.asarray(m.faces), dtype=torch.long), torch.tensor(half)


@pytest.fixture
def make_sphere():
    """Factory: make_sphere(subdivisions, radius, center, dtype) -> (vertices (1, V, 3), faces (F, 3))."""
    return sphere_mesh


@pytest.fixture
def sagitta():
    """Function: sagitta(vertices, faces, radius) -> max gap between the icosphere facets and the sphere."""
    return sphere_sagitta
