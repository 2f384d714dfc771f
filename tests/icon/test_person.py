"""Tests for icon.person: mask cleaning, crop boxes, crop <-> source maps, tracking logic, MediaPipe on a real photo."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import torch
from skimage import data

from icon.person import (
    KEYPOINT_NAMES,
    NUM_KEYPOINTS,
    PersonDetector,
    PersonTrackingConfig,
    PoseEstimate,
    box_iou,
    clean_person_mask,
    compute_crop_boxes,
    crop_frames,
    crop_to_source,
    detect_person,
    mask_box,
    mask_boxes,
    source_to_crop,
)

# ----------------------------------------------------------------------------------------------------------------------
# Masks and boxes
# ----------------------------------------------------------------------------------------------------------------------


class TestCleanPersonMask:
    def test_keeps_one_component_and_fills_hole(self):
        soft = np.zeros((100, 120), np.float32)
        soft[20:90, 40:80] = 0.9  # the person
        soft[50:60, 55:65] = 0.1  # a hole inside
        soft[5:8, 5:8] = 0.8  # noise blobs
        soft[92:97, 100:110] = 0.7
        soft[30:32, 100:102] = 1.0
        clean = clean_person_mask(soft, close_radius=2)
        expected = np.zeros_like(clean)
        expected[20:90, 40:80] = True
        assert clean.dtype == bool
        np.testing.assert_array_equal(clean, expected)

    def test_keypoints_choose_the_component(self):
        mask = np.zeros((60, 100), bool)
        mask[10:50, 5:45] = True  # larger, no keypoints
        mask[20:50, 70:90] = True  # smaller, holds the keypoints
        keypoints = np.array([[75.5, 25.5, 0.9], [85.5, 45.5, 0.9], [20.0, 20.0, 0.1]], np.float32)
        clean = clean_person_mask(mask, keypoints=keypoints, close_radius=0)
        assert clean[30, 80] and not clean[30, 20]
        # without keypoints the largest wins
        clean = clean_person_mask(mask, close_radius=0)
        assert clean[30, 20] and not clean[30, 80]

    def test_close_joins_gaps_and_keeps_border_pixels(self):
        mask = np.zeros((50, 50), bool)
        mask[0:50, 10:20] = True
        mask[0:50, 22:30] = True  # 2 px gap: the close bridges it
        clean = clean_person_mask(mask, close_radius=2)
        assert clean[:, 10:30].all()  # including rows 0 and 49 at the image border
        assert not clean[:, :9].any() and not clean[:, 31:].any()

    def test_empty_and_bad_shape(self):
        assert not clean_person_mask(np.zeros((10, 10), np.float32)).any()
        with pytest.raises(ValueError, match=r"\(H, W\)"):
            clean_person_mask(np.zeros((2, 10, 10)))


def test_mask_box_and_iou():
    mask = np.zeros((20, 30), bool)
    mask[5:10, 3:7] = True
    np.testing.assert_array_equal(mask_box(mask), [3, 5, 7, 10])
    assert mask_box(np.zeros((4, 4), bool)) is None
    boxes, valid = mask_boxes(np.stack([mask, np.zeros_like(mask)]))
    np.testing.assert_array_equal(valid, [True, False])
    np.testing.assert_array_equal(boxes[1], 0)
    a = np.array([0, 0, 10, 10.0])
    assert box_iou(a, a) == pytest.approx(1.0)
    assert box_iou(a, np.array([5, 0, 15, 10.0])) == pytest.approx(50 / 150)
    assert box_iou(a, np.array([20, 20, 30, 30.0])) == 0.0


# ----------------------------------------------------------------------------------------------------------------------
# Crop boxes
# ----------------------------------------------------------------------------------------------------------------------


class TestComputeCropBoxes:
    def test_square_with_margin_around_box(self):
        boxes = np.array([[10, 20, 50, 120], [100, 0, 300, 80]], np.float32)
        crops = compute_crop_boxes(boxes, margin=0.1)
        np.testing.assert_allclose(crops, [[30, 70, 120], [200, 40, 240]])

    @pytest.mark.parametrize("smooth", [0.0, 2.0])
    def test_contains_each_box_with_margin(self, smooth):
        rng = np.random.default_rng(1)
        t = 40
        x0 = np.cumsum(rng.normal(0, 8, t)) + 300
        y0 = np.cumsum(rng.normal(0, 4, t)) + 100
        w = rng.uniform(80, 160, t)
        h = rng.uniform(200, 320, t)
        boxes = np.stack([x0, y0, x0 + w, y0 + h], 1)
        margin = 0.15
        crops = compute_crop_boxes(boxes, margin=margin, smooth=smooth)
        assert crops.shape == (t, 3) and crops.dtype == np.float32
        half = crops[:, 2] / 2
        pad = margin * np.maximum(w, h) - 1e-3
        assert np.all(crops[:, 0] - half <= boxes[:, 0] - pad)
        assert np.all(crops[:, 0] + half >= boxes[:, 2] + pad)
        assert np.all(crops[:, 1] - half <= boxes[:, 1] - pad)
        assert np.all(crops[:, 1] + half >= boxes[:, 3] + pad)
        if smooth:
            raw = compute_crop_boxes(boxes, margin=margin)
            assert np.abs(np.diff(crops[:, 0])).mean() < np.abs(np.diff(raw[:, 0])).mean()

    def test_skipped_frames_are_interpolated(self):
        boxes = np.array([[0, 0, 10, 10], [0, 0, 0, 0], [20, 0, 30, 10], [0, 0, 0, 0]], np.float32)
        valid = np.array([True, False, True, False])
        crops = compute_crop_boxes(boxes, valid, margin=0.0)
        np.testing.assert_allclose(crops[:, 0], [5, 15, 25, 25])
        np.testing.assert_allclose(crops[:, 2], 10)

    def test_errors(self):
        with pytest.raises(ValueError, match="every frame was skipped"):
            compute_crop_boxes(np.zeros((3, 4)), np.zeros(3, bool))
        with pytest.raises(ValueError, match=r"\(T, 4\)"):
            compute_crop_boxes(np.zeros((3, 3)))


# ----------------------------------------------------------------------------------------------------------------------
# Crop <-> source maps and crop_frames
# ----------------------------------------------------------------------------------------------------------------------


class TestCropMaps:
    def test_round_trip_numpy(self):
        rng = np.random.default_rng(0)
        points = np.concatenate([rng.uniform(-50, 700, (4, 33, 2)), rng.uniform(0, 1, (4, 33, 1))], 2)
        crops = np.array([[300, 200, 400], [10, 10, 50], [600, 300, 900], [320, 240, 512]], np.float64)
        crop_pts = source_to_crop(points, crops, 512)
        np.testing.assert_allclose(crop_to_source(crop_pts, crops, 512), points, rtol=0, atol=1e-9)
        np.testing.assert_array_equal(crop_pts[..., 2], points[..., 2])  # confidence passes through
        # the crop's corners map to 0 and S
        corners = np.array([[[100, 0], [500, 400]]], np.float64)
        np.testing.assert_allclose(source_to_crop(corners, crops[:1], 512)[0], [[0, 0], [512, 512]])

    def test_round_trip_torch_keeps_type_and_grad(self):
        points = (torch.rand(2, 5, 2, dtype=torch.float64) * 100).requires_grad_()
        crops = torch.tensor([[50.0, 40.0, 80.0], [10.0, 20.0, 30.0]], dtype=torch.float64)
        back = crop_to_source(source_to_crop(points, crops, 256), crops, 256)
        assert isinstance(back, torch.Tensor)
        torch.testing.assert_close(back, points)
        back.sum().backward()
        assert points.grad is not None

    def test_shape_errors(self):
        with pytest.raises(ValueError, match="points must be"):
            crop_to_source(np.zeros((2, 3)), np.zeros((2, 3)), 64)
        with pytest.raises(ValueError, match="crops must be"):
            crop_to_source(np.zeros((2, 3, 2)), np.zeros((3, 3)), 64)


def _random_clip(t: int = 2, h: int = 120, w: int = 160, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (t, h, w, 3), dtype=np.uint8)


class TestCropFrames:
    def test_unit_scale_crop_is_an_exact_slice(self):
        images = _random_clip()
        masks = images[..., 0] > 128
        keypoints = np.zeros((2, NUM_KEYPOINTS, 3), np.float32)
        crops = np.array([[100, 80, 64], [40, 50, 32]], np.float32)
        out = crop_frames(images, masks, keypoints, crops[:1].repeat(2, 0), size=64)
        np.testing.assert_array_equal(out.images[0], images[0, 48:112, 68:132])
        np.testing.assert_array_equal(out.masks[0], masks[0, 48:112, 68:132])
        assert out.images.shape == (2, 64, 64, 3) and out.masks.dtype == bool and out.size == 64

    def test_padding_at_borders(self):
        images = _random_clip()
        masks = np.ones(images.shape[:3], bool)
        keypoints = np.zeros((2, NUM_KEYPOINTS, 3), np.float32)
        crops = np.array([[10, 10, 40], [150, 115, 40]], np.float32)  # over the top-left / bottom-right corners
        out = crop_frames(images, masks, keypoints, crops, size=40, pad_value=(7, 8, 9))
        # frame 0: crop x in [-10, 30], y in [-10, 30]: first 10 rows/cols are outside the image
        np.testing.assert_array_equal(out.images[0, :10].reshape(-1, 3), np.tile([7, 8, 9], (400, 1)))
        np.testing.assert_array_equal(out.images[0, :, :10].reshape(-1, 3), np.tile([7, 8, 9], (400, 1)))
        np.testing.assert_array_equal(out.images[0, 10:, 10:], images[0, :30, :30])
        assert not out.masks[0, :10].any() and out.masks[0, 10:, 10:].all()
        # frame 1: x in [130, 170] (image ends at 160), y in [95, 135] (ends at 120)
        np.testing.assert_array_equal(out.images[1, :25, :30], images[1, 95:, 130:])
        assert (out.images[1, 25:] == [7, 8, 9]).all() and (out.images[1, :, 30:] == [7, 8, 9]).all()
        assert out.masks[1, :25, :30].all() and not out.masks[1, 25:].any() and not out.masks[1, :, 30:].any()

    @pytest.mark.parametrize("crop_size", [96.0, 150.0, 41.0])
    def test_keypoints_land_on_the_same_content(self, crop_size):
        # A smooth blob centred at source (u, v) = (73.2, 52.9) in continuous pixels (pixel centres at j + 0.5);
        # after cropping and resampling, the crop's intensity centroid must sit where source_to_crop puts it.
        h, w, s = 120, 160, 64
        rows, cols = np.mgrid[0:h, 0:w]
        blob = np.exp(-((cols + 0.5 - 73.2) ** 2 + (rows + 0.5 - 52.9) ** 2) / (2 * 4.0**2))
        images = np.repeat(np.round(255 * blob).astype(np.uint8)[None, ..., None], 3, axis=3)
        keypoints = np.zeros((1, NUM_KEYPOINTS, 3), np.float32)
        keypoints[0, 0] = (73.2, 52.9, 1.0)
        crops = np.array([[80.3, 61.7, crop_size]], np.float32)
        out = crop_frames(images, np.zeros((1, h, w), bool), keypoints, crops, size=s)
        weight = out.images[0, ..., 0].astype(np.float64)
        rows, cols = np.mgrid[0:s, 0:s]
        centroid = np.array([(weight * (cols + 0.5)).sum(), (weight * (rows + 0.5)).sum()]) / weight.sum()
        np.testing.assert_allclose(centroid, out.keypoints[0, 0, :2], atol=0.05)  # a half-pixel slip is >= 0.2
        back = crop_to_source(out.keypoints, out.crops, s)
        np.testing.assert_allclose(back, keypoints, atol=1e-4)

    def test_shape_errors(self):
        images = _random_clip()
        kp = np.zeros((2, 33, 3))
        with pytest.raises(ValueError, match="masks must be"):
            crop_frames(images, np.zeros((2, 5, 5), bool), kp, np.ones((2, 3)), 32)
        with pytest.raises(ValueError, match="images must be"):
            crop_frames(images[0], np.zeros((2, 5, 5), bool), kp, np.ones((2, 3)), 32)


# ----------------------------------------------------------------------------------------------------------------------
# Tracking logic with a fake detector
# ----------------------------------------------------------------------------------------------------------------------


class FakeDetector:
    """Sees bright rectangles on black as people. Like MediaPipe it returns one person, here deliberately the first
    in scan order (top-left), with a segmentation mask that covers every person it sees."""

    def __init__(self) -> None:
        self.calls = 0

    def __call__(self, image: np.ndarray) -> PoseEstimate | None:
        self.calls += 1
        fg = image.max(axis=2) > 60
        n, labels, stats, _ = cv2.connectedComponentsWithStats(fg.astype(np.uint8))
        if n <= 1:
            return None
        x, y, w, h = stats[1, :4]  # first component in scan order
        gx, gy = np.meshgrid(np.linspace(x + 0.5, x + w - 0.5, 3), np.linspace(y + 0.5, y + h - 0.5, 11))
        keypoints = np.stack([gx.ravel(), gy.ravel(), np.full(33, 0.9)], 1).astype(np.float32)
        return PoseEstimate(keypoints=keypoints, mask=fg.astype(np.float32))


def _scene(people: list[tuple[int, int, int, int]], h: int = 240, w: int = 320) -> np.ndarray:
    image = np.zeros((h, w, 3), np.uint8)
    for x0, y0, x1, y1 in people:
        image[y0:y1, x0:x1] = 220
    return image


FAKE_CONFIG = PersonTrackingConfig(detect_size=256, close_radius=1)


class TestTracking:
    def test_picks_the_main_person_and_follows_them(self):
        frames = []
        for t in range(6):
            main = (130 + 6 * t, 60, 190 + 6 * t, 200)  # large, central, walking right
            other = (20 + 4 * t, 10, 60 + 4 * t, 100)  # smaller, top-left: the fake detector's own pick
            frames.append(_scene([main, other]))
        detector = FakeDetector()
        track = detect_person(np.stack(frames), detector, FAKE_CONFIG)
        assert track.valid.all() and track.reasons == [None] * 6
        expected = np.array([[130 + 6 * t, 60, 190 + 6 * t, 200] for t in range(6)], np.float32)
        np.testing.assert_allclose(track.boxes, expected, atol=2.5)
        assert not track.masks[:, 50, 40].any()  # never the other person
        assert track.masks[:, 130, 160].all()
        assert track.keypoints.shape == (6, NUM_KEYPOINTS, 3) and track.keypoints.dtype == np.float32

    def test_tracked_person_lost_then_found_again(self):
        main, other = (120, 60, 180, 200), (10, 10, 60, 110)
        frames = [_scene([main, other])] * 2 + [_scene([other])] * 2 + [_scene([main, other])] * 2
        track = detect_person(np.stack(frames), FakeDetector(), FAKE_CONFIG)
        np.testing.assert_array_equal(track.valid, [True, True, False, False, True, True])
        assert track.reasons[2] == track.reasons[3] == "tracked person lost"
        np.testing.assert_allclose(track.boxes[[0, 1, 4, 5]], np.tile(main, (4, 1)), atol=2.5)
        assert not track.masks[2:4].any() and (track.keypoints[2:4] == 0).all()

    def test_new_track_after_max_lost_frames(self):
        main, other = (120, 60, 180, 200), (10, 10, 60, 110)
        frames = [_scene([main, other])] * 2 + [_scene([other])] * 4
        config = PersonTrackingConfig(detect_size=256, close_radius=1, max_lost_frames=1)
        track = detect_person(np.stack(frames), FakeDetector(), config)
        np.testing.assert_array_equal(track.valid, [True, True, False, False, True, True])
        np.testing.assert_allclose(track.boxes[4:], np.tile(other, (2, 1)), atol=2.5)

    def test_skips_empty_and_tiny_frames_and_goes_on(self):
        main = (120, 60, 180, 200)
        frames = [_scene([]), _scene([(150, 100, 160, 110)]), _scene([main]), _scene([])]
        track = detect_person(np.stack(frames), FakeDetector(), FAKE_CONFIG)
        np.testing.assert_array_equal(track.valid, [False, False, True, False])
        assert track.reasons[0].startswith("no person detected; frame too dark")  # black frame
        assert track.reasons[1] == "person too small"
        assert track.reasons[2] is None
        assert track.reasons[3].startswith("no person detected; frame too dark")

    def test_tracking_uses_a_search_crop(self):
        # Once locked on, a lone person costs one detector call per frame.
        frames = np.stack([_scene([(120 + 2 * t, 60, 180 + 2 * t, 200)]) for t in range(5)])
        detector = FakeDetector()
        track = detect_person(frames, detector, FAKE_CONFIG)
        assert track.valid.all() and detector.calls == 5

    def test_bad_images(self):
        with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
            detect_person(np.zeros((4, 5, 3), np.uint8), FakeDetector())
        with pytest.raises(ValueError, match=r"\(T, H, W, 3\) uint8"):
            detect_person(np.zeros((1, 4, 5, 3), np.float32), FakeDetector())


# ----------------------------------------------------------------------------------------------------------------------
# MediaPipe on a real photo
# ----------------------------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def mediapipe_detector():
    with PersonDetector() as detector:
        yield detector


class TestMediaPipe:
    def test_astronaut(self, mediapipe_detector):
        image = data.astronaut()  # 512x512, a person facing the camera, upper body
        track = detect_person(image[None], mediapipe_detector)
        assert track.valid[0], track.reasons
        kp = track.keypoints[0]
        nose = kp[KEYPOINT_NAMES.index("nose")]
        left_sh = kp[KEYPOINT_NAMES.index("left_shoulder")]
        right_sh = kp[KEYPOINT_NAMES.index("right_shoulder")]
        # Measured: nose (223, 128), left shoulder (306, 257), right shoulder (113, 240), all confidence > 0.99.
        assert 200 < nose[0] < 245 and 105 < nose[1] < 150 and nose[2] > 0.9
        assert left_sh[0] > 270 and right_sh[0] < 150  # facing the camera: subject's left is image right
        assert 210 < left_sh[1] < 290 and 210 < right_sh[1] < 290
        assert min(left_sh[2], right_sh[2]) > 0.9
        assert nose[1] < min(left_sh[1], right_sh[1]) - 60
        mask = track.masks[0]
        assert mask[128, 222] and mask[350, 200] and mask[250, 250]  # face, chest, collar
        assert not mask[30, 470] and not mask[200, 20] and not mask[60, 60]  # backdrop, flag
        assert 0.3 < mask.mean() < 0.55  # measured 0.43
        x0, y0, x1, y1 = track.boxes[0]
        assert x0 < 40 and y0 < 40 and 340 < x1 < 420 and y1 > 500  # measured (11, 16, 368, 512)
        # Metric 3D landmarks (x right, y down, z away from the camera, metres, hip-centred) + visibility.
        kp3 = track.keypoints3d[0]
        assert track.keypoints3d.shape == (1, 33, 4) and kp3.dtype == np.float32
        nose3, ls3, rs3 = (kp3[KEYPOINT_NAMES.index(n)] for n in ("nose", "left_shoulder", "right_shoulder"))
        assert nose3[3] > 0.9 and min(ls3[3], rs3[3]) > 0.9
        assert ls3[0] - rs3[0] > 0.2  # shoulders ~0.3 m apart, the subject's left at image right
        assert nose3[1] < ls3[1] - 0.1 and nose3[2] < (ls3[2] + rs3[2]) / 2  # nose above and nearer the camera

    def test_blank_and_noise_are_skipped(self, mediapipe_detector):
        blank = np.full((256, 256, 3), 128, np.uint8)
        noise = np.random.default_rng(0).integers(0, 256, (256, 256, 3), dtype=np.uint8)
        track = detect_person(np.stack([blank, noise]), mediapipe_detector)
        assert not track.valid.any()
        assert track.reasons == ["no person detected; frame blank (uniform luma 128/255)", "no person detected"]

    def test_closed_detector_refuses(self):
        detector = PersonDetector()
        detector.close()
        detector.close()  # idempotent
        with pytest.raises(RuntimeError, match="closed"):
            detector(np.zeros((8, 8, 3), np.uint8))
