"""Tests for icon.synth.scene and the domain-randomisation switches of make_sample: perspective crops that match the
pipeline's crop code, shadows / ambient occlusion against analytic scenes, floor shadows, occluders, prints, new pose
families and the "wide" preset (shapes, determinism by seed, unit normals in the mask, masks that re-render from the
mesh, and that each switch changes the output). Tiny samples: 64 px, 48^3 grid."""

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
from geometry.cameras import OrthographicCamera  # noqa: E402
from geometry.queries import MeshBVH  # noqa: E402
from geometry.render import render_mesh  # noqa: E402
from icon.person import compute_crop_boxes, crop_mask, mask_box  # noqa: E402
from icon.synth import SynthConfig, make_sample  # noqa: E402
from icon.synth.appearance import WIDE_PATTERNS, Material, render_background  # noqa: E402
from icon.synth.config import PRESETS, synth_preset  # noqa: E402
from icon.synth.garments import WIDE_GARMENT_FAMILIES, OffsetLayer, RestLandmarks, sample_outfit  # noqa: E402
from icon.synth.poses import POSE_FAMILIES, sample_body_params  # noqa: E402
from icon.synth.sample import body_vertices  # noqa: E402
from icon.synth.scene import (  # noqa: E402
    StudioLighting,
    ambient_occlusion,
    occluder_mask,
    perspective_crop_view,
    render_floor,
    shade_studio,
    shadow_factor,
)
from icon.synth.shards import load_shard, save_shard  # noqa: E402

wp.config.quiet = True

TINY = SynthConfig(image_size=64, grid_resolution=48, num_points=256, backgrounds=("flat",))
WIDE_TINY = synth_preset("wide", image_size=64, grid_resolution=48, num_points=256)


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def _unit_or_zero(normals: np.ndarray, mask: np.ndarray) -> None:
    np.testing.assert_allclose(np.linalg.norm(normals, axis=-1)[mask], 1.0, atol=1e-4)
    assert np.all(normals[~mask] == 0)


def _rerender_mask(s) -> np.ndarray:
    ren = render_mesh(torch.from_numpy(s.vertices)[None], torch.from_numpy(s.faces), s.render_camera())
    return ren.mask[0].numpy()


def _person_box_mesh() -> tuple[np.ndarray, np.ndarray]:
    """An ellipsoid of a person's proportions (0.5 x 1.7 x 0.3 m) centred at the origin."""
    sphere = trimesh.creation.icosphere(subdivisions=3)
    v = np.asarray(sphere.vertices) * [0.25, 0.85, 0.15]
    return v.astype(np.float32), np.asarray(sphere.faces, np.int64)


def _light(**kw) -> StudioLighting:
    base = dict(
        key_direction=np.array([0.0, 1.0, 0.0]),
        key_color=np.ones(3),
        fill_direction=np.array([0.0, 0.0, 1.0]),
        fill_color=np.full(3, 0.2),
        ambient_color=np.full(3, 0.1),
    )
    return StudioLighting(**{**base, **kw})


class TestConfig:
    def test_default_randomises_nothing_and_wide_does(self):
        assert not SynthConfig().randomises_scene
        assert WIDE_TINY.randomises_scene
        assert set(PRESETS) >= {"default", "wide"}
        assert synth_preset("default") == SynthConfig()

    def test_rejects_bad_switches(self):
        with pytest.raises(ValueError, match="unknown synth preset"):
            synth_preset("ultra")
        with pytest.raises(ValueError, match="unknown degradations"):
            SynthConfig(degradations=("sepia",))
        with pytest.raises(ValueError, match="pose_families"):
            SynthConfig(pose_families=("dancing",))
        with pytest.raises(ValueError, match="backgrounds"):
            SynthConfig(backgrounds=("forest",))
        with pytest.raises(ValueError, match="lighting"):
            SynthConfig(lighting="hdri")


class TestPerspectiveCrop:
    def test_crop_matches_pipeline_crop_code(self):
        verts, faces = _person_box_mesh()
        view = perspective_crop_view(np.random.default_rng(0), verts, faces, 64, (20.0, 70.0), (0.4, 0.8), 256, 0.15)
        assert 20.0 <= view.fov <= 70.0 and view.distance > 1.0
        v = torch.from_numpy(verts + view.transl)[None]
        f = torch.from_numpy(faces)
        source = render_mesh(v, f, view.source_camera).mask[0].numpy()
        np.testing.assert_allclose(view.crop, compute_crop_boxes(mask_box(source)[None], margin=0.15)[0], rtol=1e-6)
        # The crop camera renders what icon.person.crop_mask cuts out of a finer source render.
        direct = render_mesh(v, f, view.camera).mask[0].numpy()
        fine = render_mesh(v, f, view.source_camera, height=1024, width=1024).mask[0].numpy()
        crop_fine = np.array([view.crop[0] * 4, view.crop[1] * 4, view.crop[2] * 4], np.float32)
        cut = crop_mask(fine, crop_fine, 64)
        iou = (direct & cut).sum() / (direct | cut).sum()
        assert iou > 0.95
        # The person fills 1 / (1 + 2 margin) of the crop's side, as in the pipeline.
        box = mask_box(direct)
        assert abs(max(box[2] - box[0], box[3] - box[1]) / 64 - 1 / 1.3) < 0.05

    def test_distance_follows_field_of_view(self):
        verts, faces = _person_box_mesh()
        fovs, dists = [], []
        for seed in range(6):
            view = perspective_crop_view(
                np.random.default_rng(seed), verts, faces, 32, (20.0, 70.0), (0.6, 0.6), 128, 0.15
            )
            fovs.append(view.fov)
            dists.append(view.distance)
        # Same fill: distance ~ 1 / tan(fov / 2).
        prod = np.array(dists) * np.tan(np.radians(fovs) / 2)
        assert prod.std() / prod.mean() < 0.02


class TestLight:
    def test_shadow_factor_under_a_box(self):
        box = trimesh.creation.box(extents=(0.4, 0.1, 0.4))
        v = torch.as_tensor(np.asarray(box.vertices) + [0.0, 0.5, 0.0], dtype=torch.float32)[None]
        bvh = MeshBVH(v, torch.as_tensor(np.asarray(box.faces), dtype=torch.long), sign_method="none")
        pts = torch.tensor([[0.0, 0.0, 0.0], [0.1, 0.0, -0.1], [1.0, 0.0, 0.0]])
        nrm = torch.tensor([[0.0, 1.0, 0.0]]).expand(3, 3)
        np.testing.assert_array_equal(shadow_factor(bvh, pts, nrm, np.array([0.0, 1.0, 0.0])).numpy(), [0, 0, 1])
        light = _light()
        lit = shade_studio(torch.full((3, 3), 0.5), nrm, nrm, light, shadow_factor(bvh, pts, nrm, np.array([0, 1, 0])))
        assert (lit[0] < lit[2]).all()

    def test_ambient_occlusion_open_plane_vs_inside_box(self):
        box = trimesh.creation.box(extents=(1.0, 1.0, 1.0))
        v = torch.as_tensor(np.asarray(box.vertices), dtype=torch.float32)[None]
        bvh = MeshBVH(v, torch.as_tensor(np.asarray(box.faces), dtype=torch.long), sign_method="none")
        pts = torch.tensor([[0.0, 0.0, 0.0], [0.0, 2.0, 0.0]])
        nrm = torch.tensor([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0]])
        ao = ambient_occlusion(bvh, pts, nrm, np.random.default_rng(0), rays=16, radius=2.0).numpy()
        np.testing.assert_allclose(ao, [0.0, 1.0])

    def test_specular_brightens_toward_the_half_vector(self):
        n = torch.tensor([[0.0, 0.0, 1.0]])
        light = _light(key_direction=np.array([0.0, 0.0, 1.0]))
        matte = shade_studio(torch.full((1, 3), 0.3), n, n, light)
        shiny = shade_studio(torch.full((1, 3), 0.3), n, n, _light(key_direction=np.array([0, 0, 1.0]), specular=0.4))
        assert (shiny > matte).all()


class TestMaterialsAndBackgrounds:
    @pytest.mark.parametrize("pattern", WIDE_PATTERNS)
    def test_print_uses_both_colours(self, pattern):
        rng = np.random.default_rng(0)
        rest = torch.as_tensor(np.c_[rng.uniform(-0.3, 0.3, 4000), rng.uniform(-0.2, 0.5, 4000),
                                     rng.uniform(0.0, 0.15, 4000)], dtype=torch.float32)  # fmt: skip
        mat = Material(np.array([1.0, 0, 0]), np.array([0, 0, 1.0]), pattern, 8.0, np.array([0, 1.0, 0]))
        alb = mat.albedo(rest)
        assert alb.shape == (4000, 3) and float(alb.min()) >= 0 and float(alb.max()) <= 1
        assert (alb[:, 0] > 0.9).float().mean() > 0.02 and (alb[:, 2] > 0.9).float().mean() > 0.02

    @pytest.mark.parametrize("kind", ["tiles", "clutter"])
    def test_procedural_backgrounds(self, kind):
        a = render_background(np.random.default_rng(4), kind, 48)
        b = render_background(np.random.default_rng(4), kind, 48)
        assert a.shape == (48, 48, 3) and a.dtype == np.float32 and 0 <= a.min() and a.max() <= 1
        np.testing.assert_array_equal(a, b)
        assert len(np.unique(a.reshape(-1, 3), axis=0)) >= 3

    def test_floor_catches_the_shadow(self):
        box = trimesh.creation.box(extents=(0.4, 1.0, 0.4))
        v = torch.as_tensor(np.asarray(box.vertices) + [0.0, 0.5, 0.0], dtype=torch.float32)[None]
        bvh = MeshBVH(v, torch.as_tensor(np.asarray(box.faces), dtype=torch.long), sign_method="none")
        cam = OrthographicCamera(scale=torch.tensor([20.0]), cx=torch.tensor([32.0]), cy=torch.tensor([20.0]),
                                 width=64, height=64)  # fmt: skip
        light = _light(key_direction=np.array([0.6, 0.8, 0.0]))
        feet = np.array([0.0, 0.0, 0.0])
        lit = render_floor(np.random.default_rng(0), cam, bvh, feet, light, shadows=False)
        shaded = render_floor(np.random.default_rng(0), cam, bvh, feet, light, shadows=True)
        assert lit.shape == (64, 64, 3)
        darker = shaded.sum(-1) < lit.sum(-1) - 1e-3
        assert darker.sum() > 10 and (shaded <= lit + 1e-6).all()
        # The shadow falls away from the light (-x side of the box).
        cols = np.nonzero(darker)[1]
        assert cols.mean() < 32


class TestPoses:
    def _joints(self, model, family, seed=0):
        params, _ = sample_body_params(np.random.default_rng(seed), families=(family,), max_tilt=0.0)
        params = params.replace(global_orient=np.zeros((1, 3), np.float32))
        return body_vertices(model, params)[1].numpy()

    def test_new_families_look_like_their_names(self, model):
        sit = self._joints(model, "sitting")
        assert abs(sit[4, 1] - sit[1, 1]) < 0.15 and abs(sit[5, 1] - sit[2, 1]) < 0.15  # thighs ~horizontal
        stand = self._joints(model, "standing")
        assert stand[1, 1] - stand[4, 1] > 0.3
        up = self._joints(model, "arms_raised")
        assert max(up[20, 1], up[21, 1]) > up[15, 1]  # a wrist above the head
        behind = self._joints(model, "arms_behind")
        assert behind[20, 2] < behind[0, 2] and behind[21, 2] < behind[0, 2]  # wrists behind the pelvis

    def test_uniform_betas_cover_the_range(self):
        rng = np.random.default_rng(0)
        betas = np.concatenate([sample_body_params(rng, 3.0, beta_distribution="uniform")[0].betas for _ in range(60)])
        assert np.abs(betas).max() <= 3.0 and betas.std() > 1.5 and (np.abs(betas) > 2.5).mean() > 0.1
        assert set(PRESETS["wide"]["pose_families"]) == set(POSE_FAMILIES)


class TestSwitchedSamples:
    def test_perspective_sample(self, model):
        cfg = TINY.model_copy(update={"perspective_probability": 1.0})
        s = make_sample(2, model, cfg)
        ortho = make_sample(2, model, TINY)
        assert s.intrinsics is not None and s.intrinsics.shape == (3,) and s.intrinsics[0] > 0
        assert s.rgb.shape == (64, 64, 3) and s.mask.shape == (64, 64)
        _unit_or_zero(s.normal_front, s.mask)
        _unit_or_zero(s.normal_back, s.mask)
        np.testing.assert_array_equal(_rerender_mask(s), s.mask)
        assert s.vertices[:, 2].max() < 0  # the person stands in front of the camera
        # Front normals face the camera along each pixel's ray, not along -z.
        _, dirs = s.render_camera().rays()
        facing = (s.normal_front * -dirs[0].numpy()).sum(-1)[s.mask]
        assert (facing > 0).mean() > 0.9
        assert not np.array_equal(s.mask, ortho.mask)
        # The weak-perspective camera matches the view at the person's depth.
        assert abs(float(s.camera[0]) - s.intrinsics[0] / -s.vertices[:, 2].mean()) / s.camera[0] < 0.1

    def test_shadows_only_darken(self, model):
        base = TINY.model_copy(update={"lighting": "studio"})
        off = make_sample(4, model, base)
        on = make_sample(4, model, base.model_copy(update={"shadows": True}))
        np.testing.assert_array_equal(off.mask, on.mask)
        m = on.mask
        diff = on.rgb.astype(int)[m].sum(-1) - off.rgb.astype(int)[m].sum(-1)
        assert (diff <= 1).all() and (diff < -10).sum() > 5
        plain = make_sample(4, model, TINY)
        assert not np.array_equal(plain.rgb[m], off.rgb[m])  # studio light differs from the original

    def test_occluder_keeps_the_visible_part(self, model):
        cfg = TINY.model_copy(update={"occluder_probability": 1.0})
        s = make_sample(6, model, cfg)
        full = s.mask_unoccluded
        assert full is not None and s.mask.sum() < full.sum() and not (s.mask & ~full).any()
        np.testing.assert_array_equal(_rerender_mask(s), full)
        _unit_or_zero(s.normal_front, s.mask)
        _unit_or_zero(s.normal_back, s.mask)

    def test_occluder_mask_covers_part_of_the_person(self):
        person = np.zeros((64, 64), bool)
        person[10:60, 24:40] = True
        occ = occluder_mask(np.random.default_rng(0), person)
        share = (occ & person).sum() / person.sum()
        assert 0.05 < share < 0.5

    def test_wide_preset_sample(self, model, tmp_path):
        a = make_sample(8, model, WIDE_TINY)
        b = make_sample(8, model, WIDE_TINY)
        for name, value in a.array_fields().items():
            np.testing.assert_array_equal(value, b.array_fields()[name], err_msg=name)
        assert a.rgb.shape == (64, 64, 3) and a.intrinsics.shape == (3,) and a.mask_unoccluded.shape == (64, 64)
        _unit_or_zero(a.normal_front, a.mask)
        _unit_or_zero(a.normal_back, a.mask)
        np.testing.assert_array_equal(_rerender_mask(a), a.mask_unoccluded)
        mesh = trimesh.Trimesh(a.vertices, a.faces, process=False)
        assert mesh.is_watertight and mesh.volume > 0
        assert 0.05 < a.occupancy.mean() < 0.8
        # The new optional fields survive the shard round trip.
        (back,) = load_shard(save_shard(tmp_path / "shard_00000.zarr", [a], WIDE_TINY))
        np.testing.assert_array_equal(back.intrinsics, a.intrinsics)
        np.testing.assert_array_equal(back.mask_unoccluded, a.mask_unoccluded)


class TestExtraGarments:
    def test_every_extra_family_is_drawn(self, model):
        probs = SynthConfig(
            garment_probabilities={"dress": 0.0, "skirt": 0.5, "shorts": 0.0, "no_bottom": 0.0, "coat": 0.5,
                                   "open_jacket": 1.0, "hood": 1.0, "wide_skirt": 1.0, "baggy_trousers": 1.0}
        ).garment_probabilities  # fmt: skip
        seen = set()
        for seed in range(8):
            rng = np.random.default_rng(seed)
            params, _ = sample_body_params(rng)
            posed, _ = body_vertices(model, params)
            rest, joints = body_vertices(model, params, rest=True)
            outfit = sample_outfit(rng, RestLandmarks.from_joints(joints.numpy()), posed.numpy(), rest.numpy(), probs)
            seen.update(g.family for g in outfit)
            for g in outfit:
                if g.family == "wide_skirt":
                    # Far from the legs: the hem's radius exceeds the legs' half-width by well over 8 cm.
                    legs = posed.numpy()[rest.numpy()[:, 1] < joints.numpy()[4, 1]]
                    half_width = 0.5 * (legs[:, 0].max() - legs[:, 0].min())
                    assert g.volume.radii[0].max() - half_width > 0.08
        assert seen >= set(WIDE_GARMENT_FAMILIES)

    def test_open_front_and_hood_coverage(self, model):
        marks = RestLandmarks.from_joints(body_vertices(model, sample_body_params(np.random.default_rng(0))[0],
                                                        rest=True)[1].numpy())  # fmt: skip
        chest = (marks.chest_y + marks.pelvis_y) / 2
        pts = torch.tensor([[0.0, chest, 0.12], [0.0, chest, -0.12], [0.12, chest, 0.12]])
        closed = OffsetLayer(thickness=0.03, hem_y=marks.pelvis_y, neck_y=marks.neck_y, sleeve=1.0)
        opened = OffsetLayer(thickness=0.03, hem_y=marks.pelvis_y, neck_y=marks.neck_y, sleeve=1.0, opening=0.06)
        assert (closed.offset(pts, marks) > 0.02).all()
        o = opened.offset(pts, marks)
        assert o[0] < 0.005 and o[1] > 0.02 and o[2] > 0.02  # open at the front centre only
        hood = OffsetLayer(thickness=0.04, hood=True)
        head = torch.tensor([[0.0, marks.head_y, marks.head_z - 0.1], [0.0, marks.head_y, marks.head_z + 0.1],
                             [0.0, marks.chest_y - 0.2, -0.1]])  # fmt: skip
        h = hood.offset(head, marks)
        assert h[0] > 0.03 and h[1] < 0.005 and h[2] < 0.005  # back of the head yes, face and back no

    def test_coat_sample(self, model):
        cfg = SynthConfig(**{**TINY.model_dump(), "garment_probabilities": {"coat": 1.0, "dress": 0.0}})
        s = make_sample(1, model, cfg)
        assert "coat" in s.garments
        mesh = trimesh.Trimesh(s.vertices, s.faces, process=False)
        assert mesh.is_watertight and mesh.volume > 0
        _unit_or_zero(s.normal_front, s.mask)
        body_mask = np.abs(s.body_normal_front).sum(-1) > 0
        assert (s.mask & ~body_mask).sum() > 0.1 * body_mask.sum()  # the coat hangs well off the body
