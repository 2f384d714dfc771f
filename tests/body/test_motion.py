"""Tests for body.motion: readers for each format, Z-up -> Y-up, resampling and error messages."""

import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from body.motion import Motion, load_motion, resample_motion, save_motion


def random_motion(n=12, fps=30.0, seed=0) -> Motion:
    rng = np.random.default_rng(seed)
    return Motion(fps=fps, global_orient=rng.normal(scale=0.5, size=(n, 3)),
                  body_pose=rng.normal(scale=0.3, size=(n, 69)), transl=rng.normal(size=(n, 3)))


def test_plain_smpl_round_trip(tmp_path):
    m = random_motion()
    path = save_motion(m, tmp_path / "walk.npz")
    back = load_motion(path)
    assert back.fps == 30.0 and back.num_frames == 12
    np.testing.assert_allclose(back.poses, m.poses, atol=1e-6)
    np.testing.assert_allclose(back.transl, m.transl, atol=1e-6)


def test_plain_smpl_separate_keys_default_fps(tmp_path):
    m = random_motion(n=5)
    np.savez(tmp_path / "m.npz", global_orient=m.global_orient, body_pose=m.body_pose, transl=m.transl)
    back = load_motion(tmp_path / "m.npz")
    assert back.fps == 30.0
    np.testing.assert_allclose(back.body_pose, m.body_pose, atol=1e-6)


def test_amass_smplh_z_up_to_y_up(tmp_path):
    n = 4
    poses = np.zeros((n, 156))
    poses[:, 0] = np.pi / 2  # an AMASS subject standing upright in a Z-up world
    poses[:, 3:66] = 0.1
    poses[:, 66:] = 0.7  # hand joints are dropped
    trans = np.tile([1.0, 2.0, 3.0], (n, 1))
    np.savez(tmp_path / "amass.npz", poses=poses, trans=trans, mocap_framerate=np.array(120.0), betas=np.zeros(16),
             gender=np.array("neutral"))
    m = load_motion(tmp_path / "amass.npz")
    assert m.fps == 120.0
    np.testing.assert_allclose(m.global_orient, 0.0, atol=1e-6)  # upright in the Y-up frame
    np.testing.assert_allclose(m.transl, np.tile([1.0, 3.0, -2.0], (n, 1)), atol=1e-6)  # (x, z, -y)
    np.testing.assert_allclose(m.body_pose[:, :63], 0.1, atol=1e-7)
    np.testing.assert_allclose(m.body_pose[:, 63:], 0.0)
    # Forcing Y-up keeps the file's values.
    raw = load_motion(tmp_path / "amass.npz", up_axis="y")
    np.testing.assert_allclose(raw.global_orient[:, 0], np.pi / 2, atol=1e-6)


def test_z_up_rotation_composes(tmp_path):
    rng = np.random.default_rng(3)
    root = rng.normal(size=(3, 3))
    poses = np.zeros((3, 156))
    poses[:, :3] = root
    np.savez(tmp_path / "a.npz", poses=poses, trans=np.zeros((3, 3)), mocap_framerate=60.0)
    m = load_motion(tmp_path / "a.npz")
    expected = Rotation.from_euler("x", -90, degrees=True) * Rotation.from_rotvec(root)
    np.testing.assert_allclose(Rotation.from_rotvec(m.global_orient).as_matrix(), expected.as_matrix(), atol=1e-5)


def test_amass_smplx(tmp_path):
    n = 6
    np.savez(tmp_path / "stageii.npz", root_orient=np.zeros((n, 3)), pose_body=np.full((n, 63), 0.05),
             pose_hand=np.zeros((n, 90)), trans=np.zeros((n, 3)), mocap_frame_rate=np.array(60.0))
    m = load_motion(tmp_path / "stageii.npz", target_fps=30)
    assert m.fps == 30.0 and m.num_frames == 3
    np.testing.assert_allclose(m.body_pose[:, :63], 0.05, atol=1e-6)
    np.testing.assert_allclose(Rotation.from_rotvec(m.global_orient[0]).as_matrix(),
                               Rotation.from_euler("x", -90, degrees=True).as_matrix(), atol=1e-6)


def test_resample_slerp_and_linear():
    n = 3
    go = np.zeros((n, 3))
    go[:, 1] = [0.0, 1.0, 2.0]  # rotation about Y growing 1 rad per frame
    m = Motion(fps=10.0, global_orient=go, body_pose=np.zeros((n, 69)), transl=np.array([[0, 0, 0], [1, 0, 0],
                                                                                        [3, 0, 0]], float))
    r = resample_motion(m, 20.0)
    assert r.num_frames == 5 and r.fps == 20.0
    np.testing.assert_allclose(r.global_orient[:, 1], [0.0, 0.5, 1.0, 1.5, 2.0], atol=1e-6)
    np.testing.assert_allclose(r.transl[:, 0], [0.0, 0.5, 1.0, 2.0, 3.0], atol=1e-6)
    down = resample_motion(m, 4.0)  # 0.2 s long: only the frame at 0 s fits
    assert down.num_frames == 1


def test_resample_takes_shortest_arc():
    go = np.array([[0.0, 0.0, np.pi - 0.1], [0.0, 0.0, -(np.pi - 0.1)]])  # 0.2 rad apart across +-pi
    m = Motion(fps=1.0, global_orient=go, body_pose=np.zeros((2, 69)), transl=np.zeros((2, 3)))
    mid = resample_motion(m, 2.0).global_orient[1]
    np.testing.assert_allclose(np.abs(mid[2]), np.pi, atol=1e-5)


def test_errors_name_file_and_key(tmp_path):
    np.savez(tmp_path / "nokey.npz", poses=np.zeros((3, 72)))
    with pytest.raises(ValueError, match=r"nokey\.npz.*'trans'"):
        load_motion(tmp_path / "nokey.npz")
    np.savez(tmp_path / "shape.npz", poses=np.zeros((3, 70)), trans=np.zeros((3, 3)))
    with pytest.raises(ValueError, match=r"shape\.npz.*'poses'"):
        load_motion(tmp_path / "shape.npz")
    np.savez(tmp_path / "frames.npz", poses=np.zeros((3, 72)), trans=np.zeros((4, 3)))
    with pytest.raises(ValueError, match="frames"):
        load_motion(tmp_path / "frames.npz")
    bad = np.zeros((3, 72))
    bad[1, 5] = np.nan
    np.savez(tmp_path / "nan.npz", poses=bad, trans=np.zeros((3, 3)))
    with pytest.raises(ValueError, match="NaN"):
        load_motion(tmp_path / "nan.npz")
    np.savez(tmp_path / "other.npz", foo=np.zeros(3))
    with pytest.raises(ValueError, match="not a recognised motion file"):
        load_motion(tmp_path / "other.npz")
    with pytest.raises(ValueError, match="not found"):
        load_motion(tmp_path / "missing.npz")
    with pytest.raises(ValueError, match="up_axis"):
        load_motion(tmp_path / "nokey.npz", up_axis="x")
    (tmp_path / "m.bvh").write_text("HIERARCHY")
    with pytest.raises(ValueError, match="unsupported"):
        load_motion(tmp_path / "m.bvh")


def test_object_arrays_are_not_unpickled(tmp_path):
    np.savez(tmp_path / "obj.npz", poses=np.array([None, 1], dtype=object), trans=np.zeros((2, 3)))
    with pytest.raises(ValueError):
        load_motion(tmp_path / "obj.npz")


def test_pickle_refused_unless_trusted(tmp_path):
    n = 4
    data = {"smpl_poses": np.zeros((n, 72)), "smpl_trans": np.full((n, 3), 2.0), "smpl_scaling": np.array([2.0])}
    with open(tmp_path / "aist.pkl", "wb") as f:
        pickle.dump(data, f)
    with pytest.raises(ValueError, match="trust_pickle"):
        load_motion(tmp_path / "aist.pkl")
    m = load_motion(tmp_path / "aist.pkl", trust_pickle=True)
    assert m.fps == 60.0
    np.testing.assert_allclose(m.transl, 1.0)


def test_motion_validation():
    with pytest.raises(ValueError, match="body_pose"):
        Motion(fps=30, global_orient=np.zeros((2, 3)), body_pose=np.zeros((2, 63)), transl=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="fps"):
        Motion(fps=0, global_orient=np.zeros((2, 3)), body_pose=np.zeros((2, 69)), transl=np.zeros((2, 3)))
    with pytest.raises(ValueError, match="frames"):
        Motion(fps=30, global_orient=np.zeros((2, 3)), body_pose=np.zeros((3, 69)), transl=np.zeros((2, 3)))


def test_body_params_round_trip():
    rng = np.random.default_rng(4)
    m = Motion(fps=12.0, global_orient=rng.normal(size=(5, 3)), body_pose=rng.normal(size=(5, 69)),
               transl=rng.normal(size=(5, 3)))  # fmt: skip
    p = m.with_betas(np.arange(10, dtype=np.float32))
    assert len(p) == 5 and p.betas.shape == (5, 10) and (p.betas[4] == np.arange(10)).all()
    np.testing.assert_array_equal(p.body_pose, m.body_pose)
    back = Motion.from_params(p.torch(), fps=12.0)
    for name in ("global_orient", "body_pose", "transl"):
        np.testing.assert_array_equal(getattr(back, name), getattr(m, name))
    with pytest.raises(ValueError, match="BodyParams"):
        m.with_betas(np.zeros((3, 10)))
