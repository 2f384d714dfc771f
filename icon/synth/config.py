"""Configuration of the synthetic clothed-human generator and the seed ranges of its train / held-out splits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

from icon.synth.poses import LEGACY_POSE_FAMILIES, POSE_FAMILIES

__all__ = [
    "BACKGROUND_KINDS",
    "DEGRADATIONS",
    "HELDOUT_SEED_START",
    "PRESETS",
    "TRAIN_SEED_START",
    "SynthConfig",
    "split_seeds",
    "synth_preset",
]

TRAIN_SEED_START = 0
"""Training samples use seeds TRAIN_SEED_START, TRAIN_SEED_START + 1, ..."""
HELDOUT_SEED_START = 1_000_000
"""Held-out samples use seeds from here on; keep training sets below this many samples."""

_DEFAULT_GARMENTS = {
    "dress": 0.15,
    "no_top": 0.05,
    "loose_top": 0.5,
    "skirt": 0.2,
    "shorts": 0.2,
    "no_bottom": 0.03,
    "hair": 0.75,
    "long_hair": 0.4,
    "coat": 0.0,
    "open_jacket": 0.0,
    "hood": 0.0,
    "wide_skirt": 0.0,
    "baggy_trousers": 0.0,
}


BACKGROUND_KINDS = ("flat", "gradient", "noise", "tiles", "clutter", "floor")
"""Background kinds; the first three are the original ones, "floor" is a ground plane with the person's shadow."""
DEGRADATIONS = ("blur", "noise", "jpeg", "color_jitter", "gamma", "low_light", "motion_blur", "downscale")
"""Image degradations applied to the RGB only (see icon.synth.degrade)."""


class SynthConfig(BaseModel):
    """Everything that shapes a synthetic sample except its seed; defaults give 256-px training samples."""

    model_config = ConfigDict(extra="forbid")

    image_size: int = Field(256, ge=16, le=2048, description="Side S of the square crop (pixels).")
    grid_resolution: int = Field(
        128, ge=32, le=512, description="Marching-cubes samples along the longest side of the person's box."
    )
    coarse_resolution: int = Field(
        33, ge=5, le=257, description="Samples per axis of the first coarse-to-fine level (keep its step <= ~3 cm)."
    )
    num_points: int = Field(8192, ge=0, description="Occupancy samples per person.")
    surface_fraction: float = Field(
        0.8, ge=0, le=1, description="Share of occupancy samples near the clothed surface; the rest are uniform."
    )
    surface_sigmas: tuple[float, ...] = Field(
        (0.01, 0.03, 0.05), description="Std (metres) of the Gaussian offsets of near-surface samples, one per point."
    )
    garment_probabilities: dict[str, float] = Field(
        default_factory=lambda: dict(_DEFAULT_GARMENTS),
        description="Outfit probabilities: dress; no_top and loose_top (else fitted) when no dress; skirt, shorts, "
        "no_bottom (else trousers) when no dress; hair and long_hair (given hair); extra families (0 = never drawn): "
        "coat (long, over the outfit) or else open_jacket (open front over the top), hood, wide_skirt (a skirt "
        "flared far from the legs), baggy_trousers (replace trousers). Missing keys take defaults.",
    )
    beta_clip: float = Field(2.5, gt=0, description="Shape coefficients are N(0, 1) clipped to +-beta_clip.")
    pose_noise: float = Field(0.08, ge=0, description="Per-joint jitter (radians) around the pose family.")
    max_tilt: float = Field(0.1, ge=0, description="Largest tilt (radians) of the body's vertical axis.")
    fill_range: tuple[float, float] = Field(
        (0.7, 0.9), description="Fraction of the crop that the person's larger side fills (min, max)."
    )
    max_shift: float = Field(0.05, ge=0, description="Largest random offset of the person's centre, fraction of S.")
    perturb_betas: float = Field(0.3, ge=0, description="Std of the fit-error noise on each beta.")
    perturb_pose: float = Field(0.05, ge=0, description="Std (radians) of the fit-error noise per pose component.")
    perturb_orient: float = Field(0.04, ge=0, description="Std (radians) per axis of the fit-error root rotation.")
    perturb_transl: float = Field(0.015, ge=0, description="Std (metres) of the fit-error translation per axis.")
    backgrounds: tuple[str, ...] = Field(
        ("flat", "gradient", "noise"),
        description="Background kinds drawn uniformly: flat, gradient, noise, tiles, clutter (random rectangles), "
        "floor (a ground plane under the feet with the person's cast shadow).",
    )
    # --- Domain randomisation (every default keeps the original generator's output bit-identical) ---
    perspective_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Share of samples seen by a perspective camera (else weak perspective); the "
        "crop is then cut around the rendered mask with icon.person.compute_crop_boxes, as the pipeline does.",
    )
    fov_range: tuple[float, float] = Field(
        (20.0, 70.0),
        description="Vertical field of view (degrees) of perspective cameras (min, max); the distance "
        "follows so the person fills source_fill_range of the source frame.",
    )
    source_size: int = Field(
        256,
        ge=32,
        le=2048,
        description="Side (px) of the square source frame rendered for "
        "the crop box of perspective samples (only the mask is rendered at this size).",
    )
    source_fill_range: tuple[float, float] = Field(
        (0.35, 0.85), description="Fraction of the perspective source frame the person's larger side fills."
    )
    crop_margin: float = Field(
        0.15,
        ge=0,
        le=1,
        description="compute_crop_boxes margin for perspective samples (the pipeline's person.crop_margin).",
    )
    lighting: str = Field(
        "lambert",
        description="'lambert': one white light + ambient (original); 'studio': coloured key + fill + "
        "ambient lights with random directions, optional shadows / occlusion / sheen.",
    )
    shadows: bool = Field(False, description="Cast shadows of the key light (a Warp ray toward the light per pixel).")
    ambient_occlusion_rays: int = Field(
        0, ge=0, le=64, description="Hemisphere rays per pixel for soft ambient occlusion (0 = off)."
    )
    specular: bool = Field(False, description="Blinn-Phong sheen of random strength and shininess (studio light).")
    wide_prints: bool = Field(
        False, description="Garments may also get dots, noise and logo-patch prints besides the original patterns."
    )
    occluder_probability: float = Field(
        0.0,
        ge=0,
        le=1,
        description="Chance of a partial 2D occluder in front of the person; the mask and the "
        "ground-truth normal maps then keep only the person's visible pixels.",
    )
    degradations: tuple[str, ...] = Field(
        (),
        description=f"Image degradations that may be applied to the RGB, each with degradation_probability: "
        f"{', '.join(DEGRADATIONS)}.",
    )
    degradation_probability: float = Field(0.3, ge=0, le=1, description="Chance of each listed degradation.")
    pose_families: tuple[str, ...] = Field(
        LEGACY_POSE_FAMILIES, description="Pose families drawn uniformly (see icon.synth.poses.POSE_FAMILIES)."
    )
    beta_distribution: str = Field(
        "normal",
        description="'normal': betas N(0, 1) clipped to +-beta_clip (original); 'uniform': uniform in "
        "[-beta_clip, beta_clip], covering the whole shape range evenly.",
    )

    @field_validator("garment_probabilities")
    @classmethod
    def _fill_garments(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = set(value) - set(_DEFAULT_GARMENTS)
        if unknown:
            raise ValueError(f"unknown garment probabilities {sorted(unknown)}; known: {sorted(_DEFAULT_GARMENTS)}")
        out = {**_DEFAULT_GARMENTS, **value}
        if any(not 0.0 <= v <= 1.0 for v in out.values()):
            raise ValueError(f"garment probabilities must lie in [0, 1], got {out}")
        if out["skirt"] + out["shorts"] + out["no_bottom"] > 1.0:
            raise ValueError("skirt + shorts + no_bottom probabilities must not exceed 1")
        return out

    @field_validator("backgrounds")
    @classmethod
    def _check_backgrounds(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in BACKGROUND_KINDS]
        if not value or bad:
            raise ValueError(f"backgrounds must be a non-empty subset of {BACKGROUND_KINDS}; got {value}")
        return value

    @field_validator("degradations")
    @classmethod
    def _check_degradations(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in DEGRADATIONS]
        if bad:
            raise ValueError(f"unknown degradations {bad}; known: {DEGRADATIONS}")
        return value

    @field_validator("pose_families")
    @classmethod
    def _check_pose_families(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [v for v in value if v not in POSE_FAMILIES]
        if not value or bad:
            raise ValueError(f"pose_families must be a non-empty subset of {POSE_FAMILIES}; got {value}")
        return value

    @field_validator("lighting")
    @classmethod
    def _check_lighting(cls, value: str) -> str:
        if value not in ("lambert", "studio"):
            raise ValueError(f"lighting must be 'lambert' or 'studio', got {value!r}")
        return value

    @field_validator("beta_distribution")
    @classmethod
    def _check_betas(cls, value: str) -> str:
        if value not in ("normal", "uniform"):
            raise ValueError(f"beta_distribution must be 'normal' or 'uniform', got {value!r}")
        return value

    @field_validator("fov_range", "source_fill_range")
    @classmethod
    def _check_range(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1]:
            raise ValueError(f"range must satisfy 0 < min <= max, got {value}")
        return value

    @property
    def randomises_scene(self) -> bool:
        """True when any scene switch (camera, light, prints, occluders, degradations) departs from the original."""
        return (
            self.perspective_probability > 0 or self.lighting != "lambert" or self.shadows
            or self.ambient_occlusion_rays > 0 or self.specular or self.wide_prints or self.occluder_probability > 0
            or bool(self.degradations)
        )  # fmt: skip

    @field_validator("fill_range")
    @classmethod
    def _check_fill(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"fill_range must satisfy 0 < min <= max <= 1, got {value}")
        return value


PRESETS: dict[str, dict] = {
    "default": {},
    "wide": {
        "perspective_probability": 0.7,
        "fov_range": (20.0, 70.0),
        "lighting": "studio",
        "shadows": True,
        "ambient_occlusion_rays": 4,
        "specular": True,
        "wide_prints": True,
        "backgrounds": BACKGROUND_KINDS,
        "occluder_probability": 0.2,
        "degradations": DEGRADATIONS,
        "degradation_probability": 0.15,
        "pose_families": POSE_FAMILIES,
        "beta_distribution": "uniform",
        "beta_clip": 3.0,
        "garment_probabilities": {
            "coat": 0.15,
            "open_jacket": 0.2,
            "hood": 0.12,
            "wide_skirt": 0.5,
            "baggy_trousers": 0.3,
            "dress": 0.18,
        },
        "max_tilt": 0.15,
    },
}
"""Named generator presets (the only definition of each): overrides of the SynthConfig defaults. "wide" turns the
domain randomisation on; "default" is the original generator."""


def synth_preset(name: str, **overrides) -> SynthConfig:
    """The SynthConfig of preset ``name`` (see PRESETS) with further field ``overrides``."""
    if name not in PRESETS:
        raise ValueError(f"unknown synth preset {name!r}; known: {sorted(PRESETS)}")
    return SynthConfig(**{**PRESETS[name], **overrides})


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """Seeds of ``n`` samples of a split ("train" or "heldout"), beginning at offset ``start`` within it."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    base = TRAIN_SEED_START if split == "train" else HELDOUT_SEED_START
    if split == "train" and start + n > HELDOUT_SEED_START:
        raise ValueError(f"train seeds would reach the held-out range (>= {HELDOUT_SEED_START})")
    return list(range(base + start, base + start + n))
