"""Bad (and good) input media for the reliability tests, made with the ffmpeg binary of imageio-ffmpeg.

Every maker writes one small file and returns its path; nothing here asserts anything.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import cv2
import numpy as np

from flows.video import ffmpeg_exe, write_video


def short_error(exc: BaseException) -> str:
    """``"Type: message"`` with pytest's temporary folders cut from the paths (for the reliability table)."""
    return f"{type(exc).__name__}: " + re.sub(r"(/[^/\s]+)*/pytest-\d+/[^/\s]+/", "", str(exc))


def ffmpeg(*args: str | Path) -> None:
    """Run the bundled ffmpeg quietly, overwriting outputs; raise on failure."""
    cmd = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)]
    subprocess.run(cmd, check=True)


def pattern_clip(path: Path, size: str = "64x48", frames: int = 10, rate: int = 10, *extra: str) -> Path:
    """ffmpeg's testsrc pattern as H.264 (all key frames, header first: a cut copy decodes up to the cut)."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}:rate={rate}", "-frames:v", str(frames), "-c:v", "libx264",
           "-preset", "ultrafast", "-g", "1", "-pix_fmt", "yuv420p", "-movflags", "+faststart",
           *extra, path)  # fmt: skip
    return path


def zero_frame_video(path: Path) -> Path:
    """An MP4 written with zero frames: the container header and no stream."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "0", "-c:v", "libx264", path)
    return path


def header_only_video(path: Path, source: Path) -> Path:
    """``source`` (faststart) cut right after the start of its sample data: a valid header, no decodable frame."""
    data = source.read_bytes()
    path.write_bytes(data[: data.find(b"mdat") + 24])
    return path


def truncated_video(path: Path, source: Path, fraction: float = 0.5) -> Path:
    """The first ``fraction`` of ``source``'s bytes (a download or copy cut short)."""
    data = source.read_bytes()
    path.write_bytes(data[: int(len(data) * fraction)])
    return path


def audio_only(path: Path) -> Path:
    """Half a second of a sine tone, AAC in an MP4 container."""
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", "-f", "mp4", path)
    return path


def still_png(path: Path, size: str = "40x30") -> Path:
    """One PNG image, whatever ``path``'s extension says."""
    ffmpeg("-f", "lavfi", "-i", f"testsrc=size={size}", "-frames:v", "1", "-f", "image2", "-c:v", "png", path)
    return path


def rotated_copy(path: Path, source: Path, degrees: int) -> Path:
    """``source`` with a display-rotation matrix (how phones store portrait video), stream copied."""
    ffmpeg("-display_rotation", str(degrees), "-i", source, "-c", "copy", path)
    return path


def vfr_video(path: Path) -> Path:
    """Variable frame rate: frames at 0.0 .. 0.4 s every 0.1 s, a 0.6 s gap, then 1.0 .. 1.4 s (ffv1 in MKV)."""
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-frames:v", "10",
           "-vf", r"setpts='(N*0.1+gte(N\,5)*0.5)/TB'", "-fps_mode", "vfr", "-c:v", "ffv1", path)  # fmt: skip
    return path


def corner_marker_clip(n: int = 4, h: int = 48, w: int = 64) -> np.ndarray:
    """(n, h, w, 3) black frames with a red 12x12 square in the top-left corner (to check orientation)."""
    frames = np.zeros((n, h, w, 3), np.uint8)
    frames[:, :12, :12, 0] = 255
    return frames


def red_corner(image: np.ndarray) -> str:
    """Which corner of an (h, w, 3) image holds the red square: 'tl', 'tr', 'bl' or 'br'."""
    h, w = image.shape[:2]
    ys, xs = np.nonzero((image[..., 0] > 150) & (image[..., 1] < 100) & (image[..., 2] < 100))
    if len(ys) < 8:
        return "none"
    return ("t" if ys.mean() < h / 2 else "b") + ("l" if xs.mean() < w / 2 else "r")


# ------------------------------------------------------------------------------------------------ person content
def astronaut(size: int = 256) -> np.ndarray:
    """(size, size, 3) uint8: skimage's astronaut photo, a person MediaPipe finds."""
    from skimage import data

    return cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)


def scale_brightness(image: np.ndarray, gain: float) -> np.ndarray:
    """Multiply the pixel values (gain < 1 darkens, > 1 over-exposes with clipping)."""
    return np.clip(image.astype(np.float32) * gain, 0, 255).astype(np.uint8)


def person_frames(size: int = 256) -> dict[str, np.ndarray]:
    """Named (size, size, 3) frames covering the content cases of issue #9 (all built from the astronaut photo)."""
    img = astronaut(size)
    half = size // 2
    cut = np.zeros_like(img)
    cut[:, half:] = img[:, : size - half]  # the left half of the person, at the right edge of the frame
    far_cut = np.zeros_like(img)
    far_cut[:, size - size // 3 :] = img[:, : size // 3]  # only a sliver of the person shows
    two = np.zeros_like(img)
    small_person = cv2.resize(img, (half, half), interpolation=cv2.INTER_AREA)
    two[half // 2 : half // 2 + half, :half] = small_person
    two[half // 2 : half // 2 + half, half:] = small_person[:, ::-1]
    tiny = np.zeros_like(img)
    side = size // 8
    tiny[size // 2 : size // 2 + side, size // 2 : size // 2 + side] = cv2.resize(img, (side, side))
    return {
        "person": img,
        "no person (black)": np.zeros_like(img),
        "no person (noise)": np.random.default_rng(0).integers(0, 256, img.shape, dtype=np.uint8),
        "cut off at the edge (half)": cut,
        "cut off at the edge (sliver)": far_cut,
        "two people": two,
        "very small person": tiny,
        "dark (x0.05)": scale_brightness(img, 0.05),
        "nearly black (x0.004)": scale_brightness(img, 0.004),
        "washed out": (255 - (255 - img.astype(np.float32)) / 4).astype(np.uint8),
        "over-exposed (x3, clipped)": scale_brightness(img, 3.0),
    }


def write_frames(path: Path, frames: np.ndarray, fps: float = 10) -> Path:
    """Encode ``(T, H, W, 3)`` frames as an MP4 (folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_video(path, frames, fps=fps)
