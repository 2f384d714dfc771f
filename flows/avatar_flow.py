"""Avatar flows: train a SCANimate avatar from a run store's reconstructed frames (``train_avatar_flow``) and re-pose
an avatar with a motion file into posed meshes, an MP4 render and a rigged glTF (``repose``).

Files: the avatar lives beside the store in ``<out>/<stem>.avatar/`` (``avatar.json`` + ``avatar.safetensors`` from
``avatar.model.save_avatar``, ``training.json``, ``training_curves.png``, ``checkpoints/``, ``frames/`` with each
frame's reconstruction coloured from its own image); the canonical mesh and
training curves also go into the store's ``/avatar`` group. Heavy imports (torch, Warp, matplotlib) are lazy.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE
from prefect.context import FlowRunContext, TaskRunContext

from avatar.config import AvatarConfig
from flows.avatar_data import (
    StoreTrainingData,
    frame_quality_weights,
    frame_visibility,
    load_training_data,
)
from flows.bundled import default_motion_path
from flows.resources import emit_progress

if TYPE_CHECKING:

    from avatar.model import Avatar
    from body.motion import Motion
    from flows.store import RunStore

log = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_MOTION",
    "AvatarFlowResult",
    "ReposeResult",
    "StoreTrainingData",
    "avatar_dir_for",
    "frame_quality_weights",
    "load_training_data",
    "plot_training_curves",
    "refine_and_colour",
    "render_motion_video",
    "repose",
    "train_avatar_flow",
    "train_avatar_from_store",
]

DEFAULT_MOTION = default_motion_path()
"""The bundled 3 s wave (body/data/motions/README.md), used for previews."""
VIDEO_SIZE = 512
"""Side (px) of the re-posed motion's MP4 render."""
_CURVE_TABLE_POINTS = 6
_LIGHT = (-0.3, 0.4, 1.0)  # from the upper left of the camera: relief reads better than a head-on light


# ----------------------------------------------------------------------------------------------------- data types
@dataclass
class ReposeResult:
    """Outputs of :func:`repose`.

    Attributes:
        avatar_dir: the avatar that was posed.
        motion_path: the motion file.
        out_dir: output folder.
        quality: "fast" (skinned canonical mesh) or "full" (pose-dependent surface per frame).
        fps: frame rate of the posed sequence (the motion's, or the requested resampling).
        n_frames: posed frames written.
        mesh_paths: one PLY per frame, ``<out_dir>/meshes/frame_<i:06d>.ply``.
        video_path: MP4 render of the posed sequence (shaded normals, fixed orthographic camera).
        gltf_path: rigged canonical mesh with the motion as its animation (``avatar.glb``).
        seconds: wall-clock seconds per step (load, repose, meshes, video, gltf, total).
    """

    avatar_dir: Path
    motion_path: Path
    out_dir: Path
    quality: str
    fps: float
    n_frames: int
    mesh_paths: list[Path]
    video_path: Path
    gltf_path: Path
    seconds: dict[str, float] = field(default_factory=dict)


@dataclass
class AvatarFlowResult:
    """Outputs of :func:`train_avatar_flow`.

    Attributes:
        store: the run store trained from.
        avatar_dir: the saved avatar (``<stem>.avatar``).
        curves_png: plot of the training curves (None if nothing was logged).
        preview: the preview re-posing (None when disabled).
        seconds: wall-clock seconds per step (train, plot, preview, total).
    """

    store: Path
    avatar_dir: Path
    curves_png: Path | None
    preview: ReposeResult | None
    seconds: dict[str, float] = field(default_factory=dict)


# --------------------------------------------------------------------------------------------------------- helpers
def _logger() -> logging.Logger | logging.LoggerAdapter:
    if FlowRunContext.get() or TaskRunContext.get():
        return get_run_logger()
    return log


def _in_flow() -> bool:
    return FlowRunContext.get() is not None


def _slug(text: str) -> str:
    """Artifact keys allow lowercase letters, digits and dashes only."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "avatar"


def avatar_dir_for(store_path: str | Path) -> Path:
    """``<store parent>/<stem>.avatar`` for a store ``<store parent>/<stem>.zarr``."""
    p = Path(store_path)
    stem = p.name[: -len(".zarr")] if p.name.endswith(".zarr") else p.name
    return p.parent / f"{stem}.avatar"


def _training_fingerprint(store: RunStore, data: StoreTrainingData, config: AvatarConfig, body_model: str) -> dict:
    """What a checkpoint was trained on; a checkpoint with another fingerprint is discarded, not resumed."""
    digest = hashlib.sha256()
    for v, f in data.meshes:
        digest.update(v.numpy().tobytes())
        digest.update(f.numpy().tobytes())
    digest.update(data.cameras.numpy().tobytes())
    digest.update(np.asarray(data.times, np.float64).tobytes())
    return {
        "store": str(store.path.resolve()),
        "source_sha256": store.attrs.source_sha256,
        "frames": data.frames,
        "config": config.model_dump(mode="json"),
        "body_model": body_model,
        "data_sha256": digest.hexdigest(),
    }


def _prepare_checkpoints(directory: Path, fingerprint: dict) -> bool:
    """Create the checkpoint folder; clear it if it holds a checkpoint of other inputs. True when resuming."""
    meta = directory / "inputs.json"
    resuming = False
    if directory.is_dir() and any(directory.iterdir()):
        try:
            same = json.loads(meta.read_text()) == fingerprint
        except (OSError, ValueError):
            same = False
        if same:
            resuming = (directory / "checkpoint.json").is_file()
        else:
            _logger().warning("%s: checkpoint of other inputs or settings; starting the training afresh", directory)
            shutil.rmtree(directory)
    directory.mkdir(parents=True, exist_ok=True)
    meta.write_text(json.dumps(fingerprint, indent=1))
    return resuming


_STAGE_ORDER = ("skinning", "sdf")


def _resumable_history(checkpoints: Path) -> dict[str, list[float]]:
    """The training curves logged up to the checkpoint that will be resumed (later entries are re-run, so dropped).

    ``train_avatar`` logs only the steps it runs; the curves of earlier sessions are kept in
    ``checkpoints/history.json`` so a resumed avatar still carries its whole history.
    """
    try:
        meta = json.loads((checkpoints / "checkpoint.json").read_text())
        history = json.loads((checkpoints / "history.json").read_text())
        ck_stage, ck_step = _STAGE_ORDER.index(meta["stage"]), int(meta["step"])
    except (OSError, ValueError, KeyError):
        return {}
    out: dict[str, list[float]] = {}
    for key, values in history.items():
        stage = key.split("/")[0]
        if stage not in _STAGE_ORDER or _STAGE_ORDER.index(stage) > ck_stage:
            continue
        if _STAGE_ORDER.index(stage) == ck_stage:
            steps = history.get(f"{stage}/step", [])
            values = [v for v, s in zip(values, steps, strict=False) if s <= ck_step]
        out[key] = [float(v) for v in values]
    return out


def _merge_history(first: dict[str, list[float]], then: dict[str, list[float]]) -> dict[str, list[float]]:
    return {k: list(first.get(k, [])) + list(then.get(k, [])) for k in dict.fromkeys([*first, *then])}


def _curve_arrays(history: dict[str, list[float]]) -> dict[str, np.ndarray]:
    """Avatar history keys ("skinning/total") as store curve names ("skinning.total")."""
    return {k.replace("/", "."): np.asarray(v, dtype=np.float64) for k, v in history.items()}


def _training_info(
    store_path: Path,
    data: StoreTrainingData,
    avatar: Avatar,
    config: AvatarConfig,
    body_model_path: str | None,
    device: str,
    change: dict[str, Any],
) -> dict[str, Any]:
    """What ``training.json`` records about one avatar training: its inputs, settings and the held-pose change."""
    return {
        "store": str(store_path.resolve()),
        "frames": data.frames,
        "fit_stage": data.fit_stage,
        "frame_weights": [round(float(w), 4) for w in data.frame_weights],
        "final_losses": [None if not math.isfinite(x) else float(x) for x in data.final_losses],
        "body_model": body_model_path,
        "device": str(device),
        "frame_times": [round(float(x), 4) for x in data.times],
        "pose_smoothing_s": config.pose_smoothing_s,
        "pose_change": {k: [round(float(x), 3) for x in v] for k, v in change.items()},
        "canonical_vertices": int(avatar.vertices.shape[0]),
        "canonical_faces": int(avatar.faces.shape[0]),
    }


# ------------------------------------------------------------------------------------------------------ training
@task(name="train-avatar", cache_policy=NO_CACHE)
def train_avatar_from_store(
    store_path: str | Path,
    config: AvatarConfig | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    min_frames: int = 2,
    body_model_path: str | None = None,
) -> Path:
    """Train an avatar on a run store's reconstructed frames; save it and write its mesh and curves into the store.

    Per-frame quality weights come from the refinement losses (:func:`frame_quality_weights`); per-point confidence
    is each mesh's visibility from its crop camera (points the camera never saw count ``config.visibility_floor``).
    Checkpoints go to ``<avatar dir>/checkpoints``; a re-run with the same inputs and config resumes from them.

    Args:
        store_path: the run store (``<out>/<stem>.zarr``).
        config: avatar training settings (default ``AvatarConfig()``; the ``fast`` preset's section on a CPU).
        out_dir: avatar folder (default ``<out>/<stem>.avatar``).
        device: torch device ("auto" picks CUDA when available).
        min_frames: fewest usable frames accepted.
        body_model_path: SMPL-format model file of the fits (default: the store's config, else the embedded model).

    Returns:
        The avatar folder (read it with ``avatar.model.load_avatar``).
    """
    from avatar.model import save_avatar
    from avatar.poses import pose_change
    from avatar.train import train_avatar
    from flows.resources import body_model
    from flows.runners import resolve_device
    from flows.store import open_run

    logger = _logger()
    config = config or AvatarConfig()
    device = resolve_device(device)
    store_path = Path(store_path)
    avatar_dir = Path(out_dir) if out_dir is not None else avatar_dir_for(store_path)
    t0 = time.perf_counter()
    store = open_run(store_path, "r")
    data = load_training_data(store, min_frames)
    if body_model_path is None:
        body_model_path = store.attrs.config.get("body_model")
    model = body_model(body_model_path, device)  # the process-wide cache the frame tasks use
    visibility = frame_visibility(data)
    logger.info("avatar: %d frames from %s (weights %s), mean visibility %.2f", len(data.frames), store_path,
                [round(float(w), 2) for w in data.frame_weights],
                float(np.mean([float(v.mean()) for v in visibility])))  # fmt: skip
    checkpoints = avatar_dir / "checkpoints"
    fingerprint = _training_fingerprint(store, data, config, str(body_model_path or "embedded"))
    if _prepare_checkpoints(checkpoints, fingerprint):
        logger.info("avatar: resuming from %s", checkpoints)
    t_read = time.perf_counter() - t0

    prior = _resumable_history(checkpoints)
    live: dict[str, list[float]] = {}

    def progress(stage: str, step: int, total: int, losses: dict[str, float]) -> None:
        if stage in _STAGE_ORDER:  # mirror train_avatar's history, so a later resume keeps these curves
            for k, v in losses.items():
                live.setdefault(f"{stage}/{k}", []).append(float(v))
            live.setdefault(f"{stage}/step", []).append(float(step))
            (checkpoints / "history.json").write_text(json.dumps(_merge_history(prior, live)))
        # the console's bar shows the steps; avatar.train logs one line per finished stage
        emit_progress("steps", label=f"avatar {stage}", completed=step, total=total)

    t1 = time.perf_counter()
    avatar = train_avatar(model, data.meshes, data.fits, config, frame_weights=data.frame_weights,
                          point_confidence=visibility, progress=progress, checkpoint_dir=checkpoints,
                          device=device, frame_times=data.times)  # fmt: skip
    t_train = time.perf_counter() - t1
    avatar.history = _merge_history(prior, avatar.history)
    stages = refine_and_colour(avatar, store, data, config, avatar_dir)
    save_avatar(avatar, avatar_dir)
    change = pose_change(avatar.fitted_poses, avatar.frame_poses)
    logger.info("avatar: held poses differ from the fits by %.1f deg per joint, %.1f deg root, %.1f cm on average",
                change["joint_deg"].mean(), change["root_deg"].mean(), 100 * change["transl_m"].mean())  # fmt: skip
    info = _training_info(store_path, data, avatar, config, body_model_path, device, change)
    info["seconds"] = {"read": round(t_read, 2), "train": round(t_train, 2), **stages.pop("seconds")}
    info.update(stages)
    (avatar_dir / "training.json").write_text(json.dumps(info, indent=1))
    writable = open_run(store_path, "r+")
    writable.write_avatar_mesh(avatar.vertices.detach().cpu().numpy(), avatar.faces.detach().cpu().numpy())
    if avatar.history:
        writable.write_avatar_curves(_curve_arrays(avatar.history))
    logger.info("avatar: trained in %.1f s (%d canonical vertices) -> %s", time.perf_counter() - t0,
                len(avatar.vertices), avatar_dir)  # fmt: skip
    return avatar_dir


def refine_and_colour(avatar: Avatar, store: RunStore, data: StoreTrainingData, config: AvatarConfig,
                      avatar_dir: Path | None = None) -> dict:  # fmt: skip
    """Refine the trained avatar against its frames' masks and normal maps, then fuse its vertex colours (in place);
    with ``avatar_dir``, also write each frame's reconstruction coloured from its own image to
    ``<avatar_dir>/frames/frame_<t:06d>.ply``. Returns what was done (for ``training.json``)."""
    import torch

    from avatar.colour import avatar_vertex_colours, frame_vertex_colours
    from avatar.export import save_mesh
    from avatar.refine import RefineTargets, apply_refinement, refine_avatar, subdivide_avatar
    from icon.fit import camera_from_params

    logger = _logger()
    info: dict = {"seconds": {}}
    frames = store.read_frames(data.frames)
    masks = torch.from_numpy(np.asarray(frames.mask, bool))
    camera = camera_from_params(data.cameras, data.image_size)
    weights = data.frame_weights.clone()
    has_mask = masks.flatten(1).any(1)
    rgb = torch.from_numpy(np.asarray(frames.image)).float() / 255.0 if config.colour else None  # (T, S, S, 3)
    if not bool(has_mask.all()):
        logger.warning("avatar: %d of %d frames have no person mask in the store; the avatar is not refined%s",
                       int((~has_mask).sum()), len(data.frames), "" if has_mask.any() else " nor coloured")  # fmt: skip
    if config.refine_iterations > 0 and len(avatar.frame_poses) == len(data.frames) and bool(has_mask.all()):
        t0 = time.perf_counter()
        maps = store.read_normals(data.frames)
        front, back = (torch.from_numpy(np.asarray(m, np.float32)) for m in (maps.front, maps.back))
        has_normals = bool(torch.isfinite(front).all() and torch.isfinite(back).all())
        if not has_normals:
            logger.warning("avatar refinement: the store lacks some normal maps; refining against the masks only")
        images = None
        if config.w_refine_photometric > 0 and config.colour:  # colours first: the refinement registers the frames
            images = rgb * masks[..., None]
            avatar.vertex_colours = avatar_vertex_colours(avatar, camera, images, masks, edge_px=config.colour_edge_px,
                                                          cos_power=config.colour_cos_power).colours  # fmt: skip
        targets = RefineTargets(masks, camera, front * masks[..., None] if has_normals else None,
                                back * masks[..., None] if has_normals else None, images)  # fmt: skip
        result = refine_avatar(avatar, targets, config)
        apply_refinement(avatar, result)
        weights = weights * result.frame_weights.cpu()
        info["refine"] = {"initial_losses": [round(float(x), 5) for x in result.initial_losses],
                          "final_losses": [round(float(x), 5) for x in result.frame_losses],
                          "frame_weights": [round(float(x), 4) for x in result.frame_weights],
                          "mean_offset_cm": round(100 * float(result.offsets.norm(dim=-1).mean()), 3)}  # fmt: skip
        info["seconds"]["refine"] = round(time.perf_counter() - t0, 2)
        logger.info("avatar: refined against %d frames in %.1f s, data loss %.4f -> %.4f", len(data.frames),
                    result.seconds, float(result.initial_losses.mean()), float(result.frame_losses.mean()))  # fmt: skip
    if config.colour and bool(has_mask.any()):
        t0 = time.perf_counter()
        subdivide_avatar(avatar, config.colour_subdivisions)
        fused = avatar_vertex_colours(avatar, camera, rgb, masks, edge_px=config.colour_edge_px,
                                      frame_weights=weights, cos_power=config.colour_cos_power)  # fmt: skip
        avatar.vertex_colours = fused.colours.to(avatar.device)
        info["colour"] = {"seen_fraction": round(float(fused.seen.float().mean()), 4),
                          "gains": [[round(float(g), 3) for g in row] for row in fused.gains]}  # fmt: skip
        if avatar_dir is not None:
            for i, (t, (v, f)) in enumerate(zip(data.frames, data.meshes, strict=True)):
                cam = camera_from_params(data.cameras[i : i + 1], data.image_size)
                colours = frame_vertex_colours(v, f, cam, rgb[i], masks[i], config.colour_edge_px)
                save_mesh(Path(avatar_dir) / "frames" / f"frame_{t:06d}.ply", v, f, colours)
        info["seconds"]["colour"] = round(time.perf_counter() - t0, 2)
        logger.info("avatar: colours fused from %d frames (%.0f %% of vertices seen) in %.1f s", len(data.frames),
                    100 * float(fused.seen.float().mean()), info["seconds"]["colour"])  # fmt: skip
    return info


# ------------------------------------------------------------------------------------------------------- repose
def _motion_camera(bounds_min: np.ndarray, bounds_max: np.ndarray, size: int, margin: float = 0.08):
    """Orthographic camera (batch 1) of ``size``² px framing the x/y extent of a box, centred, with a margin."""
    import torch

    from geometry.cameras import OrthographicCamera

    extent = np.maximum(bounds_max[:2] - bounds_min[:2], 1e-3)
    scale = size * (1.0 - 2.0 * margin) / float(extent.max())
    centre = 0.5 * (bounds_min[:2] + bounds_max[:2])
    return OrthographicCamera(
        scale=torch.tensor([scale]), cx=torch.tensor([size / 2 - scale * centre[0]]),
        cy=torch.tensor([size / 2 + scale * centre[1]]), width=size, height=size,
    )  # fmt: skip


def render_motion_video(
    path: str | Path,
    meshes: list[tuple[Any, Any]],
    fps: float,
    size: int = VIDEO_SIZE,
    background: float = 0.12,
    colours: Any = None,
) -> Path:
    """Render posed meshes as an MP4: Lambert-shaded normals seen from +Z by one fixed orthographic camera that frames
    the whole motion's bounding box (so the body moves inside a still frame).

    Args:
        path: output ``.mp4`` (its folder is created).
        meshes: per frame (vertices (V_i, 3) metres, faces (F_i, 3)); topology may differ between frames.
        fps: frame rate (> 0).
        size: output side (px).
        background: grey level of the background in [0, 1].
        colours: optional (V, 3) RGB in [0, 1] per vertex (meshes of one topology), multiplied into the shading.
    """
    import torch

    from flows.video import write_video
    from geometry.queries import vertex_normals
    from geometry.render import shade_normals, trace_camera

    if not meshes:
        raise ValueError("render_motion_video: no meshes to render")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts = [torch.as_tensor(np.asarray(v) if not isinstance(v, torch.Tensor) else v).float().cpu() for v, _ in meshes]
    faces = [torch.as_tensor(np.asarray(f) if not isinstance(f, torch.Tensor) else f).long().cpu() for _, f in meshes]
    lo = torch.stack([v.amin(0) for v in verts]).amin(0).numpy()
    hi = torch.stack([v.amax(0) for v in verts]).amax(0).numpy()
    camera = _motion_camera(lo, hi, size)
    rgb = None if colours is None else torch.as_tensor(np.asarray(colours), dtype=torch.float32).cpu()

    def frames():
        for v, f in zip(verts, faces, strict=True):
            # render_mesh's nearest-hit normals without its farthest-hit search (~3x faster on a CPU)
            hits, _, _ = trace_camera(v[None], f, camera, back=False)
            mask = hits.hit
            corners = vertex_normals(v[None], f)[0][f[hits.face_front[mask]]]  # (P, 3 corners, 3), hit pixels only
            normals = torch.zeros(*mask.shape, 3)
            normals[mask] = torch.nn.functional.normalize(
                (corners * hits.barycentric_front[mask][..., None]).sum(1), dim=-1, eps=1e-20
            )
            img = shade_normals(normals, light_dir=_LIGHT, mask=mask)
            if rgb is not None:  # albedo x a softened shading (ambient 0.25 -> 0.55) so the colours read
                albedo = torch.zeros_like(normals)
                albedo[mask] = (rgb[f[hits.face_front[mask]]] * hits.barycentric_front[mask][..., None]).sum(1)
                img = albedo * (0.4 + 0.6 * img)
            img = torch.where(mask[..., None], img, torch.full_like(img, background))
            yield (img[0].clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)

    return write_video(path, frames(), fps=fps)


def _load_motion(motion_path: Path, fps: float | None, max_frames: int | None) -> Motion:
    from body.motion import Motion, load_motion

    motion = load_motion(motion_path, target_fps=fps)
    if max_frames is not None and motion.num_frames > max_frames:
        motion = Motion(fps=motion.fps, global_orient=motion.global_orient[:max_frames],
                        body_pose=motion.body_pose[:max_frames], transl=motion.transl[:max_frames])  # fmt: skip
    return motion


def _pose_meshes(avatar: Avatar, motion: Motion, quality: str) -> list[tuple[np.ndarray, np.ndarray]]:
    from avatar.repose import repose_fast, repose_full

    if quality == "fast":
        posed = repose_fast(avatar, motion).cpu().numpy()
        faces = avatar.faces.cpu().numpy()
        return [(v, faces) for v in posed]
    out = []
    for k, (pose, transl) in enumerate(zip(motion.poses, motion.transl, strict=True)):
        emit_progress("steps", label="re-posing", completed=k, total=motion.num_frames)
        v, f = repose_full(avatar, pose, transl)
        out.append((v.cpu().numpy(), f.cpu().numpy()))
    emit_progress("steps", label="re-posing", completed=motion.num_frames, total=motion.num_frames)
    return out


def _repose_markdown(result: ReposeResult) -> str:
    lines = [
        f"# Re-posed `{result.avatar_dir.name}` with `{result.motion_path.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| avatar | `{result.avatar_dir}` |",
        f"| motion | `{result.motion_path}` ({result.n_frames} frames at {result.fps:g} fps) |",
        f"| quality | {result.quality} |",
        f"| video | `{result.video_path}` |",
        f"| glTF (rigged, animated) | `{result.gltf_path}` |",
        f"| meshes | `{result.out_dir / 'meshes'}` ({len(result.mesh_paths)} PLY files) |",
        f"| wall time | {result.seconds.get('total', 0.0):.1f} s |",
    ]
    return "\n".join(lines) + "\n"


def _publish_repose_artifacts(result: ReposeResult) -> None:
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    slug = _slug(f"{result.avatar_dir.name}-{result.motion_path.stem}")
    create_markdown_artifact(markdown=_repose_markdown(result), key=f"{slug}-repose",
                             description=f"re-posed avatar {result.avatar_dir.name}")  # fmt: skip
    n = max(result.n_frames, 1)
    rows = [{"step": k, "seconds": round(v, 3), "ms_per_frame": round(1000 * v / n, 1)}
            for k, v in result.seconds.items()]  # fmt: skip
    create_table_artifact(table=rows, key=f"{slug}-repose-timings", description="re-posing timings")


@flow(name="repose-avatar")
def repose(
    avatar_dir: str | Path,
    motion_path: str | Path,
    out_dir: str | Path,
    fps: float | None = None,
    quality: Literal["fast", "full"] = "fast",
    max_frames: int | None = None,
    device: str = "auto",
) -> ReposeResult:
    """Pose an avatar with a motion: per-frame PLY meshes, an MP4 render and a rigged, animated ``avatar.glb``.

    Args:
        avatar_dir: folder written by ``save_avatar`` (e.g. ``<out>/<stem>.avatar``).
        motion_path: motion file (``body.motion.load_motion``: AMASS or plain SMPL npz).
        out_dir: output folder: ``meshes/frame_<i:06d>.ply``, ``<motion stem>.mp4``, ``avatar.glb``.
        fps: resample the motion to this frame rate (default: keep the file's).
        quality: "fast" skins the canonical mesh (one topology, real time); "full" extracts the pose-dependent
            surface per frame (marching cubes each frame: slow).
        max_frames: pose only the first N frames (after resampling).
        device: torch device for the avatar ("auto" picks CUDA when available).
    """
    from avatar.export import save_gltf, save_posed_meshes
    from avatar.model import load_avatar
    from flows.runners import resolve_device

    if quality not in ("fast", "full"):
        raise ValueError(f"quality must be 'fast' or 'full', got {quality!r}")
    if max_frames is not None and max_frames < 1:
        raise ValueError(f"max_frames must be >= 1, got {max_frames}")
    avatar_dir, motion_path, out_dir = Path(avatar_dir), Path(motion_path), Path(out_dir)
    if not motion_path.is_file():
        raise ValueError(f"{motion_path}: motion file not found (bundled motions are in {DEFAULT_MOTION.parent})")
    from flows.paths import confine

    for name in ("meshes", f"{motion_path.stem}.mp4", "avatar.glb"):  # a symlink planted in out_dir cannot redirect
        confine(out_dir / name, out_dir, "repose output")
    logger = _logger()
    seconds: dict[str, float] = {}
    t0 = tick = time.perf_counter()

    def lap(name: str) -> None:
        nonlocal tick
        now = time.perf_counter()
        seconds[name] = now - tick
        tick = now

    avatar = load_avatar(avatar_dir, resolve_device(device))
    motion = _load_motion(motion_path, fps, max_frames)
    lap("load")
    meshes = _pose_meshes(avatar, motion, quality)
    lap("repose")
    mesh_dir = out_dir / "meshes"
    if mesh_dir.is_dir():  # a shorter re-run must not leave the old run's extra frames behind
        for old in mesh_dir.glob("frame_*.ply"):
            old.unlink()
    colours = avatar.vertex_colours.cpu().numpy() if avatar.has_colour and quality == "fast" else None
    mesh_paths = save_posed_meshes(mesh_dir, [v for v, _ in meshes], [f for _, f in meshes], fmt="ply",
                                   vertex_colors=colours)  # fmt: skip
    lap("meshes")
    video_path = render_motion_video(out_dir / f"{motion_path.stem}.mp4", meshes, motion.fps, colours=colours)
    lap("video")
    gltf_path = save_gltf(out_dir / "avatar.glb", avatar, motion, name=avatar_dir.stem or "avatar",
                          animation_name=motion_path.stem)
    lap("gltf")
    seconds["total"] = time.perf_counter() - t0
    result = ReposeResult(avatar_dir=avatar_dir, motion_path=motion_path, out_dir=out_dir, quality=quality,
                          fps=motion.fps, n_frames=motion.num_frames, mesh_paths=mesh_paths, video_path=video_path,
                          gltf_path=gltf_path, seconds=seconds)  # fmt: skip
    logger.info("repose: %d frames (%s) in %.1f s -> %s", result.n_frames, quality, seconds["total"], out_dir)
    if _in_flow():
        _publish_repose_artifacts(result)
    return result


# ------------------------------------------------------------------------------------------------- training flow
def plot_training_curves(history: dict[str, list[float]], path: str | Path) -> Path | None:
    """PNG of the total loss of each training stage against its step (log scale); None if nothing was logged."""
    stages = [k.split("/")[0] for k in history if k.endswith("/total") and f"{k.split('/')[0]}/step" in history]
    if not stages:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig, axes = plt.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for ax, stage in zip(axes[0], stages, strict=True):
        steps = history[f"{stage}/step"]
        for name, values in history.items():
            if name.startswith(f"{stage}/") and name != f"{stage}/step" and len(values) == len(steps):
                kw = {"lw": 2.0, "color": "k"} if name.endswith("/total") else {"lw": 0.8, "alpha": 0.7}
                kw["marker"] = "o" if len(steps) < 3 else None  # a lone point draws no line
                ax.plot(steps, np.maximum(np.abs(values), 1e-8), label=name.split("/", 1)[1], **kw)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(f"{stage} losses")
        ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _curve_table(history: dict[str, list[float]], points: int = _CURVE_TABLE_POINTS) -> str:
    """Markdown table of each stage's total loss at a few evenly spaced logged steps."""
    lines = []
    for key in sorted(k for k in history if k.endswith("/total")):
        stage = key.split("/")[0]
        steps, values = history.get(f"{stage}/step", []), history[key]
        if not steps or len(steps) != len(values):
            continue
        idx = sorted({round(i) for i in np.linspace(0, len(steps) - 1, min(points, len(steps)))})
        lines += [f"**{stage}** total loss", "", "| step | " + " | ".join(str(int(steps[i])) for i in idx) + " |",
                  "|---|" + "---|" * len(idx), "| loss | " + " | ".join(f"{values[i]:.4g}" for i in idx) + " |",
                  ""]  # fmt: skip
    return "\n".join(lines)


def _avatar_markdown(result: AvatarFlowResult, history: dict[str, list[float]], info: dict) -> str:
    joint_deg = info.get("pose_change", {}).get("joint_deg", [])
    lines = [
        f"# Avatar `{result.avatar_dir.name}`",
        "",
        "| | |",
        "|---|---|",
        f"| store | `{result.store}` |",
        f"| avatar | `{result.avatar_dir}` |",
        f"| frames | {len(info.get('frames', []))} ({', '.join(str(t) for t in info.get('frames', []))}) |",
        f"| frame weights | {', '.join(f'{w:.2f}' for w in info.get('frame_weights', []))} |",
        f"| held poses vs fits (deg/joint) | {', '.join(f'{x:.1f}' for x in joint_deg)} "
        f"(smoothed over {info.get('pose_smoothing_s', 0.0)} s) |",
        f"| canonical mesh | {info.get('canonical_vertices', '?')} vertices |",
        f"| training curves | `{result.curves_png or '(none)'}` |",
        f"| wall time | {result.seconds.get('total', 0.0):.1f} s |",
    ]
    if result.preview is not None:
        p = result.preview
        lines += [f"| preview video | `{p.video_path}` |", f"| preview glTF | `{p.gltf_path}` |",
                  f"| preview meshes | `{p.out_dir / 'meshes'}` ({len(p.mesh_paths)}) |"]  # fmt: skip
    table = _curve_table(history)
    if table:
        lines += ["", "## Training curves", "", table]
    return "\n".join(lines) + "\n"


@flow(name="train-avatar")
def train_avatar_flow(
    store_path: str | Path,
    config: AvatarConfig | None = None,
    motion_path: str | Path | None = None,
    preview: bool = True,
    preview_frames: int | None = None,
    out_dir: str | Path | None = None,
    device: str = "auto",
    min_frames: int = 2,
    body_model_path: str | None = None,
) -> AvatarFlowResult:
    """Train an avatar from a run store, plot its curves and (by default) re-pose it with a motion as a preview.

    Args:
        store_path: the run store (``<out>/<stem>.zarr``).
        config: avatar training settings (default ``AvatarConfig()``).
        motion_path: preview motion (default: the bundled wave, ``body/data/motions/wave.npz``).
        preview: re-pose the avatar with the motion (fast quality) into ``<avatar dir>/preview``.
        preview_frames: pose at most this many frames of the preview motion.
        out_dir: avatar folder (default ``<out>/<stem>.avatar``).
        device: torch device ("auto" picks CUDA when available).
        min_frames: fewest reconstructed frames accepted.
        body_model_path: the user's body model file the store was fitted with (None = the embedded model).
    """
    t0 = time.perf_counter()
    store_path = Path(store_path)
    avatar_dir = train_avatar_from_store(store_path, config, out_dir, device, min_frames=min_frames,
                                         body_model_path=body_model_path)  # fmt: skip
    seconds = {"train": time.perf_counter() - t0}
    t1 = time.perf_counter()
    history = json.loads((avatar_dir / "avatar.json").read_text()).get("history", {})
    curves_png = plot_training_curves(history, avatar_dir / "training_curves.png")
    seconds["plot"] = time.perf_counter() - t1
    preview_result = None
    if preview:
        t2 = time.perf_counter()
        preview_result = repose(avatar_dir, motion_path or DEFAULT_MOTION, avatar_dir / "preview",
                                max_frames=preview_frames, quality="fast", device=device)  # fmt: skip
        seconds["preview"] = time.perf_counter() - t2
    seconds["total"] = time.perf_counter() - t0
    result = AvatarFlowResult(store=store_path, avatar_dir=avatar_dir, curves_png=curves_png, preview=preview_result,
                              seconds=seconds)  # fmt: skip
    if _in_flow():
        from prefect.artifacts import create_markdown_artifact

        info = json.loads((avatar_dir / "training.json").read_text())
        create_markdown_artifact(markdown=_avatar_markdown(result, history, info),
                                 key=f"{_slug(avatar_dir.name)}-summary",
                                 description=f"avatar trained from {store_path.name}")  # fmt: skip
    return result
