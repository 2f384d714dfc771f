"""Reconstruction metrics as reported by ICON: Chamfer, point-to-surface (cm) and normal consistency.

Points are sampled uniformly on each surface (area-weighted, deterministic by seed) and their distances to the other
surface are measured exactly with Warp closest-point queries.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from geometry.queries import MeshBVH, check_faces, check_vertices, face_normals

__all__ = [
    "SurfaceSamples",
    "ReconstructionMetrics",
    "chamfer_distance",
    "normal_consistency",
    "point_to_surface",
    "reconstruction_metrics",
    "sample_surface",
]

M_TO_CM = 100.0


@dataclass
class SurfaceSamples:
    """Points sampled uniformly on mesh surfaces.

    Attributes:
        points: (B, N, 3) sample positions.
        normals: (B, N, 3) unit face normals at the samples.
        face_index: (B, N) int64 face of each sample.
    """

    points: torch.Tensor
    normals: torch.Tensor
    face_index: torch.Tensor


@dataclass
class ReconstructionMetrics:
    """ICON-style metrics per mesh pair.

    Attributes:
        chamfer: (B,) symmetric mean point-to-surface distance (cm): (p2s(rec->gt) + p2s(gt->rec)) / 2.
        p2s: (B,) mean distance of reconstruction samples to the ground-truth surface (cm).
        normal_consistency: (B,) mean |cos| between normals of closest points, both directions, in [0, 1].
    """

    chamfer: torch.Tensor
    p2s: torch.Tensor
    normal_consistency: torch.Tensor


def _as_batch(vertices: torch.Tensor, faces: torch.Tensor, name: str) -> tuple[torch.Tensor, torch.Tensor, bool]:
    squeeze = vertices.ndim == 2
    v = vertices[None] if squeeze else vertices
    check_vertices(v, name)
    check_faces(faces, v.shape[1])
    return v, faces.to(device=v.device, dtype=torch.long), squeeze


def sample_surface(vertices: torch.Tensor, faces: torch.Tensor, n_samples: int, seed: int = 0) -> SurfaceSamples:
    """Area-weighted uniform samples on each mesh of a batch (deterministic for a seed on a given device).

    Args:
        vertices: (B, V, 3) vertices.
        faces: (F, 3) int64 faces.
        n_samples: Samples per mesh N.
        seed: Random seed.

    Returns:
        SurfaceSamples.
    """
    check_vertices(vertices)
    check_faces(faces, vertices.shape[1])
    if n_samples <= 0:
        raise ValueError(f"n_samples must be positive, got {n_samples}")
    faces = faces.to(device=vertices.device, dtype=torch.long)
    # CPU generator so the samples do not depend on the device.
    gen = torch.Generator().manual_seed(int(seed))
    with torch.no_grad():
        cross = face_normals(vertices, faces, normalize=False)
        area = cross.norm(dim=-1)  # (B, F)
        b = vertices.shape[0]
        face_index = torch.multinomial(area.cpu().double(), n_samples, replacement=True, generator=gen)
        r = torch.rand(b, n_samples, 2, generator=gen, dtype=torch.float64)
        face_index = face_index.to(vertices.device)
        r = r.to(device=vertices.device, dtype=vertices.dtype)
    s = r[..., 0].sqrt()
    w = torch.stack([1.0 - s, s * (1.0 - r[..., 1]), s * r[..., 1]], dim=-1)  # uniform on the triangle
    tri = vertices[torch.arange(b, device=vertices.device)[:, None, None], faces[face_index]]  # (B, N, 3, 3)
    points = (tri * w[..., None]).sum(dim=2)
    normals = torch.gather(cross / area[..., None].clamp(min=1e-20), 1, face_index[..., None].expand(-1, -1, 3))
    return SurfaceSamples(points=points, normals=normals, face_index=face_index)


def _directed(samples: SurfaceSamples, vertices: torch.Tensor, faces: torch.Tensor):
    """Distances (B, N) of samples to a surface and |cos| between the sample and closest-face normals."""
    bvh = MeshBVH(vertices, faces, sign_method="none")
    cp = bvh.query(samples.points.to(vertices.dtype), normals=False)
    fn = face_normals(vertices, faces)
    n_closest = torch.gather(fn, 1, cp.face_index.clamp(min=0)[..., None].expand(-1, -1, 3))
    cos = (n_closest * samples.normals.to(fn.dtype)).sum(-1).abs()
    return cp.distance, cos


def point_to_surface(
    verts_src: torch.Tensor,
    faces_src: torch.Tensor,
    verts_tgt: torch.Tensor,
    faces_tgt: torch.Tensor,
    n_samples: int = 10000,
    seed: int = 0,
    scale: float = M_TO_CM,
) -> torch.Tensor:
    """Mean distance from points sampled on the source (reconstruction) to the target (ground-truth) surface.

    Args:
        verts_src: (B, V, 3) or (V, 3) source vertices (metres).
        faces_src: (F, 3) source faces.
        verts_tgt: (B, V', 3) or (V', 3) target vertices.
        faces_tgt: (F', 3) target faces.
        n_samples: Samples on the source surface.
        seed: Sampling seed.
        scale: Unit conversion applied to the distances (default metres -> cm).

    Returns:
        (B,) or scalar (for unbatched input) mean distance in cm.
    """
    vs, fs, squeeze = _as_batch(verts_src, faces_src, "verts_src")
    vt, ft, _ = _as_batch(verts_tgt, faces_tgt, "verts_tgt")
    d, _ = _directed(sample_surface(vs, fs, n_samples, seed), vt, ft)
    out = d.mean(dim=1) * scale
    return out[0] if squeeze else out


def reconstruction_metrics(
    verts_rec: torch.Tensor,
    faces_rec: torch.Tensor,
    verts_gt: torch.Tensor,
    faces_gt: torch.Tensor,
    n_samples: int = 10000,
    seed: int = 0,
    scale: float = M_TO_CM,
) -> ReconstructionMetrics:
    """Chamfer, P2S and normal consistency between reconstructions and ground truth from one sampling pass.

    Args:
        verts_rec: (B, V, 3) or (V, 3) reconstruction vertices (metres).
        faces_rec: (F, 3) reconstruction faces.
        verts_gt: (B, V', 3) or (V', 3) ground-truth vertices.
        faces_gt: (F', 3) ground-truth faces.
        n_samples: Samples per surface.
        seed: Sampling seed (the ground truth uses seed + 1).
        scale: Unit conversion for distances (default metres -> cm).

    Returns:
        ReconstructionMetrics with (B,) tensors (0-dim for unbatched input).
    """
    vr, fr, squeeze = _as_batch(verts_rec, faces_rec, "verts_rec")
    vg, fg, _ = _as_batch(verts_gt, faces_gt, "verts_gt")
    if vr.shape[0] != vg.shape[0]:
        raise ValueError(f"batch sizes differ: {vr.shape[0]} reconstructions vs {vg.shape[0]} ground truths")
    d_rg, cos_rg = _directed(sample_surface(vr, fr, n_samples, seed), vg, fg)
    d_gr, cos_gr = _directed(sample_surface(vg, fg, n_samples, seed + 1), vr, fr)
    p2s = d_rg.mean(dim=1) * scale
    chamfer = 0.5 * (p2s + d_gr.mean(dim=1) * scale)
    nc = 0.5 * (cos_rg.mean(dim=1) + cos_gr.mean(dim=1))
    if squeeze:
        return ReconstructionMetrics(chamfer[0], p2s[0], nc[0])
    return ReconstructionMetrics(chamfer, p2s, nc)


def chamfer_distance(
    verts_a: torch.Tensor,
    faces_a: torch.Tensor,
    verts_b: torch.Tensor,
    faces_b: torch.Tensor,
    n_samples: int = 10000,
    seed: int = 0,
    scale: float = M_TO_CM,
) -> torch.Tensor:
    """Symmetric Chamfer distance as in ICON: the average of both directed point-to-surface distances (cm).

    Args:
        verts_a: (B, V, 3) or (V, 3) vertices of surface A (metres).
        faces_a: (F, 3) faces of A.
        verts_b: (B, V', 3) or (V', 3) vertices of surface B.
        faces_b: (F', 3) faces of B.
        n_samples: Samples per surface.
        seed: Sampling seed.
        scale: Unit conversion (default metres -> cm).

    Returns:
        (B,) or scalar Chamfer distance.
    """
    return reconstruction_metrics(verts_a, faces_a, verts_b, faces_b, n_samples, seed, scale).chamfer


def normal_consistency(
    verts_a: torch.Tensor,
    faces_a: torch.Tensor,
    verts_b: torch.Tensor,
    faces_b: torch.Tensor,
    n_samples: int = 10000,
    seed: int = 0,
) -> torch.Tensor:
    """Mean |cos| between each sample's face normal and the normal of its closest face on the other surface.

    Symmetric (both directions averaged), in [0, 1]; 1 for identical surfaces. ICON's image-space "normal" error
    is a different metric (rendered normal maps); this is the Occupancy-Networks-style surface version.

    Args:
        verts_a: (B, V, 3) or (V, 3) vertices of surface A.
        faces_a: (F, 3) faces of A.
        verts_b: (B, V', 3) or (V', 3) vertices of surface B.
        faces_b: (F', 3) faces of B.
        n_samples: Samples per surface.
        seed: Sampling seed.

    Returns:
        (B,) or scalar normal consistency.
    """
    return reconstruction_metrics(verts_a, faces_a, verts_b, faces_b, n_samples, seed).normal_consistency
