"""Linear blend skinning between the canonical Da-pose and posed frames."""

from __future__ import annotations

import pytest
import torch

from avatar.lbs import (
    canonical_body_pose,
    global_joint_transforms,
    inverse_skin_points,
    joint_neighbourhood,
    pose_features,
    skin_normals,
    skin_points,
    skinning_transforms,
)


def _random_pose(b: int, gen: torch.Generator, dtype=torch.float32):
    go = torch.randn(b, 3, generator=gen, dtype=dtype) * 0.5
    bp = torch.randn(b, 69, generator=gen, dtype=dtype) * 0.3
    tr = torch.randn(b, 3, generator=gen, dtype=dtype)
    return go, bp, tr


class TestGlobalJointTransforms:
    def test_joints_match_body_model(self, body_model):
        gen = torch.Generator().manual_seed(0)
        betas = torch.randn(1, 10, generator=gen) * 0.5
        rest = body_model(betas=betas).joints[0]
        go, bp, tr = _random_pose(3, gen)
        out = body_model(betas=betas.expand(3, -1), global_orient=go, body_pose=bp, transl=tr)
        m = global_joint_transforms(rest, go, bp, tr)
        assert m.shape == (3, 24, 4, 4)
        torch.testing.assert_close(m[:, :, :3, 3], out.joints, atol=1e-4, rtol=0)

    def test_zero_pose_is_rest(self, body_model):
        rest = body_model().joints[0]
        m = global_joint_transforms(rest, torch.zeros(1, 3), torch.zeros(1, 69))
        torch.testing.assert_close(m[0, :, :3, 3], rest)
        torch.testing.assert_close(m[0, :, :3, :3], torch.eye(3).expand(24, 3, 3))

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="body_pose"):
            global_joint_transforms(torch.zeros(24, 3), torch.zeros(1, 3), torch.zeros(1, 23, 3))


def test_da_pose_moves_legs_apart(body_model):
    rest = body_model().joints[0]
    m = global_joint_transforms(rest, torch.zeros(1, 3), canonical_body_pose())[0]
    left_ankle, right_ankle = m[7, :3, 3], m[8, :3, 3]
    assert left_ankle[0] > rest[7, 0] + 0.2  # left is +X
    assert right_ankle[0] < rest[8, 0] - 0.2


@pytest.mark.parametrize("batch", [1, 3])
def test_inverse_then_forward_skinning_round_trip(body_model, batch):
    gen = torch.Generator().manual_seed(1)
    rest = body_model().joints[0]
    canon = global_joint_transforms(rest, torch.zeros(1, 3), canonical_body_pose())[0]
    go, bp, tr = _random_pose(batch, gen)
    tf = skinning_transforms(global_joint_transforms(rest, go, bp, tr), canon)
    points_canon = body_model(body_pose=canonical_body_pose()).vertices.expand(batch, -1, -1)
    weights = body_model.lbs_weights[None].expand(batch, -1, -1)
    points_posed = skin_points(points_canon, weights, tf)
    back = inverse_skin_points(points_posed, weights, tf)
    torch.testing.assert_close(back, points_canon, atol=1e-4, rtol=0)
    again = skin_points(back, weights, tf)
    torch.testing.assert_close(again, points_posed, atol=1e-4, rtol=0)


def test_canonical_pose_gives_identity_transforms(body_model):
    rest = body_model().joints[0]
    canon = global_joint_transforms(rest, torch.zeros(1, 3), canonical_body_pose())
    tf = skinning_transforms(canon, canon[0])
    torch.testing.assert_close(tf, torch.eye(4).expand(1, 24, 4, 4), atol=1e-5, rtol=0)


def test_normals_stay_unit_and_round_trip():
    gen = torch.Generator().manual_seed(2)
    go, bp, tr = _random_pose(2, gen)
    rest = torch.randn(24, 3, generator=gen) * 0.3
    tf = skinning_transforms(global_joint_transforms(rest, go, bp, tr), torch.eye(4).expand(24, 4, 4))
    w = torch.softmax(torch.randn(2, 50, 24, generator=gen) * 3, -1)
    n = torch.nn.functional.normalize(torch.randn(2, 50, 3, generator=gen), dim=-1)
    posed = skin_normals(n, w, tf)
    torch.testing.assert_close(posed.norm(dim=-1), torch.ones(2, 50))
    torch.testing.assert_close(skin_normals(posed, w, tf, inverse=True), n, atol=1e-5, rtol=0)


def test_skin_points_gradcheck():
    gen = torch.Generator().manual_seed(3)
    go, bp, tr = _random_pose(1, gen, torch.float64)
    tf = global_joint_transforms(torch.randn(24, 3, generator=gen, dtype=torch.float64), go, bp, tr)
    x = torch.randn(1, 5, 3, generator=gen, dtype=torch.float64, requires_grad=True)
    w = torch.softmax(torch.randn(1, 5, 24, generator=gen, dtype=torch.float64), -1).requires_grad_(True)
    assert torch.autograd.gradcheck(lambda a, b: inverse_skin_points(a, b, tf), (x, w))


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
