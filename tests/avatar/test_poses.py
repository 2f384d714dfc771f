"""Per-frame pose refinement: the temporal smoother keeps smooth motion and removes jitter, the rigid re-anchoring
of the root is exact, and on a jittered turning motion the refined poses are closer to the truth than the jittered
ones; the avatar keeps its per-frame poses through save/load."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from avatar.model import load_avatar, save_avatar
from avatar.poses import FramePoses, anchor_root, pose_change, refine_frame_poses, rigid_fit, smooth_in_time
from body.rotations import axis_angle_to_matrix
from icon.synth.sequence import turn_and_wave_motion


def _motion_poses(n_source: int = 30, step: int = 2) -> tuple[FramePoses, np.ndarray]:
    """The demo clip's motion (30 frames at 10 fps) sampled every ``step`` frames, and the frame times (s)."""
    motion = turn_and_wave_motion(n_source, turns=1.0)[::step]
    poses = FramePoses(
        torch.as_tensor(motion.global_orient),
        torch.as_tensor(motion.body_pose),
        torch.zeros(len(motion), 3),
    )
    return poses, np.arange(len(motion)) * step / 10.0


def _bodies(model, poses: FramePoses) -> torch.Tensor:
    with torch.no_grad():
        return model(global_orient=poses.global_orient, body_pose=poses.body_pose, transl=poses.transl).vertices


class TestSmoothInTime:
    def test_keeps_linear_motion_with_uneven_times(self):
        times = torch.tensor([0.0, 0.1, 0.35, 0.4, 0.9, 1.0])
        values = torch.stack([0.3 + 2.0 * times, -1.0 * times], dim=1).double()
        out = smooth_in_time(values, times, time_scale=0.3)
        torch.testing.assert_close(out, values, atol=1e-6, rtol=0)

    def test_removes_jitter(self):
        gen = torch.Generator().manual_seed(0)
        times = torch.arange(40) * 0.1
        truth = torch.stack([torch.sin(times), torch.cos(0.5 * times)], dim=1).double()
        noisy = truth + 0.1 * torch.randn(truth.shape, generator=gen, dtype=torch.float64)
        out = smooth_in_time(noisy, times, time_scale=0.2)
        assert (out - truth).abs().mean() < 0.6 * (noisy - truth).abs().mean()

    def test_low_weight_frame_follows_neighbours(self):
        times = torch.arange(7) * 0.2
        values = torch.zeros(7, 1)
        values[3] = 1.0  # an outlier frame
        even = smooth_in_time(values, times, 0.2)
        weighted = smooth_in_time(values, times, 0.2, weights=torch.tensor([1.0, 1, 1, 0.1, 1, 1, 1]))
        assert float(weighted[3]) < 0.5 * float(even[3])

    def test_short_and_bad_inputs(self):
        values = torch.ones(2, 3)
        torch.testing.assert_close(smooth_in_time(values, torch.tensor([0.0, 1.0]), 0.2), values)
        with pytest.raises(ValueError, match="times"):
            smooth_in_time(torch.ones(4, 3), torch.zeros(3), 0.2)
        with pytest.raises(ValueError, match="time_scale"):
            smooth_in_time(torch.ones(4, 3), torch.zeros(4), 0.0)


def test_rigid_fit_recovers_a_transform():
    gen = torch.Generator().manual_seed(1)
    src = torch.randn(2, 50, 3, generator=gen, dtype=torch.float64)
    rot = axis_angle_to_matrix(torch.tensor([[0.3, -1.2, 0.5], [2.5, 0.1, 0.0]], dtype=torch.float64))
    shift = torch.tensor([[0.1, 0.2, -3.0], [1.0, 0.0, 0.5]], dtype=torch.float64)
    r, t = rigid_fit(src, src @ rot.transpose(1, 2) + shift[:, None])
    torch.testing.assert_close(r, rot)
    torch.testing.assert_close(t, shift)


def test_anchor_root_lands_on_a_rigidly_moved_body(body_model):
    poses, _ = _motion_poses()
    poses = FramePoses(poses.global_orient[:3], poses.body_pose[:3], torch.tensor([[0.0, 0.1, -2.0]] * 3))
    rot = axis_angle_to_matrix(torch.tensor([0.2, 0.4, -0.1], dtype=torch.float64))
    reference = _bodies(body_model, poses).double() @ rot.T + torch.tensor([0.05, -0.02, 0.3], dtype=torch.float64)
    anchored = anchor_root(body_model, torch.zeros(10), poses, reference)
    torch.testing.assert_close(anchored.body_pose, poses.body_pose)
    err = (_bodies(body_model, anchored).double() - reference).norm(dim=-1).max()
    assert err < 1e-4  # metres: the rigid move is folded exactly into the root


def test_refined_poses_are_closer_to_the_truth_than_jittered_fits(body_model):
    truth, times = _motion_poses()
    t = len(truth)
    gen = torch.Generator().manual_seed(3)
    jitter = 0.12 * torch.randn(t, 69, generator=gen)  # radians per axis-angle component
    fitted = FramePoses(truth.global_orient, truth.body_pose + jitter, truth.transl)
    refined = refine_frame_poses(body_model, torch.zeros(10), fitted, times, time_scale=0.2)
    before = pose_change(truth, fitted)["joint_deg"].mean()
    after = pose_change(truth, refined)["joint_deg"].mean()
    assert after < 0.7 * before, (before, after)
    body_true = _bodies(body_model, truth).double()

    def v2v(poses: FramePoses) -> float:  # mean vertex error (m) after a rigid alignment per frame
        body = _bodies(body_model, poses).double()
        r, s = rigid_fit(body, body_true)
        return float((body @ r.transpose(1, 2) + s[:, None] - body_true).norm(dim=-1).mean())

    assert v2v(refined) < 0.75 * v2v(fitted), (v2v(fitted), v2v(refined))
    # off (no times or zero time scale): the fitted poses are held unchanged
    for same in (refine_frame_poses(body_model, torch.zeros(10), fitted, None, 0.2),
                 refine_frame_poses(body_model, torch.zeros(10), fitted, times, 0.0)):  # fmt: skip
        torch.testing.assert_close(same.body_pose, fitted.body_pose)


def test_avatar_keeps_frame_poses_through_save_load(trained, tmp_path):
    av, seq = trained.avatar, trained.sequence
    assert len(av.frame_poses) == len(av.fitted_poses) == len(seq.frames)
    torch.testing.assert_close(av.fitted_poses.body_pose, torch.as_tensor(seq.fits.body_pose).float())
    # the fixture passes no frame times: the avatar holds the fitted poses
    torch.testing.assert_close(av.frame_poses.body_pose, av.fitted_poses.body_pose)
    loaded = load_avatar(save_avatar(av, tmp_path / "a"))
    for name in ("global_orient", "body_pose", "transl"):
        torch.testing.assert_close(getattr(loaded.frame_poses, name), getattr(av.frame_poses, name))
        torch.testing.assert_close(getattr(loaded.fitted_poses, name), getattr(av.fitted_poses, name))


def test_frame_poses_shape_check():
    with pytest.raises(ValueError, match="body_pose"):
        FramePoses(torch.zeros(2, 3), torch.zeros(2, 23, 3), torch.zeros(2, 3))


def test_body_params_round_trip():
    poses, _ = _motion_poses(10, 2)
    p = poses.with_betas(torch.ones(10))
    assert len(p) == len(poses) and p.betas.shape == (len(poses), 10)
    back = FramePoses.from_params(p)
    for name in ("global_orient", "body_pose", "transl"):
        assert torch.equal(getattr(back, name), getattr(poses, name))
    with pytest.raises(ValueError, match="BodyParams"):
        poses.with_betas(torch.zeros(len(poses) + 1, 10))
