"""Training an avatar from per-frame meshes and body fits (SCANimate): stage 1 learns inverse/forward skinning with
cycle consistency and body priors, stage 2 learns the pose-conditioned SDF on the canonicalised surface samples,
weighted by per-frame quality and per-point visibility; then the canonical mesh is extracted and skinned. The frames
are canonicalised with their fitted poses (each reconstruction was made around its fitted body); the poses the avatar
holds in its training frames are those fits smoothed in time (``avatar.poses``), a better estimate of where the person
really was than any single-view fit.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from avatar.config import AvatarConfig
from avatar.lbs import canonical_body_pose, pose_features
from avatar.model import Avatar, build_networks
from avatar.poses import FramePoses, pose_change, refine_frame_poses
from body.lbs import (
    NUM_JOINTS,
    global_joint_transforms,
    inverse_skin_points,
    skin_normals,
    skin_points,
    skinning_transforms,
)
from body.model import SMPL_PARENTS, BodyModel
from body.params import BodyParams

__all__ = [
    "ProgressFn",
    "TrainingSamples",
    "extract_canonical_mesh",
    "sample_training_frames",
    "train_avatar",
    "vertex_visibility",
]

logger = logging.getLogger(__name__)

ProgressFn = Callable[[str, int, int, dict[str, float]], None]
"""progress(stage, step, total_steps, losses): stage is "skinning", "sdf" or "extract"."""

MeshLike = tuple[torch.Tensor | np.ndarray, torch.Tensor | np.ndarray]


@dataclass
class TrainingSamples:
    """Surface samples of every training frame, drawn once (S per frame).

    Attributes:
        points: (T, S, 3) posed surface points (metres, the frames' space).
        normals: (T, S, 3) unit outward normals.
        confidence: (T, S) per-point weight (frame quality x visibility), in [0, 1].
        nearest_weights: (T, S, 24) body-model weights of the nearest posed body point.
        nearest_distance: (T, S) distance (m) to the posed naked body.
        body_vertices: (T, Vb, 3) posed naked body vertices.
    """

    points: torch.Tensor
    normals: torch.Tensor
    confidence: torch.Tensor
    nearest_weights: torch.Tensor
    nearest_distance: torch.Tensor
    body_vertices: torch.Tensor


def _tensor(x, device, dtype=torch.float32) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x) if not isinstance(x, torch.Tensor) else x).to(device=device, dtype=dtype)


def vertex_visibility(vertices: torch.Tensor, faces: torch.Tensor, camera, offset: float = 2e-3) -> torch.Tensor:
    """Per-vertex visibility (V,) float (1 visible, 0 occluded) of one mesh from a camera (batch size 1).

    Vertices are nudged ``offset`` metres along their normals so the mesh does not occlude itself at the vertex.

    Args:
        vertices: (V, 3) camera-space vertices.
        faces: (F, 3) int64 faces.
        camera: geometry.cameras camera with batch size 1.
    """
    from geometry.queries import vertex_normals
    from geometry.render import point_visibility

    if vertices.ndim != 2 or vertices.shape[-1] != 3:
        raise ValueError(f"vertices must be (V, 3), got {tuple(vertices.shape)}")
    v = vertices[None].float()
    f = faces.long().to(v.device)
    probe = v + offset * vertex_normals(v, f)
    return point_visibility(v, f, camera, probe)[0].float()


def sample_training_frames(
    model: BodyModel,
    frames: Sequence[MeshLike],
    fits: BodyParams | Any,
    samples_per_frame: int,
    frame_weights: torch.Tensor | None = None,
    point_confidence: Sequence[torch.Tensor] | None = None,
    visibility_floor: float = 0.1,
    seed: int = 0,
    device: torch.device | str = "cpu",
) -> TrainingSamples:
    """Sample each frame's surface and attach confidence and the nearest naked-body weights.

    Args:
        model: body model the fits refer to.
        frames: T meshes (vertices (V_t, 3), faces (F_t, 3)) in the fits' space.
        fits: per-frame body parameters (T frames), as for ``train_avatar``.
        samples_per_frame: S.
        frame_weights: (T,) per-frame quality in [0, 1] (default ones).
        point_confidence: T per-vertex confidences (V_t,) in [0, 1], e.g. ``vertex_visibility`` (default ones).
        visibility_floor: confidence given to a point with per-vertex confidence 0.
        seed: sampling seed.
        device: device of the returned tensors.
    """
    from geometry.metrics import sample_surface
    from geometry.queries import closest_points, interpolate_face_attributes

    t = len(frames)
    fits = BodyParams.of(fits)
    go = _tensor(fits.global_orient, model.device, model.dtype)
    bp = _tensor(fits.body_pose, model.device, model.dtype)
    tr = _tensor(fits.transl, model.device, model.dtype)
    if go.shape != (t, 3) or bp.shape != (t, 69) or tr.shape != (t, 3):
        raise ValueError(
            f"fits must have global_orient (T, 3), body_pose (T, 69), transl (T, 3) for T={t} frames; got "
            f"{tuple(go.shape)}, {tuple(bp.shape)}, {tuple(tr.shape)}"
        )
    if frame_weights is None:
        frame_weights = torch.ones(t)
    frame_weights = _tensor(frame_weights, "cpu")
    if frame_weights.shape != (t,):
        raise ValueError(f"frame_weights must be (T,) = ({t},), got {tuple(frame_weights.shape)}")
    if point_confidence is not None and len(point_confidence) != t:
        raise ValueError(f"point_confidence must hold one (V_t,) tensor per frame ({t}), got {len(point_confidence)}")
    betas = _mean_betas(fits.betas, model)
    with torch.no_grad():
        body = model(betas=betas.expand(t, -1), global_orient=go, body_pose=bp, transl=tr).vertices.float().cpu()
    body_faces = model.faces.cpu()
    lbs = model.lbs_weights.float().cpu()[None]
    out = {k: [] for k in ("points", "normals", "confidence", "weights", "distance")}
    for i, (verts, faces) in enumerate(frames):
        v = _tensor(verts, "cpu")
        f = _tensor(faces, "cpu", torch.long)
        if v.ndim != 2 or v.shape[-1] != 3 or f.ndim != 2 or f.shape[-1] != 3:
            raise ValueError(f"frame {i}: expected vertices (V, 3) and faces (F, 3), got {tuple(v.shape)}, "
                             f"{tuple(f.shape)}")  # fmt: skip
        s = sample_surface(v[None], f, samples_per_frame, seed=seed + i)
        conf = torch.full((samples_per_frame,), float(frame_weights[i]))
        if point_confidence is not None:
            c = _tensor(point_confidence[i], "cpu").reshape(-1)
            if c.shape[0] != v.shape[0]:
                raise ValueError(f"point_confidence[{i}] has {c.shape[0]} values for {v.shape[0]} vertices")
            c_face = c[f[s.face_index[0]]].mean(-1)
            conf = conf * (visibility_floor + (1.0 - visibility_floor) * c_face.clamp(0, 1))
        cp = closest_points(body[i : i + 1], body_faces, s.points, sign_method="none", normals=False)
        out["points"].append(s.points[0])
        out["normals"].append(s.normals[0])
        out["confidence"].append(conf)
        out["weights"].append(interpolate_face_attributes(lbs, body_faces, cp.face_index, cp.barycentric)[0])
        out["distance"].append(cp.distance[0])
    return TrainingSamples(
        points=torch.stack(out["points"]).to(device),
        normals=torch.stack(out["normals"]).to(device),
        confidence=torch.stack(out["confidence"]).to(device),
        nearest_weights=torch.stack(out["weights"]).to(device),
        nearest_distance=torch.stack(out["distance"]).to(device),
        body_vertices=body.to(device),
    )


def _mean_betas(betas, model: BodyModel) -> torch.Tensor:
    b = _tensor(betas, model.device, model.dtype)
    if b.ndim == 1:
        b = b[None]
    if b.ndim != 2 or b.shape[1] != model.num_betas:
        raise ValueError(f"betas must be ({model.num_betas},) or (T, {model.num_betas}), got {tuple(b.shape)}")
    if bool((b == b[:1]).all()):  # one shared shape (the usual case): exactly that row
        return b[:1]
    return b.mean(0, keepdim=True)


def _bone_points(joints: torch.Tensor, per_bone: int = 8) -> torch.Tensor:
    """Points (23 * per_bone, 3) along the bones (parent -> child joint) of a posed skeleton: surely inside the body."""
    a = joints[list(SMPL_PARENTS[1:])]
    b = joints[1:]
    s = torch.linspace(0.1, 0.9, per_bone, dtype=joints.dtype, device=joints.device)
    return (a[:, None] + s[None, :, None] * (b - a)[:, None]).reshape(-1, 3)


def _cross_entropy(weights: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(target || weights) per point (..., 24) -> (...): zero when the weights equal the target."""
    t = target.clamp(min=0)
    return (t * (torch.log(t + 1e-8) - torch.log(weights + 1e-8))).sum(-1)


def _box_distance(points: torch.Tensor, bounds: torch.Tensor) -> torch.Tensor:
    """Distance (N,) of points inside the box to its nearest face (negative outside)."""
    return torch.minimum(points - bounds[0], bounds[1] - points).amin(dim=-1)


def _box_surface_points(bounds: torch.Tensor, n: int, gen: torch.Generator) -> torch.Tensor:
    u = torch.rand(n, 3, generator=gen).to(bounds)
    p = bounds[0] + u * (bounds[1] - bounds[0])
    axis = torch.randint(0, 3, (n,), generator=gen).to(bounds.device)
    side = torch.randint(0, 2, (n,), generator=gen).to(bounds.device)
    p[torch.arange(n), axis] = bounds[side, axis]
    return p


# --- checkpoints ------------------------------------------------------------------------------------------------


def _save_checkpoint(path: Path, stage: str, step: int, nets: dict[str, torch.nn.Module], opt) -> None:
    from safetensors.torch import save_file

    path.mkdir(parents=True, exist_ok=True)
    tensors = {f"{n}.{k}": v.detach().cpu().contiguous() for n, net in nets.items() for k, v in
               net.state_dict().items()}  # fmt: skip
    if opt is not None:
        for i, st in opt.state_dict()["state"].items():
            for k, v in st.items():
                tensors[f"opt.{i}.{k}"] = torch.as_tensor(v).detach().cpu().contiguous()
    tmp = path / "checkpoint.safetensors.tmp"
    save_file(tensors, str(tmp))
    tmp.replace(path / "checkpoint.safetensors")
    (path / "checkpoint.json").write_text(json.dumps({"stage": stage, "step": step}))


def _load_checkpoint(path: Path, nets: dict[str, torch.nn.Module], device) -> tuple[str, int, dict] | None:
    from safetensors.torch import load_file

    if not (path / "checkpoint.json").is_file() or not (path / "checkpoint.safetensors").is_file():
        return None
    meta = json.loads((path / "checkpoint.json").read_text())
    tensors = load_file(str(path / "checkpoint.safetensors"), device=str(device))
    for n, net in nets.items():
        net.load_state_dict({k[len(n) + 1 :]: v for k, v in tensors.items() if k.startswith(n + ".")})
    opt_state: dict[int, dict] = {}
    for k, v in tensors.items():
        if k.startswith("opt."):
            _, i, name = k.split(".", 2)
            opt_state.setdefault(int(i), {})[name] = v.cpu() if name == "step" else v
    return str(meta["stage"]), int(meta["step"]), opt_state


def _restore_optimizer(opt: torch.optim.Optimizer, state: dict) -> None:
    if state:
        opt.load_state_dict({"state": state, "param_groups": opt.state_dict()["param_groups"]})


# --- training ----------------------------------------------------------------------------------------------------


class _Trainer:
    def __init__(self, model, samples, fits, config: AvatarConfig, device, progress, checkpoint_dir):
        self.cfg = config
        self.device = device
        self.progress = progress
        self.checkpoint_dir = Path(checkpoint_dir) if checkpoint_dir is not None else None
        self.samples = samples
        self.t = samples.points.shape[0]
        dt = torch.float32
        self.betas = _mean_betas(fits.betas, model).to(device=device, dtype=dt)[0]
        go = _tensor(fits.global_orient, device)
        bp = _tensor(fits.body_pose, device)
        transl = _tensor(fits.transl, device)
        self.canonical_pose = canonical_body_pose(np.radians(config.hip_angle_deg), dtype=dt, device=device)
        betas_m = self.betas[None].to(model.device, model.dtype)
        with torch.no_grad():
            self.rest_joints = model(betas=betas_m).joints[0].to(device, dt)
            self.body_canonical = model(betas=betas_m, body_pose=self.canonical_pose.to(model.device, model.dtype)
                                        ).vertices[0].to(device, dt)  # fmt: skip
        self.body_weights = model.lbs_weights.to(device, dt)
        zero = torch.zeros(1, 3, dtype=dt, device=device)
        self.m_canon = global_joint_transforms(self.rest_joints, zero, self.canonical_pose)[0]
        m_posed = global_joint_transforms(self.rest_joints, go, bp, transl)
        self.transforms = skinning_transforms(m_posed, self.m_canon)  # (T, 24, 4, 4)
        # Inverse-net input frame: the posed pelvis frame moved onto the canonical pelvis (undoes turn + translation).
        self.root_align = self.m_canon[0] @ torch.linalg.inv(m_posed[:, 0])  # (T, 4, 4)
        self.features = pose_features(go, bp, self.canonical_pose)  # (T, 23, 6)
        lo, hi = self.body_canonical.amin(0), self.body_canonical.amax(0)
        self.center = 0.5 * (lo + hi)
        self.scale = float(0.5 * (hi - lo).max() + 0.1)
        self.inverse, self.forward, self.sdf = (n.to(device) for n in build_networks(config, self.t))
        self.history: dict[str, list[float]] = {}

    def norm(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.center) / self.scale

    def inverse_weights(self, x_posed: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
        a = self.root_align[frames]
        x = (a[:, None, :3, :3] @ x_posed[..., None])[..., 0] + a[:, None, :3, 3]
        return self.inverse(self.norm(x), frames)

    def _batch(self, gen: torch.Generator, n_points: int):
        frames = torch.randint(0, self.t, (self.cfg.frames_per_step,), generator=gen)
        idx = torch.randint(0, self.samples.points.shape[1], (len(frames), n_points), generator=gen)
        frames_d, idx_d = frames.to(self.device), idx.to(self.device)

        def take(a):
            return a[frames_d[:, None], idx_d]

        return frames_d, take

    def _log(self, stage: str, step: int, total: int, losses: dict[str, torch.Tensor], every: int = 25) -> None:
        if step % every and step != total:
            return
        values = {k: float(v.detach()) for k, v in losses.items()}
        for k, v in values.items():
            self.history.setdefault(f"{stage}/{k}", []).append(v)
        self.history.setdefault(f"{stage}/step", []).append(float(step))
        if self.progress is not None:
            self.progress(stage, step, total, values)
        logger.debug("%s %d/%d %s", stage, step, total, values)

    # stage 1
    def skinning_losses(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        frames, take = self._batch(gen, cfg.points_per_frame)
        x = take(self.samples.points)
        conf = take(self.samples.confidence)
        w_near = take(self.samples.nearest_weights)
        near = torch.exp(-take(self.samples.nearest_distance) / cfg.nearest_sigma) * conf
        tf = self.transforms[frames]
        w_inv = self.inverse_weights(x, frames)
        x_c = inverse_skin_points(x, w_inv, tf)
        w_fwd = self.forward(self.norm(x_c))
        x_cycle = skin_points(x_c, w_fwd, tf)
        csum = conf.sum().clamp(min=1e-6)
        losses = {
            "cycle": ((x_cycle - x).norm(dim=-1) * conf).sum() / csum,
            "weight_cycle": ((w_inv - w_fwd).abs().sum(-1) * conf).sum() / csum,
            "nearest": ((_cross_entropy(w_inv, w_near) + _cross_entropy(w_fwd, w_near)) * near).sum() / csum,
            "sparse": ((w_inv + 1e-6).pow(0.7).sum(-1).mean() + (w_fwd + 1e-6).pow(0.7).sum(-1).mean()) / 2 - 1.0,
        }
        jitter = torch.randn(x.shape, generator=gen).to(x) * cfg.smooth_sigma
        w_inv_j = self.inverse_weights(x + jitter, frames)
        w_fwd_j = self.forward(self.norm(x_c.detach() + jitter))
        losses["smooth"] = (w_inv_j - w_inv).abs().sum(-1).mean() + (w_fwd_j - w_fwd).abs().sum(-1).mean()
        if cfg.body_points_per_frame > 0:
            nb = self.body_weights.shape[0]
            vidx = torch.randint(0, nb, (len(frames), cfg.body_points_per_frame), generator=gen).to(self.device)
            target = self.body_weights[vidx]
            posed = self.samples.body_vertices[frames[:, None], vidx]
            w_b_inv = self.inverse_weights(posed, frames)
            w_b_fwd = self.forward(self.norm(self.body_canonical[vidx]))
            losses["body"] = _cross_entropy(w_b_inv, target).mean() + _cross_entropy(w_b_fwd, target).mean()
            losses["body_l1"] = ((w_b_inv - target).abs().sum(-1).mean() + (w_b_fwd - target).abs().sum(-1).mean()) / 2
        else:
            losses["body"] = torch.zeros((), device=self.device)
        total = (cfg.w_cycle * losses["cycle"] + cfg.w_weight_cycle * losses["weight_cycle"]
                 + cfg.w_nearest * losses["nearest"] + cfg.w_sparse * losses["sparse"]
                 + cfg.w_smooth * losses["smooth"] + cfg.w_body * losses["body"])  # fmt: skip
        losses["total"] = total
        return losses

    # stage 2
    def canonicalise(self) -> None:
        """Map every sample to the canonical pose with the inverse net; down-weight points the cycle cannot close."""
        xs, ns, errs = [], [], []
        with torch.no_grad():
            for i in range(self.t):
                fr = torch.tensor([i], device=self.device)
                x = self.samples.points[i : i + 1]
                w = self.inverse_weights(x, fr)
                tf = self.transforms[i : i + 1]
                x_c = inverse_skin_points(x, w, tf)
                n_c = skin_normals(self.samples.normals[i : i + 1], w, tf, inverse=True)
                back = skin_points(x_c, self.forward(self.norm(x_c)), tf)
                xs.append(x_c[0])
                ns.append(n_c[0])
                errs.append((back - x).norm(dim=-1)[0])
        self.canon_points = torch.stack(xs)
        self.canon_normals = torch.stack(ns)
        err = torch.stack(errs)
        self.canon_confidence = self.samples.confidence * torch.exp(-((err / 0.02) ** 2))
        logger.info("canonicalised %d frames: cycle error median %.2f cm, 95%% %.2f cm", self.t,
                    100 * float(err.median()), 100 * float(err.quantile(0.95)))  # fmt: skip
        pts = self.canon_points.reshape(-1, 3)
        keep = self.canon_confidence.reshape(-1) > 1e-3
        pts = pts[keep] if keep.any() else pts
        lo = torch.minimum(torch.quantile(pts, 0.001, dim=0), self.body_canonical.amin(0))
        hi = torch.maximum(torch.quantile(pts, 0.999, dim=0), self.body_canonical.amax(0))
        pad = self.cfg.box_padding
        self.bounds = torch.stack([lo - pad, hi + pad])
        self.bone_points = _bone_points(self.m_canon[:, :3, 3])

    def sdf_at(self, x: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """SDF in normalised units at canonical points x (B, N, 3) metres; weights detached (attention only)."""
        xn = self.norm(x)
        with torch.no_grad():
            w = self.forward(xn)
        return self.sdf(xn, w, features)

    def sdf_losses(self, gen: torch.Generator) -> dict[str, torch.Tensor]:
        cfg = self.cfg
        frames, take = self._batch(gen, cfg.points_per_frame)
        x = take(self.canon_points).requires_grad_(True)
        n = take(self.canon_normals)
        conf = take(self.canon_confidence)
        feat = self.features[frames]
        b, p = x.shape[:2]
        near = (x.detach() + torch.randn(x.shape, generator=gen).to(x) * cfg.near_sigma).requires_grad_(True)
        u = torch.rand(b, p // 2, 3, generator=gen).to(x)
        box = (self.bounds[0] + u * (self.bounds[1] - self.bounds[0])).requires_grad_(True)
        pts = torch.cat([x, near, box], dim=1)
        s = self.sdf_at(pts, feat)
        (grad,) = torch.autograd.grad(s.sum(), pts, create_graph=True)
        grad = grad * self.scale  # d sdf_norm / d x_norm
        s_surf, g_surf = s[:, :p], grad[:, :p]
        csum = conf.sum().clamp(min=1e-6)
        losses = {
            "surface": (s_surf.abs() * conf).sum() / csum,
            "normal": ((g_surf - n).norm(dim=-1) * conf).sum() / csum,
            "eikonal": ((grad[:, p:].norm(dim=-1) - 1.0) ** 2).mean(),
            "offsurface": torch.exp(-100.0 * s[:, 2 * p :].abs()).mean(),
        }
        margin = 0.01 / self.scale
        inner = self.bone_points[None].expand(b, -1, -1)
        outer = _box_surface_points(self.bounds, 256, gen)[None].expand(b, -1, -1)
        s_io = self.sdf_at(torch.cat([inner, outer], 1), feat)
        ni = inner.shape[1]
        losses["inside_outside"] = torch.relu(s_io[:, :ni] + margin).mean() + torch.relu(margin - s_io[:, ni:]).mean()
        total = (cfg.w_surface * losses["surface"] + cfg.w_normal * losses["normal"]
                 + cfg.w_eikonal * losses["eikonal"] + cfg.w_offsurface * losses["offsurface"]
                 + cfg.w_inside_outside * losses["inside_outside"])  # fmt: skip
        losses["total"] = total
        return losses

    def run_stage(self, stage: str, params, lr: float, steps: int, loss_fn, start: int, opt_state: dict) -> None:
        if start >= steps:
            return
        opt = torch.optim.Adam(params, lr=lr)
        _restore_optimizer(opt, opt_state)
        sched = torch.optim.lr_scheduler.MultiStepLR(opt, [int(0.6 * steps), int(0.85 * steps)], gamma=0.3)
        for _ in range(start):
            sched.step()
        nets = {"inverse": self.inverse, "forward": self.forward, "sdf": self.sdf}
        t0 = time.perf_counter()
        for step in range(start + 1, steps + 1):
            gen = torch.Generator().manual_seed(self.cfg.seed * 1_000_003 + step + (0 if stage == "skinning" else 7))
            losses = loss_fn(gen)
            opt.zero_grad(set_to_none=True)
            losses["total"].backward()
            opt.step()
            sched.step()
            self._log(stage, step, steps, losses)
            if self.checkpoint_dir is not None and (step % self.cfg.checkpoint_every == 0 or step == steps):
                _save_checkpoint(self.checkpoint_dir, stage, step, nets, opt)
        logger.info("%s: %d steps in %.1f s, final loss %.4f", stage, steps - start, time.perf_counter() - t0,
                    float(losses["total"].detach()))  # fmt: skip


def extract_canonical_mesh(
    avatar_like,
    features: torch.Tensor,
    bounds: torch.Tensor,
    resolution: int,
    coarse_resolution: int,
    batch_points: int = 2**16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Extract the zero level of ``avatar_like.canonical_sdf`` at pose features (23, 6) inside ``bounds`` (2, 3).

    The field is clamped positive near the box faces, so the result is closed even if the surface reaches the box;
    only the largest component is kept.

    Returns:
        vertices (V, 3) float32 and faces (F, 3) int64 on the features' device.
    """
    from geometry.surface import extract_surface

    device = features.device
    spacing = float((bounds[1] - bounds[0]).max()) / (resolution - 1)

    def field(points: torch.Tensor) -> torch.Tensor:
        s = avatar_like.canonical_sdf(points[None], features[None])[0]
        return torch.maximum(s, 1.5 * spacing - _box_distance(points, bounds))

    verts, faces = extract_surface(field, bounds.detach().cpu().numpy(), resolution=resolution,
                                   coarse_resolution=coarse_resolution, level=0.0, inside="below",
                                   batch_points=batch_points, device=device)  # fmt: skip
    if len(faces) == 0:
        raise RuntimeError("the avatar's SDF has no zero level inside its box: training failed (check the losses)")
    return torch.from_numpy(verts).to(device), torch.from_numpy(faces).to(device)


def _frame_poses(model: BodyModel, fits: BodyParams, t: int, config: AvatarConfig, frame_times, frame_weights):
    """The fitted poses (T frames) and the poses the avatar holds in those frames (refined when configured)."""
    fitted = FramePoses.from_params(fits.to("cpu", torch.float32))
    if len(fitted) != t:
        raise ValueError(f"fits have {len(fitted)} frames but {t} meshes were given")
    if frame_times is not None:
        frame_times = _tensor(frame_times, "cpu", torch.float64).reshape(-1)
        if frame_times.shape != (t,) or not torch.isfinite(frame_times).all():
            raise ValueError(f"frame_times must be (T,) = ({t},) finite seconds, got {tuple(frame_times.shape)}")
    weights = None if frame_weights is None else _tensor(frame_weights, "cpu").reshape(-1)
    betas = _mean_betas(fits.betas, model)[0].cpu()
    held = refine_frame_poses(model, betas, fitted, frame_times, config.pose_smoothing_s, weights)
    if frame_times is not None and config.pose_smoothing_s > 0 and t >= 3:
        change = pose_change(fitted, held)
        logger.info("per-frame poses smoothed over %.2f s: joint rotations change by %.1f deg on average (max %.1f), "
                    "root by %.1f deg / %.1f cm", config.pose_smoothing_s, change["joint_deg"].mean(),
                    change["joint_deg"].max(), change["root_deg"].mean(), 100 * change["transl_m"].mean())  # fmt: skip
    return fitted, held


def train_avatar(
    model: BodyModel,
    frames: Sequence[MeshLike],
    fits: BodyParams | Any,
    config: AvatarConfig | None = None,
    frame_weights: torch.Tensor | np.ndarray | None = None,
    point_confidence: Sequence[torch.Tensor | np.ndarray] | None = None,
    progress: ProgressFn | None = None,
    checkpoint_dir: str | Path | None = None,
    device: str | torch.device | None = None,
    frame_times: torch.Tensor | np.ndarray | Sequence[float] | None = None,
) -> Avatar:
    """Train a SCANimate avatar from per-frame clothed meshes and their body fits.

    Args:
        model: body model of the fits (its shape, skinning weights and kinematic tree).
        frames: T meshes (vertices (V_t, 3) metres, faces (F_t, 3)) in the same space as the fits.
        fits: per-frame body parameters (T frames): a :class:`body.params.BodyParams` or anything
            ``BodyParams.of`` converts (icon's ``BodyFit``, the store's ``FitArrays``, four named arrays with betas
            (num_betas,) or (T, num_betas)); the rows' betas are averaged into one shape.
        config: settings (default ``AvatarConfig()``; ``AvatarConfig.fast()`` for CPU).
        frame_weights: (T,) per-frame quality in [0, 1] (e.g. from the refinement loss); default ones.
        point_confidence: per frame, (V_t,) per-vertex confidence in [0, 1] (e.g. ``vertex_visibility``): points
            seen by the camera count fully, unseen ones by ``config.visibility_floor``; default ones.
        progress: called as ``progress(stage, step, total, losses)`` every 25 steps.
        checkpoint_dir: if given, checkpoints go there and an existing checkpoint is resumed (same data and config).
        device: training device (default: the body model's).
        frame_times: (T,) time of each frame in seconds, for the temporal pose smoothing
            (``config.pose_smoothing_s``); without times the avatar holds the fitted poses unchanged.

    Returns:
        The trained :class:`Avatar` on ``device``; ``avatar.fitted_poses`` are the input fits (the frames are
        canonicalised with them: each reconstruction was made around its fitted body), ``avatar.frame_poses`` the
        poses the avatar holds in the training frames (the fits smoothed in time, see ``avatar.poses``).
    """
    config = config or AvatarConfig()
    if len(frames) == 0:
        raise ValueError("train_avatar needs at least one frame")
    fits = BodyParams.of(fits)
    device = torch.device(device) if device is not None else model.device
    torch.manual_seed(config.seed)
    t0 = time.perf_counter()
    fitted, held = _frame_poses(model, fits, len(frames), config, frame_times, frame_weights)
    samples = sample_training_frames(model, frames, fits, config.samples_per_frame, frame_weights, point_confidence,
                                     config.visibility_floor, config.seed, device)  # fmt: skip
    tr = _Trainer(model, samples, fits, config, device, progress, checkpoint_dir)
    logger.info("sampled %d frames in %.1f s", len(frames), time.perf_counter() - t0)
    stage, start, opt_state = "skinning", 0, {}
    if tr.checkpoint_dir is not None:
        nets = {"inverse": tr.inverse, "forward": tr.forward, "sdf": tr.sdf}
        found = _load_checkpoint(tr.checkpoint_dir, nets, device)
        if found is not None:
            stage, start, opt_state = found
            logger.info("resuming from %s: stage %s, step %d", tr.checkpoint_dir, stage, start)
    if stage == "skinning":
        params = list(tr.inverse.parameters()) + list(tr.forward.parameters())
        tr.run_stage("skinning", params, config.skin_lr, config.skin_steps, tr.skinning_losses, start, opt_state)
        start, opt_state = 0, {}
    for p in list(tr.inverse.parameters()) + list(tr.forward.parameters()):
        p.requires_grad_(False)
    tr.canonicalise()
    tr.run_stage("sdf", tr.sdf.parameters(), config.sdf_lr, config.sdf_steps, tr.sdf_losses, start, opt_state)
    for net in (tr.inverse, tr.forward, tr.sdf):
        net.eval()
    reference = tr.features.mean(0) if config.reference_pose == "mean" else torch.zeros_like(tr.features[0])
    avatar = Avatar(
        config=config, inverse_net=tr.inverse, forward_net=tr.forward, sdf_net=tr.sdf, betas=tr.betas,
        rest_joints=tr.rest_joints, canonical_pose=tr.canonical_pose[0], center=tr.center, scale=tr.scale,
        vertices=torch.zeros(0, 3, device=device), faces=torch.zeros(0, 3, dtype=torch.long, device=device),
        skin_weights=torch.zeros(0, NUM_JOINTS, device=device), reference_features=reference, bounds=tr.bounds,
        history=tr.history, frame_poses=held.to(device), fitted_poses=fitted.to(device),
    )  # fmt: skip
    if progress is not None:
        progress("extract", 0, 1, {})
    with torch.no_grad():
        verts, faces = extract_canonical_mesh(avatar, reference, tr.bounds, config.resolution,
                                              config.coarse_resolution)  # fmt: skip
        weights = avatar.vertex_weights(verts)
    avatar.vertices, avatar.faces, avatar.skin_weights = verts, faces, weights
    if progress is not None:
        progress("extract", 1, 1, {"vertices": float(len(verts))})
    logger.info("avatar trained in %.1f s: canonical mesh %d vertices", time.perf_counter() - t0, len(verts))
    return avatar
