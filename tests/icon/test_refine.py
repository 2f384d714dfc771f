"""SMPL feedback loop against synthetic clips with known β, θ, t and an oracle normal predictor."""

from __future__ import annotations

import math

import pytest
import torch
from pydantic import ValidationError

from body import BodyModel, BodyParams, mediapipe_landmarks_3d
from geometry.cameras import OrthographicCamera
from geometry.diffrender import edge_topology, silhouette_loss
from geometry.render import render_mesh
from icon.fit import BodyFit
from icon.refine import RefineConfig, clothed_silhouette_loss, downsample_targets, refine_body, refinement_loss
from icon.synth.clip import make_clip
from tests.devices import DEVICES


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    """Tiny tensors: intra-op threads only add synchronisation (≈7x slower on a loaded 2-core machine)."""
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def _true_fit(clip, image_size: int | None = None) -> BodyFit:
    S = clip.size
    k = (image_size or S) / S
    cam = torch.stack([clip.camera.scale, clip.camera.cx, clip.camera.cy], dim=-1) * k
    body = BodyParams(clip.betas.clone(), clip.global_orient.clone(), clip.body_pose.clone(), clip.transl.clone())
    return BodyFit.from_params(body, cam, image_size or S)


def _perturbed_fit(clip, seed: int = 0) -> BodyFit:
    """Ground truth + noise on pose (0.1 rad), orientation (0.1 rad), x/y translation (3 cm) and camera scale (5%)."""
    fit = _true_fit(clip)
    T = fit.body_pose.shape[0]
    g = torch.Generator().manual_seed(seed)
    fit.body = fit.body.replace(body_pose=fit.body_pose + 0.1 * torch.randn(T, 69, generator=g),
                                global_orient=fit.global_orient + 0.1 * torch.randn(T, 3, generator=g))
    fit.transl[:, :2] += 0.03 * torch.randn(T, 2, generator=g)
    fit.camera[:, 0] *= 1 + 0.05 * torch.randn(T, generator=g).clamp(-2, 2)
    return fit


class Oracle:
    """Returns the true body's normal maps whatever it is given, and records its inputs."""

    def __init__(self, model, clip):
        with torch.no_grad():
            out = model(betas=clip.betas, global_orient=clip.global_orient, body_pose=clip.body_pose,
                        transl=clip.transl)
        r = render_mesh(out.vertices, model.faces, clip.camera)
        self.front, self.back = r.normal_front, r.normal_back
        self.calls: list[tuple[torch.Tensor, ...]] = []
        self.steps_done: list[int] = [0]  # fed by refine_body's progress callback
        self.called_after: list[int] = []  # steps taken before each call

    def __call__(self, images, masks, body_front, body_back):
        self.calls.append((images, masks, body_front.clone(), body_back.clone()))
        self.called_after.append(self.steps_done[-1])
        return self.front.to(images.device), self.back.to(images.device)


def _errors(model, fit: BodyFit, clip) -> tuple[float, float]:
    """Mean 3D joint error (cm) and mean 2D landmark error (px) against the clip's ground truth."""
    with torch.no_grad():
        true = model(betas=clip.betas, global_orient=clip.global_orient, body_pose=clip.body_pose, transl=clip.transl)
        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
        lm, ok = mediapipe_landmarks_3d(model, out)
        uv = fit.cameras(clip.size).project(lm)
    joint_cm = float((out.joints - true.joints).norm(dim=-1).mean()) * 100
    kp_px = float((uv - clip.keypoints[..., :2]).norm(dim=-1)[:, ok].mean())
    return joint_cm, kp_px


def _images(clip) -> torch.Tensor:
    return (clip.masks[..., None] * 200).to(torch.uint8).expand(-1, -1, -1, 3).contiguous()


@pytest.fixture(scope="module")
def refined(model):
    clip = make_clip(model, n_frames=3, size=96, seed=3)
    start = _perturbed_fit(clip)
    oracle = Oracle(model, clip)
    cfg = RefineConfig(iterations=30, repredict_every=10, optimise_camera=True, render_resolution=96)
    result = refine_body(model, start, _images(clip), clip.masks, oracle, cfg,
                         progress=lambda stage, i, n: oracle.steps_done.append(i))
    return clip, start, oracle, cfg, result, oracle.steps_done[1:]


def test_refine_improves_a_perturbed_fit(model, refined):
    clip, start, _, cfg, result, _ = refined
    first = result.losses[:, 0].mean()
    last = result.losses[:, result.steps - 1].mean()
    assert last < 0.5 * first, (first, last)
    joint0, kp0 = _errors(model, start, clip)
    joint1, kp1 = _errors(model, result.fit, clip)
    assert joint1 < 0.5 * joint0, (joint0, joint1)
    assert kp1 < 0.5 * kp0, (kp0, kp1)
    assert result.fit.losses.mean() < first


def test_refine_shapes_and_shared_betas(refined):
    clip, start, oracle, cfg, result, steps = refined
    T, S = clip.masks.shape[:2]
    fit = result.fit
    assert fit.betas.shape == (T, 10) and torch.equal(fit.betas, fit.betas[:1].expand_as(fit.betas))
    assert fit.body_pose.shape == (T, 69) and fit.global_orient.shape == (T, 3) and fit.transl.shape == (T, 3)
    assert fit.camera.shape == (T, 3) and fit.image_size == start.image_size
    # the weak-perspective camera cannot see depth: z stays; cx, cy stay (the translation covers shifts)
    assert torch.equal(fit.transl[:, 2], start.transl[:, 2]) and torch.equal(fit.camera[:, 1:], start.camera[:, 1:])
    assert not torch.equal(fit.camera[:, 0], start.camera[:, 0])
    assert result.losses.shape == (T, cfg.iterations)
    assert torch.isfinite(result.losses[:, : result.steps]).all()
    assert result.normals_front.shape == (T, S, S, 3) and result.normals_back.shape == (T, S, S, 3)
    assert torch.equal(result.normals_front, oracle.front)
    assert len(fit.history) == result.steps and steps == list(range(1, result.steps + 1))
    assert torch.isnan(fit.keypoint_error_px).all()  # no keypoints given


def test_predictor_called_every_k_steps_with_updated_body(model, refined):
    clip, start, oracle, cfg, result, _ = refined
    # steps 0, 10, 20, then once more after the last step
    expected = math.ceil(result.steps / cfg.repredict_every) + 1
    assert result.predictions == len(oracle.calls) == expected
    assert oracle.called_after == [0, 10, 20, 30]
    images, masks, front0, back0 = oracle.calls[0]
    assert images.dtype == torch.uint8 and images.shape == (*clip.masks.shape, 3) and torch.equal(masks, clip.masks)
    with torch.no_grad():
        out = model(betas=start.betas, global_orient=start.global_orient, body_pose=start.body_pose,
                    transl=start.transl)
    r = render_mesh(out.vertices, model.faces, start.cameras(clip.size))
    # (β enters as one broadcast row there: float rounding differs at a few grazing pixels)
    torch.testing.assert_close(front0, r.normal_front, atol=1e-3, rtol=0)
    torch.testing.assert_close(back0, r.normal_back, atol=1e-3, rtol=0)
    for (_, _, f_prev, _), (_, _, f_next, _) in zip(oracle.calls, oracle.calls[1:], strict=False):
        assert (f_prev - f_next).abs().mean() > 1e-3  # the body moved between predictions
    # the body normals of the last call come closer to the truth than those of the first
    err = [float((c[2] - oracle.front).abs().mean()) for c in oracle.calls]
    assert err[-1] < 0.5 * err[0], err


@pytest.mark.parametrize("device", DEVICES)
def test_early_stop_on_flat_loss(model, device):
    clip = make_clip(model, n_frames=2, size=64, seed=4)
    oracle = Oracle(model, clip)
    cfg = RefineConfig(iterations=30, lr=1e-9, early_stop_patience=3, render_resolution=64)
    dev_model = model.to(device)
    try:
        result = refine_body(dev_model, _true_fit(clip), _images(clip), clip.masks, oracle, cfg,
                             keypoints=clip.keypoints)
    finally:
        model.to("cpu")
    # the first step sets the best loss, then three steps without improvement
    assert result.steps == 4
    assert torch.isfinite(result.losses[:, :4]).all() and torch.isnan(result.losses[:, 4:]).all()
    assert result.predictions == 2  # at step 0 and after the last step
    assert result.fit.body_pose.device.type == device and result.losses.device.type == device
    assert result.normals_front.device.type == device
    assert torch.isfinite(result.fit.keypoint_error_px).all() and (result.fit.keypoint_error_px < 1.0).all()


def test_refinement_loss_gradients_and_minimum(model):
    clip = make_clip(model, n_frames=2, size=64, seed=5)
    oracle = Oracle(model, clip)
    targets = downsample_targets(oracle.front, oracle.back, clip.masks, 48)
    assert targets.normals_front.shape == (2, 48, 48, 3) and targets.region.dtype == torch.bool
    norms = targets.normals_front.norm(dim=-1)
    torch.testing.assert_close(norms[targets.region], torch.ones_like(norms[targets.region]))
    cfg = RefineConfig(w_keypoints=0.1)
    topo = edge_topology(model.faces)

    def loss_at(fit: BodyFit, grad: bool):
        betas = fit.betas[:1].clone().requires_grad_(grad)
        orient = fit.global_orient.clone().requires_grad_(grad)
        pose = fit.body_pose.clone().requires_grad_(grad)
        transl = fit.transl.clone().requires_grad_(grad)
        log_scale = fit.camera[:, 0].log().clone().requires_grad_(grad)
        cam = OrthographicCamera(log_scale.exp(), fit.camera[:, 1], fit.camera[:, 2], clip.size, clip.size)
        terms = refinement_loss(model, betas, orient, pose, transl, cam, targets, cfg, clip.keypoints, topo)
        return terms, (betas, orient, pose, transl, log_scale)

    true_terms, _ = loss_at(_true_fit(clip), grad=False)
    terms, params = loss_at(_perturbed_fit(clip, seed=1), grad=True)
    for t in (terms.normal_front, terms.normal_back, terms.silhouette, terms.keypoints, terms.prior, terms.total):
        assert t.shape == (2,)
    assert (terms.total > true_terms.total).all()
    assert (true_terms.keypoints < 1e-3).all() and (terms.keypoints > 10 * true_terms.keypoints).all()
    assert (terms.silhouette > true_terms.silhouette).all() and (terms.normal_front > true_terms.normal_front).all()
    terms.total.sum().backward()
    for name, p in zip(("betas", "orient", "pose", "transl", "log_scale"), params, strict=True):
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, name


def test_frozen_betas_and_camera(model):
    clip = make_clip(model, n_frames=2, size=64, seed=6)
    start = _perturbed_fit(clip)
    cfg = RefineConfig(iterations=3, optimise_betas=False, render_resolution=64)
    result = refine_body(model, start, _images(clip), clip.masks, Oracle(model, clip), cfg)
    assert torch.equal(result.fit.betas, start.betas) and torch.equal(result.fit.camera, start.camera)
    assert not torch.equal(result.fit.body_pose, start.body_pose)


def test_fit_at_another_crop_size(model):
    # the same true body described by a fit for 128-px crops, refined on 64-px images: the loss stays at its minimum
    clip = make_clip(model, n_frames=2, size=64, seed=7)
    cfg = RefineConfig(iterations=1, lr=1e-9, render_resolution=64, optimise_camera=True)
    images = _images(clip)
    a = refine_body(model, _true_fit(clip), images, clip.masks, Oracle(model, clip), cfg)
    b = refine_body(model, _true_fit(clip, image_size=128), images, clip.masks, Oracle(model, clip), cfg)
    torch.testing.assert_close(a.losses, b.losses)
    assert b.fit.image_size == 128
    torch.testing.assert_close(b.fit.camera, _true_fit(clip, image_size=128).camera)


def test_bad_inputs_raise(model):
    clip = make_clip(model, n_frames=2, size=64, seed=8)
    fit = _true_fit(clip)
    images = _images(clip)
    oracle = Oracle(model, clip)
    cfg = RefineConfig(iterations=1, render_resolution=64)
    with pytest.raises(ValueError, match="images"):
        refine_body(model, fit, images[:, :32], clip.masks, oracle, cfg)
    with pytest.raises(ValueError, match="frames"):
        refine_body(model, fit, images[:1], clip.masks[:1], oracle, cfg)
    with pytest.raises(ValueError, match="masks"):
        refine_body(model, fit, images, clip.masks[:, :32], oracle, cfg)
    with pytest.raises(ValueError, match="keypoints"):
        refine_body(model, fit, images, clip.masks, oracle, cfg, keypoints=clip.keypoints[:, :10])
    with pytest.raises(ValueError, match="predictor"):
        refine_body(model, fit, images, clip.masks, lambda *a: (oracle.front[:, :32], oracle.back), cfg)
    with pytest.raises(ValidationError):
        RefineConfig(iterashuns=10)
    with pytest.raises(ValidationError):
        RefineConfig(repredict_every=0)


def test_clothed_silhouette_loss_is_asymmetric():
    """A body inside a wider clothed mask costs only ``uncovered`` × the uncovered area; the same area of body outside
    the mask costs fully; uncovered = 1 is the symmetric L1."""
    mask = torch.zeros(1, 10, 10)
    mask[0, 2:8, 2:8] = 1.0  # 36 px of clothed person
    inside = torch.zeros(1, 10, 10)
    inside[0, 3:7, 3:7] = 1.0  # 16 px of body inside it: 20 px uncovered
    outside = mask.clone()
    outside[0, 0:2, 0:10] = 1.0  # the whole mask plus 20 px of body outside it
    assert float(clothed_silhouette_loss(inside, mask, 0.25)) == pytest.approx(0.25 * 20 / 100)
    assert float(clothed_silhouette_loss(outside, mask, 0.25)) == pytest.approx(20 / 100)
    for soft in (inside, outside, torch.rand(1, 10, 10, generator=torch.Generator().manual_seed(0))):
        torch.testing.assert_close(clothed_silhouette_loss(soft, mask, 1.0), silhouette_loss(soft, mask, "l1"))
