"""Issue #9, bad motion files for re-posing (body.motion.load_motion): clear errors naming file and key, absurd
rotations refused or wrapped, pickles never unpickled unless trusted, an up-axis mix-up reported."""

from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from body.motion import MAX_ROTATION_RAD, load_motion, upright_score
from tests.reliability import _inputs_media as media

N = 8


def _err(exc: BaseException) -> str:
    return media.short_error(exc)


def walking(n: int = N) -> dict[str, np.ndarray]:
    """A plain Y-up SMPL motion: upright, turning slowly about Y, small joint rotations."""
    rng = np.random.default_rng(0)
    poses = rng.normal(scale=0.2, size=(n, 72))
    poses[:, :3] = 0.0
    poses[:, 1] = np.linspace(0, 1.0, n)  # yaw
    trans = np.zeros((n, 3))
    trans[:, 2] = np.linspace(0, 1, n)
    return {"poses": poses, "trans": trans, "fps": np.array(30.0)}


@pytest.mark.parametrize(
    "case, data, match",
    [
        ("wrong keys (none known)", {"rotations": np.zeros((N, 72)), "position": np.zeros((N, 3))},
         "not a recognised motion file.*rotations"),
        ("missing translation key", {"poses": np.zeros((N, 72))}, r"missing key 'trans'"),
        ("wrong shape (N, 70)", {"poses": np.zeros((N, 70)), "trans": np.zeros((N, 3))}, r"'poses' must have shape"),
        ("wrong shape (1-D poses)", {"poses": np.zeros(72), "trans": np.zeros((1, 3))}, r"'poses' must have shape"),
        ("frame counts differ", {"poses": np.zeros((N, 72)), "trans": np.zeros((N + 2, 3))}, "frames"),
        ("zero frames", {"poses": np.zeros((0, 72)), "trans": np.zeros((0, 3))}, "at least one frame"),
        ("strings instead of numbers", {"poses": np.array([["a"] * 72] * N), "trans": np.zeros((N, 3))},
         r"'poses' is not a numeric array"),
        ("NaN in poses", {**walking(), "poses": np.where(np.eye(N, 72) > 0, np.nan, walking()["poses"])},
         r"'poses' contains NaN"),
        ("inf in translation", {**walking(), "trans": np.full((N, 3), np.inf)}, r"'trans' contains NaN or infinite"),
        ("frame rate 0", {**walking(), "fps": np.array(0.0)}, r"'fps' must be a positive frame rate"),
    ],
)  # fmt: skip
def test_malformed_motion_is_a_clear_error(tmp_path, case, data, match, reliability_row):
    path = tmp_path / "motion.npz"
    np.savez(path, **data)
    with pytest.raises(ValueError, match=match) as err:
        load_motion(path)
    assert str(path) in str(err.value) or case == "zero frames"
    reliability_row(f"motion: {case}", "ValueError naming the file and key", _err(err.value))


def test_absurd_rotations_are_refused_naming_frame_and_joint(tmp_path, reliability_row):
    data = walking()
    data["poses"][3, 18 * 3] = 1e6  # left elbow, frame 3
    np.savez(tmp_path / "absurd.npz", **data)
    with pytest.raises(ValueError, match=r"absurd\.npz.*'poses'.*1e\+06 rad \(frame 3, left_elbow\).*degrees") as err:
        load_motion(tmp_path / "absurd.npz")
    degrees = walking()
    degrees["poses"] = np.degrees(degrees["poses"]) * 5  # a file written in degrees (and lively)
    np.savez(tmp_path / "degrees.npz", **degrees)
    with pytest.raises(ValueError, match="degrees") as err_deg:
        load_motion(tmp_path / "degrees.npz")
    reliability_row("motion: absurd rotation (axis-angle norm 1e6)", "refused naming key, frame and joint",
                    f"{_err(err.value)}; a file in degrees: {type(err_deg.value).__name__}")  # fmt: skip


def test_rotations_beyond_pi_are_wrapped_to_the_same_rotation(tmp_path, reliability_row):
    data = walking()
    axis = np.array([0.0, 0.6, 0.8])
    data["poses"][:, 18 * 3 : 18 * 3 + 3] = axis * 3.5 * np.pi  # 630 degrees: the same as -90 degrees
    np.savez(tmp_path / "wound.npz", **data)
    m = load_motion(tmp_path / "wound.npz")
    elbow = m.poses[:, 18 * 3 : 18 * 3 + 3]
    assert np.linalg.norm(elbow, axis=1).max() <= np.pi + 1e-6
    same = Rotation.from_rotvec(elbow).as_matrix()
    np.testing.assert_allclose(same, Rotation.from_rotvec(np.tile(axis * 3.5 * np.pi, (N, 1))).as_matrix(), atol=1e-5)
    reliability_row("motion: angles in (pi, 4 pi] (3.5 pi)", "wrapped to the same rotation with angle <= pi",
                    f"angle {np.linalg.norm(elbow[0]):.4f} rad (pi/2), rotation matrices equal; limit "
                    f"{MAX_ROTATION_RAD:.2f} rad")  # fmt: skip


class _Payload:
    """Unpickling this creates a marker file: proof that code from the file ran."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_pickle_is_refused_unless_trusted(tmp_path, reliability_row):
    marker = tmp_path / "code_ran"
    evil = tmp_path / "motion.pkl"
    evil.write_bytes(pickle.dumps({"poses": _Payload(str(marker))}))
    with pytest.raises(ValueError, match=r"motion\.pkl.*refusing to unpickle.*trust_pickle") as err:
        load_motion(evil)
    assert not marker.exists()
    disguised = tmp_path / "disguised.npz"  # a pickle under a .npz name: numpy must not unpickle it either
    disguised.write_bytes(evil.read_bytes())
    with pytest.raises(ValueError, match="disguised.npz") as err_npz:
        load_motion(disguised)
    assert not marker.exists()
    trusted = tmp_path / "aist.pkl"
    trusted.write_bytes(pickle.dumps({"smpl_poses": np.zeros((N, 72)), "smpl_trans": np.zeros((N, 3))}))
    assert load_motion(trusted, trust_pickle=True).num_frames == N
    reliability_row("motion: .pkl without the trust flag", "refused before unpickling; no code runs",
                    f"{_err(err.value)}; pickle named .npz: {_err(err_npz.value)[:120]}; marker file not created; "
                    "trust_pickle=True reads it")  # fmt: skip


def _amass_standing(n: int = N) -> dict[str, np.ndarray]:
    """An AMASS SMPL-H motion of a standing person: Z-up, so the root is rotated +90 degrees about X."""
    poses = np.zeros((n, 156))
    poses[:, 0] = np.pi / 2
    trans = np.zeros((n, 3))
    trans[:, 2] = 0.9
    return {"poses": poses, "trans": trans, "mocap_framerate": np.array(120.0)}


def test_up_axis_mix_up_is_reported(tmp_path, caplog, reliability_row):
    np.savez(tmp_path / "amass.npz", **_amass_standing())
    np.savez(tmp_path / "yup.npz", **walking())
    plain = _amass_standing()
    np.savez(tmp_path / "zup_plain.npz", poses=plain["poses"][:, :72], trans=plain["trans"])  # no frame rate: "Y-up"
    seen = {}
    for name, up_axis in [("amass.npz", "auto"), ("yup.npz", "auto"), ("amass.npz", "y"), ("yup.npz", "z"),
                          ("zup_plain.npz", "auto")]:  # fmt: skip
        caplog.clear()
        with caplog.at_level(logging.WARNING, logger="body.motion"):
            m = load_motion(tmp_path / name, up_axis=up_axis)
        warned = [r.getMessage() for r in caplog.records if "up axis" in r.getMessage()]
        seen[(name, up_axis)] = (round(upright_score(m.global_orient), 2), warned)
    assert seen[("amass.npz", "auto")] == (1.0, []) and seen[("yup.npz", "auto")][1] == []
    for wrong, suggestion in [(("amass.npz", "y"), "up_axis='z'"), (("yup.npz", "z"), "up_axis='y'"),
                              (("zup_plain.npz", "auto"), "up_axis='z'")]:  # fmt: skip
        score, warned = seen[wrong]
        assert abs(score) < 0.1 and len(warned) == 1 and suggestion in warned[0] and wrong[0] in warned[0]
    # A motion lying down either way (a floor exercise) is not reported: no up axis would make it upright.
    lying = walking()
    lying["poses"][:, :3] = [0.0, 0.0, np.pi / 2]
    np.savez(tmp_path / "floor.npz", **lying)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="body.motion"):
        load_motion(tmp_path / "floor.npz")
    assert "up axis" not in caplog.text
    reliability_row(
        "motion: Z-up file read as Y-up (and reverse)",
        "detected: warning naming file and the fix",
        f"upright score right/wrong: {seen[('amass.npz', 'auto')][0]}/{seen[('amass.npz', 'y')][0]}; "
        f"warning: {seen[('zup_plain.npz', 'auto')][1][0].split(': ', 1)[1]}; lying-down motion: no warning",
    )


def test_files_that_are_not_npz_archives(tmp_path, reliability_row):
    seen = []
    np.save(tmp_path / "array.npy", np.zeros((N, 72)))
    (tmp_path / "array.npz").write_bytes((tmp_path / "array.npy").read_bytes())  # a bare .npy renamed
    np.savez(tmp_path / "full.npz", **walking())
    (tmp_path / "cut.npz").write_bytes((tmp_path / "full.npz").read_bytes()[:300])  # a download cut short
    (tmp_path / "text.npz").write_text("poses: 1 2 3\n")
    (tmp_path / "empty.npz").touch()
    for name in ("array.npz", "cut.npz", "text.npz", "empty.npz"):
        with pytest.raises(ValueError, match=name.replace(".", r"\.")) as err:
            load_motion(tmp_path / name)
        seen.append(f"{name}: {str(err.value).split(': ', 1)[1][:70]}")
    reliability_row("motion: not an npz archive (.npy renamed, cut zip, text, empty)",
                    "ValueError naming the file", "; ".join(seen))  # fmt: skip


def test_oversized_motion_array_is_refused_before_decompressing(tmp_path, monkeypatch, reliability_row):
    import body.motion as motion_mod

    big = walking(2000)  # poses: 2000 x 72 float64 = 1.1 MiB uncompressed, compressing to a few KB
    big["poses"][:] = 0.0
    np.savez_compressed(tmp_path / "long.npz", **big)
    assert (tmp_path / "long.npz").stat().st_size < 100_000
    assert load_motion(tmp_path / "long.npz").num_frames == 2000
    default = motion_mod.MAX_MOTION_ARRAY_BYTES
    monkeypatch.setattr(motion_mod, "MAX_MOTION_ARRAY_BYTES", 1 << 20)  # stand-in for the 512 MiB default
    read = []
    monkeypatch.setattr(motion_mod, "_parse", lambda *a: read.append(a) or pytest.fail("array was read"))
    with pytest.raises(ValueError, match=r"long\.npz.*'poses\.npy' is 1\.1 MiB uncompressed") as err:
        load_motion(tmp_path / "long.npz")
    assert read == []
    reliability_row(
        "motion: array larger than the size bound (zip bomb)",
        "refused from the zip directory, unread",
        f"{_err(err.value)}; default bound {default >> 20} MiB, monkeypatched to "
        f"1 MiB; 2000-frame file ({(tmp_path / 'long.npz').stat().st_size} B compressed) refused",
    )
