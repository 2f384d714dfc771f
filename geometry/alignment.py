"""Similarity alignment of corresponding point sets (Umeyama 1991): maps a reconstruction in one camera space onto
ground truth in another through the correspondences of two bodies with the same topology."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

__all__ = ["Similarity", "umeyama"]


@dataclass(frozen=True)
class Similarity:
    """x -> scale · rotation @ x + translation."""

    scale: float
    rotation: np.ndarray  # (3, 3)
    translation: np.ndarray  # (3,)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """(N, 3) -> (N, 3) float64."""
        return self.scale * np.asarray(points, np.float64) @ self.rotation.T + self.translation

    @property
    def rotation_deg(self) -> float:
        return float(np.degrees(np.arccos(np.clip((np.trace(self.rotation) - 1.0) / 2.0, -1.0, 1.0))))


def umeyama(src: np.ndarray, dst: np.ndarray, rotation: bool = True) -> Similarity:
    """The similarity minimising sum |s R src_i + t - dst_i|^2 (R = I when not ``rotation``).

    Args:
        src, dst: (N, 3) corresponding points.
    """
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    if src.shape != dst.shape or src.ndim != 2 or src.shape[1] != 3:
        raise ValueError(f"umeyama needs two (N, 3) arrays of corresponding points, got {src.shape} and {dst.shape}")
    mu_s, mu_d = src.mean(0), dst.mean(0)
    xs, xd = src - mu_s, dst - mu_d
    var_s = (xs**2).sum() / len(src)
    if rotation:
        u, d, vt = np.linalg.svd(xd.T @ xs / len(src))
        sign = np.eye(3)
        if np.linalg.det(u) * np.linalg.det(vt) < 0:
            sign[2, 2] = -1.0
        r = u @ sign @ vt
        s = float(np.trace(np.diag(d) @ sign) / var_s)
    else:
        r = np.eye(3)
        s = float((xs * xd).sum() / len(src) / var_s)
    return Similarity(s, r, mu_d - s * r @ mu_s)
