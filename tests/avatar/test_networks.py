"""Skinning-weight nets and the pose-conditioned SDF."""

from __future__ import annotations

import pytest
import torch

from avatar.networks import PoseConditionedSDF, SkinningNet, positional_encoding


def test_positional_encoding_shape():
    x = torch.randn(2, 5, 3)
    assert positional_encoding(x, 0) is x
    assert positional_encoding(x, 4).shape == (2, 5, 27)


@pytest.mark.parametrize("num_codes", [0, 3])
def test_skinning_net_weights_sum_to_one(num_codes):
    net = SkinningNet(num_frequencies=2, width=16, depth=2, num_codes=num_codes, code_dim=4)
    frame = torch.tensor([0, 2]) if num_codes else None
    w = net(torch.randn(2, 7, 3), frame)
    assert w.shape == (2, 7, 24)
    torch.testing.assert_close(w.sum(-1), torch.ones(2, 7))
    assert (w >= 0).all()


def test_skinning_net_errors():
    with pytest.raises(ValueError, match="frame"):
        SkinningNet(num_codes=2)(torch.randn(1, 3, 3))
    with pytest.raises(ValueError, match=r"\(B, N, 3\)"):
        SkinningNet()(torch.randn(3, 3))


def test_sdf_starts_as_sphere_and_ignores_pose():
    torch.manual_seed(0)
    sdf = PoseConditionedSDF(num_frequencies=2, width=64, depth=4, init_radius=0.5)
    dirs = torch.nn.functional.normalize(torch.randn(1, 200, 3), dim=-1)
    w = torch.softmax(torch.randn(1, 200, 24), -1)
    feats = torch.randn(1, 23, 6)
    inside = sdf(dirs * 0.1, w, feats)
    outside = sdf(dirs * 0.9, w, feats)
    assert (inside < 0).float().mean() > 0.95 and (outside > 0).float().mean() > 0.95
    torch.testing.assert_close(sdf(dirs * 0.5, w, feats), sdf(dirs * 0.5, w, torch.zeros_like(feats)))


def test_pose_attention_masks_unrelated_joints():
    sdf = PoseConditionedSDF(num_frequencies=0, width=16, depth=2)
    w = torch.zeros(1, 1, 24)
    w[..., 20] = 1.0  # left wrist: sees left elbow (18), itself (20), left hand (22)
    feats = torch.ones(1, 23, 6)
    pose_in = sdf.pose_input(w, feats).reshape(23, 6)
    seen = {j + 1 for j in range(23) if pose_in[j].abs().sum() > 0}
    assert seen == {18, 20, 22}


def test_sdf_shape_errors():
    sdf = PoseConditionedSDF(width=16, depth=2)
    with pytest.raises(ValueError, match="features"):
        sdf(torch.randn(1, 4, 3), torch.rand(1, 4, 24), torch.randn(1, 24, 6))
