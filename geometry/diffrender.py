"""Differentiable normal-map and soft-silhouette rendering for body fitting (Warp finds hits, torch differentiates).

Normals: Warp ray casting picks the front/back face per pixel (discrete, no gradient); torch recomputes the ray-
triangle barycentrics (Moller-Trumbore) and interpolates the area-weighted vertex normals, so gradients reach the
vertices through both. Silhouette: the hard ray-cast mask, and for pixels within a few pixels of its boundary
``sigmoid(signed distance to the nearest projected silhouette edge / sigma)``; gradients flow through the projected
edge endpoints. Silhouette edges are contour edges (between a front- and a back-facing face, or open boundary edges)
whose two sides differ in the hard mask, so interior folds do not attract boundary pixels.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as tnf
import warp as wp

from geometry.cameras import Camera
from geometry.queries import MeshBVH, check_faces, check_vertices, vertex_normals, warp_scope
from geometry.render import trace_camera

# Kernels here are never differentiated by Warp (torch does the gradients): skip compiling adjoints.
wp.set_module_options({"enable_backward": False})

__all__ = [
    "DiffRender",
    "EdgeTopology",
    "edge_topology",
    "normal_l1_loss",
    "render_differentiable",
    "render_normals_differentiable",
    "render_silhouette_soft",
    "silhouette_loss",
]


@dataclass
class EdgeTopology:
    """Unique edges of a triangle mesh and their (up to two) adjacent faces.

    Attributes:
        edges: (E, 2) int64 vertex indices.
        faces: (E, 2) int64 adjacent faces; the second is -1 for open boundary edges.
    """

    edges: torch.Tensor
    faces: torch.Tensor


def edge_topology(faces: torch.Tensor) -> EdgeTopology:
    """Unique edges with their adjacent faces (non-manifold edges keep their first two faces).

    Args:
        faces: (F, 3) int64 faces.

    Returns:
        EdgeTopology on the device of ``faces``.
    """
    check_faces(faces)
    faces = faces.long()
    num_faces = faces.shape[0]
    half = torch.cat([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]], dim=0)
    half = torch.sort(half, dim=1).values
    owner = torch.arange(num_faces, device=faces.device).repeat(3)
    key = half[:, 0] * (int(faces.max()) + 1) + half[:, 1]
    order = torch.argsort(key, stable=True)
    key, half, owner = key[order], half[order], owner[order]
    _, counts = torch.unique_consecutive(key, return_counts=True)
    start = torch.cumsum(counts, 0) - counts
    second = torch.where(counts >= 2, owner[(start + 1).clamp(max=key.shape[0] - 1)], -1)
    return EdgeTopology(edges=half[start], faces=torch.stack([owner[start], second], dim=1))


@dataclass
class DiffRender:
    """Differentiable renders (B, H, W, ...) in the front camera's image frame.

    Attributes:
        mask: (B, H, W) bool hard silhouette (no gradient).
        normal_front: (B, H, W, 3) smooth outward normals at the nearest hit, zeros outside; differentiable.
        normal_back: (B, H, W, 3) smooth outward normals at the farthest hit, zeros outside; differentiable.
        depth: (B, H, W) depth (-z) of the nearest hit, zeros outside; differentiable.
        silhouette: (B, H, W) soft silhouette in [0, 1] (None if not requested); differentiable near the boundary.
        attributes: (B, H, W, C) per-vertex attributes (e.g. colours) interpolated at the nearest hit, zeros outside
            (None if none were given); differentiable in the attributes and, through the barycentrics, the vertices.
    """

    mask: torch.Tensor
    normal_front: torch.Tensor | None
    normal_back: torch.Tensor | None
    depth: torch.Tensor | None
    silhouette: torch.Tensor | None
    attributes: torch.Tensor | None = None


def _ray_triangle(origins, directions, tri):
    """Barycentrics (M, 3) and ray parameter (M,) of rays (M, 3) against their triangles (M, 3, 3), differentiable."""
    v0, v1, v2 = tri[:, 0], tri[:, 1], tri[:, 2]
    e1, e2 = v1 - v0, v2 - v0
    pvec = torch.linalg.cross(directions, e2, dim=-1)
    det = (e1 * pvec).sum(-1)
    # Grazing hits have det ~ 0; keep the sign and bound the magnitude so gradients stay finite.
    det = torch.where(det >= 0, det.clamp(min=1e-12), det.clamp(max=-1e-12))
    tvec = origins - v0
    u = (tvec * pvec).sum(-1) / det
    qvec = torch.linalg.cross(tvec, e1, dim=-1)
    v = (directions * qvec).sum(-1) / det
    t = (e2 * qvec).sum(-1) / det
    return torch.stack([1.0 - u - v, u, v], dim=-1), t


def _interpolated_values(vertices, faces, normals, face_map, origins, directions, normalize: bool = True):
    """Differentiable map of per-vertex values (B, H, W, C) and ray parameters (B, H, W) for the pixels hit
    (face_map >= 0): normals (B, V, 3), renormalised, or with ``normalize=False`` any (B or 1, V, C) values."""
    b_idx, i_idx, j_idx = torch.nonzero(face_map >= 0, as_tuple=True)
    out_n = torch.zeros(*face_map.shape, normals.shape[-1], dtype=vertices.dtype, device=vertices.device)
    out_t = torch.zeros(face_map.shape, dtype=vertices.dtype, device=vertices.device)
    if b_idx.numel() == 0:
        return out_n, out_t
    f = face_map[b_idx, i_idx, j_idx]
    vid = faces[f]  # (M, 3)
    tri = vertices[b_idx[:, None], vid]  # (M, 3, 3)
    o = origins[b_idx, i_idx, j_idx].to(vertices.dtype)
    d = directions[b_idx, i_idx, j_idx].to(vertices.dtype)
    bary, t = _ray_triangle(o, d, tri)
    values = normals if normals.shape[0] == vertices.shape[0] else normals.expand(vertices.shape[0], -1, -1)
    n = (values[b_idx[:, None], vid].to(vertices.dtype) * bary[..., None]).sum(dim=1)
    if normalize:
        n = tnf.normalize(n, dim=-1, eps=1e-20)
    out_n = out_n.index_put((b_idx, i_idx, j_idx), n)
    out_t = out_t.index_put((b_idx, i_idx, j_idx), t)
    return out_n, out_t


@wp.kernel
def _nearest_edge_kernel(
    edge_bvh: wp.uint64,
    edge_a: wp.array(dtype=wp.vec3),
    edge_b: wp.array(dtype=wp.vec3),
    pixels: wp.array(dtype=wp.vec3),
    radius: float,
    nearest: wp.array(dtype=wp.int32),
):
    i = wp.tid()
    p = pixels[i]
    lo = wp.vec3(p[0] - radius, p[1] - radius, p[2] - 0.25)
    hi = wp.vec3(p[0] + radius, p[1] + radius, p[2] + 0.25)
    query = wp.bvh_query_aabb(edge_bvh, lo, hi)
    # Warp needs explicit int()/float() constructors for variables mutated inside loops.
    k = int(0)  # noqa: UP018
    best = int(-1)  # noqa: UP018
    best_d = float(1.0e30)  # noqa: UP018
    while wp.bvh_query_next(query, k):
        a = edge_a[k]
        ab = edge_b[k] - a
        ap = p - a
        ab2 = wp.dot(ab, ab)
        s = float(0.0)  # noqa: UP018
        if ab2 > 0.0:
            s = wp.clamp(wp.dot(ap, ab) / ab2, 0.0, 1.0)
        dv = ap - ab * s
        d2 = dv[0] * dv[0] + dv[1] * dv[1]
        if d2 < best_d:
            best_d = d2
            best = k
    nearest[i] = best


def _box_max(x: torch.Tensor, radius: int) -> torch.Tensor:
    """Max over a (2r+1)^2 window of (B, 1, H, W) images, as two separable 1D passes."""
    k = 2 * radius + 1
    x = tnf.max_pool2d(x, (k, 1), stride=1, padding=(radius, 0))
    return tnf.max_pool2d(x, (1, k), stride=1, padding=(0, radius))


def _sample_mask(mask: torch.Tensor, b: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Nearest-pixel lookup of a (B, H, W) mask at pixel positions uv (M, 2); False outside the image."""
    h, w = mask.shape[1:]
    j = torch.floor(uv[:, 0]).long()
    i = torch.floor(uv[:, 1]).long()
    inside = (i >= 0) & (i < h) & (j >= 0) & (j < w)
    return mask[b, i.clamp(0, h - 1), j.clamp(0, w - 1)] & inside


def _soft_silhouette(vertices, faces, topology, camera, mask, sigma_px, band_px):
    """Soft silhouette (B, H, W): the hard mask, and sigmoid(signed edge distance / sigma) in the boundary band."""
    batch, height, width = mask.shape
    device = vertices.device
    hard = mask.to(vertices.dtype)
    # Band of pixels within band_px (Chebyshev) of a mask transition.
    m = mask[:, None].to(torch.float32)
    dilated = _box_max(m, band_px)[:, 0] > 0
    eroded = -_box_max(-m, band_px)[:, 0] > 0
    band = dilated & ~eroded
    b_idx, i_idx, j_idx = torch.nonzero(band, as_tuple=True)
    if b_idx.numel() == 0:
        return hard
    uv = camera.project(vertices) * torch.tensor(
        [width / camera.width, height / camera.height], dtype=vertices.dtype, device=device
    )  # (B, V, 2) in output pixels
    with torch.no_grad():
        uvd = uv.detach()
        tri = uvd[:, faces]  # (B, F, 3, 2)
        e1, e2 = tri[:, :, 1] - tri[:, :, 0], tri[:, :, 2] - tri[:, :, 0]
        # v points down, so counter-clockwise (front-facing) triangles have negative pixel-space area.
        front = (e1[..., 0] * e2[..., 1] - e1[..., 1] * e2[..., 0]) < 0  # (B, F)
        f0, f1 = topology.faces[:, 0], topology.faces[:, 1]
        open_edge = (f1 < 0)[None].expand(batch, -1)
        contour = open_edge | (front[:, f0] != front[:, f1.clamp(min=0)])
        eb, ei = torch.nonzero(contour, as_tuple=True)
        a = uvd[eb, topology.edges[ei, 0]]
        bb = uvd[eb, topology.edges[ei, 1]]
        mid = 0.5 * (a + bb)
        direction = bb - a
        normal = torch.stack([-direction[:, 1], direction[:, 0]], dim=-1)
        normal = normal / normal.norm(dim=-1, keepdim=True).clamp(min=1e-12)
        keep = _sample_mask(mask, eb, mid + normal) != _sample_mask(mask, eb, mid - normal)
        eb, ei, a, bb = eb[keep], ei[keep], a[keep], bb[keep]
        if eb.numel() == 0:
            return hard
        z = eb.to(torch.float32)[:, None]
        a3 = torch.cat([a.float(), z], dim=1).contiguous()
        b3 = torch.cat([bb.float(), z], dim=1).contiguous()
        pix = torch.stack([j_idx.float() + 0.5, i_idx.float() + 0.5, b_idx.float()], dim=1).contiguous()
        nearest = torch.empty(pix.shape[0], dtype=torch.int32, device=device)
        with warp_scope(device):
            edge_bvh = wp.Bvh(
                wp.from_torch(torch.minimum(a3, b3).contiguous(), dtype=wp.vec3),
                wp.from_torch(torch.maximum(a3, b3).contiguous(), dtype=wp.vec3),
            )
            wp.launch(
                _nearest_edge_kernel,
                dim=pix.shape[0],
                inputs=[
                    edge_bvh.id,
                    wp.from_torch(a3, dtype=wp.vec3),
                    wp.from_torch(b3, dtype=wp.vec3),
                    wp.from_torch(pix, dtype=wp.vec3),
                    float(band_px + 1.0),
                ],
                outputs=[wp.from_torch(nearest)],
            )
        found = nearest >= 0
        b_idx, i_idx, j_idx, nearest = b_idx[found], i_idx[found], j_idx[found], nearest[found].long()
    if b_idx.numel() == 0:
        return hard
    eb, ei = eb[nearest], ei[nearest]
    pa = uv[eb, topology.edges[ei, 0]]
    pb = uv[eb, topology.edges[ei, 1]]
    p = torch.stack([j_idx, i_idx], dim=-1).to(vertices.dtype) + 0.5
    ab = pb - pa
    s = (((p - pa) * ab).sum(-1) / (ab * ab).sum(-1).clamp(min=1e-12)).clamp(0.0, 1.0)
    dist = (p - pa - ab * s[:, None]).norm(dim=-1)
    sign = torch.where(mask[b_idx, i_idx, j_idx], 1.0, -1.0).to(vertices.dtype)
    soft = torch.sigmoid(sign * dist / sigma_px)
    return hard.index_put((b_idx, i_idx, j_idx), soft)


def render_differentiable(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    height: int | None = None,
    width: int | None = None,
    normals: bool = True,
    silhouette: bool = True,
    sigma_px: float = 1.0,
    topology: EdgeTopology | None = None,
    attributes: torch.Tensor | None = None,
) -> DiffRender:
    """Differentiable front/back normal maps, depth, soft silhouette and vertex attributes from one ray-cast pass.

    Args:
        vertices: (B, V, 3) camera-space vertices (float32 or float64; the outputs follow this dtype).
        faces: (F, 3) int64 faces, counter-clockwise seen from outside.
        camera: Orthographic or perspective camera with batch size B or 1.
        height: Output height H (default: camera.height).
        width: Output width W (default: camera.width).
        normals: Compute normal_front, normal_back and depth.
        silhouette: Compute the soft silhouette.
        sigma_px: Softness of the silhouette boundary in output pixels.
        topology: Precomputed ``edge_topology(faces)`` to reuse across iterations.
        attributes: optional (B or 1, V, C) per-vertex values (e.g. RGB colours) to interpolate at the nearest hit.

    Returns:
        DiffRender; fields not requested are None.
    """
    check_vertices(vertices)
    check_faces(faces, vertices.shape[1])
    if attributes is not None and (attributes.ndim != 3 or attributes.shape[0] not in (1, vertices.shape[0])
                                   or attributes.shape[1] != vertices.shape[1]):  # fmt: skip
        raise ValueError(f"attributes must be (B or 1, V, C) with V = {vertices.shape[1]}, "
                         f"got {tuple(attributes.shape)}")
    if sigma_px <= 0:
        raise ValueError(f"sigma_px must be positive, got {sigma_px}")
    faces = faces.to(device=vertices.device, dtype=torch.long)
    bvh = MeshBVH(vertices.detach(), faces, sign_method="none")
    hits, origins, directions = trace_camera(vertices, faces, camera, height, width, bvh=bvh, back=normals)
    out = DiffRender(mask=hits.hit, normal_front=None, normal_back=None, depth=None, silhouette=None)
    if normals:
        vn = vertex_normals(vertices, faces)
        out.normal_front, t_front = _interpolated_values(vertices, faces, vn, hits.face_front, origins, directions)
        out.normal_back, _ = _interpolated_values(vertices, faces, vn, hits.face_back, origins, directions)
        z = origins[..., 2].to(vertices.dtype) + t_front * directions[..., 2].to(vertices.dtype)
        out.depth = -z * hits.hit.to(vertices.dtype)
    if attributes is not None:
        out.attributes, _ = _interpolated_values(vertices, faces, attributes, hits.face_front, origins, directions,
                                                  normalize=False)  # fmt: skip
    if silhouette:
        topology = edge_topology(faces) if topology is None else topology
        band_px = max(2, int(math.ceil(4.0 * sigma_px)) + 1)
        out.silhouette = _soft_silhouette(vertices, faces, topology, camera, hits.hit, float(sigma_px), band_px)
    return out


def render_normals_differentiable(
    vertices: torch.Tensor, faces: torch.Tensor, camera: Camera, height: int | None = None, width: int | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Front and back smooth normal maps with gradients w.r.t. the vertices.

    Args:
        vertices: (B, V, 3) camera-space vertices.
        faces: (F, 3) int64 faces.
        camera: Orthographic or perspective camera.
        height: Output height H (default: camera.height).
        width: Output width W (default: camera.width).

    Returns:
        normal_front (B, H, W, 3), normal_back (B, H, W, 3), mask (B, H, W) bool; normals zero outside the mask.
    """
    r = render_differentiable(vertices, faces, camera, height, width, normals=True, silhouette=False)
    return r.normal_front, r.normal_back, r.mask


def render_silhouette_soft(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    height: int | None = None,
    width: int | None = None,
    sigma_px: float = 1.0,
    topology: EdgeTopology | None = None,
) -> torch.Tensor:
    """Soft silhouette with gradients w.r.t. vertex positions near the boundary.

    Args:
        vertices: (B, V, 3) camera-space vertices.
        faces: (F, 3) int64 faces.
        camera: Orthographic or perspective camera.
        height: Output height H (default: camera.height).
        width: Output width W (default: camera.width).
        sigma_px: Boundary softness in pixels.
        topology: Precomputed ``edge_topology(faces)``.

    Returns:
        (B, H, W) soft silhouette in [0, 1]; 0.5 exactly on the projected silhouette edge.
    """
    return render_differentiable(
        vertices, faces, camera, height, width, normals=False, silhouette=True, sigma_px=sigma_px, topology=topology
    ).silhouette


def normal_l1_loss(pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
    """Mean absolute normal difference over masked pixels (ICON's normal loss).

    Args:
        pred: (B, H, W, 3) predicted/rendered normals.
        target: (B, H, W, 3) target normals.
        mask: Optional (B, H, W) bool or float weights; default all pixels.

    Returns:
        Scalar loss (0 if the mask is empty).
    """
    if pred.shape != target.shape or pred.ndim != 4 or pred.shape[-1] != 3:
        raise ValueError(f"pred and target must both be (B, H, W, 3), got {tuple(pred.shape)}, {tuple(target.shape)}")
    diff = (pred - target).abs().sum(dim=-1) / 3.0
    if mask is None:
        return diff.mean()
    if mask.shape != pred.shape[:3]:
        raise ValueError(f"mask must be (B, H, W) = {tuple(pred.shape[:3])}, got {tuple(mask.shape)}")
    w = mask.to(diff.dtype)
    return (diff * w).sum() / w.sum().clamp(min=1.0)


def silhouette_loss(soft: torch.Tensor, mask: torch.Tensor, kind: str = "l1", uncovered: float = 1.0) -> torch.Tensor:
    """Silhouette loss between a soft render and a target mask.

    Args:
        soft: (B, H, W) soft silhouette in [0, 1].
        mask: (B, H, W) target mask (bool or float in [0, 1]).
        kind: "l1" (mean absolute difference, ICON) or "iou" (1 - soft IoU).
        uncovered: "l1" only: weight of mask the render leaves uncovered (render outside the mask always costs
            fully); below 1 for a naked body against a clothed mask, where clothing may fill it. 1 = symmetric.

    Returns:
        Scalar loss.
    """
    if soft.shape != mask.shape or soft.ndim != 3:
        raise ValueError(f"soft and mask must both be (B, H, W), got {tuple(soft.shape)} and {tuple(mask.shape)}")
    target = mask.to(soft.dtype)
    if kind == "l1":
        diff = soft - target
        return (diff.abs() if uncovered == 1.0 else torch.relu(diff) + uncovered * torch.relu(-diff)).mean()
    if kind == "iou":
        inter = (soft * target).sum(dim=(1, 2))
        union = (soft + target - soft * target).sum(dim=(1, 2)).clamp(min=1e-12)
        return (1.0 - inter / union).mean()
    raise ValueError(f"kind must be 'l1' or 'iou', got {kind!r}")
