"""Tests for body.rotations: round trips, known values, edge cases and gradients."""

import math

import pytest
import torch

from body.rotations import (
    axis_angle_to_matrix,
    matrix_to_axis_angle,
    matrix_to_quaternion,
    matrix_to_rot6d,
    quaternion_to_matrix,
    rot6d_to_axis_angle,
    rot6d_to_matrix,
)


@pytest.mark.parametrize("batch", [(1,), (4, 5)])
def test_round_trips(batch):
    torch.manual_seed(0)
    aa = torch.randn(*batch, 3, dtype=torch.float64)
    aa = aa / aa.norm(dim=-1, keepdim=True) * torch.rand(*batch, 1, dtype=torch.float64) * 3.0  # angle < pi
    R = axis_angle_to_matrix(aa)
    torch.testing.assert_close(R @ R.transpose(-1, -2), torch.eye(3, dtype=torch.float64).expand_as(R))
    torch.testing.assert_close(matrix_to_axis_angle(R), aa)
    torch.testing.assert_close(quaternion_to_matrix(matrix_to_quaternion(R)), R)
    torch.testing.assert_close(rot6d_to_matrix(matrix_to_rot6d(R)), R)
    torch.testing.assert_close(rot6d_to_axis_angle(matrix_to_rot6d(R)), aa)


def test_known_rotation_and_identity():
    R = axis_angle_to_matrix(torch.tensor([0.0, 0.0, math.pi / 2]))
    torch.testing.assert_close(R @ torch.tensor([1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0]))
    torch.testing.assert_close(matrix_to_axis_angle(torch.eye(3)), torch.zeros(3))
    near_pi = axis_angle_to_matrix(torch.tensor([math.pi - 1e-4, 0.0, 0.0], dtype=torch.float64))
    torch.testing.assert_close(matrix_to_axis_angle(near_pi)[0].abs(), torch.tensor(math.pi - 1e-4,
                                                                                     dtype=torch.float64))


def test_gradcheck():
    aa = (0.3 * torch.randn(3, 3, dtype=torch.float64)).requires_grad_()
    assert torch.autograd.gradcheck(axis_angle_to_matrix, (aa,))
    x6 = torch.randn(2, 6, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(rot6d_to_matrix, (x6,))
    zero = torch.zeros(1, 3, dtype=torch.float64, requires_grad=True)
    axis_angle_to_matrix(zero).sum().backward()
    assert torch.isfinite(zero.grad).all()


def test_shape_errors():
    with pytest.raises(ValueError, match="axis_angle"):
        axis_angle_to_matrix(torch.zeros(2, 4))
    with pytest.raises(ValueError, match="rot6d"):
        rot6d_to_matrix(torch.zeros(2, 3))
