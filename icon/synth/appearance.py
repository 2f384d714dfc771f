"""Albedo, lighting and backgrounds of synthetic people: per-garment colours and procedural patterns (functions of
rest-pose coordinates, so they follow the body), skin and hair tones, Lambert + ambient shading, random backdrops.
"""

from __future__ import annotations

import colorsys
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

__all__ = [
    "WIDE_PATTERNS",
    "Lighting",
    "Material",
    "render_background",
    "sample_lighting",
    "sample_material",
    "shade",
    "widen_print",
]

_SKIN = np.array([[0.96, 0.80, 0.69], [0.88, 0.68, 0.54], [0.72, 0.52, 0.38], [0.50, 0.34, 0.23], [0.30, 0.20, 0.13]])
_HAIR = np.array([[0.05, 0.04, 0.04], [0.20, 0.12, 0.07], [0.40, 0.26, 0.14], [0.80, 0.66, 0.42], [0.55, 0.22, 0.09],
                  [0.62, 0.62, 0.62]])  # fmt: skip
PATTERNS = ("solid", "stripes", "checks", "mottled")
WIDE_PATTERNS = ("stripes", "checks", "dots", "noise", "logo")
"""Prints drawn with SynthConfig.wide_prints (dots, band-limited noise, a logo patch on the chest besides the rest)."""


@dataclass
class Material:
    """Albedo of one surface kind: a base colour and an optional procedural pattern with a second colour.

    Attributes:
        color: (3,) RGB in [0, 1].
        color2: (3,) second RGB of the pattern.
        pattern: One of "solid", "stripes", "checks", "mottled", "dots", "noise", "logo".
        frequency: Pattern frequency (cycles per metre).
        direction: (3,) unit direction of stripes in rest-pose coordinates.
    """

    color: np.ndarray
    color2: np.ndarray
    pattern: str = "solid"
    frequency: float = 10.0
    direction: np.ndarray | None = None

    def albedo(self, rest: torch.Tensor) -> torch.Tensor:
        """(N, 3) albedo at rest-pose points (N, 3)."""
        c1 = torch.as_tensor(self.color, dtype=rest.dtype, device=rest.device)
        c2 = torch.as_tensor(self.color2, dtype=rest.dtype, device=rest.device)
        w = 2 * np.pi * self.frequency
        if self.pattern == "stripes":
            d = torch.as_tensor(self.direction, dtype=rest.dtype, device=rest.device)
            t = (torch.sin(w * (rest @ d)) > 0.3).to(rest.dtype)
        elif self.pattern == "checks":
            t = ((torch.sin(w * rest[:, 0] + 0.5) * torch.sin(w * rest[:, 1]) * torch.sign(torch.sin(w * rest[:, 2]
                  + 1.0))) > 0).to(rest.dtype)  # fmt: skip
        elif self.pattern == "dots":
            cell = rest * self.frequency
            frac = cell - torch.floor(cell)
            t = ((frac[:, [0, 1]] - 0.5).norm(dim=-1) < 0.28).to(rest.dtype)
        elif self.pattern == "noise":
            d = torch.as_tensor(self.direction, dtype=rest.dtype, device=rest.device)
            t = 0.5 + 0.5 * torch.tanh(
                3
                * (
                    torch.sin(w * rest[:, 0] + 2 * torch.sin(w * 0.6 * rest[:, 1]))
                    * torch.cos(w * 0.8 * (rest @ d) + 1.3 * torch.sin(w * 0.4 * rest[:, 2]))
                )
            )
        elif self.pattern == "logo":
            # A ring-and-bar patch on the chest front (rest pose: +z is the front), of radius 1 / frequency.
            r = 1.0 / self.frequency
            centre = torch.tensor([0.0, 0.25, 0.0], dtype=rest.dtype, device=rest.device)
            rel = (rest - centre)[:, :2] / r
            ring = (rel.norm(dim=-1) - 0.7).abs() < 0.18
            bar = (rel[:, 0].abs() < 0.15) & (rel[:, 1].abs() < 0.6)
            t = ((ring | bar) & (rest[:, 2] > 0.0)).to(rest.dtype)
        elif self.pattern == "mottled":
            t = 0.5 + 0.25 * (torch.sin(w * rest[:, 0] + 3 * torch.sin(w * 0.7 * rest[:, 1])) + torch.sin(w * 1.3 *
                 rest[:, 2] + 2 * torch.sin(w * 0.5 * rest[:, 0])))  # fmt: skip
        else:
            return c1.expand(rest.shape[0], 3)
        return c1 * (1 - t[:, None]) + c2 * t[:, None]


def _random_color(rng: np.random.Generator) -> np.ndarray:
    h, s, v = rng.uniform(0, 1), rng.uniform(0.05, 0.9), rng.uniform(0.12, 0.95)
    return np.array(colorsys.hsv_to_rgb(h, s, v))


def sample_material(rng: np.random.Generator, kind: str) -> Material:
    """A material for "skin", "hair" or any garment family name."""
    if kind == "skin":
        w = rng.dirichlet(np.ones(2))
        i = int(rng.integers(len(_SKIN) - 1))
        c = np.clip(w[0] * _SKIN[i] + w[1] * _SKIN[i + 1] + rng.normal(0, 0.02, 3), 0, 1)
        return Material(c, c)
    if kind == "hair":
        c = np.clip(_HAIR[int(rng.integers(len(_HAIR)))] * rng.uniform(0.8, 1.2), 0, 1)
        return Material(c, np.clip(c * 0.7, 0, 1), "mottled", rng.uniform(30, 80))
    pattern = PATTERNS[int(rng.choice(len(PATTERNS), p=[0.5, 0.2, 0.15, 0.15]))]
    c1 = _random_color(rng)
    c2 = _random_color(rng) if rng.random() < 0.6 else np.clip(c1 * rng.uniform(0.4, 0.8), 0, 1)
    direction = rng.normal(size=3) * [0.15, 1.0, 0.15] if rng.random() < 0.6 else rng.normal(size=3) * [1, 0.15, 1]
    direction = direction / np.linalg.norm(direction)
    return Material(c1, c2, pattern, float(rng.uniform(6, 30)), direction)


def widen_print(rng: np.random.Generator, material: Material) -> Material:
    """The material with, half of the time, one of WIDE_PATTERNS (strong contrast) in place of its pattern."""
    if rng.random() < 0.5:
        return material
    pattern = WIDE_PATTERNS[int(rng.integers(len(WIDE_PATTERNS)))]
    color2 = _random_color(rng)
    freq = float(rng.uniform(4.0, 8.0)) if pattern == "logo" else float(rng.uniform(5.0, 25.0))
    direction = rng.normal(size=3)
    return Material(material.color, color2, pattern, freq, direction / np.linalg.norm(direction))


@dataclass
class Lighting:
    """A directional light plus ambient light.

    Attributes:
        direction: (3,) unit direction towards the light (camera space).
        ambient: Ambient intensity in [0, 1].
        intensity: Overall gain.
    """

    direction: np.ndarray
    ambient: float
    intensity: float


def sample_lighting(rng: np.random.Generator) -> Lighting:
    """A light from the camera's half space, random ambient and gain."""
    d = np.array([rng.uniform(-1, 1), rng.uniform(-0.4, 1.0), rng.uniform(0.3, 1.0)])
    return Lighting(d / np.linalg.norm(d), float(rng.uniform(0.2, 0.5)), float(rng.uniform(0.85, 1.15)))


def shade(albedo: torch.Tensor, normals: torch.Tensor, light: Lighting) -> torch.Tensor:
    """Lambert + ambient shading: (N, 3) albedo and (N, 3) unit normals -> (N, 3) colour in [0, 1]."""
    d = torch.as_tensor(light.direction, dtype=normals.dtype, device=normals.device)
    lambert = (normals @ d).clamp(min=0.0)
    return (albedo * (light.ambient + (1 - light.ambient) * lambert)[:, None] * light.intensity).clamp(0.0, 1.0)


def label_albedo(labels: torch.Tensor, rest: torch.Tensor, materials: Sequence[Material]) -> torch.Tensor:
    """(N, 3) float albedo of surface points from their material ``labels`` (N,) and rest positions ``rest`` (N, 3)."""
    albedo = torch.zeros(len(labels), 3)
    for i, mat in enumerate(materials):
        sel = labels == i
        if sel.any():
            albedo[sel] = mat.albedo(rest[sel]).float()
    return albedo


def render_background(rng: np.random.Generator, kind: str, size: int) -> np.ndarray:
    """(S, S, 3) float32 background in [0, 1]: "flat" colour, vertical/diagonal "gradient" or smooth "noise"."""
    if kind == "flat":
        return np.broadcast_to(_random_color(rng), (size, size, 3)).astype(np.float32).copy()
    if kind == "gradient":
        c1, c2 = _random_color(rng), _random_color(rng)
        angle = rng.uniform(0, 2 * np.pi)
        ii, jj = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
        t = np.clip(0.5 + 0.5 * (np.cos(angle) * ii + np.sin(angle) * jj) / np.sqrt(2), 0, 1)[..., None]
        return ((1 - t) * c1 + t * c2).astype(np.float32)
    if kind == "noise":
        k = int(rng.integers(3, 9))
        coarse = torch.as_tensor(rng.uniform(0, 1, (1, 3, k, k)), dtype=torch.float32)
        smooth = torch.nn.functional.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=False)
        fine = torch.as_tensor(rng.normal(0, 0.02, (size, size, 3)), dtype=torch.float32)
        return (smooth[0].permute(1, 2, 0) + fine).clamp(0, 1).numpy()
    if kind == "tiles":
        c1, c2 = _random_color(rng), _random_color(rng)
        period = int(rng.integers(max(2, size // 16), max(3, size // 3)))
        grout = _random_color(rng)
        ii, jj = np.mgrid[0:size, 0:size]
        brick = rng.random() < 0.5
        shift = (ii // period % 2) * (period // 2) if brick else 0
        cell = ((ii // period) + ((jj + shift) // period)) % 2
        line = ((ii % period) < max(1, period // 12)) | (((jj + shift) % period) < max(1, period // 12))
        img = np.where(cell[..., None] == 1, c1, c2)
        img = np.where(line[..., None], grout, img)
        return img.astype(np.float32)
    if kind == "clutter":
        img = render_background(rng, "gradient", size)
        for _ in range(int(rng.integers(4, 16))):
            h, w = rng.integers(size // 16, size // 2, 2)
            r, c = rng.integers(-size // 8, size, 2)
            img[max(r, 0) : max(r + h, 0), max(c, 0) : max(c + w, 0)] = _random_color(rng) * rng.uniform(0.8, 1.0)
        return img
    raise ValueError(f"background kind must be flat, gradient, noise, tiles or clutter, got {kind!r}")
