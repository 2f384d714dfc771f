"""The avatar's canonical Da-pose, pose features and joint neighbourhood (the LBS itself: tests/body/test_lbs.py)."""

from __future__ import annotations

import torch

from avatar.lbs import canonical_body_pose, joint_neighbourhood, pose_features
from body.lbs import global_joint_transforms, skinning_transforms


def test_da_pose_moves_legs_apart(body_model):
    rest = body_model().joints[0]
    m = global_joint_transforms(rest, torch.zeros(1, 3), canonical_body_pose())[0]
    left_ankle, right_ankle = m[7, :3, 3], m[8, :3, 3]
    assert left_ankle[0] > rest[7, 0] + 0.2  # left is +X
    assert right_ankle[0] < rest[8, 0] - 0.2


def test_canonical_pose_gives_identity_transforms(body_model):
    rest = body_model().joints[0]
    canon = global_joint_transforms(rest, torch.zeros(1, 3), canonical_body_pose())
    tf = skinning_transforms(canon, canon[0])
    torch.testing.assert_close(tf, torch.eye(4).expand(1, 24, 4, 4), atol=1e-5, rtol=0)


def test_pose_features_zero_at_canonical_pose():
    cp = canonical_body_pose()
    f = pose_features(torch.randn(2, 3), cp.expand(2, -1), cp)
    assert f.shape == (2, 23, 6)
    torch.testing.assert_close(f, torch.zeros(2, 23, 6), atol=1e-6, rtol=0)
    assert pose_features(torch.zeros(1, 3), torch.zeros(1, 69), cp).abs().sum() > 0


def test_joint_neighbourhood():
    m = joint_neighbourhood()
    assert m.shape == (24, 23)
    assert m[18, 17] == 1 and m[18, 15] == 1 and m[18, 19] == 1  # left elbow: itself, shoulder (16), wrist (20)
    assert m[18, 0] == 0
