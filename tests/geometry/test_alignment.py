"""geometry.alignment: Umeyama similarity recovered from exact and noisy correspondences."""

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from geometry.alignment import umeyama


def test_recovers_a_known_similarity():
    rng = np.random.default_rng(0)
    src = rng.normal(size=(200, 3))
    r = Rotation.from_rotvec([0.3, -1.1, 0.5]).as_matrix()
    dst = 1.7 * src @ r.T + np.array([0.2, -3.0, 1.0])
    sim = umeyama(src, dst)
    assert sim.scale == pytest.approx(1.7, abs=1e-9)
    np.testing.assert_allclose(sim.rotation, r, atol=1e-9)
    np.testing.assert_allclose(sim.apply(src), dst, atol=1e-9)
    assert sim.rotation_deg == pytest.approx(np.degrees(np.linalg.norm([0.3, -1.1, 0.5])), abs=1e-6)


def test_reflection_is_not_returned_and_no_rotation_mode():
    rng = np.random.default_rng(1)
    src = rng.normal(size=(50, 3))
    mirrored = src * np.array([-1.0, 1.0, 1.0])
    assert np.linalg.det(umeyama(src, mirrored).rotation) == pytest.approx(1.0)
    shifted = 0.5 * src + 2.0
    sim = umeyama(src, shifted, rotation=False)
    assert sim.scale == pytest.approx(0.5) and np.allclose(sim.rotation, np.eye(3))
    np.testing.assert_allclose(sim.apply(src), shifted, atol=1e-12)
    with pytest.raises(ValueError, match="corresponding points"):
        umeyama(src, src[:10])
