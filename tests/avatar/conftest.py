"""Shared fixtures: the body model, a tiny synthetic clothed sequence and an avatar trained on it (once per session)."""

from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np
import pytest
import torch

os.environ.setdefault("WARP_CACHE_PATH", os.path.join(os.path.dirname(__file__), "..", "..", ".cache", "warp"))

from avatar.config import AvatarConfig  # noqa: E402
from avatar.model import Avatar  # noqa: E402
from avatar.train import train_avatar, vertex_visibility  # noqa: E402
from body import BodyModel, BodyParams  # noqa: E402

TINY = dict(samples_per_frame=3000, points_per_frame=384, body_points_per_frame=256, skin_steps=300,
            sdf_steps=250, resolution=96, coarse_resolution=25)  # fmt: skip


@dataclass
class Sequence:
    frames: list[tuple[torch.Tensor, torch.Tensor]]
    fits: BodyParams
    visibility: list[torch.Tensor]
    camera: object


@dataclass
class Trained:
    sequence: Sequence
    avatar: Avatar


@pytest.fixture(scope="session")
def body_model() -> BodyModel:
    return BodyModel()


def make_sequence(model: BodyModel, n_frames: int = 4, grid: int = 64, seed: int = 7) -> Sequence:
    """A clothed person turning and waving (icon.synth.sequence), its true fits and per-vertex visibility."""
    from geometry.cameras import PerspectiveCamera
    from icon.synth.appearance import Lighting
    from icon.synth.sequence import make_background, make_person, render_frame, turn_and_wave_motion

    person = make_person(model, seed)
    motion = turn_and_wave_motion(n_frames, turns=0.75, transl=(0.0, 0.05, -4.0))
    size = 96
    camera = PerspectiveCamera(focal=torch.tensor([0.75 * size * 4.0 / 1.75]), cx=torch.tensor([size / 2]),
                               cy=torch.tensor([size / 2]), width=size, height=size)  # fmt: skip
    background = make_background(seed, size, size)
    light = Lighting(direction=np.array([0.0, 0.0, 1.0]), ambient=0.3, intensity=1.0)
    frames, visibility = [], []
    for i in range(len(motion)):
        frame = render_frame(model, person, motion[i], camera, background, light, grid_resolution=grid)
        v, f = torch.from_numpy(frame.vertices), torch.from_numpy(frame.faces)
        frames.append((v, f))
        visibility.append(vertex_visibility(v, f, camera))
    fits = motion.replace(betas=np.tile(person.betas, (len(motion), 1)))
    return Sequence(frames, fits, visibility, camera)


@pytest.fixture(scope="session")
def clothed_sequence(body_model) -> Sequence:
    return make_sequence(body_model)


@pytest.fixture(scope="session")
def trained(body_model, clothed_sequence) -> Trained:
    torch.manual_seed(0)
    config = AvatarConfig.fast(**TINY)
    avatar = train_avatar(body_model, clothed_sequence.frames, clothed_sequence.fits, config,
                          point_confidence=clothed_sequence.visibility)  # fmt: skip
    return Trained(clothed_sequence, avatar)
