"""Ray-cast rendering with Warp: masks, front/back depth, faces, barycentrics and smooth normal maps; visibility.

Front = nearest hit along each pixel ray, back = farthest hit (found by casting the same line backwards from beyond
the mesh), both in the front camera's image frame. Normals are camera-space (= world) outward unit normals.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import warp as wp

from geometry.cameras import Camera, OrthographicCamera, PerspectiveCamera, check_points
from geometry.queries import (
    MeshBVH,
    check_faces,
    check_vertices,
    interpolate_face_attributes,
    vertex_normals,
    warp_scope,
)

# Kernels here are never differentiated by Warp (torch does the gradients): skip compiling adjoints.
wp.set_module_options({"enable_backward": False})

__all__ = ["RayHits", "RenderResult", "cast_rays", "point_visibility", "render_mesh", "shade_normals", "trace_camera"]

_MARGIN = 1.0e-2  # metres kept between the ray starts and the mesh bounds


@wp.kernel
def _front_back_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),
    origins: wp.array2d(dtype=wp.vec3),
    directions: wp.array2d(dtype=wp.vec3),
    t_near: wp.array(dtype=wp.float32),
    t_far: wp.array(dtype=wp.float32),
    with_back: int,
    face_front: wp.array2d(dtype=wp.int32),
    bary_front: wp.array2d(dtype=wp.vec3),
    t_front: wp.array2d(dtype=wp.float32),
    face_back: wp.array2d(dtype=wp.int32),
    bary_back: wp.array2d(dtype=wp.vec3),
    t_back: wp.array2d(dtype=wp.float32),
):
    b, i = wp.tid()
    o = origins[b, i]
    d = directions[b, i]
    t0 = t_near[b]
    t1 = t_far[b]
    span = t1 - t0
    hit = wp.mesh_query_ray(mesh_ids[b], o + d * t0, d, span)
    if hit.result:
        face_front[b, i] = hit.face
        bary_front[b, i] = wp.vec3(hit.u, hit.v, 1.0 - hit.u - hit.v)
        t_front[b, i] = t0 + hit.t
        # The farthest hit along the forward ray is the nearest one along the reversed ray.
        back = wp.mesh_query_ray(mesh_ids[b], o + d * t1, -d, wp.where(with_back != 0, span, 0.0))
        if back.result:
            face_back[b, i] = back.face
            bary_back[b, i] = wp.vec3(back.u, back.v, 1.0 - back.u - back.v)
            t_back[b, i] = t1 - back.t
        else:
            face_back[b, i] = hit.face
            bary_back[b, i] = wp.vec3(hit.u, hit.v, 1.0 - hit.u - hit.v)
            t_back[b, i] = t0 + hit.t
    else:
        face_front[b, i] = -1
        bary_front[b, i] = wp.vec3(0.0, 0.0, 0.0)
        t_front[b, i] = 0.0
        face_back[b, i] = -1
        bary_back[b, i] = wp.vec3(0.0, 0.0, 0.0)
        t_back[b, i] = 0.0


@wp.kernel
def _occluded_kernel(
    mesh_ids: wp.array(dtype=wp.uint64),
    origins: wp.array2d(dtype=wp.vec3),
    directions: wp.array2d(dtype=wp.vec3),
    max_t: wp.array2d(dtype=wp.float32),
    occluded: wp.array2d(dtype=wp.int32),
):
    b, i = wp.tid()
    if max_t[b, i] > 0.0:
        hit = wp.mesh_query_ray_anyhit(mesh_ids[b], origins[b, i], directions[b, i], max_t[b, i])
        occluded[b, i] = wp.where(hit, 1, 0)
    else:
        occluded[b, i] = 0


@dataclass
class RayHits:
    """Nearest and farthest hits of a batch of rays (non-differentiable ray-caster output).

    Attributes:
        hit: (B, ...) bool, the ray hits the mesh.
        face_front: (B, ...) int64 face of the nearest hit (-1 = none).
        barycentric_front: (B, ..., 3) barycentric weights of the nearest hit on its face's vertices.
        t_front: (B, ...) ray parameter (distance along the unit direction from the origin) of the nearest hit.
        face_back: (B, ...) int64 face of the farthest hit (-1 = none).
        barycentric_back: (B, ..., 3) barycentric weights of the farthest hit.
        t_back: (B, ...) ray parameter of the farthest hit.
    """

    hit: torch.Tensor
    face_front: torch.Tensor
    barycentric_front: torch.Tensor
    t_front: torch.Tensor
    face_back: torch.Tensor
    barycentric_back: torch.Tensor
    t_back: torch.Tensor


@dataclass
class RenderResult:
    """Ray-cast render of a batch of meshes, all maps in the front camera's image frame.

    Attributes:
        mask: (B, H, W) bool silhouette.
        depth: (B, H, W) depth (-z, metres) of the nearest hit, 0 outside the mask.
        depth_back: (B, H, W) depth of the farthest hit, 0 outside the mask.
        face_index: (B, H, W) int64 face of the nearest hit, -1 outside the mask.
        face_index_back: (B, H, W) int64 face of the farthest hit, -1 outside the mask.
        barycentric: (B, H, W, 3) barycentrics of the nearest hit, zeros outside.
        barycentric_back: (B, H, W, 3) barycentrics of the farthest hit, zeros outside.
        normal_front: (B, H, W, 3) smooth outward camera-space unit normal at the nearest hit, zeros outside.
        normal_back: (B, H, W, 3) smooth outward camera-space unit normal at the farthest hit, zeros outside.
    """

    mask: torch.Tensor
    depth: torch.Tensor
    depth_back: torch.Tensor
    face_index: torch.Tensor
    face_index_back: torch.Tensor
    barycentric: torch.Tensor
    barycentric_back: torch.Tensor
    normal_front: torch.Tensor
    normal_back: torch.Tensor


def _check_camera(camera: Camera, batch: int) -> None:
    if not isinstance(camera, OrthographicCamera | PerspectiveCamera):
        raise ValueError(f"camera must be an OrthographicCamera or PerspectiveCamera, got {type(camera).__name__}")
    if camera.batch_size not in (1, batch):
        raise ValueError(f"camera batch size {camera.batch_size} does not match the {batch} meshes")


def _ray_span(camera: Camera, vertices: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-mesh ray parameter range [t_near, t_far] that brackets every vertex along every camera ray."""
    v = vertices.detach().to(torch.float32)
    if isinstance(camera, OrthographicCamera):
        # Origins sit on z = 0 and rays travel along -z, so t = -z.
        t_near = -(v[..., 2].amax(dim=1) + _MARGIN)
        t_far = -(v[..., 2].amin(dim=1) - _MARGIN)
    else:
        t_near = torch.zeros(v.shape[0], device=v.device)
        t_far = v.norm(dim=-1).amax(dim=1) + _MARGIN
    return t_near.contiguous(), t_far.contiguous()


def cast_rays(
    bvh: MeshBVH,
    origins: torch.Tensor,
    directions: torch.Tensor,
    t_near: torch.Tensor,
    t_far: torch.Tensor,
    back: bool = True,
) -> RayHits:
    """Nearest and farthest hits of rays restricted to t in [t_near, t_far] (per mesh).

    Args:
        bvh: BVHs of B meshes.
        origins: (B, ..., 3) ray origins.
        directions: (B, ..., 3) unit ray directions.
        t_near: (B,) start of the searched segment along each ray.
        t_far: (B,) end of the searched segment; must lie beyond the mesh for the back hit to be the farthest.
        back: If False, skip the farthest-hit search (the back fields then repeat the front hit).

    Returns:
        RayHits with the leading shape of ``origins``.
    """
    if origins.shape != directions.shape or origins.shape[-1] != 3 or origins.shape[0] != bvh.batch_size:
        raise ValueError(
            f"origins and directions must both be (B, ..., 3) with B = {bvh.batch_size}, got "
            f"{tuple(origins.shape)} and {tuple(directions.shape)}"
        )
    lead = origins.shape[:-1]
    b = lead[0]
    device = bvh.device
    o = origins.detach().to(device=device, dtype=torch.float32).reshape(b, -1, 3).contiguous()
    d = directions.detach().to(device=device, dtype=torch.float32).reshape(b, -1, 3).contiguous()
    n = o.shape[1]
    tn = t_near.detach().to(device=device, dtype=torch.float32).expand(b).contiguous()
    tf = t_far.detach().to(device=device, dtype=torch.float32).expand(b).contiguous()
    ff = torch.empty(b, n, dtype=torch.int32, device=device)
    fb = torch.empty_like(ff)
    bf = torch.empty(b, n, 3, dtype=torch.float32, device=device)
    bb = torch.empty_like(bf)
    tfr = torch.empty(b, n, dtype=torch.float32, device=device)
    tba = torch.empty_like(tfr)
    with warp_scope(device):
        wp.launch(
            _front_back_kernel,
            dim=(b, n),
            inputs=[
                bvh.mesh_ids,
                wp.from_torch(o, dtype=wp.vec3),
                wp.from_torch(d, dtype=wp.vec3),
                wp.from_torch(tn),
                wp.from_torch(tf),
                int(back),
            ],
            outputs=[
                wp.from_torch(ff),
                wp.from_torch(bf, dtype=wp.vec3),
                wp.from_torch(tfr),
                wp.from_torch(fb),
                wp.from_torch(bb, dtype=wp.vec3),
                wp.from_torch(tba),
            ],
        )
    ff = ff.long().reshape(lead)
    return RayHits(
        hit=ff >= 0,
        face_front=ff,
        barycentric_front=bf.reshape(*lead, 3),
        t_front=tfr.reshape(lead),
        face_back=fb.long().reshape(lead),
        barycentric_back=bb.reshape(*lead, 3),
        t_back=tba.reshape(lead),
    )


def trace_camera(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    height: int | None = None,
    width: int | None = None,
    bvh: MeshBVH | None = None,
    back: bool = True,
) -> tuple[RayHits, torch.Tensor, torch.Tensor]:
    """Cast one ray per pixel centre of ``camera`` (resampled to height x width) against the meshes.

    Returns:
        (hits with (B, H, W) leading shape, origins (B, H, W, 3), directions (B, H, W, 3)), float32 rays.
    """
    check_vertices(vertices)
    check_faces(faces, vertices.shape[1])
    batch = vertices.shape[0]
    _check_camera(camera, batch)
    if bvh is None:
        bvh = MeshBVH(vertices, faces, sign_method="none")
    elif bvh.batch_size != batch:
        raise ValueError(f"bvh holds {bvh.batch_size} meshes but vertices has batch size {batch}")
    origins, directions = camera.rays(height, width, device=vertices.device, dtype=torch.float32)
    if origins.shape[0] != batch:
        origins = origins.expand(batch, -1, -1, -1)
        directions = directions.expand(batch, -1, -1, -1)
    t_near, t_far = _ray_span(camera, vertices)
    return cast_rays(bvh, origins, directions, t_near, t_far, back=back), origins, directions


def render_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    height: int | None = None,
    width: int | None = None,
    bvh: MeshBVH | None = None,
) -> RenderResult:
    """Ray-cast masks, front/back depth, faces, barycentrics and smooth normal maps.

    Args:
        vertices: (B, V, 3) camera-space vertices in metres.
        faces: (F, 3) int64 faces, counter-clockwise seen from outside.
        camera: Orthographic or perspective camera with batch size B or 1.
        height: Output height H (default: camera.height; the same view resampled).
        width: Output width W (default: camera.width).
        bvh: Optional prebuilt (refitted) BVH of exactly these vertices, to skip the rebuild.

    Returns:
        RenderResult; float maps are float32, not differentiable (see geometry.diffrender for gradients).
    """
    hits, origins, directions = trace_camera(vertices, faces, camera, height, width, bvh)
    faces_l = faces.to(device=vertices.device, dtype=torch.long)
    mask = hits.hit
    fmask = mask.to(torch.float32)
    with torch.no_grad():
        normals = vertex_normals(vertices.detach().to(torch.float32), faces_l)
        n_front = interpolate_face_attributes(normals, faces_l, hits.face_front, hits.barycentric_front)
        n_back = interpolate_face_attributes(normals, faces_l, hits.face_back, hits.barycentric_back)
        n_front = torch.nn.functional.normalize(n_front, dim=-1, eps=1e-20)
        n_back = torch.nn.functional.normalize(n_back, dim=-1, eps=1e-20)
        depth = -(origins[..., 2] + hits.t_front * directions[..., 2]) * fmask
        depth_back = -(origins[..., 2] + hits.t_back * directions[..., 2]) * fmask
    return RenderResult(
        mask=mask,
        depth=depth,
        depth_back=depth_back,
        face_index=hits.face_front,
        face_index_back=hits.face_back,
        barycentric=hits.barycentric_front,
        barycentric_back=hits.barycentric_back,
        normal_front=n_front,
        normal_back=n_back,
    )


def point_visibility(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    points: torch.Tensor,
    tolerance: float = 1.0e-3,
    bvh: MeshBVH | None = None,
) -> torch.Tensor:
    """Whether each point is the first surface along its camera ray (nothing occludes it).

    Args:
        vertices: (B, V, 3) camera-space vertices.
        faces: (F, 3) int64 faces.
        camera: Orthographic or perspective camera, batch size B or 1.
        points: (B, N, 3) camera-space points (typically on the surface, e.g. the vertices).
        tolerance: Hits closer than this (metres, along the ray) in front of the point do not occlude it.
        bvh: Optional prebuilt BVH of these vertices.

    Returns:
        (B, N) bool, True where visible (points behind a perspective camera are invisible).
    """
    check_vertices(vertices)
    check_faces(faces, vertices.shape[1])
    batch = vertices.shape[0]
    check_points(points, batch=batch)
    _check_camera(camera, batch)
    bvh = MeshBVH(vertices, faces, sign_method="none") if bvh is None else bvh
    p = points.detach().to(device=vertices.device, dtype=torch.float32)
    if isinstance(camera, OrthographicCamera):
        start_z = vertices.detach()[..., 2].amax(dim=1).to(torch.float32) + _MARGIN  # (B,)
        origins = p.clone()
        origins[..., 2] = torch.maximum(start_z[:, None], p[..., 2] + _MARGIN)
        directions = torch.zeros_like(p)
        directions[..., 2] = -1.0
        reach = origins[..., 2] - p[..., 2]
        in_front = torch.ones_like(reach, dtype=torch.bool)
    else:
        reach = p.norm(dim=-1)
        directions = p / reach.clamp(min=1e-12)[..., None]
        origins = torch.zeros_like(p)
        in_front = p[..., 2] < 0
    max_t = (reach - tolerance).clamp(min=0.0).contiguous()
    occluded = torch.empty(p.shape[:2], dtype=torch.int32, device=p.device)
    with warp_scope(p.device):
        wp.launch(
            _occluded_kernel,
            dim=p.shape[:2],
            inputs=[
                bvh.mesh_ids,
                wp.from_torch(origins.contiguous(), dtype=wp.vec3),
                wp.from_torch(directions.contiguous(), dtype=wp.vec3),
                wp.from_torch(max_t),
            ],
            outputs=[wp.from_torch(occluded)],
        )
    return (occluded == 0) & in_front


def shade_normals(
    normal_map: torch.Tensor, light_dir=(0.0, 0.0, 1.0), ambient: float = 0.25, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Lambert shading of a normal map for previews.

    Args:
        normal_map: (B, H, W, 3) camera-space unit normals (zeros = background).
        light_dir: Direction towards the light, camera space (default: from the camera).
        ambient: Ambient term in [0, 1].
        mask: Optional (B, H, W) bool foreground; default: pixels with a non-zero normal.

    Returns:
        (B, H, W, 3) grey image in [0, 1], background black.
    """
    if normal_map.ndim != 4 or normal_map.shape[-1] != 3:
        raise ValueError(f"normal_map must be (B, H, W, 3), got {tuple(normal_map.shape)}")
    light = torch.as_tensor(light_dir, dtype=normal_map.dtype, device=normal_map.device)
    light = light / light.norm()
    if mask is None:
        mask = normal_map.abs().sum(dim=-1) > 0
    lambert = (normal_map * light).sum(dim=-1).clamp(min=0.0)
    intensity = (ambient + (1.0 - ambient) * lambert) * mask.to(normal_map.dtype)
    return intensity[..., None].expand(*intensity.shape, 3).clamp(0.0, 1.0)
