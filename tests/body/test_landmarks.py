"""Tests for body.landmarks: MediaPipe's 33 landmarks on the embedded and on SMPL-topology models."""

import dataclasses

import pytest
import torch

from body import MEDIAPIPE_LANDMARK_NAMES, BodyModel, mediapipe_landmarks_3d
from body.landmarks import mediapipe_correspondences


@pytest.fixture(scope="module")
def model():
    """The embedded model with the landmark table's joints and vertices (no learned regressor)."""
    return BodyModel(learned_landmarks=False)


@pytest.fixture(scope="module")
def learned():
    return BodyModel()


def idx(name):
    return MEDIAPIPE_LANDMARK_NAMES.index(name)


def test_names():
    assert len(MEDIAPIPE_LANDMARK_NAMES) == 33 == len(set(MEDIAPIPE_LANDMARK_NAMES))
    assert MEDIAPIPE_LANDMARK_NAMES[0] == "nose" and MEDIAPIPE_LANDMARK_NAMES[11] == "left_shoulder"
    assert MEDIAPIPE_LANDMARK_NAMES[32] == "right_foot_index"


def test_embedded_has_all_landmarks_in_plausible_places(model):
    out = model(betas=torch.zeros(2, 10))
    lm, mask = mediapipe_landmarks_3d(model, out)
    assert lm.shape == (2, 33, 3) and mask.shape == (33,) and mask.dtype == torch.bool and bool(mask.all())
    p = lm[0]
    for name in MEDIAPIPE_LANDMARK_NAMES:
        if name.startswith("left_") or name == "mouth_left":
            mirror = name.replace("left", "right")
            assert p[idx(name), 0] > 0.005, name
            assert torch.allclose(p[idx(name)] * torch.tensor([-1.0, 1, 1]), p[idx(mirror)], atol=0.01), name
    nose, leye, lear = p[idx("nose")], p[idx("left_eye")], p[idx("left_ear")]
    assert nose[2] > leye[2] > lear[2]  # face looks toward +Z
    assert leye[1] > nose[1] > p[idx("mouth_left"), 1] > p[idx("left_shoulder"), 1]
    assert p[idx("left_eye_inner"), 0] < leye[0] < p[idx("left_eye_outer"), 0]
    assert p[idx("left_heel"), 2] < p[idx("left_ankle"), 2] < p[idx("left_foot_index"), 2]
    for finger in ("pinky", "index", "thumb"):
        assert p[idx(f"left_{finger}"), 0] > p[idx("left_wrist"), 0]  # T-pose: hands beyond the wrists


def test_landmarks_follow_the_pose(model):
    body_pose = torch.zeros(1, 69)
    body_pose[0, 3 * 17 + 1] = -1.5  # left elbow
    out = model(body_pose=body_pose, transl=torch.tensor([[0.0, 0.0, -3.0]]))
    lm, _ = mediapipe_landmarks_3d(model, out)
    torch.testing.assert_close(lm[0, idx("left_wrist")], out.joints[0, 20])
    torch.testing.assert_close(lm[0, idx("nose")], out.vertices[0, model.mediapipe_vertex_index[0]])
    assert lm[0, idx("left_index"), 2] > lm[0, idx("left_elbow"), 2] + 0.2


def test_wrong_output_rejected(model):
    out = model()
    out.joints = out.joints[:, :20]
    with pytest.raises(ValueError, match="does not come from this model"):
        mediapipe_landmarks_3d(model, out)


def test_smpl_topology_and_unknown_meshes():
    j, v = mediapipe_correspondences(6890)
    assert ((j >= 0) & (v >= 0)).sum() == 0
    assert v[idx("nose")] == 332 and j[idx("left_knee")] == 4
    assert v[idx("left_eye_inner")] == -1 and v[idx("left_pinky")] == -1
    j, v = mediapipe_correspondences(1234)
    assert (v < 0).all() and (j >= 0).sum() == 12


def test_learned_regressor_is_shipped_and_sums_to_one(learned):
    idx_, w = learned.mediapipe_regressor_index, learned.mediapipe_regressor_weights
    assert idx_ is not None and idx_.shape == w.shape and idx_.shape[0] == 33
    torch.testing.assert_close(w.sum(-1), torch.ones(33), atol=1e-4, rtol=0)


def test_learned_landmarks_move_rigidly_and_stay_near_the_table(model, learned):
    body_pose = torch.zeros(1, 69)
    body_pose[0, 3 * 17 + 1] = -1.5  # left elbow
    out = model(body_pose=body_pose, global_orient=torch.tensor([[0.0, 2.0, 0.0]]), transl=torch.tensor([[0.3, 0, -3]]))
    table, _ = mediapipe_landmarks_3d(model, out)
    lm, mask = mediapipe_landmarks_3d(learned, out)
    assert lm.shape == (1, 33, 3) and bool(mask.all())
    # Σ w = 1: a translation of the body moves every landmark by the same amount.
    shifted = dataclasses.replace(out, vertices=out.vertices + torch.tensor([1.0, 2.0, 3.0]))
    lm2, _ = mediapipe_landmarks_3d(learned, shifted)
    torch.testing.assert_close(lm2 - lm, torch.tensor([1.0, 2.0, 3.0]).expand(1, 33, 3), atol=1e-4, rtol=0)
    # Learned positions stay on the same body part: within 12 cm of the table's definition.
    assert float((lm - table).norm(dim=-1).max()) < 0.12
    # MediaPipe's shoulders sit on top of the shoulder, above the body model's shoulder joints.
    rest = learned(betas=torch.zeros(1, 10))
    lm_rest, _ = mediapipe_landmarks_3d(learned, rest)
    for side in ("left", "right"):
        assert lm_rest[0, idx(f"{side}_shoulder"), 1] > rest.joints[0, 16 if side == "left" else 17, 1] + 0.02


def test_user_models_and_the_switch_keep_the_table(model):
    assert model.mediapipe_regressor_index is None and model.mediapipe_regressor_weights is None
