"""Loss terms and priors of the body fit (icon.fit_terms): analytic values, invariances and gradient directions."""

import pytest
import torch

from body import BodyModel
from icon.fit_terms import (
    bend_prior,
    bone_direction_term,
    depth_order_term,
    geman_mcclure,
    interpenetration_term,
    joint_limit_prior,
    kabsch_rotation,
    mediapipe_world_to_camera,
    point_segment_distance,
    segment_segment_distance,
    temporal_smoothness,
)
from tests.icon.test_fit import _as_mediapipe_world, _landmarks, _rot_y


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def test_priors():
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
    pose = torch.zeros(3, 69)
    pose[1, 9] = 1.5  # left knee flexed: allowed
    pose[2, 9] = -1.0  # left knee bent backwards
    prior = joint_limit_prior(pose)
    assert prior[0] == 0 and prior[1] == 0 and prior[2] > 0


def test_mediapipe_axes_and_kabsch():
    kp3 = torch.zeros(1, 33, 4)
    kp3[0, 0] = torch.tensor([0.1, -0.6, -0.2, 0.9])  # nose: right, above, nearer the camera than the hips
    kp3[0, 1, 3] = 0.2
    pts, w = mediapipe_world_to_camera(kp3, 0.5)
    assert torch.allclose(pts[0, 0], torch.tensor([0.1, 0.6, 0.2])) and w[0, 0] == pytest.approx(0.9) and w[0, 1] == 0
    g = torch.Generator().manual_seed(0)
    src = torch.randn(2, 6, 3, generator=g)
    rot = torch.stack([_rot_y(0.7), _rot_y(2.5) @ _rot_y(0.0)])
    dst = src @ rot.transpose(1, 2) + torch.tensor([0.3, -0.2, 1.0])
    est = kabsch_rotation(src, dst, torch.ones(2, 6))
    assert torch.allclose(est, rot, atol=1e-4)
    assert torch.equal(kabsch_rotation(src, dst, torch.zeros(2, 6)), torch.eye(3).expand(2, 3, 3))


def test_bone_and_depth_terms(model):
    pose = torch.zeros(2, 69)
    pose[:, 0] = -1.0  # left hip flexed: the thigh swings forward (+z)
    lm = _landmarks(model, torch.zeros(2, 10), torch.zeros(2, 3), pose)
    target, w = mediapipe_world_to_camera(_as_mediapipe_world(lm), 0.5)
    assert bone_direction_term(lm, target, w).abs().max() < 1e-4
    # orientation-invariant: the same skeleton turned about the up axis costs nothing
    turned = target @ _rot_y(1.2).T
    assert bone_direction_term(lm, turned, w).abs().max() < 1e-4
    # the leg behind instead of in front costs (the thigh mirrored in depth)
    behind = _landmarks(model, torch.zeros(2, 10), torch.zeros(2, 3), -pose)
    assert (bone_direction_term(behind, target, w) > 0.05).all()
    pairs = ((25, 26), (23, 25))
    assert depth_order_term(lm, target, w, pairs, 0.08, 0.03).abs().max() == 0
    assert (depth_order_term(behind, target, w, pairs, 0.08, 0.03) > 1.0).all()
    # pairs closer in depth than the gap carry no order
    assert depth_order_term(behind, target, w, ((11, 12),), 0.08, 0.03).abs().max() == 0


def test_segment_distances():
    a, b = torch.tensor([0.0, 0.0, 0.0]), torch.tensor([1.0, 0.0, 0.0])
    pts = torch.tensor([[0.5, 2.0, 0.0], [-3.0, 4.0, 0.0], [2.0, 0.0, 0.0]])
    torch.testing.assert_close(point_segment_distance(pts, a, b), torch.tensor([2.0, 5.0, 1.0]))
    # two crossing segments (distance 0.3 apart in z) and two parallel ones 0.5 apart
    c0, c1 = torch.tensor([0.5, -1.0, 0.3]), torch.tensor([0.5, 1.0, 0.3])
    assert float(segment_segment_distance(a, b, c0, c1)) == pytest.approx(0.3, abs=1e-6)
    up = torch.tensor([0.0, 0.5, 0.0])
    assert float(segment_segment_distance(a, b, a + up, b + up)) == pytest.approx(0.5, abs=1e-6)


def test_interpenetration_of_arms_and_shins(model):
    with torch.no_grad():
        rest = model(betas=torch.zeros(1, 10), global_orient=torch.zeros(1, 3), body_pose=torch.zeros(1, 69)).joints
    assert float(interpenetration_term(rest)) == 0.0  # T-pose: arms out, legs apart
    # the left hand joint 5 cm in front of the middle of the spine: overlap 0.11 + 0.04 - 0.05 = 0.10 m
    j = rest.clone()
    j[0, 22] = (j[0, 3] + j[0, 6]) / 2 + torch.tensor([0.0, 0.0, 0.05])
    assert float(interpenetration_term(j)) == pytest.approx(0.10**2, rel=0.02)  # (the spine bends slightly)
    # the right shin moved onto the left one, 2 cm in front of it: overlap 0.09 - 0.02 = 0.07 m
    j = rest.clone()
    j[0, [5, 8]] = j[0, [4, 7]] + torch.tensor([0.0, 0.0, 0.02])
    j = j.requires_grad_(True)
    cost = interpenetration_term(j)
    assert float(cost.detach()) == pytest.approx(0.07**2, rel=0.01)
    cost.sum().backward()
    assert j.grad[0, 5, 2] < 0 and j.grad[0, 4, 2] > 0  # descent moves the right shin forwards, the left back
