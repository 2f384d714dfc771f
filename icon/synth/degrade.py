"""Camera and compression degradations of synthetic RGB images (blur, noise, JPEG, colour jitter, gamma, low light,
motion blur, downscale-upscale): the image only, never the masks or ground-truth maps. Pure numpy + OpenCV.
"""

from __future__ import annotations

from collections.abc import Sequence

import cv2
import numpy as np

__all__ = ["apply_degradation", "degrade_image"]


def apply_degradation(rng: np.random.Generator, image: np.ndarray, kind: str) -> np.ndarray:
    """One degradation of an (H, W, 3) float32 image in [0, 1]; returns the same shape, clipped to [0, 1]."""
    img = np.ascontiguousarray(image, dtype=np.float32)
    if kind == "blur":
        out = cv2.GaussianBlur(img, (0, 0), sigmaX=float(rng.uniform(0.5, 1.8)))
    elif kind == "noise":
        sigma = rng.uniform(0.01, 0.06)
        out = img + rng.normal(0.0, sigma, img.shape).astype(np.float32)
    elif kind == "jpeg":
        q = int(rng.integers(15, 70))
        ok, buf = cv2.imencode(".jpg", (np.clip(img, 0, 1) * 255 + 0.5).astype(np.uint8)[..., ::-1],
                               [cv2.IMWRITE_JPEG_QUALITY, q])  # fmt: skip
        if not ok:
            raise RuntimeError("OpenCV failed to JPEG-encode the image")
        out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1].astype(np.float32) / 255.0
    elif kind == "color_jitter":
        gain = rng.uniform(0.8, 1.2, 3).astype(np.float32)
        grey = img.mean(-1, keepdims=True)
        sat = rng.uniform(0.6, 1.3)
        out = (grey + (img - grey) * sat) * gain + rng.uniform(-0.05, 0.05)
    elif kind == "gamma":
        out = np.clip(img, 0, 1) ** rng.uniform(0.6, 1.6)
    elif kind == "low_light":
        dark = img * rng.uniform(0.3, 0.6)
        out = dark + rng.normal(0.0, rng.uniform(0.01, 0.03), img.shape).astype(np.float32)
    elif kind == "motion_blur":
        length = int(rng.integers(3, max(4, img.shape[0] // 24) + 1))
        kernel = np.zeros((length, length), np.float32)
        kernel[length // 2] = 1.0 / length
        rot = cv2.getRotationMatrix2D(((length - 1) / 2, (length - 1) / 2), float(rng.uniform(0, 180)), 1.0)
        kernel = cv2.warpAffine(kernel, rot, (length, length))
        out = cv2.filter2D(img, -1, kernel / max(kernel.sum(), 1e-6))
    elif kind == "downscale":
        h, w = img.shape[:2]
        f = rng.uniform(0.25, 0.6)
        small = cv2.resize(img, (max(1, int(w * f)), max(1, int(h * f))), interpolation=cv2.INTER_AREA)
        out = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    else:
        raise ValueError(f"unknown degradation {kind!r}")
    return np.clip(out, 0.0, 1.0).astype(np.float32)


def degrade_image(
    rng: np.random.Generator, image: np.ndarray, kinds: Sequence[str], probability: float
) -> tuple[np.ndarray, list[str]]:
    """Apply each of ``kinds`` with ``probability`` (in the given order) to an (H, W, 3) float32 image in [0, 1].

    Returns:
        (degraded image (H, W, 3) float32, names of the degradations applied).
    """
    applied = []
    for kind in kinds:
        if rng.random() < probability:
            image = apply_degradation(rng, image, kind)
            applied.append(kind)
    return image, applied
