"""Issue #9, bad input files: each case ends in a clear error naming the file or in frames that are usable, and decoding
stays bounded in size and memory (see bench/reliability.py for the table these rows make)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from flows.config import DEFAULT_MAX_SIDE, load_config
from flows.ledger import find_videos, settled_videos
from flows.video import (
    FrameSampling,
    NoDecodableFramesError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    iter_frames,
    probe_video,
    read_frames,
    write_video,
)
from tests.reliability import _inputs_media as media

ROOT = Path(__file__).resolve().parents[2]


def _err(exc: BaseException) -> str:
    return media.short_error(exc)


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """10 frames, 64x48, 10 fps, every frame a key frame."""
    return media.pattern_clip(tmp_path_factory.mktemp("bad_files") / "good.mp4")


# ------------------------------------------------------------------------------------------- unreadable files
def test_empty_file(tmp_path, reliability_row):
    path = tmp_path / "empty.mp4"
    path.touch()
    with pytest.raises(NotAVideoError, match=r"empty\.mp4.*empty") as err:
        iter_frames(path)
    reliability_row("empty .mp4 (0 bytes)", "NotAVideoError naming the file", _err(err.value))


def test_random_bytes_named_mp4(tmp_path, reliability_row):
    path = tmp_path / "random.mp4"
    path.write_bytes(np.random.default_rng(0).bytes(20_000))
    with pytest.raises(NotAVideoError, match=r"random\.mp4") as err:
        read_frames(path)
    reliability_row("random bytes named .mp4", "NotAVideoError naming the file", _err(err.value))


def test_audio_only(tmp_path, reliability_row):
    path = media.audio_only(tmp_path / "tone.mp4")
    with pytest.raises(NoVideoStreamError, match=r"tone\.mp4.*audio") as err:
        read_frames(path)
    reliability_row("audio-only file (.mp4, AAC)", "NoVideoStreamError naming the file", _err(err.value))


def test_zero_frame_video(tmp_path, clip, reliability_row):
    zero = media.zero_frame_video(tmp_path / "zero.mp4")
    with pytest.raises(NoVideoStreamError, match=r"zero\.mp4.*no streams.*0 frames") as err:
        read_frames(zero)
    reliability_row("0-frame video (empty MP4 container)", "clear error naming the file", _err(err.value))
    header = media.header_only_video(tmp_path / "header_only.mp4", clip)
    assert probe_video(header).width == 64  # the header is fine ...
    with pytest.raises(NoDecodableFramesError, match=r"header_only\.mp4.*no decodable") as err:
        read_frames(header)  # ... but there is no frame to decode
    reliability_row("0-frame video (header, no samples)", "NoDecodableFramesError naming the file", _err(err.value))


def test_truncated_video(tmp_path, clip, caplog, reliability_row):
    cut = media.truncated_video(tmp_path / "cut.mp4", clip, fraction=0.5)
    with caplog.at_level(logging.WARNING, logger="flows.video"):
        chunk = read_frames(cut)
    full = read_frames(clip)
    assert 1 <= len(chunk) < len(full) and chunk.truncated and chunk.warnings
    np.testing.assert_array_equal(chunk.images, full.images[: len(chunk)])  # what decoded is the real content
    assert "cut.mp4" in caplog.text and "damaged or cut short" in caplog.text
    reliability_row("truncated video (first half of the bytes)",
                    "the frames before the cut, flagged truncated, warning logged",
                    f"{len(chunk)} of {len(full)} frames, identical to the source; truncated=True; "
                    f"ffmpeg: {chunk.warnings[0][:60]}")  # fmt: skip


# ---------------------------------------------------------------------------------------- odd but valid files
def test_still_image_named_mp4(tmp_path, reliability_row):
    path = media.still_png(tmp_path / "photo.mp4")
    chunk = read_frames(path)
    assert chunk.images.shape == (1, 30, 40, 3) and not chunk.truncated
    reliability_row("still image (PNG) named .mp4", "read as a 1-frame video",
                    f"{len(chunk)} frame {chunk.images.shape[1]}x{chunk.images.shape[2]}, "
                    f"container {probe_video(path).container}")  # fmt: skip


def test_one_frame_video(tmp_path, reliability_row):
    path = media.pattern_clip(tmp_path / "one.mp4", frames=1)
    chunk = read_frames(path, load_config("fast").frames)  # fps sampling on a clip with one frame
    assert len(chunk) == 1 and chunk.indices.tolist() == [0]
    reliability_row("1-frame video", "1 frame, also with fps sampling", f"{len(chunk)} frame, index {chunk.indices}")


def test_4k_video_is_decoded_at_bounded_size(tmp_path, reliability_row):
    path = media.pattern_clip(tmp_path / "uhd.mp4", "3840x2160", 2)
    frames = load_config("default").frames  # the pipeline's bounds apply to every preset and YAML file
    assert frames.max_side == DEFAULT_MAX_SIDE
    chunk = read_frames(path, frames)
    assert chunk.images.shape == (2, 1080, 1920, 3)
    # The bound holds whatever the aspect ratio: the longer side is cut to max_side.
    tall = read_frames(media.pattern_clip(tmp_path / "tall.mp4", "480x3840", 1), frames)
    assert max(tall.images.shape[1:3]) == DEFAULT_MAX_SIDE and tall.images.shape[2] == 240
    reliability_row("4K video (3840x2160)", f"downscaled while decoding to max_side={DEFAULT_MAX_SIDE}",
                    f"frames {chunk.images.shape[2]}x{chunk.images.shape[1]} ({chunk.images[0].nbytes / 1e6:.1f} MB "
                    f"each instead of {3840 * 2160 * 3 / 1e6:.1f}); 480x3840 -> {tall.images.shape[2]}x"
                    f"{tall.images.shape[1]}")  # fmt: skip


@pytest.mark.parametrize("degrees, corner", [(90, "bl"), (270, "tr")])
def test_rotated_phone_video(tmp_path, degrees, corner, reliability_row):
    coded = media.write_frames(tmp_path / "landscape.mp4", media.corner_marker_clip())  # 64x48 as stored
    phone = media.rotated_copy(tmp_path / f"phone{degrees}.mp4", coded, degrees)
    info = probe_video(phone)
    chunk = read_frames(phone, FrameSampling(max_side=32))
    assert (info.width, info.height, info.rotation_deg) == (48, 64, degrees)
    assert chunk.images.shape == (4, 32, 24, 3)  # upright (portrait) and then bounded
    assert media.red_corner(chunk.images[0]) == corner
    reliability_row(f"{degrees}° rotated phone video", "upright portrait frames (rotation applied), then max_side",
                    f"display {info.width}x{info.height} from a 64x48 stream; decoded "
                    f"{chunk.images.shape[2]}x{chunk.images.shape[1]}; top-left marker now at {corner}")  # fmt: skip


def test_variable_frame_rate(tmp_path, reliability_row):
    path = media.vfr_video(tmp_path / "vfr.mkv")
    chunk = read_frames(path)
    np.testing.assert_allclose(chunk.timestamps, [0, 0.1, 0.2, 0.3, 0.4, 1.0, 1.1, 1.2, 1.3, 1.4], atol=1e-3)
    sampled = read_frames(path, FrameSampling(fps=2))  # targets 0, 0.5, 1.0: 0.5 s falls in the gap
    assert sampled.indices.tolist() == [0, 4, 5]  # 0.5 s -> 0.4 s (nearer than 1.0 s); nothing left for 1.5 s
    reliability_row(
        "variable frame rate (0.6 s gap)",
        "real timestamps; fps sampling picks the nearest frames",
        f"timestamps {chunk.timestamps.round(2).tolist()}; at 2 fps frames {sampled.indices.tolist()}",
    )


# -------------------------------------------------------------------------------------- long videos and bounds
_RSS_SCRIPT = """
import resource, sys
from flows.video import FrameSampling, iter_frames

def hwm_mb():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024

n = 0
for chunk in iter_frames(sys.argv[1], FrameSampling(), chunk_size=8):
    n += len(chunk)
print(n, hwm_mb(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024)
"""


def _decode_peak_rss(path: Path) -> tuple[int, float, float]:
    """Decode every frame of ``path`` in a fresh interpreter: (frames, peak RSS MB, ffmpeg peak RSS MB)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-c", _RSS_SCRIPT, str(path)], capture_output=True, text=True, env=env,
                         check=True, cwd=ROOT).stdout.split()  # fmt: skip
    return int(out[0]), float(out[1]), float(out[2])


def test_long_video_streams_in_bounded_memory(tmp_path, reliability_row):
    n = 50
    short = media.pattern_clip(tmp_path / "short.mp4", "640x480", n, 25)
    long = media.pattern_clip(tmp_path / "long.mp4", "640x480", 4 * n, 25)
    n_short, rss_short, ff_short = _decode_peak_rss(short)
    n_long, rss_long, ff_long = _decode_peak_rss(long)
    frame_mb = 640 * 480 * 3 / 2**20
    assert (n_short, n_long) == (n, 4 * n)
    # Holding the extra 3n frames would take 3n * 0.88 MB = 132 MB more; streaming holds one 8-frame chunk.
    growth = rss_long - rss_short
    assert growth < 16, f"peak RSS grew by {growth:.1f} MB from {n} to {4 * n} frames"
    reliability_row("long video, streamed (N vs 4N frames)", "peak RSS independent of length",
                    f"640x480: {n} frames peak RSS {rss_short:.0f} MB, {4 * n} frames {rss_long:.0f} MB "
                    f"(+{growth:.1f} MB; all frames would be {4 * n * frame_mb:.0f} MB); ffmpeg child peak "
                    f"{ff_short:.0f} / {ff_long:.0f} MB")  # fmt: skip


def test_long_video_is_capped_at_max_frames(tmp_path, caplog, reliability_row):
    long = media.pattern_clip(tmp_path / "long.mp4", "64x48", 300, 25)
    frames = load_config("default", {"frames": {"fps": None, "max_frames": 12}}).frames
    t0 = time.perf_counter()
    with caplog.at_level(logging.WARNING, logger="flows.video"):
        chunks = list(iter_frames(long, frames, chunk_size=5))
    seconds = time.perf_counter() - t0
    n = sum(len(c) for c in chunks)
    assert n == 12 and chunks[-1].capped and not any(c.capped for c in chunks[:-1])
    assert "long.mp4" in caplog.text and "max_frames=12" in caplog.text
    warning = caplog.records[-1].getMessage()
    caplog.clear()
    exact = read_frames(media.pattern_clip(tmp_path / "exact.mp4", "64x48", 12, 25), frames)
    assert len(exact) == 12 and not exact.capped and "max_frames" not in caplog.text  # no false alarm
    default_cap = load_config("default").frames.max_frames
    reliability_row("long video over max_frames (300 frames, cap 12)", "first 12 frames, warning, capped flag",
                    f"{n} frames in {seconds:.2f} s, capped=True, warning: ...{warning[-110:]}; 12-frame clip: "
                    f"not capped, no warning; default cap {default_cap} frames")  # fmt: skip


# --------------------------------------------------------------------------------------------- paths and scans
def test_non_ascii_and_space_paths(tmp_path, reliability_row):
    folder = tmp_path / "vidéos ñ 日本 dir"
    folder.mkdir()
    path = media.write_frames(folder / "my clip ü 1.mp4", media.corner_marker_clip())
    chunk = read_frames(path)
    info = probe_video(path)
    found = find_videos(tmp_path)
    assert len(chunk) == 4 and info.path == path and [v.path for v in found] == [path]
    with pytest.raises(VideoError, match="missing ü.mp4"):
        read_frames(folder / "missing ü.mp4")
    reliability_row(
        "non-ASCII and space-containing path",
        "written, scanned and decoded; errors name the path",
        f"{path.relative_to(tmp_path)}: {len(chunk)} frames, found by the scan",
    )


def test_symlink_loop_in_video_directory(tmp_path, reliability_row):
    root = tmp_path / "videos"
    (root / "a" / "b").mkdir(parents=True)
    write_video(root / "a" / "clip.mp4", media.corner_marker_clip(2), fps=10)
    (root / "a" / "b" / "up").symlink_to(root)  # a loop back to the top
    (root / "self").symlink_to(root / "self")  # a link to itself (ELOOP)
    (root / "x.mp4").symlink_to(root / "y.mp4")  # two file links pointing at each other
    (root / "y.mp4").symlink_to(root / "x.mp4")
    (root / "same.mp4").symlink_to(root / "a" / "clip.mp4")  # a second name for one file
    result: list = []
    scan = threading.Thread(target=lambda: result.append(find_videos(root)), daemon=True)
    t0 = time.perf_counter()
    scan.start()
    scan.join(timeout=30)
    assert not scan.is_alive(), "find_videos did not return within 30 s (symlink loop)"
    # One entry for the one real file (under whichever of its two names the walk met first).
    assert [v.path.resolve() for v in result[0]] == [(root / "a" / "clip.mp4").resolve()]
    reliability_row("symlink loops in the video directory", "scan ends; each video once",
                    f"scan ended in {time.perf_counter() - t0:.3f} s; found {[v.path.name for v in result[0]]} "
                    "(dir loop, self link, file link cycle and a duplicate link ignored)")  # fmt: skip


def test_growing_video_waits_until_settled(tmp_path, clip, reliability_row):
    root = tmp_path / "videos"
    root.mkdir()
    (root / "done.mp4").write_bytes(clip.read_bytes())
    growing = root / "recording.mp4"
    data = clip.read_bytes()
    stop = threading.Event()

    def record() -> None:  # a camera or copy still writing: a few hundred bytes every 20 ms
        with open(growing, "wb") as f:
            for i in range(0, len(data), 300):
                if stop.is_set():
                    return
                f.write(data[i : i + 300])
                f.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=record, daemon=True)
    writer.start()
    try:
        time.sleep(0.05)
        settled, still_growing = settled_videos(root, settle_seconds=0.3)
    finally:
        stop.set()
        writer.join()
    assert [v.path.name for v in settled] == ["done.mp4"] and still_growing == [growing]
    later, _ = settled_videos(root, settle_seconds=0.3)
    assert sorted(v.path.name for v in later) == ["done.mp4", "recording.mp4"]
    reliability_row(
        "video growing while scanned",
        "left for the next scan; picked up once it stops changing",
        f"while writing: settled {[v.path.name for v in settled]}, waiting "
        f"{[p.name for p in still_growing]}; after: settled {sorted(v.path.name for v in later)}",
    )


# --------------------------------------------------------------------------------- a directory run over all of it
@pytest.mark.slow
def test_directory_of_good_and_bad_videos(prefect_server, tmp_path, reliability_row):
    """process_directory over good, bad, odd and growing files: the good video is processed (its frame without a
    person skipped with a reason), every bad one is recorded as failed with the error, nothing else stops, and every
    store written opens with xarray."""
    import xarray as xr

    from flows import pipeline
    from flows.ledger import Ledger
    from flows.store import FrameStatus, open_run

    videos, out = tmp_path / "vidéos in", tmp_path / "out"
    person = media.astronaut(128)
    frames = np.stack([np.roll(person, 3 * i, axis=1) for i in range(5)])
    frames[2] = 0  # a frame without anybody
    good = media.write_frames(videos / "good clip ü.mp4", frames)
    media.ffmpeg("-i", good, "-c:v", "libx264", "-g", "1", "-movflags", "+faststart", tmp_path / "all_key.mp4")
    media.truncated_video(videos / "cut.mp4", tmp_path / "all_key.mp4", 0.6)
    (videos / "empty.mp4").touch()
    (videos / "random.mp4").write_bytes(np.random.default_rng(1).bytes(5000))
    media.audio_only(videos / "tone.mp4")
    media.zero_frame_video(videos / "zero.mp4")
    media.still_png(videos / "photo.mp4")
    media.pattern_clip(videos / "nobody.mp4", "64x48", 5)
    (videos / "sub").mkdir()
    (videos / "sub" / "loop").symlink_to(videos)
    cfg = load_config("fast", {"frames": {"fps": None, "max_frames": 5},
                               "person": {"crop_size": 64, "detect_size": 128},
                               "fit": {"orient_iters": 2, "pose_iters": 2, "silhouette_iters": 0},
                               "reconstruct_enabled": False, "avatar_enabled": False})  # fmt: skip
    stop = threading.Event()

    def record() -> None:  # a recording in progress for the whole scan
        with open(videos / "recording.mp4", "wb") as f:
            while not stop.is_set():
                f.write(b"\0" * 64)
                f.flush()
                time.sleep(0.02)

    writer = threading.Thread(target=record, daemon=True)
    writer.start()
    try:
        result = pipeline.process_directory(videos, out, cfg, settle_seconds=0.5)
    finally:
        stop.set()
        writer.join()

    by_name = {Path(r.video).name: r for r in result.processed}
    failed = {Path(p).name: m for p, m in result.failed.items()}
    # An empty file may be a recording that has not started writing: like a growing one it waits for a later scan.
    assert [Path(p).name for p in result.growing] == ["empty.mp4", "recording.mp4"]
    assert set(failed) == {"random.mp4", "tone.mp4", "zero.mp4"}
    assert "NotAVideoError" in failed["random.mp4"]
    assert "NoVideoStreamError" in failed["tone.mp4"] and "NoVideoStreamError" in failed["zero.mp4"]
    assert set(by_name) == {"good clip ü.mp4", "cut.mp4", "photo.mp4", "nobody.mp4"}
    g = by_name["good clip ü.mp4"]
    assert (g.n_frames, g.n_done, g.n_skipped, g.n_failed) == (5, 4, 1, 0)
    store = open_run(g.store)
    assert store.status()[2] == FrameStatus.SKIPPED and "no person" in store.reasons()[2]
    assert 1 <= by_name["cut.mp4"].n_frames < 5
    for name in ("photo.mp4", "nobody.mp4"):  # nobody anywhere: every frame skipped, the video still completes
        r = by_name[name]
        assert r.n_skipped == r.n_frames and r.n_done == 0 and r.n_failed == 0
    ledger = {Path(p).name: e for p, e in Ledger.in_dir(out).entries().items()}
    assert set(ledger) == set(by_name) | set(failed)  # the growing file waits for the next scan
    assert all(ledger[n].status == "failed" and ledger[n].message for n in failed)
    opened = {}
    for path in sorted(out.rglob("*.zarr")):
        root = xr.open_zarr(path)
        opened[path.stem] = (int(root.sizes["frame"]), xr.open_zarr(path, group="frames").image.shape[1:3])
    assert set(opened) == {Path(n).stem for n in by_name}
    reliability_row("directory of good + bad files (process_directory)",
                    "good processed, bad recorded failed with reason, growing left, stores open in xarray",
                    f"processed {sorted(by_name)} (good: {g.n_done} done, 1 skipped: {store.reasons()[2]!r}; "
                    f"cut: {by_name['cut.mp4'].n_frames} frames; photo/nobody: all frames skipped); failed "
                    + "; ".join(f"{n}: {m.split(':')[0]}" for n, m in sorted(failed.items()))
                    + f"; waiting (growing or empty) {[Path(p).name for p in result.growing]}; stores opened "
                    f"{opened}")  # fmt: skip


# ------------------------------------------------------------------------------------------- the command line
def _avatarize(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PYTHONPATH=str(ROOT), HOME=str(cwd))
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], capture_output=True, text=True, env=env, cwd=cwd,
                          timeout=300)  # fmt: skip


@pytest.mark.parametrize("kind", ["empty", "random"])
def test_cli_run_on_a_bad_file_prints_one_line_and_exits_1(tmp_path, kind):
    path = tmp_path / f"{kind}.mp4"
    path.write_bytes(b"" if kind == "empty" else np.random.default_rng(1).bytes(20_000))
    proc = _avatarize("run", str(path), "--out", str(tmp_path / "out"), "-c", "fast", cwd=tmp_path)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 1, output
    lines = [ln for ln in output.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], output
    assert ("file is empty (0 bytes)" if kind == "empty" else "not a readable video file") in lines[0]
    assert "Traceback" not in output
    # --verbose brings the details back: the traceback down to the reader that refused the file
    verbose = _avatarize("run", str(path), "--out", str(tmp_path / "out"), "-c", "fast", "--verbose", cwd=tmp_path)
    assert verbose.returncode == 1 and "Traceback (most recent call last)" in verbose.stderr
    assert "flows/video.py" in verbose.stderr and "NotAVideoError" in verbose.stderr
