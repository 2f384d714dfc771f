"""Synthetic clips rendered from the body model with known β, θ, t: keypoints, masks and normals of a turning person
(the known-answer input of the body-fit tests and benchmarks)."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from body import BodyModel, mediapipe_landmarks_3d
from body.params import BodyParams, HoldsBodyParams
from geometry.cameras import OrthographicCamera
from geometry.render import render_mesh


@dataclass
class SyntheticClip(HoldsBodyParams):
    """T frames of one body seen by a weak-perspective camera (crop side ``size``), with the `BodyParams` that made
    them (``betas``, ``global_orient``, ``body_pose``, ``transl`` read through)."""

    keypoints: torch.Tensor  # (T, 33, 3) crop px + confidence
    masks: torch.Tensor  # (T, S, S) bool
    normals: torch.Tensor  # (T, S, S, 3)
    body: BodyParams
    camera: OrthographicCamera
    size: int



def make_clip(model: BodyModel, n_frames: int = 16, size: int = 256, seed: int = 0, turn: float = 0.8) -> SyntheticClip:
    """A person turning by `turn` rad over the clip and moving the arms, seen by a weak-perspective camera."""
    g = torch.Generator().manual_seed(seed)
    T = n_frames
    t = torch.linspace(0, 1, T)
    betas = (torch.randn(1, 10, generator=g) * 0.8).expand(T, -1).clone()
    go = torch.zeros(T, 3)
    go[:, 1] = turn * t - turn / 2
    go[:, 0] = 0.1 * torch.sin(2 * math.pi * t)
    pose = torch.zeros(T, 23, 3)
    # shoulders (16, 17) raise/lower the arms, elbows (18, 19) bend, hips/knees a little
    pose[:, 15, 2] = -0.9 + 0.5 * torch.sin(2 * math.pi * t)
    pose[:, 16, 2] = 0.9 - 0.5 * torch.cos(2 * math.pi * t)
    pose[:, 17, 1] = -0.6 * (1 + torch.sin(2 * math.pi * t)) / 2
    pose[:, 18, 1] = 0.6 * (1 + torch.cos(2 * math.pi * t)) / 2
    pose[:, 0, 0] = -0.3 * torch.sin(2 * math.pi * t)
    pose[:, 3, 0] = 0.4 * (1 + torch.sin(2 * math.pi * t)) / 2
    pose = pose + 0.03 * torch.randn(T, 23, 3, generator=g)
    body_pose = pose.reshape(T, 69)
    transl = torch.zeros(T, 3)
    transl[:, 0] = 0.05 * torch.sin(2 * math.pi * t)
    transl[:, 1] = 0.1
    with torch.no_grad():
        out = model(betas=betas, global_orient=go, body_pose=body_pose, transl=transl)
        lm, lm_ok = mediapipe_landmarks_3d(model, out)
    scale = torch.full((T,), 0.85 * size / 2.0)
    c = torch.full((T,), size / 2)
    cam = OrthographicCamera(scale=scale, cx=c, cy=c, width=size, height=size)
    r = render_mesh(out.vertices, model.faces, cam)
    uv = cam.project(lm)
    conf = lm_ok.float()[None].expand(T, -1)
    keypoints = torch.cat([uv, conf[..., None]], dim=-1)
    return SyntheticClip(keypoints, r.mask, r.normal_front, BodyParams(betas, go, body_pose, transl), cam, size)
