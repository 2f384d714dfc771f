"""Normal integration: clothed front/back normal maps → front/back depth maps, guided by the body's rendered depth.

Pure compute (torch in, torch out; the direct solver goes through scipy on the CPU). Implements the idea of ECON's
depth-aware normal integration from the paper (Xiu et al., CVPR 2023, after bilateral normal integration, Cao et al.,
ECCV 2022), not its code: per map, one sparse least-squares problem over the mask's pixels with

- gradient constraints from the normals on every pair of 4-neighbours. For an orthographic (weak-perspective) camera
  of scale s px/m the depth d (= -z) of a surface with camera-space normal n obeys s·n_z·∂d/∂u = n_x and
  s·n_z·∂d/∂v = -n_y; for a pinhole camera of focal f the log-depth obeys f·D·∂log d/∂u = n_x and
  f·D·∂log d/∂v = -n_y with D = n_z - n_x·x̃ - n_y·ỹ, (x̃, ỹ) = ((u - cx)/f, (cy - v)/f). The equations are kept in
  this multiplied form, so steep pixels (n_z → 0) constrain little instead of blowing up. The same equations hold for
  the back surface with its outward (away-from-camera) normals.
- a soft prior pulling the depth towards the body's rendered depth where the body covers the pixel (weight
  ``prior_weight``; residuals in the same pixel units as the gradients, so the prior acts over about
  1/sqrt(prior_weight) pixels and leaves the clothing's finer shape to the normals);
- discontinuities: an edge is cut where the body's depth jumps by more than ``body_jump`` between the two pixels
  (an occlusion boundary of the body, e.g. an arm in front of the torso), and iteratively reweighted least squares
  with a Cauchy weight on each edge's residual turns the remaining depth steps (residuals far above the normal
  noise) into near-cuts, as bilateral integration does with its one-sided weights.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as tnf
from pydantic import BaseModel, ConfigDict, Field

from geometry.cameras import Camera, OrthographicCamera, PerspectiveCamera

__all__ = [
    "DepthMaps",
    "IntegrationConfig",
    "contour_average",
    "contour_thickness",
    "integrate_front_back",
    "integrate_normals",
]


class IntegrationConfig(BaseModel):
    """Settings of the normal integration."""

    model_config = ConfigDict(extra="forbid")

    prior_weight: float = Field(
        1e-3, gt=0, description="Weight of the body-depth prior per pixel relative to a gradient constraint; the prior "
        "governs shapes wider than about 1/sqrt(prior_weight) pixels, the normals the finer ones.",
    )  # fmt: skip
    body_jump: float = Field(
        0.03, gt=0, description="Metres of body-depth difference between neighbouring pixels that cut the edge "
        "(an occlusion boundary of the body).",
    )  # fmt: skip
    cut_normal_angle: float = Field(
        0.0, ge=0, lt=180, description="Degrees the clothed normals of two neighbouring pixels must differ by for a "
        "body-depth jump between them to cut the edge: a real occlusion boundary (an arm's side against the torso "
        "behind it) shows in the normals, a jump of a misplaced body part (the fit's hand on the hip where the image "
        "shows none) does not, and cutting there prints the part's outline into the clothing. 0 = every jump cuts.",
    )  # fmt: skip
    reweight_iterations: int = Field(
        0, ge=0, description="IRLS passes after the first solve: edges whose residual is far above `robust_scale` are "
        "down-weighted (depth discontinuities the body does not show). Off by default: on the validation set's "
        "predicted normals it cut smooth cloth into terraces.",
    )  # fmt: skip
    robust_scale: float = Field(
        0.1, gt=0, description="Cauchy scale of the edge residuals (normal-component units, ~ tangent of a slope "
        "error): a depth step of h metres between two pixels has a residual of about s·h.",
    )  # fmt: skip
    solver: Literal["auto", "direct", "cg"] = Field(
        "auto", description="direct (scipy sparse LU, CPU), cg (torch conjugate gradients, any device), auto = direct "
        "for CPU tensors and cg for CUDA ones.",
    )  # fmt: skip
    boundary_weight: float = Field(
        1.0, ge=0, description="Weight (relative to a gradient constraint) of the contour term of integrate_front_back:"
        " on the mask's boundary pixels the back lies `contour_thickness` behind the front (0 = integrate separately).",
    )  # fmt: skip
    contour_smooth: float = Field(
        2.0, ge=0, description="Gaussian sigma (pixels) of the average of the contour thickness along the mask's "
        "boundary (`contour_average`): its 1/n_z makes it jump between neighbouring boundary pixels, which shows as "
        "a seam of bumps along the sides. 0 = per pixel.",
    )  # fmt: skip
    min_region: int = Field(
        16, ge=0, description="Pixels a region enclosed by body-depth cuts must have to keep its cuts: a smaller one "
        "(a finger or a single pixel where the body pokes out of the clothing) is an outlier of the body, not an "
        "occluding part, and stays joined to its neighbours.",
    )  # fmt: skip
    cg_iterations: int = Field(2000, ge=1, description="Maximum conjugate-gradient iterations per solve.")
    cg_tolerance: float = Field(1e-6, gt=0, description="Relative residual at which conjugate gradients stop.")


@dataclass
class DepthMaps:
    """Integrated depth of the clothed surface.

    Attributes:
        front: (B, H, W) depth (-z, metres) of the nearest clothed surface, 0 outside the mask.
        back: (B, H, W) depth of the farthest clothed surface, 0 outside the mask.
        mask: (B, H, W) bool pixels that carry a depth.
    """

    front: torch.Tensor
    back: torch.Tensor
    mask: torch.Tensor


def _check_inputs(normals: torch.Tensor, mask: torch.Tensor, prior: torch.Tensor, prior_mask: torch.Tensor) -> None:
    if not isinstance(normals, torch.Tensor) or normals.ndim != 4 or normals.shape[-1] != 3:
        raise ValueError(f"normals must be a (B, H, W, 3) tensor, got {getattr(normals, 'shape', type(normals))}")
    shape = normals.shape[:3]
    for name, t in (("mask", mask), ("prior_depth", prior), ("prior_mask", prior_mask)):
        if not isinstance(t, torch.Tensor) or t.shape != shape:
            raise ValueError(f"{name} must be a (B, H, W) = {tuple(shape)} tensor, got {getattr(t, 'shape', t)}")


def _pixel_geometry(camera: Camera, batch: int, height: int, width: int, device, dtype):
    """Per-pixel (B, H, W) x̃ and ỹ (perspective: ray slopes; orthographic: unused zeros) and (B,) pixel scale k.

    k is pixels per metre (orthographic) or the focal length in pixels (perspective) at the map's resolution.
    """
    if camera.batch_size not in (1, batch):
        raise ValueError(f"camera batch size {camera.batch_size} does not match the {batch} maps")
    sx, sy = width / camera.width, height / camera.height
    if abs(sx - sy) > 1e-6:
        raise ValueError(f"maps {height}x{width} must keep the camera's aspect ({camera.height}x{camera.width})")
    if isinstance(camera, OrthographicCamera):
        k = camera.scale
    elif isinstance(camera, PerspectiveCamera):
        k = camera.focal
    else:
        raise ValueError(f"camera must be an OrthographicCamera or PerspectiveCamera, got {type(camera).__name__}")
    k = (k.to(device=device, dtype=dtype) * sx).expand(batch)
    cx = (camera.cx.to(device=device, dtype=dtype) * sx).expand(batch)[:, None, None]
    cy = (camera.cy.to(device=device, dtype=dtype) * sy).expand(batch)[:, None, None]
    u = torch.arange(width, device=device, dtype=dtype) + 0.5
    v = torch.arange(height, device=device, dtype=dtype) + 0.5
    xt = ((u[None, None, :] - cx) / k[:, None, None]).expand(batch, height, width)
    yt = ((cy - v[None, :, None]) / k[:, None, None]).expand(batch, height, width)
    return xt, yt, k


@dataclass
class _System:
    """The least-squares system of a batch, flattened over all images.

    Rows are edges (a·(x_q - x_p) = b, weight w) and priors (x_p = target, weight prior).
    """

    n: int  # unknowns
    index: torch.Tensor  # (B, H, W) int64 unknown of each pixel, -1 outside the mask
    edge_p: torch.Tensor  # (E,)
    edge_q: torch.Tensor  # (E,)
    edge_a: torch.Tensor  # (E,)
    edge_b: torch.Tensor  # (E,)
    edge_keep: torch.Tensor  # (E,) 0/1 cut mask (or a fixed weight)
    edge_robust: torch.Tensor  # (E,) bool: reweighted by IRLS
    prior_w: torch.Tensor  # (N,)
    prior_x: torch.Tensor  # (N,)


def _build_system(
    normals: torch.Tensor,
    mask: torch.Tensor,
    prior_x: torch.Tensor,
    prior_mask: torch.Tensor,
    prior_depth: torch.Tensor,
    xt: torch.Tensor,
    yt: torch.Tensor,
    k: torch.Tensor,
    perspective: bool,
    config: IntegrationConfig,
    guide_x: torch.Tensor | None = None,
) -> _System:
    b, h, w = mask.shape
    dtype = normals.dtype
    index = torch.full((b, h, w), -1, dtype=torch.long, device=mask.device)
    n = int(mask.sum())
    index[mask] = torch.arange(n, device=mask.device)
    kk = k[:, None, None].expand(b, h, w)
    ps, qs, as_, bs, keeps = [], [], [], [], []
    for axis in (2, 1):  # u (columns) then v (rows)
        lo = [slice(None)] * 3
        hi = [slice(None)] * 3
        lo[axis], hi[axis] = slice(0, -1), slice(1, None)
        lo, hi = tuple(lo), tuple(hi)
        valid = mask[lo] & mask[hi]
        ne = 0.5 * (normals[lo] + normals[hi])
        if perspective:
            xm, ym = 0.5 * (xt[lo] + xt[hi]), 0.5 * (yt[lo] + yt[hi])
            a = kk[lo] * (ne[..., 2] - ne[..., 0] * xm - ne[..., 1] * ym)
        else:
            a = kk[lo] * ne[..., 2]
        rhs = ne[..., 0] if axis == 2 else -ne[..., 1]
        both_body = prior_mask[lo] & prior_mask[hi]
        jump = both_body & ((prior_depth[lo] - prior_depth[hi]).abs() > config.body_jump)
        if config.cut_normal_angle > 0:  # the normals must show the boundary too
            cos = (normals[lo] * normals[hi]).sum(-1)
            jump = jump & (cos < math.cos(math.radians(config.cut_normal_angle)))
        ps.append(index[lo][valid])
        qs.append(index[hi][valid])
        as_.append(a[valid])
        bs.append(rhs[valid])
        keeps.append((~jump[valid]).to(dtype))
    flat_prior = prior_mask[mask]
    scale = kk[mask]  # prior residuals in pixel units: k·(x - x_body) (orthographic), f·(log d - log d_body)
    prior_w = torch.where(flat_prior, config.prior_weight * scale**2, torch.zeros_like(scale))
    # A component of the mask without any body pixel (cut off, or clothing beyond the body) would float freely:
    # tie every pixel very weakly to the mean body depth of its image.
    mean_x = torch.stack([
        prior_x[i][prior_mask[i]].mean() if bool(prior_mask[i].any()) else prior_x[i][mask[i]].mean()
        for i in range(b)
    ])  # fmt: skip
    image_of = torch.arange(b, device=mask.device)[:, None, None].expand(b, h, w)[mask]
    target = torch.where(flat_prior, prior_x[mask], mean_x[image_of])
    if guide_x is not None:  # a guide replaces the prior's target (and weight) wherever it is finite
        guide = guide_x[mask]
        has = torch.isfinite(guide)
        target = torch.where(has, guide, target)
        prior_w = torch.where(has, config.prior_weight * scale**2, prior_w)
    prior_w = prior_w + 1e-6 * config.prior_weight * scale**2
    keep = _rejoin_small_regions(torch.cat(ps), torch.cat(qs), torch.cat(keeps), n, config.min_region)
    return _System(n, index, torch.cat(ps), torch.cat(qs), torch.cat(as_), torch.cat(bs), keep,
                   torch.ones_like(keep, dtype=torch.bool), prior_w, target)  # fmt: skip


def _rejoin_small_regions(
    p: torch.Tensor, q: torch.Tensor, keep: torch.Tensor, n: int, min_region: int
) -> torch.Tensor:
    """(E,) edge weights with every cut edge (weight 0) restored to 1 where it touches a connected region (of the
    graph of kept edges over the n pixels) smaller than ``min_region`` pixels."""
    cut = keep == 0
    if min_region <= 1 or not bool(cut.any()):
        return keep
    import scipy.sparse as sp
    from scipy.sparse.csgraph import connected_components

    kept = ~cut
    pk, qk = p[kept].cpu().numpy(), q[kept].cpu().numpy()
    graph = sp.coo_matrix((np.ones(len(pk)), (pk, qk)), shape=(n, n))
    _, labels = connected_components(graph, directed=False)
    small = torch.from_numpy(np.bincount(labels)[labels] < min_region).to(keep.device)
    rejoin = cut & (small[p] | small[q])
    return torch.where(rejoin, torch.ones_like(keep), keep)


def _normal_matrix(
    sys_: _System, weights: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """COO entries (rows, cols, values) of AᵀWA and the right-hand side AᵀWb."""
    we = weights * sys_.edge_a**2
    rows = torch.cat([sys_.edge_p, sys_.edge_q, sys_.edge_p, sys_.edge_q, torch.arange(sys_.n, device=we.device)])
    cols = torch.cat([sys_.edge_p, sys_.edge_q, sys_.edge_q, sys_.edge_p, torch.arange(sys_.n, device=we.device)])
    vals = torch.cat([we, we, -we, -we, sys_.prior_w])
    wb = weights * sys_.edge_a * sys_.edge_b
    rhs = sys_.prior_w * sys_.prior_x
    rhs = rhs.index_add(0, sys_.edge_q, wb).index_add(0, sys_.edge_p, -wb)
    return rows, cols, vals, rhs


def _solve_direct(rows, cols, vals, rhs, n: int) -> torch.Tensor:
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve

    mat = sp.coo_matrix(
        (vals.detach().cpu().double().numpy(), (rows.cpu().numpy(), cols.cpu().numpy())), shape=(n, n)
    ).tocsc()
    x = spsolve(mat, rhs.detach().cpu().double().numpy(), permc_spec="MMD_AT_PLUS_A")
    return torch.from_numpy(np.asarray(x)).to(device=rhs.device, dtype=rhs.dtype)


def _solve_cg(rows, cols, vals, rhs, n: int, x0: torch.Tensor, config: IntegrationConfig) -> torch.Tensor:
    mat = torch.sparse_coo_tensor(torch.stack([rows, cols]), vals, (n, n), check_invariants=False).coalesce()
    diag = torch.zeros(n, dtype=vals.dtype, device=vals.device).index_add(0, rows[rows == cols], vals[rows == cols])
    inv_diag = 1.0 / diag.clamp(min=1e-12)
    x = x0.clone()
    r = rhs - mat @ x
    z = inv_diag * r
    p = z.clone()
    rz = torch.dot(r, z)
    stop = config.cg_tolerance * rhs.norm().clamp(min=1e-30)
    for _ in range(config.cg_iterations):
        if r.norm() <= stop:
            break
        ap = mat @ p
        alpha = rz / torch.dot(p, ap).clamp(min=1e-30)
        x = x + alpha * p
        r = r - alpha * ap
        z = inv_diag * r
        rz_new = torch.dot(r, z)
        p = z + (rz_new / rz.clamp(min=1e-30)) * p
        rz = rz_new
    return x


def _solve_system(system: _System, cfg: IntegrationConfig, device: torch.device) -> torch.Tensor:
    """IRLS over the edges (the first solve unweighted): (N,) solution."""
    use_cg = cfg.solver == "cg" or (cfg.solver == "auto" and device.type != "cpu")
    x = system.prior_x.clone()
    weights = system.edge_keep.clone()
    for it in range(cfg.reweight_iterations + 1):
        if it > 0:
            resid = system.edge_a * (x[system.edge_q] - x[system.edge_p]) - system.edge_b
            robust = system.edge_keep / (1.0 + (resid / cfg.robust_scale) ** 2)
            weights = torch.where(system.edge_robust, robust, system.edge_keep)
        rows, cols, vals, rhs = _normal_matrix(system, weights)
        if use_cg:
            x = _solve_cg(rows, cols, vals, rhs, system.n, x, cfg)
        else:
            x = _solve_direct(rows, cols, vals, rhs, system.n)
    return x


def _guide_units(guide: torch.Tensor | None, device, dtype, perspective: bool) -> torch.Tensor | None:
    """A guide depth in the unknowns' units (log-depth for a pinhole camera); NaN stays NaN."""
    if guide is None:
        return None
    g = guide.to(device=device, dtype=dtype)
    return torch.log(g.clamp(min=1e-6)).where(torch.isfinite(g), g) if perspective else g


def _boundary(mask: torch.Tensor) -> torch.Tensor:
    """(B, H, W) bool mask pixels with a 4-neighbour outside the mask (or on the image border)."""
    pad = tnf.pad(mask[:, None].float(), (1, 1, 1, 1))[:, 0]
    inner = (pad[:, :-2, 1:-1] > 0) & (pad[:, 2:, 1:-1] > 0) & (pad[:, 1:-1, :-2] > 0) & (pad[:, 1:-1, 2:] > 0)
    return mask & ~inner


def contour_thickness(normals_front: torch.Tensor, normals_back: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """Thickness (metres) of a surface at pixels half a pixel inside its occluding contour, from the normals.

    A locally circular cross-section of radius r seen at distance δ inside its contour has n_z ≈ sqrt(2δ/r), so each
    side lies h = r·n_z ≈ 2δ/n_z from the contour's depth; the thickness is the sum over the front and back normals
    (n_z clamped at 0.1, i.e. at most 20δ per side).

    Args:
        normals_front: (..., 3) front normals at the pixels.
        normals_back: (..., 3) back normals.
        k: (...) pixels per metre (orthographic scale, or focal / depth for a pinhole camera).

    Returns:
        (...) thickness in metres.
    """
    delta = 0.5 / k
    return 2 * delta * (1 / normals_front[..., 2].abs().clamp(min=0.1) + 1 / normals_back[..., 2].abs().clamp(min=0.1))


def contour_average(values: torch.Tensor, contour: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian average (sigma in pixels) of (B, H, W) values over the pixels of a (B, H, W) bool contour only
    (normalised convolution), returned on the contour; other pixels keep their values. Along a contour this smooths
    a per-pixel quantity (the contour thickness, which 1/n_z makes jump from pixel to pixel) without mixing in the
    interior."""
    radius = max(1, int(math.ceil(3 * sigma)))
    x = torch.arange(-radius, radius + 1, dtype=values.dtype, device=values.device)
    g = torch.exp(-0.5 * (x / sigma) ** 2)
    w = contour.to(values.dtype)[:, None]
    v = (values * contour)[:, None]
    for kernel in (g.view(1, 1, 1, -1), g.view(1, 1, -1, 1)):
        pad = (radius, radius, 0, 0) if kernel.shape[-1] > 1 else (0, 0, radius, radius)
        w = tnf.conv2d(tnf.pad(w, pad), kernel)
        v = tnf.conv2d(tnf.pad(v, pad), kernel)
    return torch.where(contour, v[:, 0] / w[:, 0].clamp(min=1e-12), values)


def _couple(front: _System, back: _System, boundary: torch.Tensor, k: torch.Tensor, thickness: torch.Tensor,
            weight: float) -> _System:  # fmt: skip
    """One system of both surfaces (back unknowns after the front ones) with x_back - x_front = thickness on
    ``boundary`` pixels (thickness (B, H, W) in the unknowns' units)."""
    off = front.n
    kk = k[:, None, None].expand_as(boundary)[boundary]
    p = front.index[boundary]
    q = back.index[boundary] + off
    a = kk * weight**0.5
    return _System(
        n=front.n + back.n,
        index=front.index,
        edge_p=torch.cat([front.edge_p, back.edge_p + off, p]),
        edge_q=torch.cat([front.edge_q, back.edge_q + off, q]),
        edge_a=torch.cat([front.edge_a, back.edge_a, a]),
        edge_b=torch.cat([front.edge_b, back.edge_b, a * thickness[boundary]]),
        edge_keep=torch.cat([front.edge_keep, back.edge_keep, torch.ones_like(a)]),
        edge_robust=torch.cat([front.edge_robust, back.edge_robust, torch.zeros_like(a, dtype=torch.bool)]),
        prior_w=torch.cat([front.prior_w, back.prior_w]),
        prior_x=torch.cat([front.prior_x, back.prior_x]),
    )


def integrate_normals(
    normals: torch.Tensor,
    mask: torch.Tensor,
    camera: Camera,
    prior_depth: torch.Tensor,
    prior_mask: torch.Tensor,
    config: IntegrationConfig | None = None,
    guide: torch.Tensor | None = None,
) -> torch.Tensor:
    """Integrate one surface's normal maps into depth maps, guided by a prior depth (the body's).

    Args:
        normals: (B, H, W, 3) camera-space unit normals of the surface (outward; front or back surface).
        mask: (B, H, W) bool pixels to integrate.
        camera: Orthographic or perspective camera of the maps (batch B or 1); its image may have another size with
            the same aspect (the maps are its view resampled).
        prior_depth: (B, H, W) prior depth (-z, metres; e.g. the body's rendered depth), used where ``prior_mask``.
        prior_mask: (B, H, W) bool pixels where the prior holds (e.g. the body's silhouette).
        config: ``IntegrationConfig``.
        guide: optional (B, H, W) depth replacing the prior's target wherever finite (see ``integrate_front_back``).

    Returns:
        (B, H, W) depth (-z, metres) in the dtype of ``normals``, 0 outside ``mask``.
    """
    cfg = config or IntegrationConfig()
    _check_inputs(normals, mask, prior_depth, prior_mask)
    device = normals.device
    dtype = torch.float64 if normals.device.type == "cpu" else torch.float32
    nrm = normals.to(dtype)
    mask_b = mask.to(device=device, dtype=torch.bool)
    prior_mask_b = prior_mask.to(device=device, dtype=torch.bool) & mask_b
    prior = prior_depth.to(device=device, dtype=dtype)
    b, h, w = mask_b.shape
    out = torch.zeros(b, h, w, dtype=normals.dtype, device=device)
    if not bool(mask_b.any()):
        return out
    perspective = isinstance(camera, PerspectiveCamera)
    if perspective and bool((prior[prior_mask_b] <= 0).any()):
        raise ValueError("prior_depth must be positive where prior_mask holds for a perspective camera")
    xt, yt, k = _pixel_geometry(camera, b, h, w, device, dtype)
    prior_x = torch.log(prior.clamp(min=1e-6)) if perspective else prior
    guide_x = _guide_units(guide, device, dtype, perspective)
    system = _build_system(nrm, mask_b, prior_x, prior_mask_b, prior, xt, yt, k, perspective, cfg, guide_x)
    x = _solve_system(system, cfg, device)
    depth = torch.exp(x) if perspective else x
    out[mask_b] = depth.to(normals.dtype)
    return out


def integrate_front_back(
    normals_front: torch.Tensor,
    normals_back: torch.Tensor,
    mask: torch.Tensor,
    camera: Camera,
    body_depth_front: torch.Tensor,
    body_depth_back: torch.Tensor,
    body_mask: torch.Tensor,
    config: IntegrationConfig | None = None,
    guide_front: torch.Tensor | None = None,
    guide_back: torch.Tensor | None = None,
) -> DepthMaps:
    """Front and back clothed depth maps from the clothed normal maps and the body's rendered depth.

    Args:
        normals_front: (B, H, W, 3) outward normals of the nearest clothed surface (camera space).
        normals_back: (B, H, W, 3) outward normals of the farthest clothed surface, in the front camera's frame.
        mask: (B, H, W) bool person mask.
        camera: Camera of the maps (batch B or 1; same view, any resolution of the same aspect).
        body_depth_front: (B, H, W) body's nearest depth (``geometry.render.render_mesh(...).depth``).
        body_depth_back: (B, H, W) body's farthest depth (``.depth_back``).
        body_mask: (B, H, W) bool body silhouette.
        config: ``IntegrationConfig``.
        guide_front, guide_back: optional (B, H, W) depths that replace the body's as the prior's target wherever
            they are finite (NaN elsewhere), e.g. a clothing hull wider than the body; the cuts still follow the
            body's depth.

    Returns:
        ``DepthMaps``; where the integrated back lies in front of the front (thin sides) both are set to their mean.
    """
    cfg = config or IntegrationConfig()
    if cfg.boundary_weight > 0:
        front, back = _integrate_coupled(normals_front, normals_back, mask, camera, body_depth_front, body_depth_back,
                                         body_mask, cfg, (guide_front, guide_back))  # fmt: skip
    else:
        front = integrate_normals(normals_front, mask, camera, body_depth_front, body_mask, cfg, guide_front)
        back = integrate_normals(normals_back, mask, camera, body_depth_back, body_mask, cfg, guide_back)
    mask_b = mask.to(device=front.device, dtype=torch.bool)
    crossed = mask_b & (back < front)
    mid = 0.5 * (front + back)
    front = torch.where(crossed, mid, front)
    back = torch.where(crossed, mid, back)
    return DepthMaps(front, back, mask_b)


def _integrate_coupled(normals_front, normals_back, mask, camera, depth_front, depth_back, body_mask, cfg,
                       guides=(None, None)):  # fmt: skip
    """Front and back integrated in one system, tied on the mask's boundary (see ``boundary_weight``)."""
    _check_inputs(normals_front, mask, depth_front, body_mask)
    _check_inputs(normals_back, mask, depth_back, body_mask)
    device = normals_front.device
    dtype = torch.float64 if device.type == "cpu" else torch.float32
    mask_b = mask.to(device=device, dtype=torch.bool)
    prior_mask_b = body_mask.to(device=device, dtype=torch.bool) & mask_b
    b, h, w = mask_b.shape
    outs = [torch.zeros(b, h, w, dtype=normals_front.dtype, device=device) for _ in range(2)]
    if not bool(mask_b.any()):
        return outs
    perspective = isinstance(camera, PerspectiveCamera)
    xt, yt, k = _pixel_geometry(camera, b, h, w, device, dtype)
    systems = []
    for n, prior, guide in ((normals_front, depth_front, guides[0]), (normals_back, depth_back, guides[1])):
        prior = prior.to(device=device, dtype=dtype)
        if perspective and bool((prior[prior_mask_b] <= 0).any()):
            raise ValueError("prior_depth must be positive where prior_mask holds for a perspective camera")
        prior_x = torch.log(prior.clamp(min=1e-6)) if perspective else prior
        guide_x = _guide_units(guide, device, dtype, perspective)
        systems.append(_build_system(n.to(dtype), mask_b, prior_x, prior_mask_b, prior, xt, yt, k, perspective, cfg,
                                     guide_x))  # fmt: skip
    kk = k[:, None, None].expand(b, h, w)
    if perspective:  # pixels per metre at the (prior) depth; the unknowns are log-depths: thickness / depth
        d0 = torch.zeros(b, h, w, dtype=dtype, device=device)
        d0[mask_b] = torch.exp(systems[0].prior_x)
        thick = contour_thickness(normals_front.to(dtype), normals_back.to(dtype), kk / d0.clamp(min=1e-6))
        thick = thick / d0.clamp(min=1e-6)
    else:
        thick = contour_thickness(normals_front.to(dtype), normals_back.to(dtype), kk)
    boundary = _boundary(mask_b)
    if cfg.contour_smooth > 0:
        thick = contour_average(thick, boundary, cfg.contour_smooth)
    joint = _couple(systems[0], systems[1], boundary, k, thick, cfg.boundary_weight)
    x = _solve_system(joint, cfg, device)
    x = torch.exp(x) if perspective else x
    outs[0][mask_b] = x[: systems[0].n].to(outs[0].dtype)
    outs[1][mask_b] = x[systems[0].n :].to(outs[1].dtype)
    return outs
