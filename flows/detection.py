"""Detection and cropping of the sampled frames of a video: one decode pass that tracks the person, the crop boxes,
and the crops themselves (from the kept frames, or decoded a second time for long clips)."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from flows.config import PipelineConfig
from flows.resources import emit_progress, person_detector
from flows.video import iter_frames

if TYPE_CHECKING:
    from icon.person import CroppedFrames

DECODE_CHUNK = 32
"""Frames per decoded chunk; the person tracker restarts with a whole-frame search at each chunk."""
KEEP_DECODED_BYTES = 512 << 20
"""Decoded frames up to this size are kept from the detection pass; longer clips are decoded a second time."""


# ------------------------------------------------------------------------------------------- extraction (pure part)
@dataclass
class Detections:
    """Result of the detection pass over the sampled frames of a video (source pixels).

    Attributes:
        indices: ``(T,) int64`` source frame numbers.
        timestamps: ``(T,) float64`` seconds.
        keypoints: ``(T, 33, 3) float32``.
        boxes: ``(T, 4) float32`` person boxes.
        valid: ``(T,) bool``.
        reasons: skip reason per frame (None where valid).
        masks: per frame ``(x0, y0, (h, w), packed)`` of the person mask inside its box, bit-packed
            (``np.packbits``, 8 pixels per byte, so a long clip's detections stay small), or None.
        image_hw: (H, W) of the decoded frames.
        seconds: ``(T,)`` decode + detection seconds per frame.
        images: the decoded ``(T, H, W, 3)`` frames when they fit ``KEEP_DECODED_BYTES``, else None.
        keypoints3d: ``(T, 33, 4) float32`` MediaPipe metric 3D landmarks + visibility, or None.
    """

    indices: np.ndarray
    timestamps: np.ndarray
    keypoints: np.ndarray
    boxes: np.ndarray
    valid: np.ndarray
    reasons: list[str | None]
    masks: list[tuple[int, int, tuple[int, int], np.ndarray] | None]
    image_hw: tuple[int, int]
    seconds: np.ndarray
    images: np.ndarray | None = None
    keypoints3d: np.ndarray | None = None

    def full_masks(self, rows: np.ndarray) -> np.ndarray:
        """``(n, H, W) bool`` masks of the frames at positions ``rows``."""
        h, w = self.image_hw
        out = np.zeros((len(rows), h, w), bool)
        for i, t in enumerate(rows):
            m = self.masks[int(t)]
            if m is not None:
                x0, y0, (sh, sw), packed = m
                out[i, y0 : y0 + sh, x0 : x0 + sw] = np.unpackbits(packed, count=sh * sw).reshape(sh, sw)
        return out


def detect_frames(video: str | Path, config: PipelineConfig, keep_bytes: int = KEEP_DECODED_BYTES) -> Detections:
    """Decode the sampled frames chunk by chunk and find the person in each (bounded memory: only keypoints, boxes
    and the mask inside each box are kept, plus the frames themselves while they fit ``keep_bytes``)."""
    from icon.person import PersonTrackingConfig, detect_person, mask_box

    tracking = PersonTrackingConfig(detect_size=config.person.detect_size)
    detector = person_detector()
    idx, ts, kps, boxes, valid, reasons, masks, secs, kept = [], [], [], [], [], [], [], [], []
    kps3d: list[np.ndarray | None] = []
    kept_bytes = 0
    hw = (0, 0)
    t0 = time.perf_counter()
    n_done = 0
    for chunk in iter_frames(video, config.frames, chunk_size=DECODE_CHUNK):
        # the number of frames is known only at the end (sampling, max_frames, damaged files): the bar counts up
        track = detect_person(chunk.images, detector, tracking, lambda k, _n, base=n_done: emit_progress(
            "steps", label="detection", completed=base + k, total=None))
        n_done += len(chunk)
        hw = chunk.images.shape[1:3]
        for i in range(len(chunk)):
            box = mask_box(track.masks[i]) if track.valid[i] else None
            if box is None:
                masks.append(None)
            else:
                x0, y0, x1, y1 = (int(v) for v in box)
                sub = track.masks[i, y0:y1, x0:x1]
                masks.append((x0, y0, sub.shape, np.packbits(sub, axis=None)))
        idx.append(chunk.indices)
        ts.append(chunk.timestamps)
        kps.append(track.keypoints)
        kps3d.append(track.keypoints3d)
        boxes.append(track.boxes)
        valid.append(track.valid)
        reasons.extend(track.reasons)
        now = time.perf_counter()
        secs.append(np.full(len(chunk), (now - t0) / len(chunk)))
        t0 = now
        if kept is not None:
            kept_bytes += chunk.images.nbytes
            kept = kept + [chunk.images] if kept_bytes <= keep_bytes else None
    emit_progress("steps", label="detection", completed=n_done, total=n_done)
    return Detections(
        indices=np.concatenate(idx),
        timestamps=np.concatenate(ts),
        keypoints=np.concatenate(kps).astype(np.float32),
        boxes=np.concatenate(boxes).astype(np.float32),
        valid=np.concatenate(valid),
        reasons=reasons,
        masks=masks,
        image_hw=(int(hw[0]), int(hw[1])),
        seconds=np.concatenate(secs),
        images=np.concatenate(kept) if kept else None,
        keypoints3d=(np.concatenate(kps3d).astype(np.float32) if kps3d and all(k is not None for k in kps3d) else None),
    )


def crop_boxes(det: Detections, config: PipelineConfig) -> np.ndarray:
    """``(T, 3)`` smoothed square crops (cx, cy, size) around the person; the whole frame when nobody was found."""
    from icon.person import compute_crop_boxes

    if not det.valid.any():
        h, w = det.image_hw
        return np.tile(np.array([w / 2, h / 2, max(h, w)], np.float32), (len(det.valid), 1))
    return compute_crop_boxes(det.boxes, det.valid, config.person.crop_margin, config.person.crop_smoothing)


def iter_crops(
    video: str | Path, config: PipelineConfig, det: Detections, crops: np.ndarray
) -> Iterator[tuple[np.ndarray, CroppedFrames, np.ndarray]]:
    """Yield ``(store positions, crops, seconds per frame)`` chunk by chunk, re-decoding the video when the
    detection pass did not keep the frames.

    Raises:
        VideoError: the second decode selected other frames than the first (the file changed meanwhile).
    """
    from flows.video import VideoError
    from icon.person import crop_frames

    size = config.person.crop_size
    if det.images is not None:
        chunks: Any = (
            (np.arange(s, min(s + DECODE_CHUNK, len(det.indices))), det.images[s : s + DECODE_CHUNK])
            for s in range(0, len(det.indices), DECODE_CHUNK)
        )
    else:

        def redecode() -> Iterator[tuple[np.ndarray, np.ndarray]]:
            pos = 0
            for chunk in iter_frames(video, config.frames, chunk_size=DECODE_CHUNK):
                rows = np.arange(pos, pos + len(chunk))
                if rows[-1] >= len(det.indices) or not np.array_equal(det.indices[rows], chunk.indices):
                    raise VideoError(f"{video}: the video changed while it was being read; run again")
                pos += len(chunk)
                yield rows, chunk.images

        chunks = redecode()
    t0 = time.perf_counter()
    for rows, images in chunks:
        cropped = crop_frames(images, det.full_masks(rows), det.keypoints[rows], crops[rows], size)
        now = time.perf_counter()
        yield rows, cropped, np.full(len(rows), (now - t0) / len(rows))
        t0 = now


