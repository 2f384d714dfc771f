"""Coarse-to-fine evaluation of an occupancy/SDF function on a grid and marching-cubes surface extraction.

Only coarse cells whose corner values straddle the level set (plus a dilation ring) are subdivided; the other fine
samples inherit a corner value of their coarse cell, which lies on the same side of the level, so marching cubes sees
no surface there. On shapes whose features are larger than a coarse cell the result equals dense evaluation.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

__all__ = ["GridValues", "evaluate_grid", "extract_surface", "keep_largest_component", "marching_cubes"]

logger = logging.getLogger(__name__)

FieldFn = Callable[[torch.Tensor], "torch.Tensor | np.ndarray"]


@dataclass
class GridValues:
    """Field samples on a regular grid.

    Attributes:
        values: (R, R, R) float32 samples, index (i, j, k) at bounds[0] + (i, j, k) * spacing.
        evaluated: (R, R, R) bool, True where ``fn`` was actually evaluated.
        bounds: (2, 3) float64 min and max corners.
        spacing: (3,) float64 grid step.
    """

    values: np.ndarray
    evaluated: np.ndarray
    bounds: np.ndarray
    spacing: np.ndarray

    @property
    def num_evaluated(self) -> int:
        """Number of points at which the field was evaluated."""
        return int(self.evaluated.sum())


def _check_bounds(bounds) -> np.ndarray:
    b = np.asarray(bounds.detach().cpu() if isinstance(bounds, torch.Tensor) else bounds, dtype=np.float64)
    if b.shape != (2, 3) or not np.all(b[1] > b[0]):
        raise ValueError(f"bounds must be (2, 3) [[xmin, ymin, zmin], [xmax, ymax, zmax]] with max > min, got {b}")
    return b


def _level_indices(resolution: int, stride: int) -> np.ndarray:
    """Grid indices sampled at a level: every ``stride``-th index plus the last one."""
    idx = np.arange(0, resolution, stride)
    return idx if idx[-1] == resolution - 1 else np.append(idx, resolution - 1)


def _evaluate(fn: FieldFn, idx: np.ndarray, bounds, spacing, batch_points, device, dtype) -> np.ndarray:
    """Evaluate fn at integer grid indices idx (N, 3) in batches; returns (N,) float32."""
    out = np.empty(idx.shape[0], dtype=np.float32)
    origin = torch.as_tensor(bounds[0], dtype=torch.float64)
    step = torch.as_tensor(spacing, dtype=torch.float64)
    for s in range(0, idx.shape[0], batch_points):
        chunk = torch.from_numpy(idx[s : s + batch_points])
        pts = (origin + chunk.to(torch.float64) * step).to(device=device, dtype=dtype)
        with torch.no_grad():
            val = fn(pts)
        val = val.detach().float().cpu().numpy() if isinstance(val, torch.Tensor) else np.asarray(val, np.float32)
        val = val.reshape(-1)
        if val.shape[0] != pts.shape[0]:
            raise ValueError(f"fn must map points (N, 3) to values (N,), got {val.shape[0]} values for {len(pts)}")
        out[s : s + batch_points] = val
    return out


def _straddling_cells(values: np.ndarray, level: float, dilation: int) -> np.ndarray:
    """(n-1)^3 bool mask of cells whose 8 corners are not all on one side of the level, dilated by cells."""
    above = values > level
    any_above = np.zeros(tuple(s - 1 for s in values.shape), dtype=bool)
    all_above = np.ones_like(any_above)
    n0, n1, n2 = any_above.shape
    for a, b, c in itertools.product((0, 1), repeat=3):
        corner = above[a : a + n0, b : b + n1, c : c + n2]
        any_above |= corner
        all_above &= corner
    cells = any_above & ~all_above
    return _dilate(cells, dilation) if dilation > 0 else cells


def evaluate_grid(
    fn: FieldFn,
    bounds,
    resolution: int = 256,
    coarse_resolution: int | None = 32,
    level: float = 0.5,
    batch_points: int = 2**18,
    dilation: int = 1,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> GridValues:
    """Sample ``fn`` on a resolution^3 grid, coarse-to-fine near the level set (dense if coarse_resolution is None).

    Args:
        fn: Batched field, points (N, 3) torch tensor -> values (N,) (torch or numpy).
        bounds: (2, 3) min and max corners of the grid (inclusive).
        resolution: Samples per axis of the fine grid.
        coarse_resolution: Samples per axis of the first level; each level halves the stride. None or
            >= resolution evaluates densely.
        level: Iso-value of the surface.
        batch_points: Points per ``fn`` call.
        dilation: Rings of neighbouring coarse cells refined around straddling cells (catches features that
            cross a cell face without changing a corner's side).
        device: Device of the points passed to ``fn``.
        dtype: Dtype of the points passed to ``fn``.

    Returns:
        GridValues.
    """
    bounds = _check_bounds(bounds)
    resolution = int(resolution)
    if resolution < 2:
        raise ValueError(f"resolution must be >= 2, got {resolution}")
    spacing = (bounds[1] - bounds[0]) / (resolution - 1)
    evaluated = np.zeros((resolution,) * 3, dtype=bool)

    def run(idx):
        return _evaluate(fn, idx, bounds, spacing, batch_points, device, dtype)

    if coarse_resolution is None or coarse_resolution >= resolution:
        grid = np.stack(np.meshgrid(*(np.arange(resolution),) * 3, indexing="ij"), -1).reshape(-1, 3)
        values = run(grid).reshape((resolution,) * 3)
        evaluated[:] = True
        return GridValues(values, evaluated, bounds, spacing)
    if coarse_resolution < 2:
        raise ValueError(f"coarse_resolution must be >= 2, got {coarse_resolution}")

    # Strides are powers of two so each level's samples contain the previous level's.
    stride = 1
    while (resolution - 1) / (stride * 2) >= coarse_resolution - 1:
        stride *= 2
    idx = _level_indices(resolution, stride)
    level_vals = run(np.stack(np.meshgrid(idx, idx, idx, indexing="ij"), -1).reshape(-1, 3))
    level_vals = level_vals.reshape((len(idx),) * 3)
    evaluated[np.ix_(idx, idx, idx)] = True
    while stride > 1:
        cells = _straddling_cells(level_vals, level, dilation)
        stride //= 2
        fine = _level_indices(resolution, stride)
        # Parent coarse cell of each fine cell, and the coarse sample at or below each fine sample.
        parent = np.clip(np.searchsorted(idx, fine[:-1], side="right") - 1, 0, len(idx) - 2)
        floor = np.searchsorted(idx, fine, side="right") - 1
        need = _cell_corners(_take3(cells, parent))
        fine_vals = _take3(level_vals, floor)  # same side of the level as the fine sample's coarse cell
        known = np.isin(fine, idx)
        need &= ~(known[:, None, None] & known[None, :, None] & known[None, None, :])
        where = np.nonzero(need)
        if where[0].size:
            pts = np.stack([fine[where[0]], fine[where[1]], fine[where[2]]], axis=-1)
            fine_vals[where] = run(pts)
            evaluated[pts[:, 0], pts[:, 1], pts[:, 2]] = True
        idx, level_vals = fine, fine_vals
    return GridValues(level_vals, evaluated, bounds, spacing)


def _take3(array: np.ndarray, index: np.ndarray) -> np.ndarray:
    """array[index][:, index][:, :, index] for a sorted index, as three contiguous repeats (faster than np.ix_)."""
    counts = np.bincount(index, minlength=array.shape[0])
    return array.repeat(counts, axis=0).repeat(counts, axis=1).repeat(counts, axis=2)


def _shifted_slices(axis: int) -> tuple[tuple[slice, ...], tuple[slice, ...]]:
    """Index tuples selecting all but the last (lo) and all but the first (hi) layer along ``axis`` of a 3D array."""
    lo = [slice(None)] * 3
    hi = [slice(None)] * 3
    lo[axis] = slice(0, -1)
    hi[axis] = slice(1, None)
    return tuple(lo), tuple(hi)


def _cell_corners(cells: np.ndarray) -> np.ndarray:
    """(n+1)^3 mask of the points that are a corner of any cell marked in an n^3 cell mask (separable OR)."""
    out = cells
    for axis in range(3):
        shape = list(out.shape)
        shape[axis] += 1
        grown = np.zeros(shape, dtype=bool)
        lo, hi = _shifted_slices(axis)
        grown[lo] = out
        grown[hi] |= out
        out = grown
    return out


def _dilate(mask: np.ndarray, iterations: int) -> np.ndarray:
    """Binary dilation with a 3x3x3 cube, as separable ORs of shifted slices."""
    out = mask.copy()
    for _ in range(iterations):
        for axis in range(3):
            lo, hi = _shifted_slices(axis)
            src = out.copy()
            out[lo] |= src[hi]
            out[hi] |= src[lo]
    return out


def _cells_with_corner(points: np.ndarray) -> np.ndarray:
    """n^3 mask (same shape, last layer unused) of cells (by lowest corner) having any marked corner point."""
    out = points.copy()
    for axis in range(3):
        lo, hi = _shifted_slices(axis)
        out[lo] |= out[hi].copy()
    return out


def marching_cubes(
    grid: GridValues, level: float = 0.5, inside: Literal["above", "below"] = "above"
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes of grid values with outward-facing (counter-clockwise) triangles.

    Args:
        grid: Sampled field.
        level: Iso-value.
        inside: "above" if the inside has values > level (occupancy), "below" if < level (SDF).

    Returns:
        vertices (V, 3) float32 in world units, faces (F, 3) int64; empty arrays if the level is not crossed.
    """
    from skimage.measure import marching_cubes as skimage_marching_cubes

    v = grid.values
    if not (v.min() < level < v.max()):
        return np.zeros((0, 3), np.float32), np.zeros((0, 3), np.int64)
    # skimage's "descent" winds triangles counter-clockwise seen from the larger values (measured: an occupancy
    # extracted with "descent" has negative volume), so an "above" inside needs "ascent" for outward faces.
    direction = "ascent" if inside == "above" else "descent"
    # Cells without an evaluated corner lie inside one unrefined coarse cell and cannot cross the level: skip them.
    mask = None if grid.evaluated.all() else _cells_with_corner(grid.evaluated)
    verts, faces, _, _ = skimage_marching_cubes(
        v, level=level, spacing=tuple(grid.spacing), gradient_direction=direction, allow_degenerate=False, mask=mask
    )
    verts = (verts + grid.bounds[0]).astype(np.float32)
    return verts, faces.astype(np.int64)


def keep_largest_component(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Keep the connected component (by shared vertices) with the most faces; drop unused vertices.

    Args:
        vertices: (V, 3) vertices.
        faces: (F, 3) int64 faces.

    Returns:
        vertices (V', 3), faces (F', 3) int64 reindexed.
    """
    if len(faces) == 0:
        return vertices, faces
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    n = len(vertices)
    rows = np.concatenate([faces[:, 0], faces[:, 1], faces[:, 2]])
    cols = np.concatenate([faces[:, 1], faces[:, 2], faces[:, 0]])
    graph = coo_matrix((np.ones(len(rows), np.int8), (rows, cols)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    face_label = labels[faces[:, 0]]
    largest = np.bincount(face_label).argmax()
    faces = faces[face_label == largest]
    used = np.unique(faces)
    remap = np.full(n, -1, dtype=np.int64)
    remap[used] = np.arange(len(used))
    return vertices[used], remap[faces]


def extract_surface(
    fn: FieldFn,
    bounds,
    resolution: int = 256,
    coarse_resolution: int | None = 32,
    level: float = 0.5,
    batch_points: int = 2**18,
    keep_largest: bool = True,
    inside: Literal["above", "below"] = "above",
    dilation: int = 1,
    device: torch.device | str = "cpu",
) -> tuple[np.ndarray, np.ndarray]:
    """Extract the level set of a batched occupancy/SDF function as a triangle mesh.

    Args:
        fn: Batched field, points (N, 3) torch tensor (on ``device``) -> values (N,) (torch or numpy).
        bounds: (2, 3) min and max corners of the sampled box.
        resolution: Samples per axis of the fine grid.
        coarse_resolution: Samples per axis of the first level (None = dense evaluation).
        level: Iso-value (0.5 for occupancy, 0 for an SDF).
        batch_points: Points per ``fn`` call.
        keep_largest: Keep only the largest connected component.
        inside: "above" if inside values exceed ``level`` (occupancy), "below" if they are smaller (SDF).
        dilation: Rings of extra coarse cells refined around the level set.
        device: Device of the points given to ``fn``.

    Returns:
        vertices (V, 3) float32, faces (F, 3) int64, counter-clockwise seen from outside (trimesh-compatible);
        empty arrays if the level set is not crossed.
    """
    if inside not in ("above", "below"):
        raise ValueError(f"inside must be 'above' or 'below', got {inside!r}")
    grid = evaluate_grid(fn, bounds, resolution, coarse_resolution, level, batch_points, dilation, device)
    logger.debug("evaluated %d of %d grid points", grid.num_evaluated, grid.values.size)
    vertices, faces = marching_cubes(grid, level, inside)
    if keep_largest:
        vertices, faces = keep_largest_component(vertices, faces)
    return vertices, faces
