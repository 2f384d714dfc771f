"""Scene randomisation of synthetic people: perspective cameras cropped like the pipeline crops, studio lights (key +
fill + ambient, colours), cast shadows and ambient occlusion by Warp ray casts, a floor that catches the person's
shadow, and partial occluders. Pure compute (torch / numpy, seeded generators).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from geometry.cameras import Camera, OrthographicCamera, PerspectiveCamera
from geometry.queries import MeshBVH
from geometry.render import cast_rays, trace_camera
from icon.person import compute_crop_boxes, mask_box

__all__ = [
    "CropView",
    "StudioLighting",
    "ambient_occlusion",
    "camera_rays",
    "occluder_mask",
    "perspective_crop_view",
    "render_floor",
    "sample_studio_lighting",
    "shade_studio",
    "shadow_factor",
]

_RAY_EPS = 2.0e-3  # metres: secondary rays start this far off the surface (no self-hits)


@dataclass
class CropView:
    """A perspective view of a person, cut to the pipeline's square crop.

    Attributes:
        transl: (3,) float32 translation that places the person (centred model coordinates) in camera space.
        camera: PerspectiveCamera (batch 1) of the S x S crop.
        source_camera: PerspectiveCamera of the square source frame the crop box was computed in.
        crop: (3,) float32 (cx, cy, side) of the crop in source pixels, from ``icon.person.compute_crop_boxes``.
        fov: Vertical field of view (degrees) of the source camera.
        distance: Distance (metres) of the person's centre from the camera.
    """

    transl: np.ndarray
    camera: PerspectiveCamera
    source_camera: PerspectiveCamera
    crop: np.ndarray
    fov: float
    distance: float

    @property
    def intrinsics(self) -> np.ndarray:
        """(3,) float32 (focal px, cx px, cy px) of the crop camera."""
        c = self.camera
        return np.array([float(c.focal[0]), float(c.cx[0]), float(c.cy[0])], np.float32)

    def weak_perspective(self) -> np.ndarray:
        """(3,) float32 (scale px/m, cx, cy): the orthographic camera that matches the view at the person's depth."""
        f, cx, cy = self.intrinsics
        return np.array([f / self.distance, cx, cy], np.float32)


def _pinhole(focal: float, cx: float, cy: float, size: int) -> PerspectiveCamera:
    t = lambda x: torch.tensor([float(x)], dtype=torch.float32)  # noqa: E731
    return PerspectiveCamera(focal=t(focal), cx=t(cx), cy=t(cy), width=size, height=size)


def perspective_crop_view(
    rng: np.random.Generator,
    vertices: np.ndarray,
    faces: np.ndarray,
    size: int,
    fov_range: tuple[float, float],
    fill_range: tuple[float, float],
    source_size: int,
    margin: float,
) -> CropView:
    """Place a mesh before a pinhole camera of random field of view and crop around its rendered mask.

    The distance follows the field of view so that the person's larger side fills ``fill_range`` of a square source
    frame; the person's centre is shifted off the optical axis at random (staying inside the frame). The mask of the
    source frame is ray-cast, its box goes through ``icon.person.compute_crop_boxes`` (the pipeline's crop), and the
    crop's camera is the source camera with the crop's scale and offset (so every map is rendered directly in the
    crop, exactly as ``icon.person.crop_frames`` would resample it).

    Args:
        rng: Seeded generator.
        vertices: (V, 3) mesh vertices in model coordinates (metres, Y up, facing any way).
        faces: (F, 3) int faces.
        size: Crop side S (pixels).
        fov_range: Vertical field of view range (degrees).
        fill_range: Fraction of the source frame filled by the person's larger side.
        source_size: Side of the square source frame (pixels).
        margin: ``compute_crop_boxes`` margin.

    Returns:
        CropView.
    """
    v = np.asarray(vertices, np.float64)
    lo, hi = v.min(0), v.max(0)
    centre = 0.5 * (lo + hi)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    fov = float(rng.uniform(*fov_range))
    focal = 0.5 * source_size / np.tan(np.radians(fov) / 2)
    fill = float(rng.uniform(*fill_range))
    # Distance of the nearest depth of the person: its larger side spans fill * source_size pixels there.
    depth_half = 0.5 * float(hi[2] - lo[2])
    distance = focal * extent / (fill * source_size) + depth_half
    room = max(0.0, 0.5 * source_size * (1.0 - fill) * 0.8)
    offset_px = rng.uniform(-room, room, 2)
    offset = offset_px * distance / focal
    transl = np.array([-centre[0] + offset[0], -centre[1] + offset[1], -centre[2] - distance], np.float32)
    source = _pinhole(focal, source_size / 2, source_size / 2, source_size)
    verts = torch.from_numpy((v + transl).astype(np.float32))[None]
    hits, _, _ = trace_camera(verts, torch.as_tensor(np.asarray(faces), dtype=torch.long), source, back=False)
    box = mask_box(hits.hit[0].numpy())
    if box is None:
        raise RuntimeError("the person is outside the perspective source frame")
    crop = compute_crop_boxes(box[None], margin=margin)[0]
    s = size / float(crop[2])
    x0, y0 = float(crop[0] - crop[2] / 2), float(crop[1] - crop[2] / 2)
    camera = _pinhole(focal * s, (source_size / 2 - x0) * s, (source_size / 2 - y0) * s, size)
    return CropView(transl, camera, source, crop.astype(np.float32), fov, float(distance))


def camera_rays(camera: Camera) -> tuple[torch.Tensor, torch.Tensor]:
    """(H, W, 3) ray origins and unit directions of a batch-1 camera (orthographic origins on z = 0)."""
    o, d = camera.rays()
    return o[0], d[0]


@dataclass
class StudioLighting:
    """Key + fill + ambient lights with colours, and a specular sheen.

    Attributes:
        key_direction: (3,) unit direction towards the key light (camera space).
        key_color: (3,) RGB intensity of the key light.
        fill_direction: (3,) unit direction towards the fill light.
        fill_color: (3,) RGB intensity of the fill light.
        ambient_color: (3,) RGB ambient intensity.
        specular: Strength of the Blinn-Phong sheen (0 = matte).
        shininess: Blinn-Phong exponent.
    """

    key_direction: np.ndarray
    key_color: np.ndarray
    fill_direction: np.ndarray
    fill_color: np.ndarray
    ambient_color: np.ndarray
    specular: float = 0.0
    shininess: float = 20.0


def _tint(rng: np.random.Generator, warmth: float) -> np.ndarray:
    """A light colour near white: warm (positive) or cool (negative) plus a little random tint."""
    base = np.array([1.0 + 0.25 * warmth, 1.0, 1.0 - 0.3 * warmth])
    return np.clip(base + rng.normal(0, 0.05, 3), 0.3, 1.5)


def sample_studio_lighting(rng: np.random.Generator, specular: bool = False) -> StudioLighting:
    """Key light from above / the side of the camera's half space, a dimmer fill from the other side, ambient."""
    az = rng.uniform(-1.3, 1.3)
    el = rng.uniform(0.2, 1.1)
    key = np.array([np.sin(az) * np.cos(el), np.sin(el), np.cos(az) * np.cos(el)])
    az_f = -np.sign(az) * rng.uniform(0.3, 1.4)
    el_f = rng.uniform(-0.2, 0.6)
    fill = np.array([np.sin(az_f) * np.cos(el_f), np.sin(el_f), np.cos(az_f) * np.cos(el_f)])
    gain = rng.uniform(0.7, 1.2)
    key_c = _tint(rng, rng.uniform(-1, 1)) * gain
    fill_c = _tint(rng, rng.uniform(-1, 1)) * gain * rng.uniform(0.1, 0.45)
    amb_c = _tint(rng, rng.uniform(-1, 1)) * rng.uniform(0.08, 0.35)
    spec = float(rng.uniform(0.05, 0.5)) if specular else 0.0
    return StudioLighting(key / np.linalg.norm(key), key_c, fill / np.linalg.norm(fill), fill_c, amb_c, spec,
                          float(rng.uniform(8, 60)))  # fmt: skip


def shade_studio(
    albedo: torch.Tensor,
    normals: torch.Tensor,
    view: torch.Tensor,
    light: StudioLighting,
    shadow: torch.Tensor | None = None,
    occlusion: torch.Tensor | None = None,
) -> torch.Tensor:
    """Lambert key + fill + ambient with optional shadow / occlusion factors and Blinn-Phong sheen.

    Args:
        albedo: (N, 3) in [0, 1].
        normals: (N, 3) unit normals.
        view: (N, 3) unit directions from the surface towards the camera.
        light: Lights.
        shadow: (N,) in [0, 1], 1 = the key light is visible (default all 1).
        occlusion: (N,) in [0, 1], 1 = open hemisphere (default all 1); scales ambient and fill.

    Returns:
        (N, 3) colour in [0, 1].
    """
    t = lambda a: torch.as_tensor(np.asarray(a), dtype=normals.dtype, device=normals.device)  # noqa: E731
    ones = torch.ones(len(normals), dtype=normals.dtype, device=normals.device)
    shadow = ones if shadow is None else shadow
    occlusion = ones if occlusion is None else occlusion
    key_d, fill_d = t(light.key_direction), t(light.fill_direction)
    key = (normals @ key_d).clamp(min=0.0) * shadow
    fill = (normals @ fill_d).clamp(min=0.0) * occlusion
    diffuse = key[:, None] * t(light.key_color) + fill[:, None] * t(light.fill_color)
    diffuse = diffuse + occlusion[:, None] * t(light.ambient_color)
    colour = albedo * diffuse
    if light.specular > 0:
        half = torch.nn.functional.normalize(view + key_d, dim=-1)
        spec = (normals * half).sum(-1).clamp(min=0.0) ** light.shininess * shadow * (key > 0)
        colour = colour + light.specular * spec[:, None] * t(light.key_color)
    return colour.clamp(0.0, 1.0)


def shadow_factor(bvh: MeshBVH, points: torch.Tensor, normals: torch.Tensor, direction: np.ndarray,
                  reach: float = 5.0) -> torch.Tensor:  # fmt: skip
    """(N,) 1 where a ray from each point (N, 3) (lifted along its normal (N, 3)) toward ``direction`` (3,) misses
    the mesh within ``reach`` metres, else 0 (a hard shadow of a directional light)."""
    if len(points) == 0:
        return torch.ones(0)
    d = torch.as_tensor(np.asarray(direction), dtype=torch.float32).expand_as(points).contiguous()
    o = (points + _RAY_EPS * normals).float().contiguous()
    zero, far = torch.zeros(1), torch.full((1,), reach)
    hits = cast_rays(bvh, o[None], d[None], zero, far, back=False)
    return (~hits.hit[0]).float()


def ambient_occlusion(bvh: MeshBVH, points: torch.Tensor, normals: torch.Tensor, rng: np.random.Generator,
                      rays: int, radius: float = 0.3) -> torch.Tensor:  # fmt: skip
    """(N,) share of ``rays`` cosine-weighted hemisphere rays around each normal that escape within ``radius``.

    One random rotation of a stratified ray set per call (few rays, low noise between neighbouring pixels).
    """
    n = len(points)
    if n == 0 or rays == 0:
        return torch.ones(n)
    # Stratified cosine-weighted directions in a local frame (z = normal), randomly rotated about z.
    k = np.arange(rays)
    r = np.sqrt((k + rng.uniform(0.2, 0.8)) / rays)
    phi = 2 * np.pi * k * 0.618034 + rng.uniform(0, 2 * np.pi)
    local = torch.as_tensor(np.stack([r * np.cos(phi), r * np.sin(phi), np.sqrt(1 - r**2)], 1), dtype=torch.float32)
    nrm = normals.float()
    helper = torch.where(nrm[:, :1].abs() < 0.9, torch.tensor([1.0, 0, 0]), torch.tensor([0, 1.0, 0]))
    tx = torch.nn.functional.normalize(torch.cross(helper, nrm, dim=-1), dim=-1)
    ty = torch.cross(nrm, tx, dim=-1)
    dirs = local[None, :, 0:1] * tx[:, None] + local[None, :, 1:2] * ty[:, None] + local[None, :, 2:3] * nrm[:, None]
    o = (points.float() + _RAY_EPS * nrm)[:, None].expand(-1, rays, -1).contiguous()
    hits = cast_rays(bvh, o[None], dirs.contiguous()[None], torch.zeros(1), torch.full((1,), radius), back=False)
    return 1.0 - hits.hit[0].float().mean(dim=1)


def render_floor(
    rng: np.random.Generator,
    camera: Camera,
    bvh: MeshBVH,
    feet: np.ndarray,
    light: StudioLighting,
    shadows: bool,
) -> np.ndarray:
    """(S, S, 3) float32 background: a textured ground plane through ``feet`` (3,) (the person's lowest point), lit
    by the key light with the person's cast shadow (if ``shadows``), a wall colour where rays miss the floor.

    Orthographic rays run parallel to a level floor, so for them the plane is pitched toward the camera by a random
    angle (as seen by a camera looking down on the person).
    """
    origins, dirs = camera_rays(camera)
    size_h, size_w = origins.shape[:2]
    o, d = origins.reshape(-1, 3).double(), dirs.reshape(-1, 3).double()
    if isinstance(camera, OrthographicCamera):
        pitch = rng.uniform(0.2, 0.6)
        normal = torch.tensor([0.0, np.cos(pitch), np.sin(pitch)], dtype=torch.float64)
    else:
        normal = torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64)
    point = torch.as_tensor(np.asarray(feet, np.float64))
    denom = d @ normal
    t = ((point - o) @ normal) / torch.where(denom.abs() < 1e-9, torch.full_like(denom, 1e-9), denom)
    hit = o + t[:, None] * d
    on_floor = (t > 0) & (denom < 0) & ((hit - point).norm(dim=-1) < 8.0)
    wall = np.clip(rng.uniform(0.25, 0.9) * (0.8 + 0.4 * rng.random(3)), 0, 1)
    tile_a = np.clip(rng.uniform(0.2, 0.9) * (0.8 + 0.4 * rng.random(3)), 0, 1)
    tile_b = np.clip(tile_a * rng.uniform(0.5, 0.95), 0, 1)
    period = rng.uniform(0.2, 0.8)
    # Floor coordinates: x and the in-plane direction perpendicular to x.
    axis2 = torch.cross(normal, torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64), dim=0)
    rel = hit - point
    a, b = rel[:, 0] / period, (rel @ axis2) / period
    checker = ((torch.floor(a) + torch.floor(b)) % 2).numpy()[:, None]
    albedo = tile_a * (1 - checker) + tile_b * checker
    lit = np.full(len(o), 1.0)
    sel = torch.nonzero(on_floor)[:, 0]
    key_d = np.asarray(light.key_direction, np.float64)
    lambert = max(float(normal.numpy() @ key_d), 0.0)
    if shadows and len(sel):
        pts = hit[sel].float()
        nrm = normal.float().expand_as(pts)
        lit[sel.numpy()] = shadow_factor(bvh, pts, nrm, key_d).numpy()
    shade = (lit * lambert)[:, None] * light.key_color + light.ambient_color + 0.5 * light.fill_color
    floor = np.clip(albedo * shade, 0, 1)
    image = np.where(on_floor.numpy()[:, None], floor, wall)
    return image.reshape(size_h, size_w, 3).astype(np.float32)


def occluder_mask(rng: np.random.Generator, person: np.ndarray) -> np.ndarray:
    """(S, S) bool mask of a partial occluder over the person's box: a bar entering from a side or a disc/ellipse,
    covering part (not all) of the (S, S) bool ``person`` mask."""
    size = person.shape[0]
    box = mask_box(person)
    if box is None:
        return np.zeros_like(person)
    x0, y0, x1, y1 = (float(v) for v in box)
    rows, cols = np.mgrid[0:size, 0:size] + 0.5
    for _ in range(8):
        if rng.random() < 0.5:
            # A bar (a table edge, a door frame, another person's arm) entering from one side of the box.
            side = int(rng.integers(4))
            frac = rng.uniform(0.15, 0.45)
            if side == 0:
                occ = rows > y1 - frac * (y1 - y0)
            elif side == 1:
                occ = rows < y0 + frac * (y1 - y0)
            elif side == 2:
                occ = cols < x0 + frac * (x1 - x0)
            else:
                occ = cols > x1 - frac * (x1 - x0)
        else:
            cx, cy = rng.uniform(x0, x1), rng.uniform(y0, y1)
            rx, ry = rng.uniform(0.1, 0.35) * (x1 - x0 + 1), rng.uniform(0.08, 0.3) * (y1 - y0 + 1)
            occ = ((cols - cx) / rx) ** 2 + ((rows - cy) / ry) ** 2 < 1
        share = (occ & person).sum() / max(person.sum(), 1)
        if 0.05 < share < 0.5:
            return occ
    return np.zeros_like(person)
