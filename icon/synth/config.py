"""Configuration of the synthetic clothed-human generator and the seed ranges of its train / held-out splits."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

__all__ = ["HELDOUT_SEED_START", "TRAIN_SEED_START", "SynthConfig", "split_seeds"]

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
}


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
        "no_bottom (else trousers) when no dress; hair and long_hair (given hair). Missing keys take defaults.",
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
        ("flat", "gradient", "noise"), description="Background kinds drawn uniformly: flat, gradient, noise."
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
        bad = [v for v in value if v not in ("flat", "gradient", "noise")]
        if not value or bad:
            raise ValueError(f"backgrounds must be a non-empty subset of flat, gradient, noise; got {value}")
        return value

    @field_validator("fill_range")
    @classmethod
    def _check_fill(cls, value: tuple[float, float]) -> tuple[float, float]:
        if not 0 < value[0] <= value[1] <= 1:
            raise ValueError(f"fill_range must satisfy 0 < min <= max <= 1, got {value}")
        return value


def split_seeds(split: str, n: int, start: int = 0) -> list[int]:
    """Seeds of ``n`` samples of a split ("train" or "heldout"), beginning at offset ``start`` within it."""
    if split not in ("train", "heldout"):
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    base = TRAIN_SEED_START if split == "train" else HELDOUT_SEED_START
    if split == "train" and start + n > HELDOUT_SEED_START:
        raise ValueError(f"train seeds would reach the held-out range (>= {HELDOUT_SEED_START})")
    return list(range(base + start, base + start + n))
