"""Tests for body.model: the embedded model, posing, shape space and loading a user's SMPL file."""

import pickle

import numpy as np
import pytest
import scipy.sparse
import torch

from body import BodyModel, BodyOutput, embedded_model_path
from body.model import SMPL_JOINT_NAMES, SMPL_PARENTS
from body.rotations import axis_angle_to_matrix, matrix_to_rot6d


@pytest.fixture(scope="module")
def model():
    return BodyModel()


def height(vertices: torch.Tensor) -> torch.Tensor:
    return vertices[..., 1].max(-1).values - vertices[..., 1].min(-1).values


class TestEmbeddedModel:
    def test_attributes(self, model):
        V = model.num_vertices
        assert model.model_id == "anny-smpl-v1"
        assert model.faces.dtype == torch.int64 and model.faces.shape[1] == 3
        assert int(model.faces.max()) < V
        assert model.lbs_weights.shape == (V, 24)
        torch.testing.assert_close(model.lbs_weights.sum(1), torch.ones(V), atol=1e-5, rtol=0)
        assert model.J_regressor.shape == (24, V)
        torch.testing.assert_close(model.J_regressor.sum(1), torch.ones(24), atol=1e-4, rtol=0)
        assert model.parents.tolist() == list(SMPL_PARENTS)
        assert model.joint_names == SMPL_JOINT_NAMES and len(model.joint_names) == 24

    def test_file_is_small_and_package_data(self):
        path = embedded_model_path()
        assert path.is_file() and path.stat().st_size < 15e6

    def test_zero_pose_reproduces_template(self, model):
        out = model(betas=torch.zeros(2, 10))
        assert isinstance(out, BodyOutput)
        assert out.vertices.shape == (2, model.num_vertices, 3) and out.joints.shape == (2, 24, 3)
        torch.testing.assert_close(out.vertices[1], model.v_template, atol=1e-6, rtol=0)
        torch.testing.assert_close(out.joints[0], model.J_regressor @ model.v_template, atol=1e-5, rtol=0)

    def test_defaults_and_translation(self, model):
        out = model(transl=torch.tensor([[0.0, 1.0, -3.0]]))
        torch.testing.assert_close(out.vertices[0], model.v_template + torch.tensor([0.0, 1.0, -3.0]))

    def test_pelvis_at_origin_and_y_up_facing_z(self, model):
        joints = model().joints[0]
        assert joints[0].abs().max() < 1e-3
        names = model.joint_names
        assert joints[names.index("head"), 1] > joints[0, 1] > joints[names.index("left_ankle"), 1]
        assert joints[names.index("left_shoulder"), 0] > 0  # subject's left at +X
        toes = joints[names.index("left_foot")]
        assert toes[2] > joints[names.index("left_ankle"), 2]  # feet point to +Z

    def test_mean_height(self, model):
        assert 1.5 < float(height(model.v_template)) < 2.0

    def test_left_right_mirror(self, model):
        joints = model().joints[0]
        names = model.joint_names
        for i, name in enumerate(names):
            if name.startswith("left_"):
                j = names.index("right_" + name[5:])
                mirrored = joints[j] * torch.tensor([-1.0, 1.0, 1.0])
                assert torch.linalg.norm(joints[i] - mirrored) < 0.01, name
            elif not name.startswith("right_"):
                assert abs(float(joints[i, 0])) < 0.01, name

    def test_t_pose_arms_horizontal(self, model):
        joints = model().joints[0]
        names = model.joint_names
        for side in ("left", "right"):
            chain = joints[[names.index(f"{side}_{p}") for p in ("shoulder", "elbow", "wrist")]]
            assert (chain[:, 1] - chain[0, 1]).abs().max() < 0.02

    def test_elbow_bend_moves_only_arm(self, model):
        names = model.joint_names
        elbow = names.index("left_elbow")
        body_pose = torch.zeros(1, 23, 3)
        body_pose[0, elbow - 1] = torch.tensor([0.0, -1.5, 0.0])
        out = model(body_pose=body_pose.reshape(1, 69))
        moved = (out.vertices[0] - model.v_template).norm(dim=-1)
        arm = [elbow, names.index("left_wrist"), names.index("left_hand")]
        arm_weight = model.lbs_weights[:, arm].sum(1)
        assert moved[arm_weight < 1e-6].max() < 1e-6
        far_from_elbow = (model.v_template - model().joints[0, elbow]).norm(dim=-1) > 0.05
        assert moved[(arm_weight > 0.99) & far_from_elbow].min() > 0.01
        wrist = names.index("left_wrist")
        assert out.joints[0, wrist, 2] > 0.15  # forearm swings forward (+Z) for a negative Y rotation
        other = [i for i in range(24) if i not in (wrist, names.index("left_hand"))]
        torch.testing.assert_close(out.joints[0, other], model().joints[0, other], atol=1e-5, rtol=0)

    def test_shape_components_smooth(self, model):
        steps = torch.linspace(-2, 2, 9)
        for c in range(model.num_betas):
            betas = torch.zeros(len(steps), 10)
            betas[:, c] = steps
            v = model(betas=betas).vertices
            d = (v - model.v_template).norm(dim=-1).max(-1).values
            assert d[8] > 1e-3, f"component {c} does nothing"
            # linear in beta: two steps away moves twice as far as one step
            torch.testing.assert_close(d[6] * 2, d[8], rtol=1e-3, atol=1e-5)
            small = model(betas=torch.nn.functional.one_hot(torch.tensor([c]), 10).float() * 0.01).vertices
            assert (small[0] - model.v_template).norm(dim=-1).max() < 0.005
        betas = torch.zeros(len(steps), 10)
        betas[:, 0] = steps
        h = height(model(betas=betas).vertices)
        assert (h.diff() > 0).all(), "first component should make the body taller"
        assert 0.05 < float(h[-1] - h[0]) < 0.8

    def test_some_component_changes_girth(self, model):
        waist = model.v_template[:, 1].sub(0.1).abs() < 0.02
        base = model.v_template[waist][:, 2].max() - model.v_template[waist][:, 2].min()
        changes = []
        for c in range(model.num_betas):
            b = torch.zeros(1, 10)
            b[0, c] = 2.0
            v = model(betas=b).vertices[0][waist]
            changes.append(float((v[:, 2].max() - v[:, 2].min()) - base))
        assert max(abs(x) for x in changes) > 0.02


class TestForwardInputs:
    def test_rot6d_and_matrix_match_axis_angle(self, model):
        torch.manual_seed(0)
        go, bp = 0.5 * torch.randn(3, 3), 0.3 * torch.randn(3, 69)
        ref = model(global_orient=go, body_pose=bp)
        go_m, bp_m = axis_angle_to_matrix(go), axis_angle_to_matrix(bp.reshape(3, 23, 3))
        by_6d = model(global_orient=matrix_to_rot6d(go_m), body_pose=matrix_to_rot6d(bp_m).reshape(3, 138),
                      pose_format="rot6d")
        by_m = model(global_orient=go_m, body_pose=bp_m, pose_format="matrix")
        torch.testing.assert_close(by_6d.vertices, ref.vertices, atol=1e-5, rtol=0)
        torch.testing.assert_close(by_m.joints, ref.joints, atol=1e-5, rtol=0)

    def test_batch_broadcast(self, model):
        out = model(betas=torch.zeros(1, 10), body_pose=torch.zeros(4, 69))
        assert out.vertices.shape[0] == 4

    @pytest.mark.parametrize(
        "kwargs, match",
        [
            ({"betas": torch.zeros(2, 16)}, "betas"),
            ({"body_pose": torch.zeros(2, 72)}, "body_pose"),
            ({"global_orient": torch.zeros(2, 6)}, "global_orient"),
            ({"transl": torch.zeros(3)}, "transl"),
            ({"betas": torch.zeros(2, 10), "transl": torch.zeros(3, 3)}, "batch"),
            ({"pose_format": "euler"}, "pose_format"),
        ],
    )
    def test_shape_errors(self, model, kwargs, match):
        with pytest.raises(ValueError, match=match):
            model(**kwargs)

    def test_float64_and_gradients(self):
        m = BodyModel().to(torch.float64)
        bp = torch.zeros(1, 69, dtype=torch.float64, requires_grad=True)
        betas = torch.zeros(1, 10, dtype=torch.float64, requires_grad=True)
        out = m(betas=betas, body_pose=bp)
        assert out.vertices.dtype == torch.float64
        out.joints[..., 0].sum().backward()
        assert bp.grad is not None and torch.isfinite(bp.grad).all() and betas.grad.abs().sum() > 0

    def test_constructor_errors(self):
        with pytest.raises(ValueError, match="gender-neutral"):
            BodyModel(gender="male")
        with pytest.raises(ValueError, match="num_betas"):
            BodyModel(num_betas=16)
        with pytest.raises(ValueError, match="does not exist"):
            BodyModel(path="/nonexistent/SMPL_NEUTRAL.pkl")


def write_fake_smpl(path, seed=0):
    """A random but valid model file with real SMPL's array shapes (the user's own file: a pickled dict)."""
    rng = np.random.default_rng(seed)
    V, F = 6890, 13776
    v_template = rng.normal(scale=0.3, size=(V, 3))
    weights = rng.random((V, 24)) ** 8
    weights /= weights.sum(1, keepdims=True)
    J = np.zeros((24, V))
    for j in range(24):
        idx = rng.choice(V, 10, replace=False)
        J[j, idx] = 0.1
    kintree = np.array([[4294967295] + list(SMPL_PARENTS[1:]), list(range(24))], dtype=np.int64)
    data = {
        "v_template": v_template,
        "shapedirs": rng.normal(scale=0.01, size=(V, 3, 10)),
        "posedirs": rng.normal(scale=0.001, size=(V, 3, 207)),
        "J_regressor": scipy.sparse.csc_matrix(J),
        "weights": weights,
        "kintree_table": kintree,
        "f": rng.integers(0, V, size=(F, 3)).astype(np.uint32),
    }
    with open(path, "wb") as f:
        pickle.dump(data, f)
    return data


class TestUserModel:
    def test_smpl_pkl_file(self, tmp_path):
        data = write_fake_smpl(tmp_path / "SMPL_NEUTRAL.pkl")
        m = BodyModel(path=tmp_path / "SMPL_NEUTRAL.pkl")
        assert m.model_id == "SMPL_NEUTRAL.pkl"
        assert m.num_vertices == 6890 and m.faces.shape == (13776, 3) and m.faces.dtype == torch.int64
        out = m(betas=torch.zeros(2, 10))
        assert out.vertices.shape == (2, 6890, 3) and out.joints.shape == (2, 24, 3)
        np.testing.assert_allclose(out.vertices[0].numpy(), data["v_template"], atol=1e-5)
        np.testing.assert_allclose(out.joints[0].numpy(), data["J_regressor"] @ data["v_template"], atol=1e-5)
        posed = m(body_pose=0.2 * torch.ones(1, 69))
        assert torch.isfinite(posed.vertices).all()
        # SMPL topology: smplx's keypoint vertex table gives 9 vertex landmarks besides the 12 joint ones
        assert int((m.mediapipe_vertex_index >= 0).sum()) == 9
        assert int((m.mediapipe_joint_index >= 0).sum()) == 12

    def test_smpl_directory(self, tmp_path):
        (tmp_path / "smpl").mkdir()
        write_fake_smpl(tmp_path / "smpl" / "SMPL_FEMALE.pkl")
        m = BodyModel(path=tmp_path, gender="female")
        assert m.num_vertices == 6890 and "female" in m.model_id

    def test_embedded_npz_by_path(self):
        m = BodyModel(path=embedded_model_path())
        assert m.model_id == "anny-smpl-v1"

    def test_npz_missing_arrays(self, tmp_path):
        np.savez(tmp_path / "bad.npz", v_template=np.zeros((3, 3)))
        with pytest.raises(ValueError, match="missing arrays"):
            BodyModel(path=tmp_path / "bad.npz")
