"""Per-vertex colour of a mesh fused over the frames that see it: visibility by ray cast, weights by viewing angle and
distance to the silhouette edge, a per-frame gain that roughly removes lighting differences, diffusion over the mesh
graph for vertices no frame saw. Pure compute: tensors in and out.

The mesh is given already posed into each frame (T, V, 3) in that frame's camera space, so the same function colours
the canonical avatar (posed with its skinning weights and held poses) and a single-frame reconstruction (T = 1).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as tnf

from geometry.cameras import Camera, OrthographicCamera
from geometry.queries import check_faces, check_vertices, mesh_adjacency, vertex_normals
from geometry.render import point_visibility

__all__ = [
    "VertexColours",
    "avatar_vertex_colours",
    "diffuse_fill",
    "edge_distance",
    "frame_vertex_colours",
    "fuse_vertex_colours",
    "mesh_adjacency",
]


@dataclass
class VertexColours:
    """Fused per-vertex colour.

    Attributes:
        colours: (V, 3) float RGB in [0, 1] (unseen vertices filled by diffusion).
        confidence: (V,) summed observation weight (0 where no frame saw the vertex).
        seen: (V,) bool, some frame saw the vertex.
        gains: (T, 3) per-frame, per-channel gain applied to that frame's samples (geometric mean 1 over frames).
    """

    colours: torch.Tensor
    confidence: torch.Tensor
    seen: torch.Tensor
    gains: torch.Tensor


def edge_distance(masks: torch.Tensor, max_px: int) -> torch.Tensor:
    """Chebyshev distance (px) of each pixel inside a mask to the nearest outside pixel, capped at ``max_px``.

    Args:
        masks: (T, H, W) bool.
        max_px: cap (>= 1); the cost is ``max_px`` max-pool passes.

    Returns:
        (T, H, W) float, 0 outside the mask, 1 on its border pixels, up to ``max_px`` deep inside.
    """
    if masks.ndim != 3:
        raise ValueError(f"masks must be (T, H, W), got {tuple(masks.shape)}")
    inside = masks[:, None].float()
    dist = torch.zeros_like(inside)
    cur = inside
    for _ in range(int(max_px)):
        dist = dist + cur
        # erosion by one pixel: min over the 3x3 window (pixels beyond the image count as outside)
        cur = -tnf.max_pool2d(-tnf.pad(cur, (1, 1, 1, 1), value=0.0), 3, stride=1)
    return dist[:, 0]


def diffuse_fill(values: torch.Tensor, known: torch.Tensor, faces: torch.Tensor, iterations: int = 500) -> torch.Tensor:
    """Fill unknown vertices by harmonic interpolation over the mesh graph (known values held fixed).

    Unknown vertices start at the mean of the known ones and are repeatedly replaced by their neighbours' average
    (Jacobi iterations of the graph Laplace equation), so a patch no frame saw blends smoothly between its borders.

    Args:
        values: (V, C) per-vertex values (only rows where ``known`` are used).
        known: (V,) bool.
        faces: (F, 3) int64 faces.
        iterations: Jacobi iterations (the fill travels about one edge per iteration).

    Returns:
        (V, C) values with unknown rows filled; ``values`` unchanged where known.
    """
    if values.ndim != 2 or known.shape != values.shape[:1]:
        raise ValueError(f"values must be (V, C) and known (V,), got {tuple(values.shape)}, {tuple(known.shape)}")
    if bool(known.all()):
        return values.clone()
    if not bool(known.any()):
        return torch.full_like(values, 0.5)
    adj = mesh_adjacency(faces.to(values.device), values.shape[0]).to(values.dtype)
    out = values.clone()
    out[~known] = values[known].mean(0)
    unknown = ~known
    for _ in range(int(iterations)):
        avg = adj @ out
        out = torch.where(unknown[:, None], avg, out)
    return out


def _sample_image(images: torch.Tensor, uv: torch.Tensor) -> torch.Tensor:
    """Bilinear lookup of (T, H, W, C) images at pixel positions (T, V, 2) -> (T, V, C)."""
    t, h, w, _ = images.shape
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)[:, None]  # (T, 1, V, 2)
    out = tnf.grid_sample(images.permute(0, 3, 1, 2), grid, mode="bilinear", align_corners=False, padding_mode="border")
    return out[:, :, 0].permute(0, 2, 1)


def _view_cosine(vertices: torch.Tensor, normals: torch.Tensor, camera: Camera) -> torch.Tensor:
    """cos of the angle between each vertex normal and the direction to the camera (T, V)."""
    if isinstance(camera, OrthographicCamera):
        return normals[..., 2]
    to_camera = -tnf.normalize(vertices, dim=-1)
    return (normals * to_camera).sum(-1)


def _solve_gains(samples: torch.Tensor, weights: torch.Tensor, iterations: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Alternate the fused colour (weighted mean) and per-frame gains g_t = argmin sum_v w |g_t s_tv - c_v|^2."""
    t = samples.shape[0]
    gains = torch.ones(t, 3, dtype=samples.dtype, device=samples.device)
    wsum = weights.sum(0).clamp(min=1e-8)[:, None]  # (V, 1)
    colours = (weights[..., None] * samples).sum(0) / wsum
    for _ in range(iterations):
        num = (weights[..., None] * samples * colours[None]).sum(1)  # (T, 3)
        den = (weights[..., None] * samples * samples).sum(1).clamp(min=1e-8)
        gains = (num / den).clamp(0.25, 4.0)
        gains = gains / torch.exp(torch.log(gains).mean(0, keepdim=True))  # keep the overall exposure
        colours = (weights[..., None] * gains[:, None] * samples).sum(0) / wsum
    return colours, gains


def fuse_vertex_colours(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    edge_px: float = 4.0,
    cos_power: float = 2.0,
    min_cos: float = 0.1,
    gain_iterations: int = 3,
    fill_iterations: int = 500,
    frame_weights: torch.Tensor | None = None,
) -> VertexColours:
    """Per-vertex colour of one mesh seen in T frames.

    A vertex's observation in frame t counts ``w = cos^p * clamp((d_edge - 1) / edge_px, 0, 1) * frame_weight``
    where it is visible (ray cast with the vertex nudged off the surface) and faces the camera by at least
    ``min_cos``; ``d_edge`` is its pixel's distance (px) to the mask border (border pixels mix in background).
    Per-frame gains (one per channel) are solved so the frames agree where they overlap (lighting roughly removed).

    Args:
        vertices: (T, V, 3) the mesh posed into each frame, in that frame's camera space (metres).
        faces: (F, 3) int64 faces, counter-clockwise seen from outside.
        camera: camera with batch size T (or 1).
        images: (T, H, W, 3) float RGB in [0, 1] (the camera's image size).
        masks: optional (T, H, W) bool person masks (default: every pixel counts, no edge weighting).
        edge_px: distance to the mask border (px) at which an observation reaches full weight.
        cos_power: exponent of the viewing-angle weight.
        min_cos: observations more grazing than this are dropped.
        gain_iterations: alternations of the per-frame gain solve (0: no gain correction).
        fill_iterations: diffusion iterations filling unseen vertices.
        frame_weights: optional (T,) weights of whole frames.

    Returns:
        VertexColours.
    """
    check_vertices(vertices)
    check_faces(faces, vertices.shape[1])
    t, v = vertices.shape[:2]
    if images.ndim != 4 or images.shape[0] != t or images.shape[-1] != 3:
        raise ValueError(f"images must be (T, H, W, 3) with T = {t}, got {tuple(images.shape)}")
    if masks is not None and masks.shape != images.shape[:3]:
        raise ValueError(f"masks must be (T, H, W) = {tuple(images.shape[:3])}, got {tuple(masks.shape)}")
    h, w = images.shape[1:3]
    if (camera.height, camera.width) != (h, w):
        raise ValueError(f"camera is {camera.width}x{camera.height} px but the images are {w}x{h}")
    verts = vertices.detach().float()
    f = faces.long().to(verts.device)
    imgs = images.to(verts.device, torch.float32)
    with torch.no_grad():
        normals = vertex_normals(verts, f)
        offset = 2e-3 * float((verts.amax(1) - verts.amin(1)).norm(dim=-1).mean())
        visible = point_visibility(verts, f, camera, verts + offset * normals)  # (T, V)
        cos = _view_cosine(verts, normals, camera)
        uv = camera.project(verts)
        inside_img = (uv[..., 0] >= 0) & (uv[..., 0] < w) & (uv[..., 1] >= 0) & (uv[..., 1] < h)
        weight = cos.clamp(min=0).pow(cos_power) * (visible & (cos > min_cos) & inside_img)
        if masks is not None:
            depth = edge_distance(masks.to(verts.device), int(max(1, round(edge_px))))
            d = _sample_image(depth[..., None], uv)[..., 0]
            weight = weight * ((d - 1.0) / edge_px).clamp(0, 1)
        if frame_weights is not None:
            weight = weight * frame_weights.to(weight).reshape(t, 1)
        samples = _sample_image(imgs, uv)  # (T, V, 3)
        colours, gains = _solve_gains(samples, weight, gain_iterations)
        confidence = weight.sum(0)
        seen = confidence > 1e-6
        colours = diffuse_fill(colours, seen, f, fill_iterations).clamp(0, 1)
    return VertexColours(colours=colours, confidence=confidence, seen=seen, gains=gains)


def frame_vertex_colours(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    image: torch.Tensor,
    mask: torch.Tensor | None = None,
    edge_px: float = 4.0,
    fill_iterations: int = 200,
) -> torch.Tensor:
    """Colours (V, 3) of one frame's reconstruction from its own image (the hidden side filled by diffusion).

    Args:
        vertices: (V, 3) mesh in the frame's camera space.
        faces: (F, 3) int64 faces.
        camera: the frame's camera (batch size 1).
        image: (H, W, 3) float RGB in [0, 1].
        mask: optional (H, W) bool person mask.
        edge_px: see :func:`fuse_vertex_colours`.
        fill_iterations: diffusion iterations filling the hidden side.
    """
    m = None if mask is None else mask[None]
    out = fuse_vertex_colours(vertices[None], faces, camera, image[None], m, edge_px=edge_px, gain_iterations=0,
                              fill_iterations=fill_iterations)  # fmt: skip
    return out.colours


def avatar_vertex_colours(
    avatar,
    camera: Camera,
    images: torch.Tensor,
    masks: torch.Tensor | None = None,
    poses=None,
    edge_px: float = 4.0,
    frame_weights: torch.Tensor | None = None,
    cos_power: float = 2.0,
) -> VertexColours:
    """Colour of an avatar's canonical mesh fused over its T training frames.

    The canonical mesh is skinned into each frame with its skinning weights and the pose the avatar holds there
    (``avatar.frame_poses``), which places it in the frame's camera space.

    Args:
        avatar: ``avatar.model.Avatar``.
        camera: the frames' cameras (batch size T).
        images: (T, H, W, 3) float RGB in [0, 1].
        masks: optional (T, H, W) bool person masks.
        poses: ``avatar.poses.FramePoses`` of the T frames (default: ``avatar.frame_poses``).
        edge_px: see :func:`fuse_vertex_colours`.
        frame_weights: optional (T,) weights of whole frames (e.g. the refinement's robust weights).
        cos_power: see :func:`fuse_vertex_colours`.
    """
    from body.lbs import skin_points

    poses = avatar.frame_poses if poses is None else poses
    if len(poses) != images.shape[0]:
        raise ValueError(f"{len(poses)} poses for {images.shape[0]} images")
    posed = []
    with torch.no_grad():
        for idx in torch.arange(len(poses)).split(16):
            p = poses.to(avatar.device)
            tf = avatar.transforms(p.global_orient[idx], p.body_pose[idx], p.transl[idx])
            n = len(idx)
            posed.append(skin_points(avatar.vertices[None].expand(n, -1, -1),
                                     avatar.skin_weights[None].expand(n, -1, -1), tf))  # fmt: skip
    verts = torch.cat(posed)
    return fuse_vertex_colours(verts, avatar.faces, camera, images, masks, edge_px=edge_px, frame_weights=frame_weights,
                               cos_power=cos_power)  # fmt: skip
