"""Tests for icon.synth.degrade: every degradation keeps shape / range, is deterministic by seed and changes the
image in its own way (blur removes detail, low light darkens, JPEG blocks, ...)."""

from __future__ import annotations

import numpy as np
import pytest

from icon.synth.config import DEGRADATIONS
from icon.synth.degrade import apply_degradation, degrade_image


@pytest.fixture(scope="module")
def image():
    rng = np.random.default_rng(0)
    ii, jj = np.mgrid[0:64, 0:64]
    base = np.stack([(ii // 8 + jj // 8) % 2, ii / 63, jj / 63], -1).astype(np.float32)
    return np.clip(base * 0.8 + 0.1 + rng.normal(0, 0.01, base.shape), 0, 1).astype(np.float32)


def _detail(img: np.ndarray) -> float:
    return float(np.abs(np.diff(img, axis=1)).mean() + np.abs(np.diff(img, axis=0)).mean())


@pytest.mark.parametrize("kind", DEGRADATIONS)
def test_shape_range_determinism_and_change(image, kind):
    a = apply_degradation(np.random.default_rng(3), image, kind)
    b = apply_degradation(np.random.default_rng(3), image, kind)
    assert a.shape == image.shape and a.dtype == np.float32
    assert a.min() >= 0 and a.max() <= 1
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - image).mean() > 0.003, kind


@pytest.mark.parametrize("kind", ["blur", "motion_blur", "downscale"])
def test_smoothing_kinds_remove_detail(image, kind):
    assert _detail(apply_degradation(np.random.default_rng(1), image, kind)) < 0.9 * _detail(image)


def test_low_light_darkens_and_noise_adds_detail(image):
    assert apply_degradation(np.random.default_rng(1), image, "low_light").mean() < 0.65 * image.mean()
    assert _detail(apply_degradation(np.random.default_rng(1), image, "noise")) > _detail(image)


def test_jpeg_round_trip_is_close_but_lossy(image):
    out = apply_degradation(np.random.default_rng(2), image, "jpeg")
    err = np.abs(out - image).mean()
    assert 0.003 < err < 0.15


def test_degrade_image_probability(image):
    same, applied = degrade_image(np.random.default_rng(0), image, DEGRADATIONS, 0.0)
    np.testing.assert_array_equal(same, image)
    assert applied == []
    out, applied = degrade_image(np.random.default_rng(0), image, DEGRADATIONS, 1.0)
    assert applied == list(DEGRADATIONS) and not np.array_equal(out, image)


def test_unknown_kind_raises(image):
    with pytest.raises(ValueError, match="unknown degradation"):
        apply_degradation(np.random.default_rng(0), image, "sepia")
