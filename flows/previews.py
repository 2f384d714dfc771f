"""Preview images: one tile per frame (crop, keypoints, fitted body normals and outline) and a contact sheet of tiles.

Images are ``(H, W, 3) uint8`` RGB in memory; PNG files are written through OpenCV (which wants BGR).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np

__all__ = ["contact_sheet", "preview_tile", "read_png", "write_png"]

_KEYPOINT_COLOUR = (255, 64, 32)
_OUTLINE_COLOUR = (40, 255, 80)


def write_png(path: str | Path, image: np.ndarray) -> Path:
    """Write an ``(H, W, 3) uint8`` RGB or ``(H, W)`` uint8/bool image as PNG (folders created)."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    img = np.asarray(image)
    if img.dtype == np.bool_:
        img = img.astype(np.uint8) * 255
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"write_png({p}): expected (H, W[, 3]) uint8 or bool, got {img.shape} {img.dtype}")
    if img.ndim == 3:
        img = cv2.cvtColor(img, cv2.COLOR_RGB2BGR)
    if not cv2.imwrite(str(p), img):
        raise OSError(f"{p}: could not write PNG")
    return p


def read_png(path: str | Path) -> np.ndarray:
    """Read a PNG written by :func:`write_png` as ``(H, W, 3) uint8`` RGB."""
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise OSError(f"{path}: not a readable image")
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def preview_tile(
    image: np.ndarray,
    keypoints: np.ndarray | None = None,
    body_normals: np.ndarray | None = None,
    body_mask: np.ndarray | None = None,
    min_confidence: float = 0.5,
    size: int | None = None,
    label: str | None = None,
) -> np.ndarray:
    """Overlay the fitted body on a crop: normals blended half-and-half inside the body silhouette, its outline, and
    the confident keypoints.

    Args:
        image: ``(S, S, 3) uint8`` crop.
        keypoints: ``(K, 3)`` (x, y, confidence) in crop pixels, or None.
        body_normals: ``(S, S, 3)`` camera-space normals in [-1, 1] of the rendered body, or None.
        body_mask: ``(S, S) bool`` rendered body silhouette, or None.
        min_confidence: keypoints below this are not drawn.
        size: output side in pixels (default S).
        label: text drawn in the top-left corner.

    Returns:
        ``(size, size, 3) uint8`` tile.
    """
    img = np.asarray(image)
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise ValueError(f"image must be (S, S, 3) uint8, got {img.shape} {img.dtype}")
    s = img.shape[0]
    tile = img.astype(np.float32)
    if body_mask is not None and body_mask.any():
        m = np.asarray(body_mask, bool)
        if body_normals is not None:
            colour = (np.clip(np.asarray(body_normals, np.float32), -1, 1) + 1.0) * 127.5
            tile[m] = 0.5 * tile[m] + 0.5 * colour[m]
        tile = np.clip(tile, 0, 255).astype(np.uint8)
        contours, _ = cv2.findContours(m.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        tile = np.ascontiguousarray(tile)
        cv2.drawContours(tile, contours, -1, _OUTLINE_COLOUR, max(1, s // 256))
    else:
        tile = np.clip(tile, 0, 255).astype(np.uint8).copy()
    if keypoints is not None:
        r = max(1, s // 128)
        for x, y, c in np.asarray(keypoints, np.float32):
            if np.isfinite(x) and np.isfinite(y) and c >= min_confidence:
                cv2.circle(tile, (int(round(x - 0.5)), int(round(y - 0.5))), r, _KEYPOINT_COLOUR, -1, cv2.LINE_AA)
    if size is not None and size != s:
        tile = cv2.resize(tile, (size, size), interpolation=cv2.INTER_AREA if size < s else cv2.INTER_LINEAR)
    if label:
        scale = tile.shape[0] / 400
        cv2.putText(
            tile, label, (4, int(16 * scale) + 4), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1, cv2.LINE_AA
        )
    return tile


def contact_sheet(tiles: Sequence[np.ndarray], columns: int | None = None, gap: int = 2) -> np.ndarray:
    """Lay equally sized ``(h, w, 3) uint8`` tiles out in a grid (row-major) on a black background.

    Args:
        tiles: at least one tile; all the same shape.
        columns: tiles per row; default ``ceil(sqrt(n))``.
        gap: pixels between tiles.
    """
    if not tiles:
        raise ValueError("contact_sheet: no tiles")
    h, w = tiles[0].shape[:2]
    if any(t.shape != tiles[0].shape for t in tiles):
        raise ValueError("contact_sheet: all tiles must have the same shape")
    n = len(tiles)
    cols = columns or math.ceil(math.sqrt(n))
    rows = math.ceil(n / cols)
    sheet = np.zeros((rows * h + (rows - 1) * gap, cols * w + (cols - 1) * gap, 3), np.uint8)
    for i, t in enumerate(tiles):
        r, c = divmod(i, cols)
        sheet[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = t
    return sheet
