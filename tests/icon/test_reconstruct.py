"""icon.reconstruct: refine + normals + clothed surface (integrated, implicit, fused) in one call, with the shipped
weights."""


import numpy as np
import pytest
import torch
import trimesh

from body import BodyModel
from flows.bundled import weights_path
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net
from icon.reconstruct import ReconstructConfig, clothed_surfaces, reconstruct
from icon.refine import RefineConfig
from icon.synth import SynthConfig, make_sample
from tests.quality import Floor, FloorChecks

WEIGHTS = weights_path("normal_net").parent


@pytest.fixture(scope="module")
def setup():
    model = BodyModel()
    sample = make_sample(1_000_007, model, SynthConfig(image_size=128, grid_resolution=64, num_points=64))
    normal = load_normal_net(WEIGHTS / "normal_net.safetensors")
    implicit = load_implicit_net(WEIGHTS / "implicit_net.safetensors")
    return model, sample, normal, implicit


def test_reconstruct_one_frame(setup):
    model, sample, normal, implicit = setup
    cfg = ReconstructConfig(
        resolution=64, coarse_resolution=16, refine=RefineConfig(iterations=6, repredict_every=3, render_resolution=64)
    )
    stages = []
    rec = reconstruct(
        model,
        sample.rgb[None],
        sample.mask[None],
        sample.fitted_body(),
        normal,
        implicit,
        cfg,
        progress=lambda s, i, n: stages.append(s),
    )
    assert len(rec.meshes) == 1
    v, f = rec.meshes[0]
    assert v.shape[1] == 3 and f.shape[1] == 3 and len(f) > 100
    assert rec.losses.shape == (1, 6)
    finite = rec.losses[0][torch.isfinite(rec.losses[0])]
    assert finite[-1] <= finite[0]
    assert rec.normals_front.shape == (1, 128, 128, 3) and rec.body_vertices.shape == (1, model.num_vertices, 3)
    # how close the surface comes to the truth is asserted by test_shipped_reconstruction_quality_floors
    lo, hi = rec.body_vertices[0].amin(0).numpy(), rec.body_vertices[0].amax(0).numpy()
    assert {"refine", "surface"} <= set(rec.seconds)
    assert "surface" in stages
    assert cfg.surface == "integrated"
    mesh = trimesh.Trimesh(v, f, process=True)
    assert mesh.is_watertight and len(mesh.split(only_watertight=False)) == 1 and mesh.volume > 0
    # the other surfaces from the same refined fit: each lies around the body; the implicit one as before
    for kind in ("implicit", "fused"):
        body, meshes = clothed_surfaces(model, rec.fit, rec.normals_front, rec.normals_back,
                                        torch.as_tensor(sample.mask[None]), implicit, cfg, surface=kind)  # fmt: skip
        vk, fk = meshes[0]
        assert len(fk) > 100 and np.all(vk.min(0) < hi) and np.all(vk.max(0) > lo)
        assert torch.allclose(body.cpu(), rec.body_vertices)
    with pytest.raises(ValueError, match="implicit net"):
        clothed_surfaces(model, rec.fit, rec.normals_front, rec.normals_back, torch.as_tensor(sample.mask[None]), None,
                         cfg, surface="fused")  # fmt: skip


def test_reconstruct_checks_shapes(setup):
    model, sample, normal, implicit = setup
    with pytest.raises(ValueError, match="images must be"):
        reconstruct(model, sample.rgb, sample.mask[None], sample.fitted_body(), normal, implicit)
    with pytest.raises(ValueError, match="masks must be"):
        reconstruct(model, sample.rgb[None], sample.mask[None, :64], sample.fitted_body(), normal, implicit)


# Quality floors of the per-frame reconstruction (shipped normal + implicit nets) on the 8 fixture frames
# (tests/data/quality_frames.npz) from the generator's perturbed fit, without keypoints, at test settings (64^3 grid,
# 10 refinement steps). Chamfer in cm against the ground-truth clothed mesh, 5,000 samples per surface.
# Measured (deterministic on CPU; fourth session, integrated surface with the silhouette hull, rounded sides and
# smoothing): reconstruction mean 3.617, ratio to the initial fit 0.824, per-frame excess over the initial fit at most
# -0.17 cm. With untrained nets in place of the shipped weights (the net then returns the body normals): 3.841 / 0.875
# / +0.39, so the integrated surface still gains from refinement alone and the bounds sit between the two. (Set first
# with the implicit surface: 3.781 / 0.861 / +0.66.) Bounds: mean 3.75 (+0.13), ratio 0.85 (+0.026), excess 0.15 cm
# (+0.32); the untrained nets break all three.
RECON_FLOORS = {
    "mean_chamfer_cm": Floor(3.75, measured=3.617),
    "mean_ratio_to_initial": Floor(0.85, measured=0.824),
    "max_excess_over_initial_cm": Floor(0.15, measured=-0.172),
}


@pytest.mark.slow
def test_shipped_reconstruction_quality_floors():
    from body.params import BodyParams
    from geometry.metrics import reconstruction_metrics
    from icon.fit import BodyFit
    from tests.icon.quality_frames import load_quality_frames

    frames = load_quality_frames()
    model = BodyModel()
    fits = [f.fitted_body() for f in frames]
    fit = BodyFit(body=BodyParams.cat([f.body for f in fits]),
                  **{k: torch.cat([getattr(f, k) for f in fits]) for k in ("camera", "losses", "keypoint_error_px")},
                  image_size=frames[0].rgb.shape[0])  # fmt: skip
    cfg = ReconstructConfig(resolution=64, coarse_resolution=16,
                            refine=RefineConfig(iterations=10, render_resolution=128))  # fmt: skip
    rec = reconstruct(model, np.stack([f.rgb for f in frames]), np.stack([f.mask for f in frames]), fit,
                      load_normal_net(WEIGHTS / "normal_net.safetensors"),
                      load_implicit_net(WEIGHTS / "implicit_net.safetensors"), cfg)  # fmt: skip
    with torch.no_grad():
        initial = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose,
                        transl=fit.transl).vertices  # fmt: skip
    ours, init = [], []
    for i, f in enumerate(frames):
        gt_v, gt_f = torch.from_numpy(f.vertices), torch.from_numpy(f.faces)
        v, fa = rec.meshes[i]
        ours.append(float(reconstruction_metrics(torch.as_tensor(v), torch.as_tensor(fa).long(), gt_v, gt_f,
                                                 n_samples=5000).chamfer))  # fmt: skip
        init.append(float(reconstruction_metrics(initial[i], model.faces, gt_v, gt_f, n_samples=5000).chamfer))
    ours, init = np.array(ours), np.array(init)
    checks = FloorChecks("per-frame reconstruction, 8 fixture frames",
                         f"Chamfer {ours.round(3)} vs initial {init.round(3)}")
    checks.check("mean_chamfer_cm", ours.mean(), RECON_FLOORS["mean_chamfer_cm"])
    checks.check("mean_ratio_to_initial", ours.mean() / init.mean(), RECON_FLOORS["mean_ratio_to_initial"])
    checks.check("max_excess_over_initial_cm", (ours - init).max(), RECON_FLOORS["max_excess_over_initial_cm"])
    checks.assert_all()
