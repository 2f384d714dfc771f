"""Tests for flows/video.py on tiny clips generated with the bundled ffmpeg binary."""

import logging
import subprocess
from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from flows.video import (
    FrameSampling,
    NoDecodableFramesError,
    NoFramesSelectedError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoNotFoundError,
    _parse_probe,
    ffmpeg_exe,
    iter_frames,
    probe_video,
    read_frames,
    write_video,
)

W, H = 32, 24  # landscape, so a 90° rotation visibly swaps the sides


def ffmpeg(*args: str | Path) -> None:
    subprocess.run([ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *map(str, args)], check=True)


def red_corner_clip(n: int = 6) -> np.ndarray:
    """(n, H, W, 3) black frames with a red 8x8 square in the top-left corner."""
    frames = np.zeros((n, H, W, 3), np.uint8)
    frames[:, :8, :8, 0] = 255
    return frames


def red_quadrant(image: np.ndarray) -> str:
    """Which corner of an (h, w, 3) image holds the red square: 'tl', 'tr', 'bl' or 'br'."""
    h, w = image.shape[:2]
    red = (image[..., 0] > 150) & (image[..., 1] < 100) & (image[..., 2] < 100)
    ys, xs = np.nonzero(red)
    assert len(ys) >= 8, "no red square found"
    return ("t" if ys.mean() < h / 2 else "b") + ("l" if xs.mean() < w / 2 else "r")


@pytest.fixture(scope="module")
def media(tmp_path_factory) -> dict[str, Path]:
    """All test inputs, generated once per module (each is a few KB)."""
    d = tmp_path_factory.mktemp("media")
    f = {name: d / name for name in ("cfr.mp4", "red.mp4", "vfr.mkv", "odd.mkv", "audio.m4a", "still.mp4")}
    # 10 fps, 10 frames, 64x48, all key frames and faststart, so a cut copy keeps its header and decodes up to the cut
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x48:rate=10", "-frames:v", "10", "-c:v", "libx264", "-g", "1",
           "-pix_fmt", "yuv420p", "-movflags", "+faststart", f["cfr.mp4"])  # fmt: skip
    write_video(f["red.mp4"], red_corner_clip(), fps=10)
    for deg in (90, 180, 270):
        f[f"rot{deg}.mp4"] = d / f"rot{deg}.mp4"
        ffmpeg("-display_rotation", str(deg), "-i", f["red.mp4"], "-c", "copy", f[f"rot{deg}.mp4"])
    # VFR: 0.0 .. 0.4 at 10 fps, a 0.6 s gap, then 1.0 .. 1.4
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=32x24:rate=10", "-frames:v", "10",
           "-vf", r"setpts='(N*0.1+gte(N\,5)*0.5)/TB'", "-fps_mode", "vfr", "-c:v", "ffv1", f["vfr.mkv"])  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=321x241:rate=5", "-frames:v", "3", "-c:v", "ffv1", f["odd.mkv"])
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", "-c:a", "aac", f["audio.m4a"])
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=40x30", "-frames:v", "1", "-f", "image2", "-c:v", "png", f["still.mp4"])
    return f


@pytest.fixture
def raw_rgba() -> np.ndarray:
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, size=(3, 6, 10, 4), dtype=np.uint8)


def encode_raw(tmp_path: Path, frames: np.ndarray, pix_fmt: str, out: Path, *codec_args: str) -> Path:
    raw = tmp_path / "frames.raw"
    raw.write_bytes(frames.tobytes())
    h, w = frames.shape[1:3]
    ffmpeg("-f", "rawvideo", "-pix_fmt", pix_fmt, "-s", f"{w}x{h}", "-framerate", "5", "-i", raw, *codec_args, out)
    return out


class TestProbe:
    def test_cfr(self, media):
        info = probe_video(media["cfr.mp4"])
        assert (info.width, info.height, info.fps, info.duration_s) == (64, 48, 10.0, 1.0)
        assert (info.codec, info.pix_fmt, info.rotation_deg, info.n_frames_estimate) == ("h264", "yuv420p", 0, 10)
        assert info.path == media["cfr.mp4"]

    @pytest.mark.parametrize("deg", [90, 180, 270])
    def test_rotation_swaps_display_size(self, media, deg):
        info = probe_video(media[f"rot{deg}.mp4"])
        assert info.rotation_deg == deg
        assert (info.width, info.height) == ((H, W) if deg in (90, 270) else (W, H))

    def test_parse_old_rotate_tag_and_tricky_tokens(self):
        text = """Input #0, mov,mp4,m4a,3gp,3g2,mj2, from 'phone.mov':
  Duration: 00:01:02.50, start: 0.000000, bitrate: 9000 kb/s
  Stream #0:0[0x1](und): Audio: aac (LC) (mp4a / 0x6134706D), 48000 Hz, stereo, fltp, 128 kb/s (default)
  Stream #0:1[0x2](und): Video: hevc (Main) (hvc1 / 0x31637668), yuv420p(tv, bt709), 1920x1080, 8000 kb/s, 29.97 fps, 29.97 tbr, 90k tbn (default)
    Metadata:
      rotate          : 90
      handler_name    : Core Media Video
"""  # noqa: E501
        info = _parse_probe(text, Path("phone.mov"))
        assert (info.codec, info.pix_fmt, info.stream_index) == ("hevc", "yuv420p", 1)
        assert info.rotation_deg == 270  # the old tag is clockwise, rotation_deg is counter-clockwise
        assert (info.width, info.height) == (1080, 1920)
        assert info.fps == pytest.approx(29.97) and info.duration_s == pytest.approx(62.5)
        assert info.n_frames_estimate == 1873

    def test_parse_skips_cover_art(self):
        text = """Input #0, mp3, from 'song.mp3':
  Duration: 00:00:03.00, start: 0.000000, bitrate: 128 kb/s
  Stream #0:0: Audio: mp3, 44100 Hz, stereo, fltp, 128 kb/s
  Stream #0:1: Video: png, rgb24(pc), 300x300, 90k tbr, 90k tbn (attached pic)
"""
        with pytest.raises(NoVideoStreamError, match="song.mp3"):
            _parse_probe(text, Path("song.mp3"))


class TestReadFrames:
    def test_all_frames(self, media):
        chunk = read_frames(media["cfr.mp4"])
        assert chunk.images.shape == (10, 48, 64, 3) and chunk.images.dtype == np.uint8
        np.testing.assert_array_equal(chunk.indices, np.arange(10))
        np.testing.assert_allclose(chunk.timestamps, np.arange(10) / 10, atol=1e-6)
        assert not chunk.truncated and chunk.warnings == ()

    def test_unrotated_orientation(self, media):
        chunk = read_frames(media["red.mp4"])
        assert chunk.images.shape == (6, H, W, 3)
        assert all(red_quadrant(im) == "tl" for im in chunk.images)

    # display_rotation is counter-clockwise: the top-left corner moves to bottom-left (90), bottom-right (180),
    # top-right (270).
    @pytest.mark.parametrize(("deg", "corner"), [(90, "bl"), (180, "br"), (270, "tr")])
    def test_rotation_applied(self, media, deg, corner):
        chunk = read_frames(media[f"rot{deg}.mp4"])
        info = probe_video(media[f"rot{deg}.mp4"])
        assert chunk.images.shape[1:] == (info.height, info.width, 3)
        assert red_quadrant(chunk.images[0]) == corner

    def test_vfr_timestamps(self, media):
        chunk = read_frames(media["vfr.mkv"])
        expected = [0.0, 0.1, 0.2, 0.3, 0.4, 1.0, 1.1, 1.2, 1.3, 1.4]
        np.testing.assert_allclose(chunk.timestamps, expected, atol=1e-3)
        np.testing.assert_array_equal(chunk.indices, np.arange(10))

    def test_vfr_fps_sampling_picks_nearest_frames(self, media):
        # targets 0, .2, ..., 1.4; inside the gap 0.6 -> 0.4 (nearer) and 0.8 -> 1.0 (nearer); repeats dropped
        chunk = read_frames(media["vfr.mkv"], FrameSampling(fps=5))
        np.testing.assert_allclose(chunk.timestamps, [0.0, 0.2, 0.4, 1.0, 1.2, 1.4], atol=1e-3)
        np.testing.assert_array_equal(chunk.indices, [0, 2, 4, 5, 7, 9])

    def test_vfr_window_keeps_source_indices(self, media):
        chunk = read_frames(media["vfr.mkv"], FrameSampling(start_s=0.9, every_nth=2))
        np.testing.assert_array_equal(chunk.indices, [5, 7, 9])  # every 2nd frame, not every 0.2 s
        np.testing.assert_allclose(chunk.timestamps, [1.0, 1.2, 1.4], atol=1e-3)

    def test_odd_size(self, media):
        chunk = read_frames(media["odd.mkv"])
        assert chunk.images.shape == (3, 241, 321, 3)
        assert chunk.images.std() > 10

    def test_gray_becomes_rgb(self, tmp_path, raw_rgba):
        gray = raw_rgba[..., 0]
        path = encode_raw(tmp_path, gray, "gray", tmp_path / "gray.mkv", "-c:v", "ffv1")
        assert probe_video(path).pix_fmt == "gray"
        images = read_frames(path).images
        assert images.shape == (*gray.shape, 3)
        for c in range(3):
            np.testing.assert_array_equal(images[..., c], gray)

    def test_alpha_is_dropped(self, tmp_path, raw_rgba):
        path = encode_raw(tmp_path, raw_rgba, "rgba", tmp_path / "alpha.mov", "-c:v", "png")
        assert probe_video(path).pix_fmt == "rgba"
        np.testing.assert_array_equal(read_frames(path).images, raw_rgba[..., :3])

    def test_still_png_named_mp4_is_one_frame_video(self, media):
        info = probe_video(media["still.mp4"])
        assert (info.codec, info.duration_s) == ("png", None)
        chunk = read_frames(media["still.mp4"])
        assert chunk.images.shape == (1, 30, 40, 3)
        np.testing.assert_array_equal(chunk.indices, [0])


class TestSampling:
    @pytest.mark.parametrize(
        ("sampling", "indices"),
        [
            (FrameSampling(fps=5), [0, 2, 4, 6, 8]),
            (FrameSampling(fps=2), [0, 5]),  # target 1.0 s is past the last frame's display time
            (FrameSampling(fps=3), [0, 3, 7]),  # targets 0, 1/3, 2/3 -> frames at 0.0, 0.3, 0.7
            (FrameSampling(fps=100), list(range(10))),  # above the source rate: each frame once
            (FrameSampling(every_nth=3), [0, 3, 6, 9]),
            (FrameSampling(max_frames=4), [0, 1, 2, 3]),
            (FrameSampling(every_nth=2, max_frames=3), [0, 2, 4]),
            (FrameSampling(start_s=0.25, end_s=0.65), [3, 4, 5, 6]),
            (FrameSampling(start_s=0.25, every_nth=2), [3, 5, 7, 9]),  # counted from the window's first frame
            (FrameSampling(start_s=0.3, fps=4), [3, 6, 8]),  # targets .3, .55, .8, (1.05 past the end)
            (FrameSampling(end_s=0.35, fps=5), [0, 2]),  # targets 0, .2 (.4 is past end_s)
        ],
    )
    def test_selection(self, media, sampling, indices):
        chunk = read_frames(media["cfr.mp4"], sampling)
        np.testing.assert_array_equal(chunk.indices, indices)
        np.testing.assert_allclose(chunk.timestamps, np.array(indices) / 10, atol=1e-6)
        assert len(chunk) == len(indices)

    def test_max_side_downscales_only(self, media):
        assert read_frames(media["cfr.mp4"], FrameSampling(max_side=32, max_frames=1)).images.shape == (1, 24, 32, 3)
        assert read_frames(media["cfr.mp4"], FrameSampling(max_side=500, max_frames=1)).images.shape == (1, 48, 64, 3)

    def test_max_side_after_rotation(self, media):
        chunk = read_frames(media["rot90.mp4"], FrameSampling(max_side=16))
        assert chunk.images.shape[1:] == (16, 12, 3)
        assert red_quadrant(chunk.images[0]) == "bl"

    def test_invalid_sampling(self):
        with pytest.raises(ValidationError, match="either fps or every_nth"):
            FrameSampling(fps=5, every_nth=2)
        with pytest.raises(ValidationError, match="end_s"):
            FrameSampling(start_s=2, end_s=1)
        with pytest.raises(ValidationError):
            FrameSampling(fps=0)

    def test_window_past_end(self, media):
        with pytest.raises(NoFramesSelectedError, match="cfr.mp4"):
            read_frames(media["cfr.mp4"], FrameSampling(start_s=5))


class TestIterFrames:
    def test_chunks_match_single_read(self, media):
        whole = read_frames(media["cfr.mp4"])
        chunks = list(iter_frames(media["cfr.mp4"], chunk_size=3))
        assert [len(c) for c in chunks] == [3, 3, 3, 1]
        np.testing.assert_array_equal(np.concatenate([c.images for c in chunks]), whole.images)
        np.testing.assert_array_equal(np.concatenate([c.indices for c in chunks]), whole.indices)
        np.testing.assert_array_equal(np.concatenate([c.timestamps for c in chunks]), whole.timestamps)

    def test_chunks_with_sampling(self, media):
        chunks = list(iter_frames(media["vfr.mkv"], FrameSampling(fps=5), chunk_size=4))
        assert [c.indices.tolist() for c in chunks] == [[0, 2, 4, 5], [7, 9]]

    def test_early_break_stops_decoder(self, media):
        it = iter_frames(media["cfr.mp4"], chunk_size=2)
        first = next(it)
        it.close()  # must not hang or leak the ffmpeg process
        assert first.indices.tolist() == [0, 1]

    def test_bad_chunk_size(self, media):
        with pytest.raises(ValueError, match="chunk_size"):
            iter_frames(media["cfr.mp4"], chunk_size=0)

    def test_open_errors_raise_at_call(self, tmp_path):
        with pytest.raises(VideoNotFoundError):
            iter_frames(tmp_path / "missing.mp4")


class TestErrors:
    def test_missing_file(self, tmp_path):
        path = tmp_path / "missing.mp4"
        with pytest.raises(VideoNotFoundError, match="missing.mp4") as e:
            read_frames(path)
        assert isinstance(e.value, FileNotFoundError) and isinstance(e.value, ValueError)

    def test_directory(self, tmp_path):
        with pytest.raises(VideoNotFoundError, match="not a regular file"):
            probe_video(tmp_path)

    @pytest.mark.parametrize(
        ("name", "content"),
        [("random.mp4", np.random.default_rng(1).bytes(4000)), ("notes.mp4", b"hello, not a video\n" * 50)],
    )
    def test_not_a_video(self, tmp_path, name, content):
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(NotAVideoError, match=name):
            read_frames(path)

    def test_empty_file(self, tmp_path):
        path = tmp_path / "empty.mp4"
        path.touch()
        with pytest.raises(NotAVideoError, match="empty.mp4.*empty"):
            probe_video(path)

    def test_audio_only(self, media):
        with pytest.raises(NoVideoStreamError, match="audio.m4a.*audio"):
            read_frames(media["audio.m4a"])

    def test_header_without_frames(self, tmp_path, media):
        data = media["cfr.mp4"].read_bytes()
        path = tmp_path / "headeronly.mp4"
        path.write_bytes(data[: data.find(b"mdat") + 24])  # moov (faststart) intact, sample data gone
        probe_video(path)
        with pytest.raises(NoDecodableFramesError, match="headeronly.mp4"):
            read_frames(path)

    def test_truncated_returns_readable_frames(self, tmp_path, media, caplog):
        data = media["cfr.mp4"].read_bytes()
        path = tmp_path / "cut.mp4"
        path.write_bytes(data[: len(data) // 2])
        with caplog.at_level(logging.WARNING, logger="flows.video"):
            chunk = read_frames(path)
        assert 1 <= len(chunk) < 10
        assert chunk.truncated and chunk.warnings
        assert "cut.mp4" in caplog.text
        np.testing.assert_array_equal(chunk.indices, np.arange(len(chunk)))

    def test_all_errors_are_value_errors(self):
        for cls in (VideoNotFoundError, NotAVideoError, NoVideoStreamError, NoDecodableFramesError):
            assert issubclass(cls, VideoError) and issubclass(cls, ValueError)


class TestWriteVideo:
    def test_round_trip(self, tmp_path):
        rng = np.random.default_rng(2)
        frames = np.repeat(rng.integers(0, 256, size=(4, 3, 1, 4, 1, 3), dtype=np.uint8), 8, axis=2)
        frames = np.repeat(frames, 8, axis=4).reshape(4, 24, 32, 3)  # 8x8 flat blocks survive compression
        path = write_video(tmp_path / "out.mp4", frames, fps=12.5)
        info = probe_video(path)
        assert (info.width, info.height, info.fps) == (32, 24, 12.5)
        back = read_frames(path)
        assert back.images.shape == frames.shape
        assert np.abs(back.images.astype(int) - frames).mean() < 8
        np.testing.assert_allclose(back.timestamps, np.arange(4) / 12.5, atol=1e-3)

    def test_odd_size_is_padded(self, tmp_path):
        frames = np.full((2, 21, 33, 3), 200, np.uint8)
        back = read_frames(write_video(tmp_path / "odd.mp4", frames, fps=5))
        assert back.images.shape == (2, 22, 34, 3)
        assert np.abs(back.images[:, :21, :33].astype(int) - 200).mean() < 4

    def test_iterable_of_frames(self, tmp_path):
        path = write_video(tmp_path / "gen.mp4", (red_corner_clip(1)[0] for _ in range(3)), fps=10)
        assert len(read_frames(path)) == 3

    @pytest.mark.parametrize(
        ("frames", "fps", "match"),
        [
            (np.zeros((2, 8, 8), np.uint8), 10, "T, H, W, 3"),
            (np.zeros((2, 8, 8, 3), np.float32), 10, "uint8"),
            (np.zeros((0, 8, 8, 3), np.uint8), 10, "no frames"),
            (np.zeros((2, 8, 8, 3), np.uint8), 0, "fps"),
        ],
    )
    def test_bad_input(self, tmp_path, frames, fps, match):
        with pytest.raises(ValueError, match=match):
            write_video(tmp_path / "bad.mp4", frames, fps=fps)

    def test_bad_frame_mid_stream_leaves_no_file(self, tmp_path):
        frames = [red_corner_clip(1)[0], np.zeros((4, 4, 3), np.uint8)]
        with pytest.raises(ValueError, match="frame 1"):
            write_video(tmp_path / "half.mp4", iter(frames), fps=10)
        assert not (tmp_path / "half.mp4").exists()

    def test_missing_folder(self, tmp_path):
        with pytest.raises(VideoError, match="does not exist"):
            write_video(tmp_path / "nope" / "x.mp4", red_corner_clip(1), fps=10)
