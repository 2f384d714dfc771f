"""Tests for icon.synth: determinism, watertight clothed meshes that enclose the body, map and label consistency,
occupancy labels, garment coverage and the Zarr shard round trip (tiny samples: 64 px, 64^3 grid)."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import torch
import trimesh

os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[2] / ".cache" / "warp"))

import warp as wp  # noqa: E402  (after WARP_CACHE_PATH)

from body.model import BodyModel  # noqa: E402
from geometry.queries import signed_distance  # noqa: E402
from icon.synth import GARMENT_FAMILIES, HELDOUT_SEED_START, SynthConfig, make_sample, split_seeds  # noqa: E402
from icon.synth.garments import RestLandmarks, sample_outfit  # noqa: E402
from icon.synth.poses import POSE_FAMILIES, sample_body_params, sample_body_pose  # noqa: E402
from icon.synth.sample import body_vertices  # noqa: E402
from icon.synth.shards import SynthDataset, load_shard, save_shard  # noqa: E402

wp.config.quiet = True

TINY = SynthConfig(image_size=64, grid_resolution=64, num_points=512, backgrounds=("flat",))


@pytest.fixture(scope="module")
def model():
    return BodyModel()


@pytest.fixture(scope="module")
def samples(model):
    return [make_sample(seed, model, TINY) for seed in (0, 1)]


@pytest.fixture(scope="module")
def dress_sample(model):
    config = TINY.model_copy(update={"garment_probabilities": {"dress": 1.0, "hair": 0.0}})
    return make_sample(3, model, config)


def _unit_or_zero(normals: np.ndarray, mask: np.ndarray) -> None:
    norm = np.linalg.norm(normals, axis=-1)
    np.testing.assert_allclose(norm[mask], 1.0, atol=1e-4)
    assert np.all(normals[~mask] == 0)


class TestConfig:
    def test_rejects_unknown_garment(self):
        with pytest.raises(ValueError, match="unknown garment"):
            SynthConfig(garment_probabilities={"cape": 0.5})

    def test_split_seeds_do_not_overlap(self):
        assert split_seeds("train", 3) == [0, 1, 2]
        assert split_seeds("heldout", 2) == [HELDOUT_SEED_START, HELDOUT_SEED_START + 1]
        with pytest.raises(ValueError, match="held-out range"):
            split_seeds("train", 10, start=HELDOUT_SEED_START - 5)


class TestPoses:
    @pytest.mark.parametrize("family", POSE_FAMILIES)
    def test_family_pose_is_finite_and_bounded(self, family):
        pose = sample_body_pose(np.random.default_rng(0), family)
        assert pose.shape == (69,) and pose.dtype == np.float32
        assert np.isfinite(pose).all() and np.abs(pose).max() < np.pi

    def test_params_shapes(self):
        params, family = sample_body_params(np.random.default_rng(1))
        assert family in POSE_FAMILIES
        assert len(params) == 1 and not params.is_torch and params.betas.dtype == np.float32
        assert params.betas.shape == (1, 10) and np.abs(params.betas).max() <= 2.5
        assert float(np.abs(params.transl).max()) == 0.0


class TestMakeSample:
    def test_shapes_and_dtypes(self, samples):
        s = samples[0]
        assert s.rgb.shape == (64, 64, 3) and s.rgb.dtype == np.uint8
        assert s.mask.shape == (64, 64) and s.mask.dtype == bool
        for name in ("normal_front", "normal_back", "body_normal_front", "body_normal_back"):
            assert getattr(s, name).shape == (64, 64, 3) and getattr(s, name).dtype == np.float32
        assert s.points.shape == (512, 3) and s.occupancy.shape == (512,)
        assert s.faces.dtype == np.int64 and s.vertices.dtype == np.float32
        assert len(s.body) == 1 and len(s.fit_body) == 1 and s.camera.shape == (3,)
        flat = s.array_fields()
        assert flat["fit_body_pose"].shape == (69,) and flat["betas"].shape == (10,)
        assert set(s.garments) <= set(GARMENT_FAMILIES)

    def test_deterministic(self, model, samples):
        again = make_sample(0, model, TINY)
        for name, value in samples[0].array_fields().items():
            np.testing.assert_array_equal(value, again.array_fields()[name], err_msg=name)
        assert again.garments == samples[0].garments
        assert not np.array_equal(samples[0].rgb, samples[1].rgb)
        assert not np.array_equal(samples[0].body.betas, samples[1].body.betas)

    def test_mesh_watertight_and_encloses_body(self, model, samples):
        for s in samples:
            mesh = trimesh.Trimesh(s.vertices, s.faces, process=False)
            assert mesh.is_watertight and mesh.volume > 0
            body, _ = body_vertices(model, s.body)
            sd = signed_distance(torch.from_numpy(s.vertices)[None], torch.from_numpy(s.faces), body[None])[0]
            # A 64^3 grid (~3 cm cells) loses fingers and toes; limbs and torso must be covered to 1 cm.
            part = model.lbs_weights.argmax(dim=1)
            limbs = ~torch.isin(part, torch.tensor([7, 8, 10, 11, 15, 20, 21, 22, 23]))
            assert (sd[limbs] < 0.01).float().mean() > 0.9
            assert (sd[limbs] < 0.02).float().mean() > 0.98
            assert (sd < 0.06).float().mean() > 0.95

    def test_person_fills_the_crop(self, samples):
        for s in samples:
            rows, cols = np.nonzero(s.mask)
            extent = max(rows.max() - rows.min(), cols.max() - cols.min()) + 1
            assert 0.6 * 64 <= extent <= 0.95 * 64

    def test_normal_maps_unit_inside_zero_outside(self, samples):
        for s in samples:
            _unit_or_zero(s.normal_front, s.mask)
            _unit_or_zero(s.normal_back, s.mask)
            body_mask = np.abs(s.body_normal_front).sum(-1) > 0
            assert body_mask.sum() > 0.5 * s.mask.sum()
            _unit_or_zero(s.body_normal_front, body_mask)
            _unit_or_zero(s.body_normal_back, body_mask)
            # Front normals face the camera (+z), back normals away from it, on most pixels.
            assert (s.normal_front[s.mask][:, 2] > 0).mean() > 0.9
            assert (s.normal_back[s.mask][:, 2] < 0).mean() > 0.9

    def test_rgb_background_matches_mask(self, samples):
        for s in samples:
            outside = s.rgb[~s.mask]
            assert (outside == outside[0]).all()  # flat background
            assert (s.rgb[s.mask] != outside[0]).any(axis=-1).mean() > 0.95

    def test_occupancy_matches_signed_distance(self, samples):
        for s in samples:
            sd = signed_distance(
                torch.from_numpy(s.vertices)[None], torch.from_numpy(s.faces), torch.from_numpy(s.points)[None]
            )[0].numpy()
            assert ((sd < 0) == (s.occupancy > 0.5)).mean() > 0.995
            assert 0.05 < s.occupancy.mean() < 0.8

    def test_loose_clothing_changes_normals(self, dress_sample):
        s = dress_sample
        assert "dress" in s.garments
        body_mask = np.abs(s.body_normal_front).sum(-1) > 0
        assert (s.mask & ~body_mask).sum() > 0.05 * body_mask.sum()  # the skirt bridges the legs
        both = s.mask & body_mask
        cos = (s.normal_front[both] * s.body_normal_front[both]).sum(-1)
        assert np.degrees(np.arccos(np.clip(cos, -1, 1))).mean() > 10.0

    def test_fit_is_perturbed(self, samples):
        s = samples[0]
        assert not np.array_equal(s.body.betas, s.fit_body.betas)
        assert np.abs(s.fit_body.body_pose - s.body.body_pose).max() < 0.5


def test_every_garment_family_is_drawn(model):
    seen = set()
    for seed in range(20):
        rng = np.random.default_rng(seed)
        params, _ = sample_body_params(rng)
        posed, _ = body_vertices(model, params)
        rest, joints = body_vertices(model, params, rest=True)
        marks = RestLandmarks.from_joints(joints.numpy())
        outfit = sample_outfit(rng, marks, posed.numpy(), rest.numpy(), TINY.garment_probabilities)
        seen.update(g.family for g in outfit)
    assert seen == set(GARMENT_FAMILIES)


def test_shard_round_trip(tmp_path, samples):
    path = save_shard(tmp_path / "shard_00000.zarr", samples, TINY)
    loaded = load_shard(path)
    assert len(loaded) == len(samples)
    for a, b in zip(samples, loaded, strict=True):
        assert (a.seed, a.garments, a.pose_family) == (b.seed, b.garments, b.pose_family)
        for name, value in a.array_fields().items():
            np.testing.assert_array_equal(value, b.array_fields()[name], err_msg=name)
            assert value.dtype == b.array_fields()[name].dtype, name
    dataset = SynthDataset([path])
    assert len(dataset) == 2
    item = dataset[1]
    np.testing.assert_array_equal(item.normal_front, samples[1].normal_front)
    assert item.faces.shape == (0, 3)  # meshes are skipped unless asked for
    assert SynthDataset([path], with_mesh=True)[-1].faces.shape == samples[1].faces.shape
