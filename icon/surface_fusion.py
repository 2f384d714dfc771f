"""Watertight clothed surface from integrated front/back depth maps and the fitted body (pure compute).

The clothed person is the set of points that (1) project inside the person mask, (2) lie behind the integrated front
depth and in front of the integrated back depth along their pixel's ray (what the camera sees first and, by the back
normals, last), and (3) are not in a gap the camera cannot see: deeper than a shell behind the front and before the
back surface, and between the body's own first and last surface along the ray (the space between an arm and the
torso behind it), the body decides, grown by a clearance for the clothing on it (or, for the ``fused`` surface, the
implicit net decides); between the body and clothing the maps put farther out, the inside stays solid. Hands and feet
come from the body (blended in by their share and distance), and the fit's hands and feet, its least reliable parts,
neither guide nor cut the integration.
Points that project outside the image take the body's signed distance. The field is a continuous signed
distance-like function (metres, negative inside), so marching cubes gives a closed surface; the largest component is
kept. Nothing here caps how far clothing reaches from the body: the silhouette and the depth maps do.

Where clothing is wider than the body (a skirt between the legs) the normals, which mostly face the camera, say little
about its depth: the integration is then guided by the union of the body and an elliptic hull of the silhouette
(`silhouette_hull`, its profile smoothed across rows so that it makes no terraces beside arms). The silhouette's
walls, on a slightly blurred silhouette distance and a contour thickness averaged along the contour, are rounded into
the front/back slab (`round_intersection`) and the mesh gets a few Taubin passes (`taubin_smooth`), so the sides carry
no flat wall, seam of bumps or pixel stair-steps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as tnf
from pydantic import BaseModel, ConfigDict, Field

from geometry.cameras import Camera, OrthographicCamera
from geometry.queries import MeshBVH, mesh_adjacency
from geometry.render import render_mesh
from icon.implicit import sample_pixels
from icon.integrate import DepthMaps, IntegrationConfig, integrate_front_back

__all__ = [
    "ClothedDepth",
    "DepthHullField",
    "OccupancyFn",
    "SurfaceFusionConfig",
    "clothed_depth_maps",
    "close_pinholes",
    "downsample_maps",
    "fill_outside",
    "fused_surface",
    "mask_signed_distance",
    "masked_blur",
    "round_intersection",
    "silhouette_hull",
    "taubin_smooth",
]

#: Points (N, 3) camera space -> (N,) occupancy logits (> 0 inside), e.g. the implicit net on its point features.
OccupancyFn = Callable[[torch.Tensor], torch.Tensor]


class SurfaceFusionConfig(BaseModel):
    """Settings of the integrated clothed surface."""

    model_config = ConfigDict(extra="forbid")

    map_size: int = Field(
        256, ge=16, le=1024, description="Side of the normal/depth maps the integration runs on (crops are resampled)."
    )
    integration: IntegrationConfig = Field(default_factory=IntegrationConfig, description="Normal integration.")
    shell: float = Field(
        0.04, gt=0, description="Metres behind the integrated front (and before the back) depth that are inside "
        "whatever the body says: the depth maps alone decide there.",
    )  # fmt: skip
    shell_ramp: float = Field(0.02, gt=0, description="Metres over which the body takes over deeper than `shell`.")
    gap_clearance: float = Field(
        0.015, ge=0, description="Metres the body is grown by where it decides the unseen middle (clothing on it)."
    )
    carve_within_body: bool = Field(
        True, description="The body carves the unseen middle only between its own first and last surface along the "
        "pixel's ray (the gap between an arm and the torso behind it); between the body and a clothing surface the "
        "depth maps put farther out (loose clothing, a skirt beside the legs) the region stays solid. False: the body "
        "carves every point deeper than the shell, which hollows loose clothing into shells that open into stacks "
        "of thin sheets.",
    )  # fmt: skip
    fill_pixels: int = Field(
        3, ge=1, description="Depth maps are extended this many pixels beyond their masks before bilinear lookups."
    )
    part_distance: float = Field(
        0.04, ge=0, description="Points whose closest body point lies on a hand or foot within this (metres) take the "
        "body's signed distance (when hands and feet are replaced).",
    )  # fmt: skip
    part_prior: bool = Field(
        False, description="Hands and feet of the body guide the integration like the rest of it (False: their "
        "pixels get no body prior and no depth cuts: the fit's hands and feet are the least reliable parts, and a "
        "misplaced hand otherwise prints its outline into the clothing; with `replace_hands_feet` the body's own "
        "hands and feet are added to the surface anyway).",
    )  # fmt: skip
    part_blend: bool = Field(
        True, description="Hands and feet blend into the depth fusion: the body's signed distance weighs in by the "
        "closest point's hand/foot share and fades out towards `part_distance` (False: a hard switch, which leaves a "
        "shell where the switch crosses the clothing).",
    )  # fmt: skip
    margin: float = Field(0.03, gt=0, description="Metres added around the surface's box for marching cubes.")
    occupancy_scale: float = Field(
        0.01, gt=0, description="Metres per logit unit when the implicit net decides the occlusion gaps (fused)."
    )
    round_sides: float = Field(
        0.08, ge=0, description="Largest radius (metres) of the rounding where the front/back slab meets the "
        "silhouette's wall: each side becomes a half round of the local thickness (capped here) instead of a flat "
        "wall with two creases; 0 = sharp walls.",
    )  # fmt: skip
    hull_aspect: float = Field(
        0.6, ge=0, description="Depth-to-width ratio of the silhouette hull that guides the integration where the "
        "clothing is wider than the body (a skirt, a dress, a coat): each mask pixel's front/back prior is at least "
        "this fraction of the elliptic profile of its row's and column's mask runs (the smaller) around the nearest "
        "body depth; 0.6 is a human torso's depth/width. 0 = the body's depth alone.",
    )  # fmt: skip
    hull_smooth: float = Field(
        3.0, ge=0, description="Gaussian sigma (map pixels) over which the hull's half-depth and centre depth are "
        "averaged inside the mask: the per-row/column run profile and the nearest body pixel both jump from one row "
        "to the next beside arms and hips, which the integration turns into stacks of thin sheets where the normals "
        "are steep. 0 = off.",
    )  # fmt: skip
    hull_on_body: bool = Field(
        True, description="Let the hull push the guide beyond the body's own depth on body pixels too (False: the "
        "hull guides only pixels outside the body's silhouette; the body's depth stays the prior on it).",
    )  # fmt: skip
    side_smooth: float = Field(
        1.5, ge=0, description="Gaussian sigma (map pixels) of the blur of the silhouette's signed distance: the side "
        "walls follow a smoothed contour instead of the pixel stairs of the mask (a straight edge, whose signed "
        "distance is linear, does not move). 0 = off.",
    )  # fmt: skip
    smooth_iterations: int = Field(
        10, ge=0, description="Taubin (λ|μ) smoothing passes over the extracted mesh (removes the pixel and voxel "
        "stair-steps without shrinking it); 0 = off.",
    )  # fmt: skip


@dataclass
class ClothedDepth:
    """Integrated clothed depth and the body's rendered depth for B frames, all (B, R, R) at the map size R.

    Attributes:
        depth: integrated front/back clothed depth (``icon.integrate.DepthMaps``).
        body_front: body's nearest depth, 0 outside ``body_mask``.
        body_back: body's farthest depth, 0 outside ``body_mask``.
        body_mask: bool body silhouette.
    """

    depth: DepthMaps
    body_front: torch.Tensor
    body_back: torch.Tensor
    body_mask: torch.Tensor


def downsample_maps(
    normals_front: torch.Tensor, normals_back: torch.Tensor, mask: torch.Tensor, size: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Area-resample (B, S, S, 3) normal maps and a (B, S, S) mask to (B, size, size); normals renormalised, the mask
    keeps pixels at least half covered."""
    if normals_front.shape[1] == size:
        return normals_front, normals_back, mask.bool()
    cov = tnf.interpolate(mask.to(normals_front.dtype)[:, None], size=(size, size), mode="area")[:, 0]
    m = cov >= 0.5

    def down(n: torch.Tensor) -> torch.Tensor:
        n = tnf.interpolate(n.permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1)
        return tnf.normalize(n, dim=-1, eps=1e-12) * m[..., None].to(n.dtype)

    return down(normals_front), down(normals_back), m


def fill_outside(values: torch.Tensor, mask: torch.Tensor, pixels: int) -> torch.Tensor:
    """Extend (B, H, W) values beyond a (B, H, W) bool mask by `pixels` rings, each the mean of its filled
    4-neighbours (so bilinear lookups near the mask's edge do not mix in the zero background)."""
    v = (values * mask).to(torch.float32)[:, None]
    w = mask.to(torch.float32)[:, None]
    kernel = torch.tensor([[0.0, 1.0, 0.0], [1.0, 0.0, 1.0], [0.0, 1.0, 0.0]], device=v.device)[None, None]
    for _ in range(pixels):
        sv = tnf.conv2d(v, kernel, padding=1)
        sw = tnf.conv2d(w, kernel, padding=1)
        new = (w == 0) & (sw > 0)
        v = torch.where(new, sv / sw.clamp(min=1e-6), v)
        w = torch.where(new, torch.ones_like(w), w)
    return v[:, 0].to(values.dtype)


def mask_signed_distance(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) signed distance in pixels to the boundary of a (B, H, W) bool mask, negative inside (±0.5 at the
    pixels next to the boundary)."""
    from scipy.ndimage import distance_transform_edt

    out = []
    for m in mask.detach().cpu().numpy().astype(bool):
        if not m.any():
            out.append(np.full(m.shape, 1e6, np.float32))
            continue
        inside = distance_transform_edt(m)
        outside = distance_transform_edt(~m)
        out.append(np.where(m, 0.5 - inside, outside - 0.5).astype(np.float32))
    return torch.from_numpy(np.stack(out)).to(mask.device)


def clothed_depth_maps(
    normals_front: torch.Tensor,
    normals_back: torch.Tensor,
    masks: torch.Tensor,
    body_vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    config: SurfaceFusionConfig | None = None,
    part_faces: torch.Tensor | None = None,
) -> ClothedDepth:
    """Integrate B frames' clothed normals into front/back depth, guided by the body's rendered depth.

    Args:
        normals_front: (B, S, S, 3) clothed front normals (camera space, zeros outside the mask).
        normals_back: (B, S, S, 3) clothed back normals (front image frame).
        masks: (B, S, S) bool person masks.
        body_vertices: (B, V, 3) fitted body in camera space.
        faces: (F, 3) int64 body faces.
        camera: camera of the crops (batch B or 1).
        config: ``SurfaceFusionConfig``.
        part_faces: optional (F,) bool hand/foot faces; with ``config.part_prior`` off, pixels where the body shows
            them (front or back) are no body pixels for the integration (no prior, no depth cuts around them).

    Returns:
        ``ClothedDepth`` at ``config.map_size`` (or S if the crops are smaller); its body maps are the whole body's.
    """
    cfg = config or SurfaceFusionConfig()
    if normals_front.ndim != 4 or normals_front.shape != normals_back.shape or normals_front.shape[-1] != 3:
        raise ValueError(f"normal maps must both be (B, S, S, 3), got {tuple(normals_front.shape)} and "
                         f"{tuple(normals_back.shape)}")  # fmt: skip
    if masks.shape != normals_front.shape[:3]:
        raise ValueError(f"masks must be (B, S, S) = {tuple(normals_front.shape[:3])}, got {tuple(masks.shape)}")
    size = min(cfg.map_size, normals_front.shape[1])
    nf, nb, m = downsample_maps(normals_front.float(), normals_back.float(), masks.to(normals_front.device), size)
    body = render_mesh(body_vertices.detach().float(), faces, camera, size, size)
    prior_mask = body.mask
    if part_faces is not None and not cfg.part_prior:
        pf = part_faces.to(body.face_index.device)
        on_part = pf[body.face_index.clamp(min=0)] | pf[body.face_index_back.clamp(min=0)]
        prior_mask = body.mask & ~on_part
    guides = (None, None)
    if cfg.hull_aspect > 0:
        guides = silhouette_hull(m, body.depth, body.depth_back, prior_mask, _map_scale(camera, size), cfg.hull_aspect,
                                 isinstance(camera, OrthographicCamera), cfg.hull_smooth, cfg.hull_on_body)  # fmt: skip
    depth = integrate_front_back(nf, nb, m, camera, body.depth, body.depth_back, prior_mask, cfg.integration, *guides)
    return ClothedDepth(depth, body.depth, body.depth_back, body.mask)


def _run_profile(mask: np.ndarray) -> np.ndarray:
    """(H, W) half-chord in pixels of the circular profile along each row: for a pixel at x in a run of
    mask pixels [a, b), sqrt((w/2)² - (x + 0.5 - c)²) with w = b - a, c = (a + b) / 2; 0 outside the mask."""
    h, w = mask.shape
    out = np.zeros((h, w), np.float64)
    pad = np.zeros((h, w + 2), bool)
    pad[:, 1:-1] = mask
    d = np.diff(pad.astype(np.int8), axis=1)
    for r in range(h):
        starts, ends = np.nonzero(d[r] == 1)[0], np.nonzero(d[r] == -1)[0]
        for a, b in zip(starts, ends, strict=True):
            x = np.arange(a, b) + 0.5
            c, half = (a + b) / 2, (b - a) / 2
            out[r, a:b] = np.sqrt(np.clip(half**2 - (x - c) ** 2, 0, None))
    return out


def silhouette_hull(
    mask: torch.Tensor,
    body_front: torch.Tensor,
    body_back: torch.Tensor,
    body_mask: torch.Tensor,
    k: torch.Tensor,
    aspect: float,
    orthographic: bool = True,
    smooth: float = 0.0,
    on_body: bool = True,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Front/back depth guides: the union of the body and an elliptic hull of the silhouette around it.

    The hull's half-depth at a mask pixel is ``aspect`` times the smaller of its row's and its column's circular
    profiles (a run of width w gives w/2 at its centre, 0 at its ends), centred on the mid-depth of the nearest body
    pixel. Where the body is deeper than the hull the body stays (tight clothing); where the clothing reaches beyond
    the body (a skirt between the legs, a coat's hem) the hull gives the integration a thickness the normals alone,
    all facing the camera, cannot.

    Args:
        mask: (B, R, R) bool person mask.
        body_front, body_back: (B, R, R) the body's nearest/farthest depth, valid on ``body_mask``.
        body_mask: (B, R, R) bool.
        k: (B,) or scalar pixels per metre (orthographic) or focal length in pixels (pinhole) at this resolution.
        aspect: depth-to-width ratio of the hull.
        orthographic: False for a pinhole camera (pixels per metre = k / depth).
        smooth: Gaussian sigma in pixels: the half-depth profile and, off the body, the centre depth are replaced by
            their mask-normalised Gaussian averages (``masked_blur``); 0 = as described above.
        on_body: False keeps the body's own depth on body pixels (the hull only guides pixels off the body).

    Returns:
        (B, R, R) front and back guide depths, NaN outside the mask (and in frames without a body pixel).
    """
    from scipy.ndimage import distance_transform_edt

    masks = mask.detach().cpu().numpy().astype(bool)
    bm = body_mask.detach().cpu().numpy().astype(bool)
    bf, bb = body_front.detach().cpu().double().numpy(), body_back.detach().cpu().double().numpy()
    kk = np.broadcast_to(np.asarray(torch.as_tensor(k).detach().cpu().double()).reshape(-1), (len(masks),))
    fronts, backs = np.full(masks.shape, np.nan), np.full(masks.shape, np.nan)
    for i, m in enumerate(masks):
        if not m.any() or not bm[i].any():
            continue
        half_px = np.minimum(_run_profile(m), _run_profile(m.T).T)
        _, (ii, jj) = distance_transform_edt(~bm[i], return_indices=True)
        mid = 0.5 * (bf[i] + bb[i])[ii, jj]
        if smooth > 0:
            half_px = masked_blur(half_px, m, smooth)
            mid = np.where(bm[i], mid, masked_blur(mid, m, smooth))
        per_m = kk[i] if orthographic else kk[i] / np.maximum(mid, 1e-6)
        half = aspect * half_px / per_m
        front, back = mid - half, mid + half
        front = np.where(bm[i], np.minimum(front, bf[i]) if on_body else bf[i], front)
        back = np.where(bm[i], np.maximum(back, bb[i]) if on_body else bb[i], back)
        fronts[i] = np.where(m, front, np.nan)
        backs[i] = np.where(m, back, np.nan)
    return (torch.from_numpy(fronts).to(body_front.device, body_front.dtype),
            torch.from_numpy(backs).to(body_front.device, body_front.dtype))  # fmt: skip


def masked_blur(values: np.ndarray, mask: np.ndarray, sigma: float) -> np.ndarray:
    """(H, W) Gaussian average (sigma in pixels) of ``values`` over the (H, W) bool ``mask``'s pixels only
    (normalised convolution: pixels outside the mask neither contribute nor dilute); values outside are kept."""
    from scipy.ndimage import gaussian_filter

    w = gaussian_filter(mask.astype(np.float64), sigma, mode="constant")
    v = gaussian_filter(np.where(mask, values, 0.0).astype(np.float64), sigma, mode="constant")
    return np.where(mask, v / np.maximum(w, 1e-12), values)


def _map_scale(camera: Camera, map_size: int) -> torch.Tensor:
    """Pixels per unit at the map's resolution: orthographic scale (px/m) or focal length (px)."""
    k = camera.scale if isinstance(camera, OrthographicCamera) else camera.focal
    return k * (map_size / camera.width)


class DepthHullField:
    """Signed distance-like field (metres, negative inside) of one person's clothed surface.

    ``max(F - d, d - B, mask distance)`` is the region behind the integrated front depth F, before the back depth B
    and inside the silhouette. Within ``shell`` of F or B the depth maps decide alone; deeper along the ray (the part
    neither side sees: the space between an arm and the torso behind it, or the inside of a loose dress) the body's
    signed distance, grown by ``gap_clearance``, may carve the region (max of the two), with a linear ramp between.
    Carved space deep inside a garment becomes an internal cavity that the largest-component step drops.

    Args:
        depth: ``ClothedDepth`` of this frame (batch 1).
        camera: camera of the crops, batch 1.
        body_vertices: (V, 3) fitted body in camera space.
        faces: (F, 3) int64 body faces.
        part_faces: optional (F,) bool body faces of hands and feet, replaced by the body's.
        config: ``SurfaceFusionConfig``.
        occupancy: optional occupancy-logit function deciding the unseen middle instead of the body (fused surface).
    """

    def __init__(
        self,
        depth: ClothedDepth,
        camera: Camera,
        body_vertices: torch.Tensor,
        faces: torch.Tensor,
        part_faces: torch.Tensor | None = None,
        config: SurfaceFusionConfig | None = None,
        occupancy: OccupancyFn | None = None,
    ) -> None:
        if camera.batch_size != 1 or depth.depth.front.shape[0] != 1:
            raise ValueError("DepthHullField describes one person: camera and depth maps must have batch size 1")
        if body_vertices.ndim != 2 or body_vertices.shape[1] != 3:
            raise ValueError(f"body_vertices must be (V, 3), got {tuple(body_vertices.shape)}")
        self.config = cfg = config or SurfaceFusionConfig()
        self.camera = camera
        self.occupancy = occupancy
        device = body_vertices.device
        mask = depth.depth.mask.to(device)
        size = mask.shape[-1]
        self.map_size = size
        front = fill_outside(depth.depth.front.to(device), mask, cfg.fill_pixels)
        back = fill_outside(depth.depth.back.to(device), mask, cfg.fill_pixels)
        sdm = mask_signed_distance(mask)
        if cfg.side_smooth > 0:
            from scipy.ndimage import gaussian_filter

            sdm = torch.from_numpy(np.stack([gaussian_filter(x, cfg.side_smooth, mode="nearest")
                                             for x in sdm.cpu().numpy()])).to(sdm.device)  # fmt: skip
        bmask = depth.body_mask.to(device)
        body_front = fill_outside(depth.body_front.to(device), bmask, cfg.fill_pixels)
        body_back = fill_outside(depth.body_back.to(device), bmask, cfg.fill_pixels)
        self.maps = torch.stack([front, back, sdm, body_front, body_back, bmask.to(front.dtype)], dim=-1).float()
        self.k = _map_scale(camera, size).to(device=device, dtype=torch.float32)
        self.body_vertices = body_vertices
        self.bvh = MeshBVH(body_vertices[None].float(), faces, sign_method="winding")
        self.part_faces = None if part_faces is None else part_faces.to(device)
        self.part_boxes = None
        if part_faces is not None and bool(part_faces.any()):
            used = torch.zeros(body_vertices.shape[0], dtype=torch.bool, device=device)
            used[faces.to(device)[self.part_faces].reshape(-1)] = True
            self.part_boxes = _part_boxes(body_vertices.float(), used, cfg.part_distance)
            self.part_vertex = used.float()
            self.faces = faces.to(device)
        self._mask_points(depth.depth, mask)

    def _mask_points(self, depth: DepthMaps, mask: torch.Tensor) -> None:
        """Camera-space points of the front and back depth (for the bounds)."""
        size = self.map_size
        ij = torch.nonzero(mask[0])
        pix = (ij.flip(-1).float() + 0.5) * (self.camera.width / size)
        d = torch.stack([depth.front[0][mask[0]], depth.back[0][mask[0]]]).float().to(pix.device)
        cam = self.camera.to(device=pix.device, dtype=torch.float32)
        pts = [cam.unproject(pix[None], d[i][None])[0] for i in range(2)]
        self.surface_points = torch.cat(pts) if len(ij) else torch.zeros(0, 3, device=pix.device)

    def _part_weight(self, face_index, barycentric, distance) -> torch.Tensor:
        return _part_weight_of(self.part_vertex, self.faces, face_index, barycentric, distance,
                               self.config.part_distance)  # fmt: skip

    def bounds(self) -> np.ndarray:
        """(2, 3) box holding the depth-map points and the body, plus the margin."""
        pts = torch.cat([self.surface_points, self.body_vertices.detach().float().to(self.surface_points.device)])
        lo = pts.amin(0).cpu().double().numpy() - self.config.margin
        hi = pts.amax(0).cpu().double().numpy() + self.config.margin
        return np.stack([lo, hi])

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) field at (N, 3) camera-space points (metres, negative inside)."""
        cfg = self.config
        p = points.float()
        cam = self.camera
        pix = cam.project(p[None])[0]
        w, h = cam.width, cam.height
        in_image = (pix[:, 0] >= 0) & (pix[:, 0] <= w) & (pix[:, 1] >= 0) & (pix[:, 1] <= h)
        front, back, sdm, body_front, body_back, body_cover = sample_pixels(self.maps, pix[None], (h, w))[0].unbind(-1)
        d = -p[:, 2]
        k = self.k if isinstance(cam, OrthographicCamera) else self.k / d.clamp(min=1e-6)
        phi = round_intersection(torch.maximum(front - d, d - back), sdm / k,
                                 (0.5 * (back - front)).clamp(min=0.0, max=cfg.round_sides))  # fmt: skip
        phi = torch.where(in_image, phi, torch.full_like(phi, 1.0))
        depth_in = torch.minimum(d - front, back - d)  # how far behind the nearer observed surface
        alpha = ((depth_in - cfg.shell) / cfg.shell_ramp).clamp(0.0, 1.0)
        if cfg.carve_within_body:  # only between the body's first and last surface along the ray
            within = torch.minimum(d - body_front, body_back - d)
            alpha = alpha * (within / cfg.shell_ramp).clamp(0.0, 1.0) * (body_cover > 0.5)
        middle = in_image & (alpha > 0) & (phi < 0)
        need = middle | ~in_image
        part_box = torch.zeros_like(need)
        if self.part_boxes is not None:
            lo, hi = self.part_boxes
            part_box = ((p[:, None] >= lo[None]) & (p[:, None] <= hi[None])).all(-1).any(-1)
            need |= part_box
        idx = torch.nonzero(need)[:, 0]
        if len(idx) > 0:
            cp = self.bvh.query(p[idx][None], normals=False)
            sd = cp.signed_distance[0].to(phi.dtype)
            sub = phi[idx]
            mid = middle[idx]
            if bool(mid.any()):
                if self.occupancy is not None:
                    source = torch.zeros_like(sd)
                    source[mid] = -self.occupancy(p[idx][mid]).to(sd.dtype) * cfg.occupancy_scale
                else:
                    source = sd - cfg.gap_clearance
                a = alpha[idx]
                carve = a * source - (1.0 - a) * cfg.shell
                sub = torch.where(mid, torch.maximum(sub, carve), sub)
            sub = torch.where(~in_image[idx], sd, sub)
            if self.part_boxes is not None and cfg.part_blend:
                w = self._part_weight(cp.face_index[0], cp.barycentric[0], cp.distance[0])
                sub = torch.where(part_box[idx], w * sd + (1.0 - w) * sub, sub)
            elif self.part_faces is not None:
                on_part = self.part_faces[cp.face_index[0].clamp(min=0)] & (cp.distance[0] < cfg.part_distance)
                sub = torch.where(part_box[idx] & on_part, sd, sub)
            phi = phi.clone()
            phi[idx] = sub
        # exact zeros at grid points make degenerate marching-cubes triangles (dropped, leaving pinholes)
        return torch.where(phi == 0, torch.full_like(phi, 1e-7), phi)


def _part_weight_of(part_vertex: torch.Tensor, faces: torch.Tensor, face_index: torch.Tensor,
                    barycentric: torch.Tensor, distance: torch.Tensor, reach: float) -> torch.Tensor:  # fmt: skip
    """(N,) weight in [0, 1] of the body's signed distance at points with these closest body points: the hand/foot
    share of the closest point (its face's per-vertex part flags (V,) interpolated by the (N, 3) barycentrics, so it
    fades over the wrist's and ankle's faces) times a ramp from 1 at half ``reach`` to 0 at ``reach`` metres."""
    f = faces[face_index.clamp(min=0)]
    share = (part_vertex[f] * barycentric.to(part_vertex.dtype)).sum(-1)
    ramp = ((reach - distance) / (0.5 * reach)).clamp(0.0, 1.0)
    return share.to(distance.dtype) * ramp


def round_intersection(a: torch.Tensor, b: torch.Tensor, radius: torch.Tensor | float) -> torch.Tensor:
    """Intersection of two signed distance-like fields (negative inside) with the edge where they meet rounded to
    ``radius``: ``min(max(a, b), -r) + |(max(a + r, 0), max(b + r, 0))|``. Equal to ``max(a, b)`` deeper than r
    inside either; near the edge the level set is a quarter circle of radius r tangent to both surfaces (a sharp
    intersection for r = 0). All tensors broadcast; (N,) out."""
    r = torch.as_tensor(radius, dtype=a.dtype, device=a.device)
    corner = torch.sqrt((a + r).clamp(min=0.0) ** 2 + (b + r).clamp(min=0.0) ** 2)
    return torch.minimum(torch.maximum(a, b), -r) + corner


def _part_boxes(vertices: torch.Tensor, used: torch.Tensor, pad: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(K, 3) min and max corners of the connected clusters of the used vertices (hands, feet), padded."""
    pts = vertices[used]
    # four limbs ends: cluster by the sign of x and whether the point is in the lower half of the body
    mid_y = (vertices[:, 1].amax() + vertices[:, 1].amin()) / 2
    los, his = [], []
    for lower in (False, True):
        for right in (False, True):
            sel = ((pts[:, 1] < mid_y) == lower) & ((pts[:, 0] < vertices[:, 0].mean()) == right)
            if bool(sel.any()):
                los.append(pts[sel].amin(0) - pad)
                his.append(pts[sel].amax(0) + pad)
    return torch.stack(los), torch.stack(his)


def fused_surface(
    field: DepthHullField,
    resolution: int = 256,
    coarse_resolution: int = 32,
    batch_points: int = 2**17,
) -> tuple[np.ndarray, np.ndarray]:
    """Marching cubes (coarse to fine) of a ``DepthHullField`` over its box; the largest component, pinholes closed.

    Returns:
        vertices (V, 3) float32 and faces (F, 3) int64 (outward, counter-clockwise); empty arrays if no surface.
    """
    from geometry.surface import extract_surface

    vertices, faces = extract_surface(
        field, field.bounds(), resolution=resolution, coarse_resolution=coarse_resolution, level=0.0, inside="below",
        batch_points=batch_points, keep_largest=True, device=field.body_vertices.device,
    )  # fmt: skip
    vertices, faces = close_pinholes(vertices, faces)
    return taubin_smooth(vertices, faces, field.config.smooth_iterations), faces


def taubin_smooth(
    vertices: np.ndarray, faces: np.ndarray, iterations: int, lam: float = 0.5, mu: float = -0.53
) -> np.ndarray:
    """Taubin's λ|μ smoothing (SIGGRAPH 1995) with the uniform umbrella Laplacian: each pass moves every vertex by
    λ·L(x) then by μ·L(x) (μ < -λ < 0), a low-pass filter that removes the high-frequency steps of a voxel or pixel
    grid but, unlike plain Laplacian smoothing, does not shrink the shape.

    Args:
        vertices: (V, 3) float32.
        faces: (F, 3) int64.
        iterations: passes (one λ and one μ step each).
        lam, mu: the two step factors.

    Returns:
        (V, 3) float32 smoothed vertices (the faces are unchanged).
    """
    if iterations <= 0 or len(faces) == 0:
        return vertices
    mean_of_neighbours = mesh_adjacency(torch.from_numpy(np.asarray(faces)).long(), len(vertices)).to(torch.float64)
    x = torch.from_numpy(np.asarray(vertices, dtype=np.float64))
    for _ in range(iterations):
        for factor in (lam, mu):
            x = x + factor * (mean_of_neighbours @ x - x)
    return x.numpy().astype(np.float32)


def close_pinholes(vertices: np.ndarray, faces: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Fill the few small boundary loops marching cubes can leave (degenerate triangles it drops near grid points
    on the level set); a closed mesh is returned unchanged.

    Args:
        vertices: (V, 3) float32.
        faces: (F, 3) int64.

    Returns:
        vertices (V, 3) float32, faces (F', 3) int64.
    """
    if len(faces) == 0:
        return vertices, faces
    # directed edges of the faces; a boundary half-edge (a -> b) has no twin (b -> a)
    half = np.concatenate([faces[:, [0, 1]], faces[:, [1, 2]], faces[:, [2, 0]]])
    key = half[:, 0] * len(vertices) + half[:, 1]
    twin = half[:, 1] * len(vertices) + half[:, 0]
    boundary = half[~np.isin(key, twin)]
    if len(boundary) == 0:
        return vertices, faces
    nxt = dict(zip(boundary[:, 1].tolist(), boundary[:, 0].tolist(), strict=False))  # walk the loops backwards
    new_vertices, new_faces = [], []
    seen: set[int] = set()
    for start in boundary[:, 1].tolist():
        if start in seen:
            continue
        loop = [start]
        seen.add(start)
        while True:
            step = nxt.get(loop[-1])
            if step is None or step in seen:
                break
            loop.append(step)
            seen.add(step)
        if len(loop) < 3 or nxt.get(loop[-1]) != loop[0]:
            continue  # not a simple closed loop: leave it
        centre = len(vertices) + len(new_vertices)
        new_vertices.append(vertices[loop].mean(axis=0))
        # the loop runs against the boundary half-edges, i.e. along the twins the fill faces need
        new_faces += [[loop[i], loop[(i + 1) % len(loop)], centre] for i in range(len(loop))]
    if not new_faces:
        return vertices, faces
    return (np.concatenate([vertices, np.asarray(new_vertices, np.float32)]).astype(np.float32),
            np.concatenate([faces, np.asarray(new_faces, np.int64)]))  # fmt: skip
