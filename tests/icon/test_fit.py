"""Body fit against synthetic clips rendered from the body model with known β, θ, t."""

import math

import pytest
import torch

from body import BodyModel
from geometry.render import render_mesh
from icon.fit import BodyFit, FitConfig, bend_prior, fit_body, geman_mcclure, initial_camera, temporal_smoothness
from icon.synth.clip import make_clip


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def _iou(fit: BodyFit, model, masks):
    with torch.no_grad():
        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
    r = render_mesh(out.vertices, model.faces, fit.cameras())
    return (r.mask & masks).sum((1, 2)).float() / (r.mask | masks).sum((1, 2)).float()


@pytest.fixture(scope="module")
def clip_and_fit(model):
    clip = make_clip(model, n_frames=8, size=256, seed=1)
    fit = fit_body(model, clip.keypoints, clip.masks, 256, FitConfig())
    return clip, fit


def test_fit_recovers_keypoints_and_silhouette(model, clip_and_fit):
    clip, fit = clip_and_fit
    T = clip.keypoints.shape[0]
    assert fit.body_pose.shape == (T, 69) and fit.global_orient.shape == (T, 3) and fit.camera.shape == (T, 3)
    # error measured at 256 px; the acceptance bound is 5 px at 512²
    assert fit.keypoint_error_px.mean() * 512 / 256 < 5.0
    iou = _iou(fit, model, clip.masks)
    assert iou.mean() >= 0.85, iou
    # one β for the whole clip
    assert torch.equal(fit.betas, fit.betas[:1].expand_as(fit.betas))
    # the clip turns by 0.8 rad; the fitted yaw follows within ~0.25 rad
    yaw_err = (fit.global_orient[:, 1] - clip.global_orient[:, 1]).abs()
    assert yaw_err.mean() < 0.25, yaw_err


def test_fit_finds_a_body_seen_from_behind(model):
    clip = make_clip(model, n_frames=2, size=128, seed=2, turn=0.0)
    # rotate the ground truth by π about the up axis and re-render
    go = torch.tensor([[0.0, math.pi, 0.0]]).expand(2, -1)
    clip2 = make_clip_with_orient(model, clip, go)
    cfg = FitConfig(silhouette_iters=0, pose_iters=40)
    fit = fit_body(model, clip2.keypoints, None, 128, cfg)
    # axis-angle of a π turn about y: |angle| ≈ π with axis ±y
    angle = fit.global_orient.norm(dim=-1)
    assert ((angle - math.pi).abs() < 0.4).all(), fit.global_orient


def make_clip_with_orient(model, clip, global_orient):
    from body import mediapipe_landmarks_3d

    with torch.no_grad():
        out = model(betas=clip.betas, global_orient=global_orient, body_pose=clip.body_pose, transl=clip.transl)
        lm, ok = mediapipe_landmarks_3d(model, out)
    uv = clip.camera.project(lm)
    clip.keypoints = torch.cat([uv, ok.float()[None, :, None].expand(uv.shape[0], -1, 1)], dim=-1)
    clip.body = clip.body.replace(global_orient=global_orient)
    return clip


def test_outlier_keypoints_are_down_weighted(model):
    clip = make_clip(model, n_frames=4, size=128, seed=3)
    bad = clip.keypoints.clone()
    bad[1, 15, :2] += 60.0  # left wrist thrown far away in one frame
    cfg = FitConfig(silhouette_iters=0, pose_iters=60)
    fit = fit_body(model, bad, None, 128, cfg)
    with torch.no_grad():
        from body import mediapipe_landmarks_3d

        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
        uv = fit.cameras().project(mediapipe_landmarks_3d(model, out)[0])
    err_other = (uv[1] - clip.keypoints[1, :, :2]).norm(dim=-1)
    keep = torch.ones(33, dtype=torch.bool)
    keep[[15, 17, 19, 21]] = False  # the wrist and its hand landmarks
    assert err_other[keep].mean() < 3.0


def test_input_shapes_are_checked(model):
    with pytest.raises(ValueError, match="keypoints must be"):
        fit_body(model, torch.zeros(2, 17, 3), None, 64)
    with pytest.raises(ValueError, match="masks"):
        fit_body(model, torch.zeros(2, 33, 3), torch.zeros(3, 64, 64, dtype=torch.bool), 64)


def test_priors_and_helpers():
    r2 = torch.tensor([0.0, 1.0, 1e6])
    rho = geman_mcclure(r2, 10.0)
    assert rho[0] == 0 and rho[1] < 1.0 and rho[2] < 100.0  # bounded by σ²
    pose = torch.zeros(2, 69)
    assert torch.allclose(bend_prior(pose), torch.zeros(2))
    wrong = pose.clone()
    wrong[:, 9] = -1.0  # left knee bent forwards
    right = pose.clone()
    right[:, 9] = 1.0
    assert bend_prior(wrong)[0] > bend_prior(right)[0]
    x = torch.tensor([[0.0], [1.0], [3.0]])
    assert torch.allclose(temporal_smoothness(x), torch.tensor([0.0, 1.0, 4.0]))
    kp = torch.zeros(1, 33, 3)
    kp[0, :, 2] = 1
    kp[0, :, 1] = torch.linspace(100, 400, 33)
    kp[0, :, 0] = 256
    scale, txy = initial_camera(kp, 512, 0.3)
    assert scale.item() == pytest.approx(300 / (0.9 * 1.7), rel=1e-4)


def test_body_fit_from_params():
    from body import BodyParams

    body = BodyParams.zeros(3)
    fit = BodyFit.from_params(body, torch.tensor([[100.0, 64.0, 64.0]]).expand(3, -1), 128)
    assert fit.body is body and fit.betas.shape == (3, 10) and fit.image_size == 128
    assert fit.losses.shape == (3,) and float(fit.keypoint_error_px.abs().sum()) == 0
    assert fit.cameras().scale.shape == (3,) and fit.detach().body_pose.shape == (3, 69)
    with pytest.raises(ValueError, match="camera"):
        BodyFit.from_params(body, torch.zeros(2, 3), 128)
