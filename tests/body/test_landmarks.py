"""Tests for body.landmarks: MediaPipe's 33 landmarks on the embedded and on SMPL-topology models."""

import pytest
import torch

from body import MEDIAPIPE_LANDMARK_NAMES, BodyModel, mediapipe_landmarks_3d
from body.landmarks import mediapipe_correspondences


@pytest.fixture(scope="module")
def model():
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
