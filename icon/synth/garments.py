"""Procedural garments as implicit surfaces around a posed body: offset layers over the body's signed distance field
and hanging skirt volumes; the clothed field is min(sdf_body - offset, skirt volumes).

Offset layers are placed with the *rest-pose* (T-pose) coordinates of each point's closest body point, so hems,
sleeves and hairlines follow the body in any pose: in T-pose the arms lie along +-x and the legs along -y, which
makes "sleeve length" and "trouser length" simple coordinates.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from geometry.queries import MeshBVH, interpolate_face_attributes

__all__ = [
    "GARMENT_FAMILIES",
    "WIDE_GARMENT_FAMILIES",
    "ClothedField",
    "FieldSample",
    "Garment",
    "OffsetLayer",
    "RestLandmarks",
    "SkirtVolume",
    "build_skirt_volume",
    "sample_outfit",
]

GARMENT_FAMILIES: tuple[str, ...] = ("fitted_top", "loose_top", "trousers", "shorts", "skirt", "dress", "hair")
"""Families of the original generator (drawn with the default probabilities)."""
WIDE_GARMENT_FAMILIES: tuple[str, ...] = ("coat", "open_jacket", "hood", "wide_skirt", "baggy_trousers")
"""Extra families, drawn only when their probability (SynthConfig.garment_probabilities) is above 0."""

_EDGE = 0.006  # metres: softness of hems, necklines and hairlines (rest-pose coordinates)
_MAX_DIST = 0.3  # metres: deeper than any body interior, so BVH misses are outside
_BAND = 0.06  # metres: offsets are evaluated where -_BAND < sdf_body < max offset + _BAND


@dataclass
class RestLandmarks:
    """Heights and widths (metres) of the shaped T-pose body, from its joints; derived coordinates of rest points."""

    pelvis_y: float
    hip_y: float
    ankle_y: float
    chest_y: float
    neck_y: float
    head_y: float
    head_z: float
    shoulder_x: float
    wrist_x: float

    @classmethod
    def from_joints(cls, joints: np.ndarray) -> RestLandmarks:
        """Landmarks from (24, 3) rest joints (SMPL order)."""
        j = np.asarray(joints, dtype=np.float64)
        return cls(
            pelvis_y=float(j[0, 1]),
            hip_y=float(0.5 * (j[1, 1] + j[2, 1])),
            ankle_y=float(0.5 * (j[7, 1] + j[8, 1])),
            chest_y=float(j[9, 1]),
            neck_y=float(j[12, 1]),
            head_y=float(j[15, 1]),
            head_z=float(j[15, 2]),
            shoulder_x=float(0.5 * (j[16, 0] - j[17, 0])),
            wrist_x=float(0.5 * (j[20, 0] - j[21, 0])),
        )

    def arm_coordinate(self, rest: torch.Tensor) -> torch.Tensor:
        """(N,) 0 at the shoulder joint, 1 at the wrist along the T-pose arm; negative on the torso."""
        return (rest[:, 0].abs() - self.shoulder_x) / (self.wrist_x - self.shoulder_x)

    def leg_coordinate(self, rest: torch.Tensor) -> torch.Tensor:
        """(N,) 0 at hip height, 1 at the ankles; negative above the hips."""
        return (self.hip_y - rest[:, 1]) / (self.hip_y - self.ankle_y)


def _step(x: torch.Tensor, edge: float = _EDGE) -> torch.Tensor:
    """Smooth 0 -> 1 step at x = 0."""
    return torch.sigmoid(x / edge)


@dataclass
class SmoothNoise:
    """A sum of random plane waves: smooth, band-limited noise in [-1, 1] (roughly) of 3D points."""

    frequencies: np.ndarray  # (K, 3) radians per metre
    phases: np.ndarray  # (K,)

    @classmethod
    def sample(cls, rng: np.random.Generator, waves: int = 6, min_freq: float = 15.0, max_freq: float = 45.0):
        dirs = rng.normal(size=(waves, 3))
        dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
        freq = dirs * rng.uniform(min_freq, max_freq, (waves, 1))
        return cls(freq, rng.uniform(0.0, 2 * np.pi, waves))

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        f = torch.as_tensor(self.frequencies, dtype=points.dtype, device=points.device)
        ph = torch.as_tensor(self.phases, dtype=points.dtype, device=points.device)
        return torch.sin(points @ f.T + ph).sum(dim=-1) / np.sqrt(len(self.phases) / 2.0)


@dataclass
class OffsetLayer:
    """A garment layer at a distance from the body: coverage (rest-pose bands) x thickness (+ noise).

    Coverage is the product of the bands that are set: ``hem_y < y < neck_y`` (rest height), arm coordinate below
    ``sleeve`` (tops) and ``y < waist_y`` with leg coordinate below ``leg_length`` (bottoms).

    Attributes:
        thickness: Base offset from the body surface (metres).
        grow: Extra offset reached at the hem / cuff / trouser end (metres), for loose garments.
        noise: Amplitude (metres) of smooth offset noise (wrinkles, folds).
        hem_y, neck_y, sleeve, waist_y, leg_length: Band limits (None = unbounded).
        hair: Hair mode: coverage from a hairline that is high at the face and low at the back; ``long_hair`` extends
            it down the back of the neck onto the upper back.
        opening: Half-width (metres, rest x) of an open front (an unbuttoned jacket shows the layer beneath).
        hood: Hood mode: a thick layer behind and around the head and neck, the face left open.
    """

    thickness: float
    grow: float = 0.0
    noise: float = 0.0
    hem_y: float | None = None
    neck_y: float | None = None
    sleeve: float | None = None
    waist_y: float | None = None
    leg_length: float | None = None
    grow_from_y: float | None = None
    hair: bool = False
    long_hair: bool = False
    noise_field: SmoothNoise | None = None
    opening: float | None = None
    hood: bool = False

    def offset(self, rest: torch.Tensor, marks: RestLandmarks) -> torch.Tensor:
        """(N,) offset (metres, >= 0) at rest-pose points (N, 3) of closest body points."""
        y = rest[:, 1]
        a = marks.arm_coordinate(rest)
        if self.hair:
            return self._hair_offset(rest, marks)
        if self.hood:
            return self._hood_offset(rest, marks)
        cover = torch.ones_like(y)
        grow_t = torch.zeros_like(y)
        if self.hem_y is not None:
            cover = cover * _step(y - self.hem_y)
            top = self.grow_from_y if self.grow_from_y is not None else marks.chest_y
            grow_t = ((top - y) / max(top - self.hem_y, 1e-3)).clamp(0.0, 1.0)
        if self.neck_y is not None:
            # The neckline dips at the front (+z in rest pose).
            neck = self.neck_y - 0.05 * _step(rest[:, 2] - marks.head_z, 0.02)
            cover = cover * _step(neck - y)
        if self.sleeve is not None:
            cover = cover * _step(self.sleeve - a, 0.02)
            arm = _step(a, 0.03)
            grow_t = (1 - arm) * grow_t + arm * (a / max(self.sleeve, 1e-3)).clamp(0.0, 1.0)
        if self.waist_y is not None:
            cover = cover * _step(self.waist_y - y) * _step(-a, 0.02)
        if self.leg_length is not None:
            leg = marks.leg_coordinate(rest)
            cover = cover * _step(self.leg_length - leg, 0.01)
            grow_t = (leg / max(self.leg_length, 1e-3)).clamp(0.0, 1.0)
        if self.opening is not None:
            front = _step(rest[:, 2] - 0.02, 0.01) * _step(-a, 0.02)
            cover = cover * (1 - front * _step(self.opening - rest[:, 0].abs(), 0.006))
        thick = self.thickness + self.grow * grow_t
        if self.noise_field is not None and self.noise > 0:
            thick = thick + self.noise * (0.3 + 0.7 * grow_t) * self.noise_field(rest)
        return cover * thick.clamp(min=0.002)

    def _hood_offset(self, rest: torch.Tensor, marks: RestLandmarks) -> torch.Tensor:
        y, z = rest[:, 1], rest[:, 2]
        above = _step(y - (marks.neck_y - 0.06), 0.01)
        behind_face = 1.0 - _step(z - (marks.head_z + 0.03), 0.015)
        near_axis = _step(0.16 - rest[:, 0].abs(), 0.02)
        low = ((marks.head_y + 0.05 - y) / 0.2).clamp(0.0, 1.0)
        thick = self.thickness + self.grow * low
        if self.noise_field is not None and self.noise > 0:
            thick = thick + self.noise * self.noise_field(rest)
        return above * behind_face * near_axis * thick.clamp(min=0.002)

    def _hair_offset(self, rest: torch.Tensor, marks: RestLandmarks) -> torch.Tensor:
        y, z = rest[:, 1], rest[:, 2]
        # Hairline height: forehead at the front, nape (or upper back for long hair) behind.
        back = 1.0 - _step(z - (marks.head_z + 0.02), 0.025)
        front_line = marks.head_y + 0.1
        back_line = marks.neck_y - 0.2 if self.long_hair else marks.head_y - 0.05
        line = back * back_line + (1 - back) * front_line
        cover = _step(y - line, 0.01)
        if self.long_hair:
            # Keep long hair on the back of the neck and upper back, off the shoulders and arms.
            on_back = _step(0.12 - rest[:, 0].abs(), 0.02)
            cover = cover * torch.where(y > marks.neck_y + 0.02, torch.ones_like(y), on_back)
        top = ((y - line) / 0.12).clamp(0.0, 1.0)
        thick = self.thickness * (0.4 + 0.6 * top) + self.grow * (1 - top) * back
        if self.noise_field is not None and self.noise > 0:
            thick = thick + self.noise * self.noise_field(rest)
        return cover * thick.clamp(min=0.002)


@dataclass
class SkirtVolume:
    """A volume hanging from the waist and bridging the legs: per-height ellipses in the world xz-plane.

    Attributes:
        heights: (K,) increasing slice heights (world y, metres).
        centers: (K, 2) ellipse centres (x, z) per slice.
        radii: (K, 2) ellipse radii (x, z) per slice.
        fold_count: Number of vertical folds around the skirt.
        fold_depth: Radial depth (metres) of the folds at the hem.
        fold_phase: Angular phase of the folds.
    """

    heights: np.ndarray
    centers: np.ndarray
    radii: np.ndarray
    fold_count: int = 8
    fold_depth: float = 0.01
    fold_phase: float = 0.0

    @property
    def bounds(self) -> np.ndarray:
        """(2, 3) axis-aligned bounds of the volume."""
        lo = self.centers - self.radii
        hi = self.centers + self.radii
        return np.array(
            [[lo[:, 0].min(), self.heights[0], lo[:, 1].min()], [hi[:, 0].max(), self.heights[-1], hi[:, 1].max()]]
        )

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) approximate signed distance (negative inside) at world points (N, 3)."""
        dt = points.dtype
        h = torch.as_tensor(self.heights, dtype=dt, device=points.device)
        c = torch.as_tensor(self.centers, dtype=dt, device=points.device)
        r = torch.as_tensor(self.radii, dtype=dt, device=points.device)
        y = points[:, 1].clamp(float(h[0]), float(h[-1]))
        k = (torch.searchsorted(h, y.contiguous()) - 1).clamp(0, len(h) - 2)
        t = ((y - h[k]) / (h[k + 1] - h[k])).clamp(0, 1)[:, None]
        cc = c[k] * (1 - t) + c[k + 1] * t
        rr = r[k] * (1 - t) + r[k + 1] * t
        rel = points[:, [0, 2]] - cc
        # Folds deepen towards the hem (the lowest slice).
        down = 1.0 - (points[:, 1] - float(h[0])).div(float(h[-1] - h[0])).clamp(0, 1)
        angle = torch.atan2(rel[:, 1], rel[:, 0])
        fold = self.fold_depth * down * torch.sin(self.fold_count * angle + self.fold_phase)
        radial = (rel / rr).norm(dim=-1) - 1.0
        d_rad = radial * rr.min(dim=-1).values + fold
        d_y = torch.maximum(points[:, 1] - float(h[-1]), float(h[0]) - points[:, 1])
        return torch.maximum(d_rad, d_y)


def build_skirt_volume(
    posed: np.ndarray,
    rest: np.ndarray,
    marks: RestLandmarks,
    waist_rest_y: float,
    hem_leg: float,
    flare: float,
    rng: np.random.Generator,
    slices: int = 24,
    margin: float = 0.015,
) -> SkirtVolume:
    """Fit a skirt volume around the posed lower body.

    Args:
        posed: (V, 3) posed body vertices (world).
        rest: (V, 3) rest-pose vertices of the same body.
        marks: Rest landmarks.
        waist_rest_y: Rest height of the waistband.
        hem_leg: Hem position as a leg coordinate (0 hips, 1 ankles).
        flare: Extra radius per metre below the waist (A-line).
        rng: Seeded generator (folds).
        slices: Number of height slices.
        margin: Clearance (metres) kept around the legs.

    Returns:
        SkirtVolume.
    """
    band = np.abs(rest[:, 1] - waist_rest_y) < 0.015
    waist_y = float(posed[band, 1].mean())
    hem_rest_y = marks.hip_y - hem_leg * (marks.hip_y - marks.ankle_y)
    hem_y = max(waist_y - (waist_rest_y - hem_rest_y), float(posed[:, 1].min()) + 0.04)
    arm = (np.abs(rest[:, 0]) - marks.shoulder_x) / (marks.wrist_x - marks.shoulder_x) > -0.05
    lower = ~arm & (rest[:, 1] < waist_rest_y + 0.02)
    pts = posed[lower]
    heights = np.linspace(hem_y, waist_y, slices)
    step = heights[1] - heights[0]
    centers = np.zeros((slices, 2))
    radii = np.zeros((slices, 2))
    valid = np.zeros(slices, bool)
    for i, yk in enumerate(heights):
        sel = pts[np.abs(pts[:, 1] - yk) < step]
        if len(sel) < 8:
            continue
        xz = sel[:, [0, 2]]
        lo, hi = xz.min(0), xz.max(0)
        centers[i] = 0.5 * (lo + hi)
        half = np.maximum(0.5 * (hi - lo), 0.03)
        # Scale the ellipse (aspect of the bounding box) until it contains every point of the slice.
        s = np.sqrt((((xz - centers[i]) / half) ** 2).sum(-1)).max()
        radii[i] = half * max(s, 1.0) + margin
        valid[i] = True
    if not valid.any():
        raise ValueError("no body vertices between hem and waist: cannot build a skirt")
    idx = np.arange(slices)
    for d in range(2):
        centers[:, d] = np.interp(idx, idx[valid], centers[valid, d])
        radii[:, d] = np.interp(idx, idx[valid], radii[valid, d])
    # Smooth the centres, then make the radius non-increasing upwards (hanging cloth) plus the A-line flare.
    kernel = np.ones(5) / 5
    for d in range(2):
        centers[:, d] = np.convolve(np.pad(centers[:, d], 2, mode="edge"), kernel, mode="valid")
    radii = np.maximum.accumulate(radii[::-1], axis=0)[::-1]
    radii = radii + flare * (waist_y - heights)[:, None]
    radii[-1] = np.minimum(radii[-1], radii[-2])
    return SkirtVolume(
        heights=heights,
        centers=centers,
        radii=radii,
        fold_count=int(rng.integers(5, 13)),
        fold_depth=float(rng.uniform(0.003, 0.015)) + 0.03 * flare,
        fold_phase=float(rng.uniform(0, 2 * np.pi)),
    )


@dataclass
class Garment:
    """One garment: a family name, its offset layers and/or hanging volume, and its albedo (see appearance)."""

    family: str
    layers: list[OffsetLayer] = field(default_factory=list)
    volume: SkirtVolume | None = None


def _add_extra_garments(
    rng: np.random.Generator, p: dict[str, float], marks: RestLandmarks, posed: np.ndarray, rest: np.ndarray,
    waist: float, garments: list[Garment],
) -> None:  # fmt: skip
    """Draw the WIDE_GARMENT_FAMILIES into ``garments`` (in place): wide skirts and baggy trousers replace skirts and
    trousers; a long coat or an open jacket and a hood go over the outfit."""
    u = rng.uniform
    noise = SmoothNoise.sample
    # Extra families: no draw at all when their probability is 0 (the original outfits stay bit-identical).
    if p.get("wide_skirt", 0.0) > 0 and rng.random() < p["wide_skirt"]:
        for i, g in enumerate(garments):
            if g.family == "skirt":
                vol = build_skirt_volume(posed, rest, marks, waist, u(0.4, 0.95), u(0.5, 1.1), rng)
                garments[i] = Garment("wide_skirt", g.layers, vol)
    if p.get("baggy_trousers", 0.0) > 0 and rng.random() < p["baggy_trousers"]:
        for i, g in enumerate(garments):
            if g.family == "trousers":
                layer = OffsetLayer(
                    thickness=u(0.02, 0.035), grow=u(0.05, 0.1), noise=u(0.008, 0.015), waist_y=waist,
                    leg_length=u(0.9, 1.0), noise_field=noise(rng),
                )  # fmt: skip
                garments[i] = Garment("baggy_trousers", [layer])
    if p.get("coat", 0.0) > 0 and rng.random() < p["coat"]:
        # A long coat: thick sleeved upper layer plus a hanging volume from the waist to the knees or below.
        top = OffsetLayer(
            thickness=u(0.03, 0.045), grow=u(0.0, 0.02), noise=u(0.003, 0.008), hem_y=waist - 0.02,
            neck_y=marks.neck_y + u(-0.02, 0.03), sleeve=u(0.85, 1.0), noise_field=noise(rng),
        )  # fmt: skip
        vol = build_skirt_volume(posed, rest, marks, waist, u(0.4, 0.85), u(0.05, 0.3), rng, margin=0.04)
        garments.append(Garment("coat", [top], vol))
    elif p.get("open_jacket", 0.0) > 0 and rng.random() < p["open_jacket"]:
        layer = OffsetLayer(
            thickness=u(0.028, 0.045), grow=u(0.0, 0.03), noise=u(0.003, 0.008), hem_y=marks.hip_y + u(-0.12, 0.05),
            neck_y=marks.neck_y + u(-0.01, 0.03), sleeve=u(0.8, 1.0), noise_field=noise(rng), opening=u(0.03, 0.09),
        )  # fmt: skip
        garments.append(Garment("open_jacket", [layer]))
    if p.get("hood", 0.0) > 0 and rng.random() < p["hood"]:
        layer = OffsetLayer(thickness=u(0.03, 0.05), grow=u(0.02, 0.05), noise=u(0.002, 0.005), hood=True,
                            noise_field=noise(rng))  # fmt: skip
        garments.append(Garment("hood", [layer]))


def sample_outfit(
    rng: np.random.Generator,
    marks: RestLandmarks,
    posed: np.ndarray,
    rest: np.ndarray,
    probabilities: dict[str, float],
) -> list[Garment]:
    """Draw an outfit: an upper garment or a dress, a lower garment unless a dress, maybe hair.

    Args:
        rng: Seeded generator.
        marks: Rest landmarks of the body.
        posed: (V, 3) posed body vertices (world), for skirt volumes.
        rest: (V, 3) rest-pose body vertices.
        probabilities: Family probabilities (keys of ``SynthConfig.garment_probabilities``): "dress", "loose_top"
            (vs fitted, given a top), "no_top", "skirt", "shorts", "no_bottom" (else trousers), "hair", "long_hair".

    Returns:
        Garments, outer to inner order not implied (layers combine by max offset).
    """
    p = probabilities
    u = rng.uniform
    garments: list[Garment] = []
    waist = marks.pelvis_y + u(0.02, 0.1)
    noise = SmoothNoise.sample
    if rng.random() < p["dress"]:
        top = OffsetLayer(
            thickness=u(0.005, 0.012), noise=0.002, hem_y=waist - 0.02, neck_y=marks.neck_y - u(0.0, 0.06),
            sleeve=float(rng.choice([-0.05, 0.15, 0.35])), noise_field=noise(rng),
        )  # fmt: skip
        vol = build_skirt_volume(posed, rest, marks, waist, u(0.35, 0.9), u(0.0, 0.35), rng)
        garments.append(Garment("dress", [top], vol))
    else:
        if rng.random() >= p["no_top"]:
            if rng.random() < p["loose_top"]:
                hem = marks.hip_y + u(-0.18, 0.08)
                layer = OffsetLayer(
                    thickness=u(0.012, 0.025), grow=u(0.015, 0.05), noise=u(0.004, 0.01), hem_y=hem,
                    neck_y=marks.neck_y - u(-0.01, 0.04), sleeve=u(0.25, 1.0), noise_field=noise(rng),
                )  # fmt: skip
                garments.append(Garment("loose_top", [layer]))
            else:
                layer = OffsetLayer(
                    thickness=u(0.004, 0.012), noise=u(0.001, 0.003), hem_y=marks.pelvis_y + u(-0.04, 0.1),
                    neck_y=marks.neck_y - u(0.0, 0.05), sleeve=u(-0.05, 1.0), noise_field=noise(rng),
                )  # fmt: skip
                garments.append(Garment("fitted_top", [layer]))
        r = rng.random()
        if r < p["skirt"]:
            vol = build_skirt_volume(posed, rest, marks, waist, u(0.25, 0.85), u(0.02, 0.4), rng)
            belt = OffsetLayer(thickness=0.008, waist_y=waist, leg_length=0.0, noise_field=None)
            garments.append(Garment("skirt", [belt], vol))
        elif r < p["skirt"] + p["shorts"]:
            layer = OffsetLayer(
                thickness=u(0.008, 0.018), grow=u(0.0, 0.03), noise=u(0.002, 0.006), waist_y=waist,
                leg_length=u(0.2, 0.5), noise_field=noise(rng),
            )  # fmt: skip
            garments.append(Garment("shorts", [layer]))
        elif r < p["skirt"] + p["shorts"] + p["no_bottom"]:
            pass
        else:
            layer = OffsetLayer(
                thickness=u(0.008, 0.02), grow=u(0.0, 0.05), noise=u(0.002, 0.008), waist_y=waist,
                leg_length=u(0.85, 0.98), noise_field=noise(rng),
            )  # fmt: skip
            garments.append(Garment("trousers", [layer]))
    if rng.random() < p["hair"]:
        long_hair = bool(rng.random() < p["long_hair"])
        layer = OffsetLayer(
            thickness=u(0.01, 0.035), grow=u(0.0, 0.03) if long_hair else 0.0, noise=u(0.002, 0.006), hair=True,
            long_hair=long_hair, noise_field=noise(rng, min_freq=20.0, max_freq=60.0),
        )  # fmt: skip
        garments.append(Garment("hair", [layer]))
    _add_extra_garments(rng, p, marks, posed, rest, waist, garments)
    return garments


@dataclass
class FieldSample:
    """The clothed field at some points.

    Attributes:
        sdf: (N,) approximate signed distance of the clothed surface (negative inside), metres.
        label: (N,) int64: 0 = body (skin), i + 1 = garment i of the outfit.
        rest: (N, 3) rest-pose coordinates of each point's closest body point (zeros away from the body).
        body_sdf: (N,) signed distance to the naked body.
    """

    sdf: torch.Tensor
    label: torch.Tensor
    rest: torch.Tensor
    body_sdf: torch.Tensor


class ClothedField:
    """Signed distance field of a clothed person (body + outfit), callable on (N, 3) world points.

    Args:
        vertices: (V, 3) posed body vertices (world, metres).
        faces: (F, 3) int64 faces.
        rest_vertices: (V, 3) rest-pose (T-pose, shaped) vertices of the same body.
        marks: Rest landmarks.
        garments: The outfit.
    """

    def __init__(
        self,
        vertices: torch.Tensor,
        faces: torch.Tensor,
        rest_vertices: torch.Tensor,
        marks: RestLandmarks,
        garments: list[Garment],
    ) -> None:
        if vertices.ndim != 2 or vertices.shape[-1] != 3 or rest_vertices.shape != vertices.shape:
            raise ValueError(
                f"vertices and rest_vertices must both be (V, 3), got {tuple(vertices.shape)} and "
                f"{tuple(rest_vertices.shape)}"
            )
        self.vertices = vertices.detach().float()
        self.faces = faces.long()
        self.rest = rest_vertices.detach().float()[None]
        self.marks = marks
        self.garments = garments
        self.bvh = MeshBVH(self.vertices[None], self.faces, sign_method="normal")

    def max_offset(self) -> float:
        """An upper bound (metres) of how far offset layers reach from the body."""
        reach = [ly.thickness + ly.grow + 3 * ly.noise for g in self.garments for ly in g.layers]
        return max(reach, default=0.0)

    def bounds(self, margin: float = 0.03) -> np.ndarray:
        """(2, 3) box containing the clothed surface with ``margin`` to spare."""
        v = self.vertices.cpu().numpy()
        pad = self.max_offset() + margin
        lo, hi = v.min(0) - pad, v.max(0) + pad
        for g in self.garments:
            if g.volume is not None:
                b = g.volume.bounds
                lo, hi = np.minimum(lo, b[0] - margin), np.maximum(hi, b[1] + margin)
        return np.stack([lo, hi])

    def evaluate(self, points: torch.Tensor) -> FieldSample:
        """Clothed SDF, garment label, rest coordinates and body SDF at (N, 3) world points."""
        if points.ndim != 2 or points.shape[-1] != 3:
            raise ValueError(f"points must be (N, 3), got {tuple(points.shape)}")
        pts = points.to(device=self.vertices.device, dtype=torch.float32)
        q = self.bvh.query(pts[None], max_dist=_MAX_DIST)
        hit = q.face_index[0] >= 0
        body = torch.where(hit, q.signed_distance[0], torch.full_like(q.distance[0], _MAX_DIST))
        # Offsets only matter in a band around the body: farther out the field stays positive, deeper in negative
        # (the band is wider than a grid cell's diagonal, so no cell that contains the surface sees a clipped value).
        reach = self.max_offset()
        band = torch.nonzero(hit & (body > -_BAND) & (body < reach + _BAND))[:, 0]
        rest = torch.zeros_like(pts)
        rest[band] = interpolate_face_attributes(self.rest, self.faces, q.face_index[:, band], q.barycentric[:, band])[
            0
        ]
        offset = torch.zeros_like(body)
        offset[body >= reach + _BAND] = reach
        label = torch.zeros_like(body, dtype=torch.long)
        band_offset = torch.zeros(len(band), dtype=body.dtype, device=body.device)
        band_label = torch.zeros(len(band), dtype=torch.long, device=body.device)
        for i, g in enumerate(self.garments):
            for layer in g.layers:
                o = layer.offset(rest[band], self.marks)
                wins = (o > band_offset) & (o > 0.002)
                band_label = torch.where(wins, torch.full_like(band_label, i + 1), band_label)
                band_offset = torch.maximum(band_offset, o)
        offset[band] = band_offset
        label[band] = band_label
        sdf = body - offset
        for i, g in enumerate(self.garments):
            if g.volume is not None:
                v = g.volume(pts)
                label = torch.where(v < sdf, torch.full_like(label, i + 1), label)
                sdf = torch.minimum(sdf, v)
        return FieldSample(sdf=sdf, label=label, rest=rest, body_sdf=body)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(N,) clothed signed distance at (N, 3) world points (for geometry.surface.extract_surface)."""
        return self.evaluate(points).sdf
