"""The fixed quality fixtures (`tests/data/quality_frames.npz`, made by scripts/make_quality_fixtures.py) as
`icon.synth.SynthSample`s: eight held-out synthetic people with ground-truth normals and clothed meshes."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from body.params import BodyParams
from icon.synth import SynthConfig, SynthSample

QUALITY_FRAMES = Path(__file__).resolve().parents[1] / "data" / "quality_frames.npz"


def load_quality_config(path: Path = QUALITY_FRAMES) -> tuple[list[int], SynthConfig]:
    """The seeds and the generator config the fixtures were made with."""
    with np.load(path, allow_pickle=False) as z:
        return [int(s) for s in z["seeds"]], SynthConfig.model_validate_json(z["synth_config"].tobytes())


def load_quality_frames(path: Path = QUALITY_FRAMES) -> list[SynthSample]:
    """All fixture frames (float32 normals, bool masks, int64 faces; no occupancy samples)."""
    seeds, config = load_quality_config(path)
    s = config.image_size
    frames = []
    with np.load(path, allow_pickle=False) as z:
        for i, seed in enumerate(seeds):
            a = {k.split("/", 1)[1]: z[k] for k in z.files if k.startswith(f"{i}/")}
            frames.append(SynthSample(
                seed=seed, rgb=a["rgb"], mask=np.unpackbits(a["mask"])[: s * s].reshape(s, s).astype(bool),
                **{k: a[k].astype(np.float32) for k in ("normal_front", "normal_back", "body_normal_front",
                                                        "body_normal_back")},
                points=np.zeros((0, 3), np.float32), occupancy=np.zeros(0, np.float32),
                vertices=a["vertices"], faces=a["faces"].astype(np.int64),
                body=BodyParams(*(a[k][None] for k in ("betas", "global_orient", "body_pose", "transl"))),
                fit_body=BodyParams(*(a[k][None] for k in ("fit_betas", "fit_global_orient", "fit_body_pose",
                                                           "fit_transl"))),
                camera=a["camera"],
                garments=json.loads(a["garments"].tobytes()), pose_family="",
            ))  # fmt: skip
    return frames
