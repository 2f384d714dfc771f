"""Tests for body.lbs: joint transforms, forward/inverse skinning, and the SMPL forward pass checked against smplx."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from body import BodyModel
from body.lbs import (
    blend_shapes,
    chain_transforms,
    global_joint_transforms,
    inverse_skin_points,
    local_rotations,
    pose_blend_shapes,
    pose_body,
    rest_skinning_transforms,
    skin_normals,
    skin_points,
    skinning_transforms,
)
from body.skeleton import SMPL_PARENTS

NO_VERTEX_IDS = {"nose": 0, "reye": 0, "leye": 0, "rear": 0, "lear": 0}  # smplx's extra keypoints, unused here


@pytest.fixture(scope="module")
def body_model() -> BodyModel:
    return BodyModel()


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
        with pytest.raises(ValueError, match="rotations"):
            chain_transforms(torch.zeros(1, 23, 3, 3), torch.zeros(24, 3))

    def test_rest_skinning_equals_inverse_of_zero_pose(self):
        gen = torch.Generator().manual_seed(4)
        go, bp, tr = _random_pose(2, gen, torch.float64)
        rest = torch.randn(24, 3, generator=gen, dtype=torch.float64)
        posed = global_joint_transforms(rest, go, bp, tr)
        zeros = torch.zeros(1, 72, dtype=torch.float64)
        zero = global_joint_transforms(rest, zeros[:, :3], zeros[:, 3:])
        torch.testing.assert_close(rest_skinning_transforms(posed, rest), skinning_transforms(posed, zero[0]))


@pytest.mark.parametrize("batch", [1, 3])
def test_inverse_then_forward_skinning_round_trip(body_model, batch):
    gen = torch.Generator().manual_seed(1)
    rest = body_model().joints[0]
    go, bp, tr = _random_pose(batch, gen)
    tf = rest_skinning_transforms(global_joint_transforms(rest, go, bp, tr), rest)
    points = body_model().vertices.expand(batch, -1, -1)
    weights = body_model.lbs_weights[None].expand(batch, -1, -1)
    points_posed = skin_points(points, weights, tf)
    back = inverse_skin_points(points_posed, weights, tf)
    torch.testing.assert_close(back, points, atol=1e-4, rtol=0)
    torch.testing.assert_close(skin_points(back, weights, tf), points_posed, atol=1e-4, rtol=0)


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


def test_blend_shapes_linear_and_pose_correctives_vanish_at_rest():
    gen = torch.Generator().manual_seed(5)
    dirs = torch.randn(7, 3, 4, generator=gen)
    b1, b2 = torch.randn(1, 4, generator=gen), torch.randn(1, 4, generator=gen)
    torch.testing.assert_close(blend_shapes(b1 + 2 * b2, dirs), blend_shapes(b1, dirs) + 2 * blend_shapes(b2, dirs))
    torch.testing.assert_close(blend_shapes(torch.eye(4)[1:2], dirs)[0], dirs[..., 1])
    posedirs = torch.randn(207, 21, generator=gen)
    assert pose_blend_shapes(torch.eye(3).expand(2, 24, 3, 3), posedirs).abs().max() == 0
    with pytest.raises(ValueError, match="betas"):
        blend_shapes(torch.zeros(1, 5), dirs)


def test_pose_body_gradcheck():
    gen = torch.Generator().manual_seed(6)
    V = 6
    w = torch.softmax(torch.randn(V, 24, generator=gen, dtype=torch.float64), -1)
    arrays = dict(v_template=torch.randn(V, 3, generator=gen, dtype=torch.float64),
                  shapedirs=torch.randn(V, 3, 2, generator=gen, dtype=torch.float64) * 0.1,
                  posedirs=torch.randn(207, V * 3, generator=gen, dtype=torch.float64) * 0.01,
                  J_regressor=torch.softmax(torch.randn(24, V, generator=gen, dtype=torch.float64), -1),
                  lbs_weights=w)  # fmt: skip
    go, bp, tr = _random_pose(1, gen, torch.float64)
    betas = torch.randn(1, 2, generator=gen, dtype=torch.float64)

    def verts(betas, bp, tr):
        return pose_body(betas, local_rotations(go, bp), tr, **arrays)[0]

    assert torch.autograd.gradcheck(verts, (betas.requires_grad_(), bp.requires_grad_(), tr.requires_grad_()))


# --- against smplx (optional extra) ---------------------------------------------------------------------------------


def _smplx_layer_of_embedded_model(num_betas: int = 10):
    """smplx's SMPL layer built from the embedded model's arrays (the reference LBS)."""
    smplx = pytest.importorskip("smplx")
    from smplx.utils import Struct

    from body.model import embedded_model_path

    keys = ("v_template", "shapedirs", "posedirs", "J_regressor", "weights", "kintree_table", "f")
    with np.load(embedded_model_path(), allow_pickle=False) as data:
        arrays = {k: data[k] for k in keys}
    return smplx.SMPL(
        str(embedded_model_path()), data_struct=Struct(**arrays), num_betas=num_betas,
        vertex_ids=NO_VERTEX_IDS, use_feet_keypoints=False,
        use_hands=False, create_betas=False, create_global_orient=False, create_body_pose=False, create_transl=False,
    )  # fmt: skip


def test_own_lbs_matches_smplx_on_embedded_model(body_model):
    layer = _smplx_layer_of_embedded_model()
    gen = torch.Generator().manual_seed(11)
    worst_v = worst_j = 0.0
    for scale in (0.2, 0.6, 1.2):
        B = 6
        betas = torch.randn(B, 10, generator=gen) * 1.5
        go = torch.randn(B, 3, generator=gen) * scale * 2
        bp = torch.randn(B, 69, generator=gen) * scale
        tr = torch.randn(B, 3, generator=gen)
        ref = layer(betas=betas, global_orient=go, body_pose=bp, transl=tr)
        out = body_model(betas=betas, global_orient=go, body_pose=bp, transl=tr)
        worst_v = max(worst_v, float((out.vertices - ref.vertices).abs().max()))
        worst_j = max(worst_j, float((out.joints - ref.joints[:, :24]).abs().max()))
    assert worst_v < 1e-5 and worst_j < 1e-5, (worst_v, worst_j)


def test_own_lbs_matches_smplx_with_pose_correctives(tmp_path):
    """A user's SMPL file with non-zero pose correctives: the project's reduction + LBS against smplx's forward."""
    smplx = pytest.importorskip("smplx")
    from tests.body.test_model import write_fake_smpl

    write_fake_smpl(tmp_path / "SMPL_NEUTRAL.pkl", seed=3)
    ours = BodyModel(path=tmp_path / "SMPL_NEUTRAL.pkl")
    ref = smplx.SMPL(str(tmp_path / "SMPL_NEUTRAL.pkl"), vertex_ids=NO_VERTEX_IDS, use_feet_keypoints=False,
                     use_hands=False)
    gen = torch.Generator().manual_seed(12)
    betas, (go, bp, tr) = torch.randn(4, 10, generator=gen), _random_pose(4, gen)
    a = ours(betas=betas, global_orient=go, body_pose=bp, transl=tr)
    b = ref(betas=betas, global_orient=go, body_pose=bp, transl=tr)
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.joints, b.joints[:, :24], atol=1e-5, rtol=0)


def test_parents_are_smpl_tree():
    assert len(SMPL_PARENTS) == 24 and SMPL_PARENTS[0] == -1
    assert all(p < j for j, p in enumerate(SMPL_PARENTS))


def _write_fake_smplh(path, seed=0):
    """A random but valid SMPL-H file (52 joints: 22 body + 15 per hand) with SMPL-H's array names."""
    rng = np.random.default_rng(seed)
    V, F, J = 600, 1000, 52
    parents = list(SMPL_PARENTS[:22])
    for wrist in (20, 21):  # three joints per finger, five fingers per hand
        for _ in range(5):
            parents += [wrist, len(parents), len(parents) + 1]
    weights = rng.random((V, J)) ** 8
    regressor = np.zeros((J, V))
    for j in range(J):
        regressor[j, rng.choice(V, 5, replace=False)] = 0.2
    np.savez(path, v_template=rng.normal(scale=0.3, size=(V, 3)), shapedirs=rng.normal(scale=0.01, size=(V, 3, 10)),
             posedirs=rng.normal(scale=0.001, size=(V, 3, (J - 1) * 9)), J_regressor=regressor,
             weights=weights / weights.sum(1, keepdims=True), kintree_table=np.array([[-1] + parents[1:], range(J)]),
             f=rng.integers(0, V, size=(F, 3)), hands_componentsl=np.eye(45), hands_componentsr=np.eye(45),
             hands_meanl=np.zeros(45), hands_meanr=np.zeros(45))  # fmt: skip


def test_smplh_reduction_matches_smplx_body_joints(tmp_path):
    """SMPL-H reduced to 24 joints and posed by the own LBS equals smplx's forward with the hands at rest."""
    smplx = pytest.importorskip("smplx")
    _write_fake_smplh(tmp_path / "SMPLH_NEUTRAL.npz")
    ours = BodyModel(path=tmp_path / "SMPLH_NEUTRAL.npz", model_type="smplh")
    ref = smplx.SMPLH(str(tmp_path / "SMPLH_NEUTRAL.npz"), ext="npz", use_pca=False, flat_hand_mean=True,
                      vertex_ids=NO_VERTEX_IDS, use_feet_keypoints=False, use_hands=False)
    gen = torch.Generator().manual_seed(13)
    betas, (go, bp, tr) = torch.randn(3, 10, generator=gen), _random_pose(3, gen)
    a = ours(betas=betas, global_orient=go, body_pose=bp, transl=tr)
    b = ref(betas=betas, global_orient=go, body_pose=bp[:, :63], transl=tr, left_hand_pose=torch.zeros(3, 45),
            right_hand_pose=torch.zeros(3, 45))
    torch.testing.assert_close(a.vertices, b.vertices, atol=1e-5, rtol=0)
    torch.testing.assert_close(a.joints, b.joints[:, list(range(22)) + [25, 40]], atol=1e-5, rtol=0)
    assert a.vertices.abs().max() > 0.1
