"""Test data for the clients of a run's outputs (Blender, the HTML report, the viewer): an untrained avatar whose
surface is the mean body, and a small finished run folder (store, avatar, preview) built from posed bodies in
seconds, with no training and no reconstruction: the clients see exactly the files a real run writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

CROP = 96


def make_body_avatar():
    """An untrained avatar whose canonical mesh is the mean body in the Da-pose, skinned with the body's weights."""
    from avatar.config import AvatarConfig
    from avatar.lbs import canonical_body_pose
    from avatar.model import Avatar, build_networks
    from body import BodyModel

    model = BodyModel()
    config = AvatarConfig.fast()
    inverse, forward, sdf = build_networks(config, 1)
    pose = canonical_body_pose().reshape(69)
    with torch.no_grad():
        rest = model(body_pose=torch.zeros(1, 69))
        canon = model(body_pose=pose[None])
    verts = canon.vertices[0]
    lo, hi = verts.min(0).values, verts.max(0).values
    return Avatar(config=config, inverse_net=inverse, forward_net=forward, sdf_net=sdf,
                  betas=torch.zeros(model.num_betas), rest_joints=rest.joints[0], canonical_pose=pose,
                  center=(lo + hi) / 2, scale=float((hi - lo).max()), vertices=verts,
                  faces=torch.as_tensor(np.asarray(model.faces), dtype=torch.int64),
                  skin_weights=model.lbs_weights.float(), reference_features=torch.zeros(23, 6),
                  bounds=torch.stack([lo, hi]),
                  history={"skin/step": [0, 10, 20], "skin/total": [1.0, 0.5, 0.2]})  # fmt: skip


def wave_motion(n: int = 12, fps: float = 25.0):
    """Right arm raised and lowered, left knee bending, a quarter turn and a small step."""
    from body import Motion

    t = np.linspace(0, 1, n, dtype=np.float32)
    bp = np.zeros((n, 69), np.float32)
    bp[:, 16 * 3 + 2] = 1.2 * np.sin(np.pi * t)
    bp[:, 3 * 3 + 0] = 0.6 * t
    go = np.zeros((n, 3), np.float32)
    go[:, 1] = 0.4 * t
    tr = np.stack([0.2 * t, np.zeros(n), np.zeros(n)], -1).astype(np.float32)
    return Motion(fps=fps, global_orient=go, body_pose=bp, transl=tr)


def build_body_run(out: Path, n_frames: int = 3, stem: str = "clip") -> Path:
    """``<out>/<stem>.zarr`` with ``n_frames`` DONE frames (image, mask, keypoints, normals, fits, a mesh) and one
    FAILED frame, plus ``<out>/<stem>.avatar`` (saved body avatar, training curves, a preview re-posing: MP4 + glb).
    Returns the store path."""
    from avatar.export import save_gltf
    from avatar.model import save_avatar
    from avatar.repose import repose_fast
    from body import BodyModel
    from flows.avatar_flow import plot_training_curves, render_motion_video
    from flows.store import FrameStatus, RunAttrs, create_run
    from geometry.cameras import OrthographicCamera
    from geometry.render import render_mesh, shade_normals

    model = BodyModel()
    motion = wave_motion(n_frames)
    t_total = n_frames + 1
    attrs = RunAttrs(source_path="synthetic.mp4", source_sha256="0" * 64, fps=10.0, frame_indices=list(range(t_total)),
                     body_model_id="anny-smpl-v1", config={}, code_version="test")  # fmt: skip
    store_path = out / f"{stem}.zarr"
    store = create_run(store_path, n_frames=t_total, image_size=CROP, attrs=attrs, refine_iters=4)
    scale = CROP / 2.3
    camera = OrthographicCamera(scale=torch.tensor([scale]), cx=torch.tensor([CROP / 2]), cy=torch.tensor([CROP / 2]),
                                width=CROP, height=CROP)  # fmt: skip
    faces = torch.as_tensor(np.asarray(model.faces), dtype=torch.int64)
    for t in range(n_frames):
        go, bp = motion.global_orient[t : t + 1], motion.body_pose[t : t + 1]
        with torch.no_grad():
            body = model(global_orient=torch.as_tensor(go), body_pose=torch.as_tensor(bp))
        v = body.vertices[0] + torch.tensor([0.0, 0.2, 0.0])
        r = render_mesh(v[None], faces, camera)
        shaded = (shade_normals(r.normal_front, mask=r.mask)[0].numpy() * 255).astype(np.uint8)
        image = np.where(r.mask[0, ..., None].numpy(), shaded, np.uint8(60))
        kp = np.full((1, 33, 3), np.nan, np.float32)
        kp[0, :, :2] = np.random.default_rng(t).uniform(20, CROP - 20, (33, 2))
        kp[0, :, 2] = 0.9
        store.write_frames([t], images=image[None], masks=r.mask.numpy(), crops=np.array([[100.0, 100.0, 200.0]]),
                           keypoints=kp, timestamps=np.array([t / 10.0]))  # fmt: skip
        store.write_normals([t], r.normal_front.numpy(), r.normal_back.numpy())
        fit = dict(betas=np.zeros((1, 10), np.float32), global_orient=go, body_pose=bp,
                   transl=np.array([[0.0, 0.2, 0.0]], np.float32),
                   camera=np.array([[scale, CROP / 2, CROP / 2]]))  # fmt: skip
        store.write_fit("init", [t], **fit)
        store.write_fit("refined", [t], **fit)
        store.write_loss([t], np.linspace(1.0, 0.4, 4)[None])
        store.write_mesh(t, v.numpy(), faces.numpy())
        store.set_status([t], FrameStatus.DONE)
    store.set_status([n_frames], FrameStatus.FAILED, "no person")
    avatar = make_body_avatar()
    avatar_dir = save_avatar(avatar, out / f"{stem}.avatar")
    plot_training_curves(avatar.history, avatar_dir / "training_curves.png")
    posed = repose_fast(avatar, motion).numpy()
    render_motion_video(avatar_dir / "preview" / "wave.mp4", [(p, faces) for p in posed], motion.fps, size=128)
    save_gltf(avatar_dir / "preview" / "avatar.glb", avatar, motion, name=stem, animation_name="wave")
    return store_path
