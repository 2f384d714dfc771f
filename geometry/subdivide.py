"""Midpoint (1-to-4) subdivision of triangle meshes, carrying per-vertex values along. Pure compute."""

from __future__ import annotations

import torch

from geometry.queries import check_faces

__all__ = ["subdivide_midpoint"]


def subdivide_midpoint(
    vertices: torch.Tensor, faces: torch.Tensor, values: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
    """Split every triangle into four at its edge midpoints (the surface does not move).

    The V old vertices keep their indices; each of the E unique edges adds one vertex at its midpoint, with the mean of
    its two ends' values (so rows of skinning weights still sum to 1). Face orientation is kept.

    Args:
        vertices: (V, 3) vertices.
        faces: (F, 3) int64 faces.
        values: optional (V, C) per-vertex values (colours, skinning weights, ...).

    Returns:
        vertices (V + E, 3), faces (4F, 3), values (V + E, C) or None.
    """
    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    check_faces(faces, vertices.shape[0])
    if values is not None and values.shape[0] != vertices.shape[0]:
        raise ValueError(f"values must have one row per vertex ({vertices.shape[0]}), got {tuple(values.shape)}")
    f = faces.long().to(vertices.device)
    v = vertices.shape[0]
    half = torch.stack([f[:, [0, 1]], f[:, [1, 2]], f[:, [2, 0]]], dim=1)  # (F, 3, 2): edges opposite vertex 2, 0, 1
    lo, hi = half.min(-1).values, half.max(-1).values
    unique, inverse = torch.unique(lo * v + hi, return_inverse=True)  # (E,), (F, 3)
    a, b = unique // v, unique % v
    mid = v + inverse  # (F, 3) index of the midpoint of edges 01, 12, 20
    new_vertices = torch.cat([vertices, 0.5 * (vertices[a] + vertices[b])])
    c0, c1, c2 = f[:, 0], f[:, 1], f[:, 2]
    m01, m12, m20 = mid[:, 0], mid[:, 1], mid[:, 2]
    new_faces = torch.cat([
        torch.stack([c0, m01, m20], 1), torch.stack([m01, c1, m12], 1),
        torch.stack([m20, m12, c2], 1), torch.stack([m01, m12, m20], 1),
    ])  # fmt: skip
    new_values = None if values is None else torch.cat([values, 0.5 * (values[a] + values[b])])
    return new_vertices, new_faces, new_values
