"""Issue #9, bad content: frames without a usable person (none, cut off, tiny, too dark, over-exposed) are skipped
with a recorded reason, the person is recovered where the frame allows it, and the rest of the clip goes on."""

from __future__ import annotations

import numpy as np
import pytest

from icon.person import PersonDetector, PersonTrackingConfig, compute_crop_boxes, crop_frames, detect_person
from tests.reliability import _inputs_media as media

SIZE = 256
TRACKING = PersonTrackingConfig(detect_size=SIZE)


@pytest.fixture(scope="module")
def detector():
    with PersonDetector() as d:
        yield d


@pytest.fixture(scope="module")
def frames() -> dict[str, np.ndarray]:
    return media.person_frames(SIZE)


# case -> (found?, pattern the skip reason must contain, what issue #9 expects)
CASES = {
    "no person (black)": (False, "no person detected; frame too dark", "skipped: no person, frame too dark"),
    "no person (noise)": (False, "no person detected", "skipped: no person"),
    "cut off at the edge (half)": (True, None, "found; crop reaches past the edge, padded"),
    "cut off at the edge (sliver)": (False, "no person detected", "skipped: not enough of a person"),
    "very small person": (False, "no person detected", "skipped with a reason"),
    "dark (x0.05)": (True, None, "found after a contrast stretch"),
    "nearly black (x0.004)": (False, "too dark", "skipped: frame too dark"),
    "washed out": (True, None, "found after a contrast stretch"),
    "over-exposed (x3, clipped)": (False, "over-exposed", "skipped: frame over-exposed"),
}


@pytest.mark.parametrize("case", list(CASES))
def test_frame_content(case, frames, detector, reliability_row):
    found, reason, expected = CASES[case]
    track = detect_person(frames[case][None], detector, TRACKING)
    assert bool(track.valid[0]) == found, track.reasons[0]
    if found:
        box = track.boxes[0]
        assert track.reasons[0] is None and (box[2] - box[0]) > 0.3 * SIZE
        seen = f"found, box {box.round().astype(int).tolist()}"
    else:
        assert reason in track.reasons[0] and not track.masks[0].any() and not track.keypoints[0].any()
        seen = f"skipped: {track.reasons[0]}"
    if case == "cut off at the edge (half)":
        crops = compute_crop_boxes(track.boxes, track.valid, margin=0.15, smooth=0.0)
        cropped = crop_frames(frames[case][None], track.masks, track.keypoints, crops, 128)
        right_edge_in_crop = (SIZE - (crops[0, 0] - crops[0, 2] / 2)) / crops[0, 2] * 128
        assert crops[0, 0] + crops[0, 2] / 2 > SIZE  # the square crop goes past the frame ...
        assert not cropped.images[0, :, int(right_edge_in_crop) + 2 :].any()  # ... and is padded with black there
        seen += f"; crop (cx, cy, size) {crops[0].round().astype(int).tolist()} padded past x={SIZE}"
    reliability_row(f"content: {case}", expected, seen)


def test_several_people_one_is_chosen(frames, detector, reliability_row):
    two = frames["two people"]
    track = detect_person(np.stack([two, two, two]), detector, TRACKING)
    assert track.valid.all()
    boxes = track.boxes
    half = SIZE / 2
    sides = {"left" if b[2] <= half + 4 else "right" if b[0] >= half - 4 else "both" for b in boxes}
    assert len(sides) == 1 and "both" not in sides  # one person, the same one in every frame
    other_half = slice(0, int(half) - 4) if sides == {"right"} else slice(int(half) + 4, SIZE)
    assert not track.masks[:, :, other_half].any()
    reliability_row("content: several people", "one person chosen and kept through the clip",
                    f"the {sides.pop()} person in all 3 frames, box {boxes[0].round().astype(int).tolist()}, the "
                    "other person's pixels not in the mask")  # fmt: skip


def test_bad_frames_are_skipped_and_the_clip_goes_on(frames, detector, reliability_row):
    names = ["person", "no person (black)", "dark (x0.05)", "over-exposed (x3, clipped)", "very small person",
             "person", "washed out", "person"]  # fmt: skip
    track = detect_person(np.stack([frames[n] for n in names]), detector, TRACKING)
    expected_valid = [CASES.get(n, (True,))[0] for n in names]
    assert track.valid.tolist() == expected_valid
    assert all((r is None) == v for r, v in zip(track.reasons, track.valid, strict=True))
    crops = compute_crop_boxes(track.boxes, track.valid, margin=0.15, smooth=1.0)
    assert np.isfinite(crops).all() and (crops[:, 2] > 0).all()  # skipped frames still get a crop (interpolated)
    reliability_row("content: clip mixing good and bad frames", "bad frames skipped with reasons, tracking goes on",
                    f"{int(track.valid.sum())} of {len(names)} frames found; skipped: "
                    + "; ".join(f"{t}: {r}" for t, r in enumerate(track.reasons) if r))  # fmt: skip


def test_pipeline_detection_pass_on_an_encoded_clip(tmp_path, frames, reliability_row):
    """The pipeline's own detection pass (decode -> detect, flows.pipeline.detect_frames) over an MP4 of bad frames."""
    from flows import pipeline
    from flows.config import load_config

    names = ["person", "no person (black)", "over-exposed (x3, clipped)", "dark (x0.05)", "person"]
    clip = media.write_frames(tmp_path / "mixed.mp4", np.stack([frames[n] for n in names]))
    cfg = load_config("fast", {"frames": {"fps": None}, "person": {"detect_size": SIZE}})
    det = pipeline.detect_frames(clip, cfg)
    assert det.valid.tolist() == [True, False, False, True, True]
    assert "too dark" in det.reasons[1] and "over-exposed" in det.reasons[2]
    crops = pipeline.crop_boxes(det, cfg)
    assert crops.shape == (5, 3) and np.isfinite(crops).all()
    reliability_row("content: bad frames in an encoded clip (pipeline detect pass)",
                    "skipped with reasons, the other frames kept",
                    f"valid {det.valid.astype(int).tolist()}; reasons {[r for r in det.reasons if r]}")  # fmt: skip
