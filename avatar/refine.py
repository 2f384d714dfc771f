"""Multi-frame refinement of the avatar's canonical mesh against every frame's mask and normal maps.

SCANimate learns the canonical surface from the frames' own reconstructions and inherits their errors. Here the
canonical mesh, skinned into each frame with its weights and the pose the avatar holds there, is rendered with the
differentiable normals + soft silhouette of ``geometry.diffrender`` and compared with the frame's person mask and the
normal net's clothed front/back normal maps. Optimised: per-vertex canonical offsets (smoothed by neighbour
averaging, regularised by a uniform Laplacian and face-normal consistency) and per-frame pose corrections. Pixels are
compared only where the render and the target both see the person (the hidden side is left to the other frames),
and each frame's weight falls with its loss relative to the median (a frame with a bad pose or mask barely pulls).
Pure compute.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import torch
import torch.nn.functional as tnf

from avatar.colour import edge_distance
from avatar.config import AvatarConfig
from avatar.poses import FramePoses
from body.lbs import skin_points
from geometry.cameras import Camera
from geometry.diffrender import edge_topology, render_differentiable
from geometry.queries import face_normals, mesh_adjacency
from geometry.subdivide import subdivide_midpoint

__all__ = [
    "RefineResult",
    "RefineTargets",
    "align_poses",
    "apply_refinement",
    "camera_subset",
    "carve_energy",
    "surface_samples",
    "outside_distance",
    "fit_frame_poses",
    "frame_weights_from_losses",
    "laplacian_energy",
    "normal_consistency",
    "refine_avatar",
    "refine_skinned_mesh",
    "resample_targets",
    "subdivide_avatar",
]

logger = logging.getLogger(__name__)

WEIGHT_FLOOR = 0.05
"""Lowest weight of a frame in the refinement."""


@dataclass
class RefineTargets:
    """What each of T frames shows.

    Attributes:
        masks: (T, H, W) bool person masks.
        camera: camera with batch size T mapping the frames' space to their pixels (H x W).
        normal_front: optional (T, H, W, 3) clothed front normals (camera space, zeros outside).
        normal_back: optional (T, H, W, 3) clothed back normals in the front image frame.
        images: optional (T, H, W, 3) float RGB in [0, 1] (compared with the mesh's colours where both see the person).
    """

    masks: torch.Tensor
    camera: Camera
    normal_front: torch.Tensor | None = None
    normal_back: torch.Tensor | None = None
    images: torch.Tensor | None = None

    def __post_init__(self) -> None:
        if self.masks.ndim != 3:
            raise ValueError(f"masks must be (T, H, W), got {tuple(self.masks.shape)}")
        t, h, w = self.masks.shape
        if self.camera.batch_size != t or (self.camera.height, self.camera.width) != (h, w):
            raise ValueError(f"camera must have batch size {t} and size {w}x{h} px, got batch "
                             f"{self.camera.batch_size}, {self.camera.width}x{self.camera.height}")  # fmt: skip
        for name in ("normal_front", "normal_back", "images"):
            n = getattr(self, name)
            if n is not None and n.shape != (t, h, w, 3):
                raise ValueError(f"{name} must be (T, H, W, 3) = {(t, h, w, 3)}, got {tuple(n.shape)}")


@dataclass
class RefineResult:
    """Outcome of a refinement.

    Attributes:
        vertices: (V, 3) refined canonical vertices.
        offsets: (V, 3) refined minus initial vertices (metres).
        pose_delta: (T, P) per-frame pose corrections.
        frame_weights: (T,) final robust weights in [WEIGHT_FLOOR, 1].
        frame_losses: (T,) last data loss of each frame.
        initial_losses: (T,) data loss of each frame before the refinement.
        history: "refine/<term>" -> values per logged step (and "refine/step").
        seconds: wall-clock time.
    """

    vertices: torch.Tensor
    offsets: torch.Tensor
    pose_delta: torch.Tensor
    frame_weights: torch.Tensor
    frame_losses: torch.Tensor
    initial_losses: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    seconds: float = 0.0


def camera_subset(camera: Camera, index: torch.Tensor, size: int | None = None) -> Camera:
    """The cameras of frames ``index`` (batch len(index)), optionally rescaled to a ``size`` x ``size`` image."""
    k = 1.0 if size is None else size / camera.width
    params = {}
    for name in camera._param_names:
        p = getattr(camera, name)
        p = p[index.to(p.device)] if p.shape[0] > 1 else p.expand(len(index))
        params[name] = p * k
    if size is None:
        return replace(camera, **params)
    if camera.width != camera.height:
        raise ValueError(f"rescaling needs a square camera, got {camera.width}x{camera.height}")
    return replace(camera, **params, width=size, height=size)


def resample_targets(targets: RefineTargets, size: int) -> RefineTargets:
    """Targets area-resampled to ``size`` x ``size`` px (masks by majority, normals averaged and renormalised)."""
    t, h, w = targets.masks.shape
    if (h, w) == (size, size):
        return targets
    if h != w:
        raise ValueError(f"resampling needs square frames, got {w}x{h}")
    m = tnf.interpolate(targets.masks[:, None].float(), size=(size, size), mode="area")[:, 0]
    masks = m > 0.5

    def normals(n: torch.Tensor | None) -> torch.Tensor | None:
        if n is None:
            return None
        r = tnf.interpolate(n.float().permute(0, 3, 1, 2), size=(size, size), mode="area").permute(0, 2, 3, 1)
        return tnf.normalize(r, dim=-1, eps=1e-8) * masks[..., None]

    cam = camera_subset(targets.camera, torch.arange(t), size)
    images = None
    if targets.images is not None:
        images = tnf.interpolate(targets.images.float().permute(0, 3, 1, 2), size=(size, size), mode="area")
        images = images.permute(0, 2, 3, 1)
    return RefineTargets(masks, cam, normals(targets.normal_front), normals(targets.normal_back), images)


def laplacian_energy(offsets: torch.Tensor, adjacency: torch.Tensor) -> torch.Tensor:
    """Mean squared uniform Laplacian |x_i - mean_j x_j|^2 of a per-vertex field (V, 3)."""
    return (offsets - adjacency @ offsets).pow(2).sum(-1).mean()


def normal_consistency(vertices: torch.Tensor, faces: torch.Tensor, edge_faces: torch.Tensor) -> torch.Tensor:
    """Mean 1 - cos between the normals of the two faces of each interior edge; vertices (V, 3), edge_faces (E, 2)."""
    n = face_normals(vertices[None], faces)[0]
    inner = edge_faces[:, 1] >= 0
    a, b = n[edge_faces[inner, 0]], n[edge_faces[inner, 1]]
    return (1.0 - (a * b).sum(-1)).mean()


def outside_distance(masks: torch.Tensor, max_px: int = 64) -> torch.Tensor:
    """Chessboard distance (px) of each pixel outside the person masks (T, H, W) to the nearest mask pixel, capped at
    ``max_px`` (0 inside the mask; the image is padded with background, so the border does not cut distances)."""
    outside = tnf.pad(~masks.bool(), (max_px, max_px, max_px, max_px), value=True)
    return edge_distance(outside, max_px)[:, max_px:-max_px, max_px:-max_px]


def carve_energy(points: torch.Tensor, camera: Camera, distance: torch.Tensor, margin_px: float) -> torch.Tensor:
    """Per-frame mean of ``relu(d - margin_px) / W`` over points (B, N, 3) projected by ``camera`` (batch B) into
    distance maps (B, H, W) (:func:`outside_distance`): how far the surface sticks out of each frame's silhouette, in
    image widths. Every point of a true surface lies inside every mask (visual hull), seen or hidden. Returns (B,)."""
    uv = camera.project(points)
    b, h, w = distance.shape
    grid = torch.stack([uv[..., 0] / w * 2 - 1, uv[..., 1] / h * 2 - 1], dim=-1)[:, None]  # (B, 1, N, 2)
    d = tnf.grid_sample(distance[:, None].to(points), grid, mode="bilinear", align_corners=False, padding_mode="border")
    return (d[:, 0, 0] - margin_px).clamp(min=0).mean(-1) / w


def frame_weights_from_losses(losses: torch.Tensor, floor: float = WEIGHT_FLOOR) -> torch.Tensor:
    """Robust per-frame weights ``clip(exp(-(l / median(l) - 1)), floor, 1)`` from per-frame losses (T,)."""
    med = losses.median().clamp(min=1e-12)
    return torch.exp(-(losses / med - 1.0)).clamp(floor, 1.0)


def _frame_losses(render, targets: RefineTargets, idx: torch.Tensor, config: AvatarConfig) -> torch.Tensor:
    """Data loss (B,) of each rendered frame against its targets: soft-silhouette L1 summed over the image and divided
    by the mask's area (a fraction of the person, independent of resolution and framing), plus the mean L1 of the
    front/back normals where render and mask overlap."""
    mask = targets.masks[idx]
    area = mask.sum(dim=(1, 2)).clamp(min=1).to(render.silhouette)
    sil = (render.silhouette - mask.to(render.silhouette)).abs().sum(dim=(1, 2)) / area
    loss = config.w_refine_silhouette * sil
    both = render.mask & mask
    count = both.sum(dim=(1, 2)).clamp(min=1)
    pairs = ((targets.normal_front, render.normal_front, config.w_refine_normal),
             (targets.normal_back, render.normal_back, config.w_refine_normal_back))  # fmt: skip
    for target, rendered, weight in pairs:
        if target is None or rendered is None or weight == 0:
            continue
        diff = (rendered - target[idx].to(rendered)).abs().sum(-1) / 3.0
        loss = loss + weight * (diff * both).sum(dim=(1, 2)) / count
    if targets.images is not None and render.attributes is not None and config.w_refine_photometric > 0:
        diff = (render.attributes - targets.images[idx].to(render.attributes)).abs().sum(-1) / 3.0
        loss = loss + config.w_refine_photometric * (diff * both).sum(dim=(1, 2)) / count
    return loss


def _check_mesh_inputs(vertices: torch.Tensor, skin_weights: torch.Tensor) -> None:
    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    if skin_weights.shape[0] != vertices.shape[0]:
        raise ValueError(f"skin_weights must have one row per vertex ({vertices.shape[0]}), got {skin_weights.shape}")


def _targets_on(tg: RefineTargets, device: torch.device) -> RefineTargets:
    """The targets moved to ``device``."""
    def on(x: torch.Tensor | None) -> torch.Tensor | None:
        return None if x is None else x.to(device)

    return RefineTargets(tg.masks.to(device), tg.camera.to(device), on(tg.normal_front), on(tg.normal_back),
                         on(tg.images))  # fmt: skip


def _refine_optimizer(delta: torch.Tensor, pose: torch.Tensor, config: AvatarConfig) -> torch.optim.Adam:
    """Adam over the vertex offsets and (when there are any and their lr is positive) the pose corrections."""
    groups = [{"params": [delta], "lr": config.refine_lr}]
    if pose.shape[-1] > 0 and config.refine_pose_lr > 0:
        groups.append({"params": [pose], "lr": config.refine_pose_lr})
    return torch.optim.Adam(groups)


def _record_history(history: dict[str, list[float]], step: int, steps: int, terms: dict[str, torch.Tensor]) -> None:
    """Append the loss terms every 5 steps and at the last one."""
    if step % 5 == 0 or step == steps:
        for k, v in terms.items():
            history.setdefault(f"refine/{k}", []).append(float(v.detach()))
        history.setdefault("refine/step", []).append(float(step))


def _step_terms(
    losses: torch.Tensor, robust: torch.Tensor, off: torch.Tensor, verts_c: torch.Tensor, pose: torch.Tensor,
    adjacency: torch.Tensor, edge: torch.Tensor, faces: torch.Tensor, topology, config: AvatarConfig,
) -> dict[str, torch.Tensor]:
    """One step's loss terms: robust-weighted data loss of the frames in the step, offset Laplacian (relative to the
    mean edge length), normal consistency, pose-correction size, and their weighted total."""
    data = (robust * losses).sum() / robust.sum()
    lap = laplacian_energy(off, adjacency) / edge.pow(2)
    nc = normal_consistency(verts_c, faces, topology.faces)
    pose_reg = pose.pow(2).sum(-1).mean() if pose.shape[-1] > 0 else torch.zeros((), device=off.device)
    total = (data + config.w_refine_laplacian * lap + config.w_refine_consistency * nc
             + config.w_refine_pose * pose_reg)  # fmt: skip
    return {"total": total, "data": data, "laplacian": lap, "consistency": nc, "pose": pose_reg}


def surface_samples(vertices: torch.Tensor, faces: torch.Tensor) -> torch.Tensor:
    """The vertices (B, V, 3) with every face's centroid and edge midpoints appended: (B, V + 4F, 3). A stretched
    triangle spanning a gap (webbing between the legs) has all its vertices on the body but these points in the gap."""
    tri = vertices[:, faces]  # (B, F, 3, 3)
    mids = 0.5 * (tri + tri.roll(-1, dims=2))
    return torch.cat([vertices, tri.mean(2), mids.flatten(1, 2)], dim=1)


def _skin_frames(vertices: torch.Tensor, weights: torch.Tensor, transforms: torch.Tensor) -> torch.Tensor:
    """The canonical (V, 3) mesh with (V, 24) weights skinned by B frames' (B, 24, 4, 4) transforms: (B, V, 3)."""
    b = transforms.shape[0]
    return skin_points(vertices[None].expand(b, -1, -1), weights[None].expand(b, -1, -1), transforms)


def _carve_term(verts_c: torch.Tensor, weights: torch.Tensor, faces: torch.Tensor, frame_transforms, pose: torch.Tensor,
                tg: RefineTargets, distance: torch.Tensor, robust: torch.Tensor, config: AvatarConfig) -> torch.Tensor:
    """Robust-weighted mean over all T frames of :func:`carve_energy` of the canonical mesh's (V, 3) vertices, face
    centroids and edge midpoints (:func:`surface_samples`) skinned into them."""
    t = distance.shape[0]
    out = []
    for idx in torch.arange(t, device=verts_c.device).split(8):
        posed = _skin_frames(verts_c, weights, frame_transforms(idx, pose[idx]))
        out.append(carve_energy(surface_samples(posed, faces), camera_subset(tg.camera, idx), distance[idx],
                                config.refine_carve_margin_px))  # fmt: skip
    return (robust * torch.cat(out)).sum() / robust.sum()


def _log_refinement(result: RefineResult, steps: int) -> None:
    logger.info("refined over %d frames in %.1f s (%d steps): data loss %.4f -> %.4f, offsets mean %.2f cm",
                len(result.frame_losses), result.seconds, steps, float(result.initial_losses.mean()),
                float(result.frame_losses.mean()), 100 * float(result.offsets.norm(dim=-1).mean()))  # fmt: skip


def _render_frames(vertices: torch.Tensor, weights: torch.Tensor, faces: torch.Tensor, transforms: torch.Tensor,
                   camera: Camera, normals: bool, sigma_px: float, topology, colours: torch.Tensor | None = None):
    """Skin the canonical (V, 3) mesh with (V, 24) weights by B frames' (B, 24, 4, 4) transforms and render its soft
    silhouette (normals if ``normals``, its (V, 3) ``colours`` if given) in those frames' cameras
    (`render_differentiable`)."""
    posed = _skin_frames(vertices, weights, transforms)
    return render_differentiable(posed, faces, camera, normals=normals, silhouette=True, sigma_px=sigma_px,
                                 topology=topology, attributes=None if colours is None else colours[None])  # fmt: skip


def align_poses(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    skin_weights: torch.Tensor,
    frame_transforms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_pose_params: int,
    targets: RefineTargets,
    config: AvatarConfig,
    pose_init: torch.Tensor | None = None,
    free: torch.Tensor | None = None,
    colours: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-frame pose corrections of a frozen skinned mesh against T frames' masks and normal maps.

    Full batch: every Adam step renders all T frames (in chunks of ``refine_frames_per_step``, gradients summed) at
    ``refine_align_resolution`` px, ``refine_align_steps`` steps at ``refine_align_lr``; the data loss is the
    refinement's with the silhouette weighted by ``w_refine_align_silhouette``; the corrections are pulled to zero by
    ``w_refine_pose``.

    Args:
        vertices, faces, skin_weights, frame_transforms, num_pose_params, targets, config: as
            :func:`refine_skinned_mesh`.
        pose_init: optional (T, P) starting corrections.
        free: optional (P,) bool, the parameters that move (default: all).
        colours: optional (V, 3) vertex colours compared with ``targets.images`` (``w_refine_photometric``).

    Returns:
        pose_delta (T, P) and the per-frame data losses (T,) after the last step (at the alignment resolution).
    """
    _check_mesh_inputs(vertices, skin_weights)
    device = vertices.device
    t = targets.masks.shape[0]
    pose = torch.zeros(t, num_pose_params, device=device) if pose_init is None else pose_init.detach().clone()
    pose = pose.to(device).requires_grad_(True)
    if num_pose_params == 0 or config.refine_align_steps == 0:
        return pose.detach(), torch.full((t,), float("nan"), device=device)
    faces = faces.long().to(device)
    loss_config = config.model_copy(update={"w_refine_silhouette": config.w_refine_align_silhouette})
    tg = _targets_on(resample_targets(targets, min(config.refine_align_resolution, targets.masks.shape[-1])), device)
    verts = vertices.detach().float()
    weights = skin_weights.detach().float()
    topology = edge_topology(faces)
    opt = torch.optim.Adam([pose], lr=config.refine_align_lr)
    chunks = torch.arange(t, device=device).split(config.refine_frames_per_step)
    need_normals = (tg.normal_front is not None and config.w_refine_normal > 0) or (
        tg.normal_back is not None and config.w_refine_normal_back > 0)  # fmt: skip
    losses = torch.zeros(t, device=device)
    use_colour = tg.images is not None and colours is not None and config.w_refine_photometric > 0
    cols = colours.detach().float().to(device) if use_colour else None
    for _ in range(config.refine_align_steps):
        opt.zero_grad(set_to_none=True)
        for idx in chunks:
            p = pose[idx] if free is None else torch.where(free.to(device), pose[idx], pose[idx].detach())
            r = _render_frames(verts, weights, faces, frame_transforms(idx, p), camera_subset(tg.camera, idx),
                               need_normals, config.refine_sigma_px, topology, cols)  # fmt: skip
            lo = _frame_losses(r, tg, idx, loss_config)
            loss = lo.sum() + config.w_refine_pose * pose[idx].pow(2).sum()
            loss.backward()
            losses[idx] = lo.detach()
        opt.step()
    return pose.detach(), losses


def _aligned_pose(
    base: torch.Tensor, faces: torch.Tensor, weights: torch.Tensor, frame_transforms, num_pose_params: int,
    targets: RefineTargets, config: AvatarConfig, colours: torch.Tensor | None = None,
) -> torch.Tensor:
    """(T, P) pose corrections from `align_poses` with the mesh (and its ``colours``) frozen (only the root moves when
    ``config.refine_align_joints == "root"`` and P is the 75 = 24 × 3 + 3 layout), ready to be optimised further."""
    free = None
    if config.refine_align_joints == "root" and num_pose_params == 75:
        free = torch.zeros(75, dtype=torch.bool)
        free[:3] = free[72:] = True
    pose, _ = align_poses(base, faces, weights, frame_transforms, num_pose_params, targets, config, free=free,
                          colours=colours)  # fmt: skip
    return pose.requires_grad_(True)


def _smoothed(field: torch.Tensor, adjacency: torch.Tensor, passes: int) -> torch.Tensor:
    """A per-vertex field (V, C) after ``passes`` neighbour-averaging passes."""
    for _ in range(passes):
        field = adjacency @ field
    return field


def refine_skinned_mesh(
    vertices: torch.Tensor,
    faces: torch.Tensor,
    skin_weights: torch.Tensor,
    frame_transforms: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    num_pose_params: int,
    targets: RefineTargets,
    config: AvatarConfig,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
    colours: torch.Tensor | None = None,
) -> RefineResult:
    """Refine a skinned canonical mesh against T frames' masks and normal maps (and images, through ``colours``).

    Args:
        vertices: (V, 3) canonical vertices (metres).
        faces: (F, 3) int64 faces, counter-clockwise seen from outside.
        skin_weights: (V, 24) skinning weights.
        frame_transforms: ``f(frame_index (B,), pose_delta (B, P)) -> (B, 24, 4, 4)`` skinning transforms taking the
            canonical mesh into those frames' camera space with the pose corrections applied (differentiable).
        num_pose_params: P (0: no pose corrections).
        targets: the frames' masks, cameras and normal maps.
        config: ``refine_*`` and ``w_refine_*`` fields.
        progress: called as ``progress(step, total, losses)``.
        colours: optional (V, 3) vertex colours (frozen) compared with ``targets.images`` (``w_refine_photometric``).

    Returns:
        RefineResult (the input tensors are not modified).
    """
    _check_mesh_inputs(vertices, skin_weights)
    t0 = time.perf_counter()
    device = vertices.device
    faces = faces.long().to(device)
    t = targets.masks.shape[0]
    tg = _targets_on(resample_targets(targets, min(config.refine_resolution, targets.masks.shape[-1])), device)
    base = vertices.detach().float()
    weights = skin_weights.detach().float()
    adjacency = mesh_adjacency(faces, base.shape[0]).to(device)
    topology = edge_topology(faces)
    edge = (base[topology.edges[:, 0]] - base[topology.edges[:, 1]]).norm(dim=-1).mean()
    delta = torch.zeros_like(base, requires_grad=True)
    pose = torch.zeros(t, num_pose_params, device=device)
    per_step = min(config.refine_frames_per_step, t)
    gen = torch.Generator().manual_seed(config.seed)
    history: dict[str, list[float]] = {}

    def offsets() -> torch.Tensor:
        return _smoothed(delta, adjacency, config.refine_smoothing)

    normals = tg.normal_front is not None or tg.normal_back is not None
    cols = None if colours is None or tg.images is None or config.w_refine_photometric == 0 else colours.to(device)

    def render(idx: torch.Tensor, verts_c: torch.Tensor, pose_idx: torch.Tensor):
        return _render_frames(verts_c, weights, faces, frame_transforms(idx, pose_idx), camera_subset(tg.camera, idx),
                              normals, config.refine_sigma_px, topology, cols)  # fmt: skip

    def evaluate(verts_c: torch.Tensor) -> torch.Tensor:
        out = []
        with torch.no_grad():
            for idx in torch.arange(t, device=device).split(per_step):
                out.append(_frame_losses(render(idx, verts_c, pose[idx]), tg, idx, config))
        return torch.cat(out)

    initial, distance = evaluate(base), outside_distance(tg.masks) if config.w_refine_carve > 0 else None
    pose = _aligned_pose(base, faces, weights, frame_transforms, num_pose_params, targets, config, cols)
    opt = _refine_optimizer(delta, pose, config)
    running = initial.clone()
    robust = frame_weights_from_losses(running)
    steps = config.refine_iterations
    order = torch.randperm(t, generator=gen)
    cursor = 0
    for step in range(1, steps + 1):
        if cursor + per_step > t:
            order, cursor = torch.randperm(t, generator=gen), 0
        idx = order[cursor : cursor + per_step].to(device)
        cursor += per_step
        off = offsets()
        verts_c = base + off
        losses = _frame_losses(render(idx, verts_c, pose[idx]), tg, idx, config)
        terms = _step_terms(losses, robust[idx], off, verts_c, pose[idx], adjacency, edge, faces, topology, config)
        if config.w_refine_carve > 0:
            terms["carve"] = _carve_term(verts_c, weights, faces, frame_transforms, pose, tg, distance, robust, config)
            terms["total"] = terms["total"] + config.w_refine_carve * terms["carve"]
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        with torch.no_grad():
            running[idx] = losses.detach()
            robust = frame_weights_from_losses(running)
        _record_history(history, step, steps, terms)
        if progress is not None:
            progress(step, steps, {k: float(v.detach()) for k, v in terms.items()})
    with torch.no_grad():
        final_vertices = base + offsets()
    final = evaluate(final_vertices) if steps > 0 or config.refine_align_steps > 0 else initial
    robust = frame_weights_from_losses(final)
    result = RefineResult(vertices=final_vertices, offsets=final_vertices - base, pose_delta=pose.detach(),
                          frame_weights=robust, frame_losses=final, initial_losses=initial, history=history,
                          seconds=time.perf_counter() - t0)  # fmt: skip
    _log_refinement(result, steps)
    return result


def _corrected_transforms(avatar, poses: FramePoses, frames: int):
    """``f(frame_index (B,), delta (B, 75)) -> (B, 24, 4, 4)``: the avatar's skinning transforms at ``poses`` plus
    corrections (root rotation 0:3, body pose 3:72, translation 72:75); checks there is one pose per frame."""
    if len(poses) != frames:
        raise ValueError(f"{len(poses)} poses for {frames} frames")

    def frame_transforms(idx: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
        return avatar.transforms(poses.global_orient[idx] + delta[:, :3], poses.body_pose[idx] + delta[:, 3:72],
                                 poses.transl[idx] + delta[:, 72:75])  # fmt: skip

    return frame_transforms


def _held_poses(avatar, poses: FramePoses | None) -> FramePoses:
    poses = avatar.frame_poses if poses is None else poses
    if len(poses) == 0:
        raise ValueError("the avatar holds no per-frame poses (saved before format 2): pass the frames' poses")
    return poses.to(avatar.device)


def refine_avatar(
    avatar,
    targets: RefineTargets,
    config: AvatarConfig | None = None,
    poses: FramePoses | None = None,
    progress: Callable[[int, int, dict[str, float]], None] | None = None,
) -> RefineResult:
    """Refine an avatar's canonical mesh and per-frame poses against its training frames (T = len(poses)).

    Pose corrections are axis-angle increments of every joint (72) and a root translation (3) per frame.

    Args:
        avatar: trained ``avatar.model.Avatar``.
        targets: the T frames' masks, crop cameras and normal maps (in the frames' space: the fits' camera).
        config: settings (default: ``avatar.config``).
        poses: poses of the T frames (default: ``avatar.frame_poses``, the poses it holds).
        progress: called as ``progress(step, total, losses)``.
    """
    config = config or avatar.config
    poses = _held_poses(avatar, poses)
    frame_transforms = _corrected_transforms(avatar, poses, targets.masks.shape[0])

    return refine_skinned_mesh(avatar.vertices, avatar.faces, avatar.skin_weights, frame_transforms, 75, targets,
                               config, progress, avatar.vertex_colours if avatar.has_colour else None)  # fmt: skip


def fit_frame_poses(avatar, targets: RefineTargets, config: AvatarConfig | None = None,
                    poses: FramePoses | None = None) -> FramePoses:  # fmt: skip
    """Poses of T frames fitted to their masks and normal maps with the avatar's mesh frozen (:func:`align_poses`).

    For frames the avatar was not trained on (new or held-out frames): start from their fitted body poses and correct
    every joint and the root translation so the avatar's silhouette and normals match the frame's.

    Args:
        avatar: ``avatar.model.Avatar``.
        targets: the T frames' masks, cameras and (optional) normal maps.
        config: settings (default: ``avatar.config``).
        poses: starting poses of the T frames (default: the avatar's held poses).
    """
    config = config or avatar.config
    poses = _held_poses(avatar, poses)
    frame_transforms = _corrected_transforms(avatar, poses, targets.masks.shape[0])

    colours = avatar.vertex_colours if avatar.has_colour else None
    d, _ = align_poses(avatar.vertices, avatar.faces, avatar.skin_weights, frame_transforms, 75, targets, config,
                       colours=colours)  # fmt: skip
    return FramePoses(poses.global_orient + d[:, :3], poses.body_pose + d[:, 3:72], poses.transl + d[:, 72:75])


def apply_refinement(avatar, result: RefineResult, poses: FramePoses | None = None) -> None:
    """Put the refined canonical mesh and pose-corrected per-frame poses into the avatar (in place)."""
    poses = _held_poses(avatar, poses)
    d = result.pose_delta.to(avatar.device)
    avatar.vertices = result.vertices.to(avatar.device)
    if d.shape[1] == 75:
        avatar.frame_poses = FramePoses(poses.global_orient + d[:, :3], poses.body_pose + d[:, 3:72],
                                        poses.transl + d[:, 72:75])  # fmt: skip
    for k, v in result.history.items():
        avatar.history[k] = list(v)


def subdivide_avatar(avatar, levels: int = 1) -> None:
    """Midpoint-subdivide the avatar's canonical mesh ``levels`` times (in place): each level splits every face into
    four; new vertices take the mean skinning weights (and colours) of their edge's ends, so the posed surface does not
    move. A finer mesh holds finer colour (about 4x the vertices per level)."""
    for _ in range(int(levels)):
        weights = avatar.skin_weights
        values = torch.cat([weights, avatar.vertex_colours.to(weights)], -1) if avatar.has_colour else weights
        v, f, values = subdivide_midpoint(avatar.vertices, avatar.faces, values)
        if avatar.has_colour:
            avatar.vertex_colours = values[:, weights.shape[1]:].to(avatar.vertex_colours.dtype)
        avatar.vertices, avatar.faces, avatar.skin_weights = v, f, values[:, : weights.shape[1]]
