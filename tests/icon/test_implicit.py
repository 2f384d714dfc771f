"""Tests for icon.implicit and icon.train_implicit: analytic sphere features, net shapes and gradients, the weight
format, surface extraction of a known field, hand/foot replacement, a short training run, and the shipped weights."""

from __future__ import annotations

import os
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import trimesh

os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parents[2] / ".cache" / "warp"))

import warp as wp  # noqa: E402  (after WARP_CACHE_PATH)

from body.model import BodyModel  # noqa: E402
from body.params import BodyParams  # noqa: E402
from geometry.cameras import OrthographicCamera  # noqa: E402
from geometry.queries import MeshBVH  # noqa: E402
from geometry.render import render_mesh  # noqa: E402
from icon.implicit import (  # noqa: E402
    FEATURE_NAMES,
    ImplicitConfig,
    ImplicitNet,
    PointFeatureSampler,
    hands_feet_vertex_mask,
    load_implicit_net,
    point_features,
    read_implicit_net_config,
    reconstruct_surface,
    replace_body_parts,
    sample_clothed_normals,
    save_implicit_net,
)
from icon.train_implicit import (  # noqa: E402
    ImplicitTrainConfig,
    build_feature_cache,
    evaluate_occupancy,
    load_refined_fits,
    read_checkpoint_state,
    sample_degraded_normals,
    train_implicit,
    with_refined_fits,
)

wp.config.quiet = True

REPO = Path(__file__).resolve().parents[2]
SHIPPED = REPO / "weights" / "implicit_net.safetensors"
RADIUS = 0.5
SIZE = 64


def sphere(subdivisions: int = 3) -> tuple[torch.Tensor, torch.Tensor]:
    s = trimesh.creation.icosphere(subdivisions=subdivisions, radius=RADIUS)
    return torch.tensor(s.vertices, dtype=torch.float32)[None], torch.tensor(s.faces, dtype=torch.long)


def camera(batch: int = 1) -> OrthographicCamera:
    """Orthographic camera seeing [-1, 1]^2 metres in a SIZE x SIZE image."""
    return OrthographicCamera(
        scale=torch.full((batch,), SIZE / 2.0), cx=torch.full((batch,), SIZE / 2.0),
        cy=torch.full((batch,), SIZE / 2.0), width=SIZE, height=SIZE,
    )  # fmt: skip


def constant_maps(front=(0.0, 0.0, 1.0), back=(0.0, 0.0, -1.0)) -> tuple[torch.Tensor, torch.Tensor]:
    f = torch.tensor(front).expand(1, SIZE, SIZE, 3).clone()
    b = torch.tensor(back).expand(1, SIZE, SIZE, 3).clone()
    return f, b


class NegativeSdf(torch.nn.Module):
    """A 'net' whose logit is minus the body SDF feature: its zero level set is the body surface."""

    config = ImplicitConfig()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return -features[..., 0]


# ---------------------------------------------------------------------------------------------------------- features
class TestPointFeatures:
    def test_sphere_sdf_and_normals(self):
        verts, faces = sphere()
        front, back = constant_maps()
        gen = torch.Generator().manual_seed(0)
        dirs = torch.nn.functional.normalize(torch.randn(1, 200, 3, generator=gen), dim=-1)
        radii = 0.3 + 0.4 * torch.rand(1, 200, 1, generator=gen)  # 0.3 .. 0.7 m: inside and outside
        pts = dirs * radii
        cfg = ImplicitConfig()
        feats = point_features(pts, verts, faces, front, back, camera(), cfg)
        assert feats.shape == (1, 200, len(FEATURE_NAMES))
        sagitta = 0.01  # icosphere(3) of radius 0.5 lies within ~1 cm of the sphere
        expected = ((radii[..., 0] - RADIUS).clamp(-cfg.sdf_clip, cfg.sdf_clip)) / cfg.sdf_scale
        assert torch.allclose(feats[..., 0], expected, atol=sagitta / cfg.sdf_scale)
        cos = (feats[..., 1:4] * dirs).sum(-1)
        assert cos.min() > 0.99  # body normal = radial direction
        assert ((feats[..., 7] >= 0) & (feats[..., 7] <= 1)).all()

    def test_front_back_selection_by_visibility(self):
        verts, faces = sphere()
        front, back = constant_maps()
        pts = torch.tensor([[[0.1, 0.05, 0.7], [0.1, 0.05, -0.7], [-0.2, 0.1, 0.3], [-0.2, 0.1, -0.3]]])
        feats = point_features(pts, verts, faces, front, back, camera())
        cloth = feats[0, :, 4:7]
        vis = feats[0, :, 7]
        assert torch.allclose(vis, torch.tensor([1.0, 0.0, 1.0, 0.0]))
        assert torch.allclose(cloth[0::2], torch.tensor([0.0, 0.0, 1.0]).expand(2, 3), atol=1e-5)  # z > 0: front
        assert torch.allclose(cloth[1::2], torch.tensor([0.0, 0.0, -1.0]).expand(2, 3), atol=1e-5)  # z < 0: back

    def test_pixel_aligned_sampling_and_outside_image(self):
        verts, faces = sphere()
        front = torch.zeros(1, SIZE, SIZE, 3)
        front[0, :, SIZE // 2 :, 0] = 1.0  # right half of the image (x > 0) says +x
        back = torch.zeros(1, SIZE, SIZE, 3)
        pts = torch.tensor([[[0.3, 0.0, 0.6], [-0.3, 0.0, 0.6], [1.5, 0.0, 0.6]]])  # last one projects off-image
        cloth = point_features(pts, verts, faces, front, back, camera())[0, :, 4:7]
        assert torch.allclose(cloth[0], torch.tensor([1.0, 0.0, 0.0]))
        assert torch.allclose(cloth[1], torch.zeros(3))
        assert torch.allclose(cloth[2], torch.zeros(3))

    def test_sampler_matches_function_and_batches(self):
        verts, faces = sphere(2)
        verts2 = torch.cat([verts, verts + torch.tensor([0.1, 0.0, 0.0])])
        front, back = constant_maps()
        pts = torch.randn(2, 30, 3, generator=torch.Generator().manual_seed(1)) * 0.4
        a = point_features(pts, verts2, faces, front.expand(2, -1, -1, -1), back.expand(2, -1, -1, -1), camera(2))
        sampler = PointFeatureSampler(verts2, faces, front, back, camera(2))
        assert torch.allclose(a, sampler(pts), atol=1e-6)
        assert not torch.allclose(a[0], a[1])

    def test_shape_errors(self):
        verts, faces = sphere(1)
        front, back = constant_maps()
        with pytest.raises(ValueError, match="points"):
            point_features(torch.zeros(1, 3, 2), verts, faces, front, back, camera())
        with pytest.raises(ValueError, match="normal_front"):
            point_features(torch.zeros(1, 3, 3), verts, faces, front[0], back, camera())
        with pytest.raises(ValueError, match="differ"):
            point_features(torch.zeros(1, 3, 3), verts, faces, front, back[:, :32], camera())

    def test_visibility_blend(self):
        f = torch.ones(1, 2, 3)
        b = -torch.ones(1, 2, 3)
        px = torch.tensor([[[10.5, 10.5], [20.5, 20.5]]])
        maps_f = torch.ones(1, SIZE, SIZE, 3)
        out = sample_clothed_normals(maps_f, -maps_f, px, torch.tensor([[1.0, 0.25]]), (SIZE, SIZE))
        assert torch.allclose(out[0, 0], f[0, 0])
        assert torch.allclose(out[0, 1], 0.25 * f[0, 1] + 0.75 * b[0, 1])


# --------------------------------------------------------------------------------------------------------------- net
class TestImplicitNet:
    @pytest.mark.parametrize("hidden", [(256, 128, 64), (512, 256, 128), (16,)])
    def test_shapes_and_gradients(self, hidden):
        net = ImplicitNet(ImplicitConfig(hidden=hidden, skip_layers=(1,)))
        x = torch.randn(2, 7, 8, requires_grad=True)
        y = net(x)
        assert y.shape == (2, 7)
        y.sum().backward()
        assert x.grad is not None and x.grad.abs().sum() > 0
        assert all(p.grad is not None for p in net.parameters())

    def test_skip_layer_fan_in(self):
        net = ImplicitNet(ImplicitConfig(hidden=(32, 16, 8), skip_layers=(2, 3)))
        assert [lin.in_features for lin in net.layers] == [8, 32, 16 + 8, 8 + 8]

    def test_gradcheck_float64(self):
        net = ImplicitNet(ImplicitConfig(hidden=(8, 4))).double()
        x = torch.randn(3, 8, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(net, (x,))

    def test_config_validation(self):
        with pytest.raises(ValueError):
            ImplicitConfig(hiden=(1,))
        with pytest.raises(ValueError):
            ImplicitConfig(hidden=())
        with pytest.raises(ValueError, match="channels"):
            ImplicitNet()(torch.zeros(4, 5))

    def test_save_load_round_trip(self, tmp_path):
        cfg = ImplicitConfig(hidden=(32, 16), skip_layers=(1,), sdf_clip=0.3)
        net = ImplicitNet(cfg)
        path = save_implicit_net(tmp_path / "sub" / "net.safetensors", net)
        assert read_implicit_net_config(path) == cfg
        loaded = load_implicit_net(path)
        x = torch.randn(5, 8)
        assert torch.equal(net(x), loaded(x))
        assert not loaded.training

    def test_load_rejects_other_files(self, tmp_path):
        from safetensors.torch import save_file

        save_file({"a": torch.zeros(2)}, str(tmp_path / "other.safetensors"), metadata={"format": "x"})
        with pytest.raises(ValueError, match="not an implicit-net"):
            load_implicit_net(tmp_path / "other.safetensors")
        with pytest.raises(FileNotFoundError):
            load_implicit_net(tmp_path / "missing.safetensors")


# ---------------------------------------------------------------------------------------------------- reconstruction
class TestReconstructSurface:
    def test_negative_sdf_gives_the_body(self):
        verts, faces = sphere()
        front, back = constant_maps()
        v, f = reconstruct_surface(NegativeSdf(), verts[0], faces, front[0], back[0], camera(), resolution=40,
                                   coarse_resolution=11, margin=0.1)  # fmt: skip
        assert len(f) > 100 and f.min() >= 0 and f.max() < len(v)
        voxel = (2 * RADIUS + 0.2) / 39
        r = np.linalg.norm(v, axis=1)
        assert np.abs(r - RADIUS).max() < voxel
        mesh = trimesh.Trimesh(v, f, process=False)
        assert mesh.is_watertight and mesh.volume > 0  # outward faces

    def test_body_band_bounds_an_always_inside_net(self):
        verts, faces = sphere()
        front, back = constant_maps()

        class AlwaysInside(torch.nn.Module):
            config = ImplicitConfig()

            def forward(self, features: torch.Tensor) -> torch.Tensor:
                return torch.full(features.shape[:-1], 10.0)

        v, f = reconstruct_surface(AlwaysInside(), verts[0], faces, front[0], back[0], camera(), resolution=40,
                                   coarse_resolution=11, margin=0.2, body_band=(0.03, 0.08))  # fmt: skip
        r = np.linalg.norm(v, axis=1)
        voxel = (2 * RADIUS + 0.4) / 39
        assert np.abs(r - (RADIUS + 0.08)).max() < voxel
        v, f = reconstruct_surface(AlwaysInside(), verts[0], faces, front[0], back[0], camera(), resolution=24,
                                   coarse_resolution=7, body_band=None)  # fmt: skip
        assert len(f) == 0  # no level crossing without the band
        with pytest.raises(ValueError, match="body_band"):
            reconstruct_surface(AlwaysInside(), verts[0], faces, front[0], back[0], camera(), body_band=(-0.1, 0.1))

    def test_untrained_net_runs_and_errors(self):
        verts, faces = sphere(1)
        front, back = constant_maps()
        v, f = reconstruct_surface(ImplicitNet(), verts[0], faces, front[0], back[0], camera(), resolution=24,
                                   coarse_resolution=7)  # fmt: skip
        assert v.dtype == np.float32 and f.dtype == np.int64
        with pytest.raises(ValueError, match="lbs_weights"):
            reconstruct_surface(NegativeSdf(), verts[0], faces, front[0], back[0], camera(), replace_hands_feet=True)
        with pytest.raises(ValueError, match="one body"):
            reconstruct_surface(NegativeSdf(), verts, faces, front[0], back[0], camera())


@pytest.fixture(scope="module")
def body_model() -> BodyModel:
    return BodyModel()


def body_pose(seed: int | None) -> torch.Tensor:
    if seed is None:
        return torch.zeros(1, 69)
    return 0.15 * torch.randn(1, 69, generator=torch.Generator().manual_seed(seed))


def body_views(model: BodyModel, size: int = SIZE, pose_seed: int | None = None):
    """A posed body centred in front of an orthographic camera: vertices, camera, render, translation."""
    pose = body_pose(pose_seed)
    verts = model(body_pose=pose).vertices.float()
    transl = -(verts.amax(1) + verts.amin(1)) / 2
    verts = verts + transl[:, None]
    cam = OrthographicCamera(scale=torch.tensor([size / 2.2]), cx=torch.tensor([size / 2.0]),
                             cy=torch.tensor([size / 2.0]), width=size, height=size)  # fmt: skip
    ren = render_mesh(verts, model.faces, cam)
    return verts, cam, ren, transl[0]


class TestHandsFeet:
    def test_mask_selects_extremities(self, body_model):
        mask = hands_feet_vertex_mask(body_model.lbs_weights)
        assert 0 < mask.sum() < 0.5 * len(mask)
        v = body_model.v_template
        assert v[mask, 1].min() < v[~mask, 1].min() + 0.05  # the feet are the lowest vertices
        assert v[mask, 0].abs().max() > v[~mask, 0].abs().max()  # the hands reach farthest sideways in T-pose

    def test_replacement_keeps_a_valid_mesh(self, body_model):
        verts, cam, ren, _ = body_views(body_model)
        faces = body_model.faces
        # A slightly inflated body as the "reconstruction" (logit = 0.01 m - sdf).
        v, f = reconstruct_surface(NegativeSdf(), verts[0] * 1.01, faces, ren.normal_front[0], ren.normal_back[0],
                                   cam, resolution=64, coarse_resolution=17)  # fmt: skip
        mask = hands_feet_vertex_mask(body_model.lbs_weights)
        rv, rf = replace_body_parts(v, f, verts[0], faces, mask, max_distance=0.05)
        part_faces = int(mask[faces].all(dim=1).sum())
        assert rf.min() >= 0 and rf.max() < len(rv) and np.isfinite(rv).all()
        assert len(np.unique(rf)) == len(rv)  # no unreferenced vertices
        assert len(rf) > part_faces and len(rf) - part_faces < len(f)  # some faces replaced, the rest kept
        tri = rv[rf]
        area = np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
        assert (area > 0).all()
        # No kept reconstruction vertex lies on a hand or foot any more.
        kept = torch.from_numpy(rv[: len(rv) - int(torch.unique(faces[mask[faces].all(dim=1)]).numel())])
        cp = MeshBVH(verts, faces, sign_method="none").query(kept[None])
        on_part = mask[faces].all(dim=1)[cp.face_index[0]] & (cp.distance[0] < 0.05)
        assert not on_part.any()
        # Same through reconstruct_surface.
        v2, f2 = reconstruct_surface(NegativeSdf(), verts[0] * 1.01, faces, ren.normal_front[0], ren.normal_back[0],
                                     cam, resolution=64, coarse_resolution=17, replace_hands_feet=True,
                                     lbs_weights=body_model.lbs_weights)  # fmt: skip
        assert len(f2) > part_faces and f2.max() < len(v2)


# ---------------------------------------------------------------------------------------------------------- training
def fake_samples(model: BodyModel, n: int, points: int = 1500, seed: int = 0) -> list[SimpleNamespace]:
    """Bodies with a 3 cm 'garment' shell: occupancy = body SDF < 3 cm; normals of the rendered body."""
    out = []
    for i in range(n):
        verts, cam, ren, transl = body_views(model, pose_seed=seed + i)
        gen = torch.Generator().manual_seed(seed + i)
        surf = verts[0, torch.randint(verts.shape[1], (points,), generator=gen)]
        pts = (surf + 0.04 * torch.randn(points, 3, generator=gen))[None]
        sdf = MeshBVH(verts, model.faces).query(pts).signed_distance[0]
        nf, nb = ren.normal_front[0].numpy(), ren.normal_back[0].numpy()
        zero3 = np.zeros(3, np.float32)
        out.append(SimpleNamespace(
            seed=seed + i, points=pts[0].numpy(), occupancy=(sdf < 0.03).float().numpy(),
            normal_front=nf, normal_back=nb, body_normal_front=nf, body_normal_back=nb,
            fit_body=BodyParams(np.zeros((1, 10), np.float32), zero3[None], body_pose(seed + i)[0].numpy()[None],
                                transl.detach().numpy()[None]),
            camera=np.array([cam.scale[0], cam.cx[0], cam.cy[0]], np.float32), vertices=np.zeros((0, 3), np.float32),
            faces=np.zeros((0, 3), np.int64),
        ))  # fmt: skip
    return out


@pytest.fixture(scope="module")
def tiny_sets(body_model):
    return fake_samples(body_model, 3, seed=0), fake_samples(body_model, 1, seed=10)


class TestTraining:
    def test_feature_cache_matches_point_features(self, body_model, tiny_sets):
        train, _ = tiny_sets
        cache = build_feature_cache(train[:1], body_model, max_points=100)
        assert cache.sdf.shape == (1, 100) and cache.normal_front.shape == (1, SIZE, SIZE, 3)
        # The cached SDF is the fitted body's: the fake labels are "SDF < 3 cm".
        assert torch.equal(cache.occupancy[0] > 0.5, cache.sdf[0] < 0.03)
        exact = sample_degraded_normals(cache, torch.tensor([0]), cache.pixels, cache.visibility,
                                        ImplicitTrainConfig(gt_normal_probability=1.0))  # fmt: skip
        full = sample_clothed_normals(
            cache.normal_front, cache.normal_back, cache.pixels, cache.visibility, (SIZE,) * 2
        )
        assert torch.allclose(exact, full)
        degraded = sample_degraded_normals(cache, torch.tensor([0]), cache.pixels, cache.visibility,
                                           ImplicitTrainConfig(gt_normal_probability=0.0, noise_max=0.5),
                                           torch.Generator().manual_seed(0))  # fmt: skip
        assert degraded.norm(dim=-1).max() <= 1.0 + 1e-5
        assert not torch.allclose(degraded, full)

    def test_refined_fits_replace_the_fit_and_feed_predicted_normals(self, body_model, tiny_sets, tmp_path):
        train, _ = tiny_sets
        s = train[0]
        shifted = np.asarray(s.fit_body.transl[0], np.float32) + np.array([0.0, 0.0, 0.1], np.float32)
        predicted = np.zeros((SIZE, SIZE, 3), np.float16)
        predicted[..., 2] = 1.0  # a constant "predicted" normal map, unlike the exact sphere normals
        fit = {k: v[0] for k, v in s.fit_body.to_npz_dict().items()}
        np.savez(tmp_path / f"{s.seed}.npz", **{**fit, "transl": shifted}, normal_front=predicted,
                 normal_back=-predicted)  # fmt: skip
        refined = with_refined_fits(train, load_refined_fits(tmp_path))
        assert len(refined) == 1 and refined[0].seed == s.seed  # samples without a refined file are dropped
        assert np.allclose(refined[0].fit_body.transl[0], shifted)
        assert np.allclose(s.fit_body.transl[0], shifted - [0, 0, 0.1])
        base = build_feature_cache([s], body_model, max_points=200, seed=3)
        cache = build_feature_cache(refined, body_model, max_points=200, seed=3)
        # Body features come from the refined fit: the body moved 10 cm along z, so the SDF changed.
        assert not torch.allclose(cache.sdf, base.sdf) and base.predicted_front is None
        assert cache.predicted_front.shape == (1, SIZE, SIZE, 3) and cache.predicted_front.dtype == torch.float16
        idx = torch.tensor([0])
        seen = sample_degraded_normals(cache, idx, cache.pixels, cache.visibility,
                                       ImplicitTrainConfig(gt_normal_probability=0.0, predicted_normal_probability=1.0))
        want = sample_clothed_normals(cache.predicted_front.float(), cache.predicted_back.float(), cache.pixels,
                                      cache.visibility, (SIZE,) * 2)  # fmt: skip
        assert torch.allclose(seen, want)
        with pytest.raises(ValueError, match="all or none"):
            build_feature_cache([refined[0], train[1]], body_model, max_points=200)
        with pytest.raises(ValueError, match="no refined fits"):
            load_refined_fits(tmp_path / "empty")

    def test_short_run_lowers_bce_and_resumes(self, body_model, tiny_sets, tmp_path):
        train, held = tiny_sets
        cfg = ImplicitTrainConfig(steps=40, batch_samples=3, points_per_sample=512, cached_points=1000, warmup=5,
                                  lr=3e-3, checkpoint_every=20, eval_every=40, reconstructions=0)  # fmt: skip
        net_cfg = ImplicitConfig(hidden=(32, 32, 16))
        held_cache = build_feature_cache(held, body_model, net_cfg, max_points=1000)
        torch.manual_seed(0)
        before = evaluate_occupancy(ImplicitNet(net_cfg), held_cache).bce
        ckpt = tmp_path / "ckpt"
        result = train_implicit(train, held, body_model, cfg, net_cfg, out_path=tmp_path / "net.safetensors",
                                checkpoint_dir=ckpt, log_every=5)  # fmt: skip
        assert result.steps == 40 and (tmp_path / "net.safetensors").exists()
        assert result.losses[-1][1] < result.losses[0][1]
        after = result.occupancy[-1]
        assert after.bce < before
        assert after.accuracy > 0.8
        state = read_checkpoint_state(ckpt)
        assert state["step"] == 40
        # Resume: more steps continue from the checkpoint.
        more = train_implicit(train, None, body_model, cfg.model_copy(update={"steps": 45}), out_path=None,
                              checkpoint_dir=ckpt, log_every=5)  # fmt: skip
        assert more.steps == 45 and read_checkpoint_state(ckpt)["step"] == 45
        assert more.net.config == net_cfg


# ---------------------------------------------------------------------------------------------------- shipped weights
@pytest.mark.slow
@pytest.mark.skipif(not SHIPPED.exists(), reason=f"{SHIPPED.relative_to(REPO)} not trained yet")
def test_shipped_weights_beat_the_naked_body(body_model):
    from geometry.metrics import reconstruction_metrics
    from icon.synth import HELDOUT_SEED_START, SynthConfig, make_sample
    from icon.synth.sample import body_vertices

    net = load_implicit_net(SHIPPED)
    s = make_sample(HELDOUT_SEED_START + 500, body_model, SynthConfig(num_points=0))
    fit, _ = body_vertices(body_model, s.fit_body)
    v, f = reconstruct_surface(net, fit, body_model.faces, torch.from_numpy(s.normal_front),
                               torch.from_numpy(s.normal_back), s.orthographic_camera(), resolution=128)  # fmt: skip
    gt_v, gt_f = torch.from_numpy(s.vertices), torch.from_numpy(s.faces)
    rec = reconstruction_metrics(torch.from_numpy(v), torch.from_numpy(f), gt_v, gt_f, n_samples=5000)
    body = reconstruction_metrics(fit, body_model.faces, gt_v, gt_f, n_samples=5000)
    assert float(rec.chamfer) < float(body.chamfer), (float(rec.chamfer), float(body.chamfer))
