"""Body fit against synthetic clips rendered from the body model with known β, θ, t."""

import math

import pytest
import torch

from body import BodyModel
from geometry.cameras import PerspectiveCamera
from geometry.render import render_mesh
from icon.fit import (
    BodyFit,
    FitConfig,
    FitParams,
    facing_yaw,
    fit_body,
    initial_camera,
    limb_swap_permutations,
    prepare_fit_data,
    select_facing_track,
    select_limb_labels,
)
from icon.synth.clip import make_clip
from tests.quality import Floor, FloorChecks


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def _iou(fit: BodyFit, model, masks):
    with torch.no_grad():
        out = model(betas=fit.betas, global_orient=fit.global_orient, body_pose=fit.body_pose, transl=fit.transl)
    r = render_mesh(out.vertices, model.faces, fit.cameras())
    return (r.mask & masks).sum((1, 2)).float() / (r.mask | masks).sum((1, 2)).float()


# Yaw floors of the body fit on the 8-frame synthetic clip (seed 1), which turns linearly from -0.4 to +0.4 rad: true
# yaws ±0.057, ±0.171, ±0.286, ±0.400. The best constant yaw (any value between the two middle frames, e.g. 0) is off by
# (0.057 + 0.171 + 0.286 + 0.400) · 2 / 8 = 0.229 rad on average and 0.400 at the ends. Measured 2026-12-03: mean
# error 0.037 rad, max 0.106 (frame 5). Bounds: mean 0.08 (margin 0.043; a constant yaw exceeds it 2.9×), max 0.2
# (margin 0.094; a constant yaw's 0.4 fails it too).
YAW_FLOORS = {
    "mean_yaw_error_rad": Floor(0.08, measured=0.037),
    "max_yaw_error_rad": Floor(0.2, measured=0.106),
}


@pytest.fixture(scope="module")
def clip_and_fit(model):
    clip = make_clip(model, n_frames=8, size=256, seed=1)
    # The clip is rendered with a weak-perspective camera, so the fit is told so: with camera="auto" (the default) the
    # half-length comparison picks the perspective camera here and the mean yaw error rises to 0.10 rad (measured
    # 2026-12-03), a known weakness of the automatic camera choice (issue 14 note).
    fit = fit_body(model, clip.keypoints, clip.masks, 256, FitConfig(camera="weak"))
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
    # the clip turns by 0.8 rad: the fitted yaw must follow the turn, not sit at a constant
    yaw_err = (fit.global_orient[:, 1] - clip.global_orient[:, 1]).abs()
    true_yaw = clip.global_orient[:, 1]
    best_constant = float((true_yaw - true_yaw.median()).abs().mean())
    assert best_constant > 2 * YAW_FLOORS["mean_yaw_error_rad"].bound  # a constant yaw fails by a wide margin
    checks = FloorChecks("body fit on the synthetic clip", f"yaw errors {yaw_err.numpy().round(3)}")
    checks.check("mean_yaw_error_rad", yaw_err.mean(), YAW_FLOORS["mean_yaw_error_rad"])
    checks.check("max_yaw_error_rad", yaw_err.max(), YAW_FLOORS["max_yaw_error_rad"])
    checks.assert_all()


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


def test_initial_camera():
    kp = torch.zeros(1, 33, 3)
    kp[0, :, 2] = 1
    kp[0, :, 1] = torch.linspace(100, 400, 33)
    kp[0, :, 0] = 256
    scale, txy = initial_camera(kp, 512, 0.3)
    assert scale.item() == pytest.approx(300 / (0.9 * 1.7), rel=1e-4)


# ------------------------------------------------------------------------------------------- 3D landmarks and facing
def _rot_y(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, 0.0, s], [0.0, 1.0, 0.0], [-s, 0.0, c]])


def _landmarks(model, betas, orient, pose, transl=None):
    from body import mediapipe_landmarks_3d

    with torch.no_grad():
        out = model(betas=betas, global_orient=orient, body_pose=pose, transl=transl)
        return mediapipe_landmarks_3d(model, out)[0]


def _as_mediapipe_world(lm: torch.Tensor) -> torch.Tensor:
    """Body landmarks (camera axes, y up, z to the camera) → MediaPipe world landmarks: hip-centred, y down, z away,
    visibility 1 — (T, 33, 4)."""
    hips = lm[:, [23, 24]].mean(dim=1, keepdim=True)
    mp = (lm - hips) * torch.tensor([1.0, -1.0, -1.0])
    return torch.cat([mp, torch.ones(*mp.shape[:2], 1)], dim=-1)


def test_facing_yaw():
    orient = torch.tensor([[0.0, 0.0, 0.0], [0.0, math.pi / 2, 0.0], [0.0, -2.5, 0.0]])
    assert torch.allclose(facing_yaw(orient), torch.tensor([0.0, math.pi / 2, -2.5]), atol=1e-5)


def test_facing_track_ignores_a_single_flip():
    T = 6
    yaws = torch.tensor([0.0, math.pi]).view(2, 1).expand(2, T)
    scores = torch.tensor([[1.0] * T, [2.0] * T])
    scores[:, 3] = torch.tensor([1.6, 1.5])  # frame 3 alone prefers the flipped facing, by little
    chosen, conf = select_facing_track(scores, yaws, jump_cost=1.0)
    assert chosen.tolist() == [0] * T
    assert conf[3] < 0.05 and (conf[[0, 1, 2, 4, 5]] == 0.5).all()
    chosen, _ = select_facing_track(scores, yaws, jump_cost=0.0)  # no track: per-frame choice
    assert chosen[3] == 1


def test_3d_landmarks_decide_whether_the_leg_is_in_front(model):
    """Facing the camera, a straight leg swung forward or backward by the same angle projects to the same 2D
    keypoints; given the same 2D keypoints, the fit follows the 3D landmarks either way."""
    size = 128
    cam = make_clip(model, n_frames=1, size=size).camera
    cfg = FitConfig(silhouette_iters=0, pose_iters=60, orient_iters=20, n_orientations=1, camera="weak")
    knee_ahead = lambda x: float(x[0, 25, 2] - x[0, 23, 2])  # noqa: E731 - left knee nearer the camera than its hip
    for swing in (0.6, -0.6):  # hip extension (backward), flexion (forward)
        pose = torch.zeros(1, 69)
        pose[0, 0] = swing
        lm = _landmarks(model, torch.zeros(1, 10), torch.zeros(1, 3), pose)
        kp = torch.cat([cam.project(lm), torch.ones(1, 33, 1)], dim=-1)
        mirrored = lm * torch.tensor([1.0, 1.0, -1.0])  # the same 2D keypoints
        assert torch.allclose(cam.project(mirrored), kp[..., :2], atol=1e-4)
        fit = fit_body(model, kp, None, size, cfg, keypoints3d=_as_mediapipe_world(lm))
        got = _landmarks(model, fit.betas, fit.global_orient, fit.body_pose)
        assert knee_ahead(got) * knee_ahead(lm) > 0 and abs(knee_ahead(got)) > 0.1, (swing, knee_ahead(got))
    assert fit.confidence is not None and fit.confidence.shape == (1,) and fit.focal_px is None


def test_perspective_camera_is_chosen_for_a_perspective_view(model):
    size, focal = 128, 128 * 1.1
    pose = torch.zeros(1, 69)
    transl = torch.tensor([[0.0, 0.2, -2.4]])  # close to the camera: strong perspective
    lm = _landmarks(model, torch.zeros(1, 10), torch.zeros(1, 3), pose, transl)
    cam = PerspectiveCamera(focal=torch.tensor([focal]), cx=torch.tensor([size / 2]), cy=torch.tensor([size / 2]),
                            width=size, height=size)  # fmt: skip
    kp = torch.cat([cam.project(lm), torch.ones(1, 33, 1)], dim=-1)
    cfg = FitConfig(silhouette_iters=0, orient_iters=30)
    fit = fit_body(model, kp, None, size, cfg, focal_px=torch.tensor([focal]))
    weak = fit_body(model, kp, None, size, cfg.model_copy(update={"camera": "weak"}))
    assert fit.focal_px is not None and float(fit.focal_px[0]) == pytest.approx(focal)
    # Both cameras bring the keypoints within a fraction of a pixel; the weak one only by bending the body in depth.
    assert float(fit.keypoint_error_px[0]) < 0.5 and float(weak.keypoint_error_px[0]) < 0.5
    assert float(fit.body_pose.abs().mean()) < 0.7 * float(weak.body_pose.abs().mean())  # true pose: zeros


def test_body_fit_from_params():
    from body import BodyParams

    body = BodyParams.zeros(3)
    fit = BodyFit.from_params(body, torch.tensor([[100.0, 64.0, 64.0]]).expand(3, -1), 128)
    assert fit.body is body and fit.betas.shape == (3, 10) and fit.image_size == 128
    assert fit.losses.shape == (3,) and float(fit.keypoint_error_px.abs().sum()) == 0
    assert fit.cameras().scale.shape == (3,) and fit.detach().body_pose.shape == (3, 69)
    with pytest.raises(ValueError, match="camera"):
        BodyFit.from_params(body, torch.zeros(2, 3), 128)


def test_limb_swap_permutations_are_involutions():
    perms = limb_swap_permutations()
    assert perms.shape == (3, 33) and torch.equal(perms[0], torch.arange(33))
    for h in (1, 2):
        assert torch.equal(perms[h][perms[h]], torch.arange(33))  # swapping twice restores the labels
    assert perms[1, 25] == 26 and perms[1, 32] == 31 and perms[1, 15] == 15  # legs only
    assert perms[2, 15] == 16 and perms[2, 21] == 22 and perms[2, 27] == 27  # arms only
    assert (perms[1:, [0, 11, 12, 23, 24]] == torch.tensor([0, 11, 12, 23, 24])).all()  # torso and face kept


def test_swapped_leg_labels_are_undone(model):
    """Facing the camera with the legs apart, the detector's left and right leg labels swapped: fitting them as given
    crosses the legs (against the joint limits and the shin capsules), so the leg-swap hypothesis scores best and is
    taken; with the right labels nothing is swapped. The full fit puts the left ankle on the body's left (+x)."""
    size = 128
    cam = make_clip(model, n_frames=1, size=size).camera
    pose = torch.zeros(1, 69)
    pose[0, 2], pose[0, 5] = 0.35, -0.35  # hips abducted: left leg towards +x, right towards -x
    lm = _landmarks(model, torch.zeros(1, 10), torch.zeros(1, 3), pose)
    kp = torch.cat([cam.project(lm), torch.ones(1, 33, 1)], dim=-1)
    swapped = kp[:, limb_swap_permutations()[1]]
    cfg = FitConfig(silhouette_iters=0, pose_iters=30, orient_iters=20, n_orientations=1, camera="weak", swap_iters=30)
    start = FitParams(torch.zeros(1, 10), torch.zeros(1, 3), torch.zeros(1, 69), torch.zeros(1, 3),
                      cam.scale.log().clone())  # fmt: skip
    for keypoints, expect in ((swapped, 1), (kp, 0)):
        data = prepare_fit_data(model, keypoints, None, size, cfg, None)
        relabelled, chosen, scores = select_limb_labels(model, data, cfg, start, [])
        assert chosen.tolist() == [expect] and scores.shape == (3, 1), scores
        assert torch.allclose(relabelled.kp_xy, kp[..., :2])  # the detector's error is undone
    fit = fit_body(model, swapped, None, size, cfg)
    got = _landmarks(model, fit.betas, fit.global_orient, fit.body_pose)
    assert float(got[0, 27, 0]) > 0.05 and float(got[0, 28, 0]) < -0.05, got[0, [27, 28], 0]
