"""Shared fixtures of the flow tests: tiny person clips and a tiny config (the session's Prefect test server is the
``prefect_server`` fixture of tests/conftest.py).

Prefect settings are environment variables set before prefect is imported anywhere in the test session.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

_PREFECT_HOME = tempfile.mkdtemp(prefix="avatarize-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[2] / ".cache" / "warp"))

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

CLIP_SIZE = 256
CLIP_FRAMES = 5


def person_clip(n: int = CLIP_FRAMES, shift: int = 4, size: int = CLIP_SIZE) -> np.ndarray:
    """(n, size, size, 3) uint8: skimage's astronaut (MediaPipe finds her) moving right by ``shift`` px per frame."""
    from skimage import data

    img = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return np.stack([np.roll(img, shift * i, axis=1) for i in range(n)])


def write_clip(path: Path, n: int = CLIP_FRAMES, shift: int = 4) -> Path:
    """Encode :func:`person_clip` as an MP4 at 10 fps."""
    from flows.video import write_video

    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, person_clip(n, shift), fps=10)


@pytest.fixture(scope="session")
def clip(tmp_path_factory) -> Path:
    """A 5-frame 256x256 person clip."""
    return write_clip(tmp_path_factory.mktemp("clips") / "astronaut.mp4")


def make_tiny_config(frames: int = CLIP_FRAMES):
    """The fast preset cut down to seconds: `frames` frames, 128 px crops, a few fit iterations, no reconstruction
    and no avatar (also used by the reliability tests' driver subprocesses, which cannot use fixtures)."""
    from flows.config import load_config

    return load_config(
        "fast",
        {
            "frames": {"fps": None, "max_frames": frames},
            "person": {"crop_size": 128, "detect_size": 256},
            "fit": {"orient_iters": 2, "pose_iters": 2, "silhouette_iters": 0},
            "reconstruct_enabled": False,
            "avatar_enabled": False,
        },
    )


@pytest.fixture(scope="session")
def tiny_config():
    """The fast preset cut down to seconds (``make_tiny_config``)."""
    return make_tiny_config()
