"""Video IO: probe metadata, decode sampled RGB frames in bounded-memory chunks, write MP4 previews.

Drives the static ffmpeg binary shipped by imageio-ffmpeg through ffmpeg-python. There is no ffprobe there, so
metadata comes from parsing ``ffmpeg -i`` and per-frame timestamps from the ``showinfo`` filter on stderr.
"""

from __future__ import annotations

import functools
import itertools
import logging
import re
import subprocess
import threading
from collections import deque
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from flows.video_types import (
    FrameChunk,
    FrameSampling,
    NoDecodableFramesError,
    NoFramesSelectedError,
    NotAVideoError,
    NoVideoStreamError,
    VideoError,
    VideoInfo,
    VideoNotFoundError,
    VideoWriteError,
)

log = logging.getLogger(__name__)

__all__ = [
    "FrameChunk",
    "FrameSampling",
    "NoDecodableFramesError",
    "NoFramesSelectedError",
    "NoVideoStreamError",
    "NotAVideoError",
    "VideoError",
    "VideoInfo",
    "VideoNotFoundError",
    "VideoWriteError",
    "ffmpeg_exe",
    "iter_frames",
    "probe_video",
    "read_frames",
    "write_video",
]

_PROBE_TIMEOUT_S = 60.0
_MAX_WARNINGS = 20
_TIME_EPS_S = 1e-6  # showinfo prints pts_time with 6 decimals




# ----------------------------------------------------------------------------------------------------------- probe
@functools.cache
def ffmpeg_exe() -> str:
    """Path of the ffmpeg binary bundled with imageio-ffmpeg."""
    import imageio_ffmpeg

    return imageio_ffmpeg.get_ffmpeg_exe()


def _check_file(path: str | Path) -> Path:
    p = Path(path)
    if not p.exists():
        raise VideoNotFoundError(f"{p}: video file not found")
    if not p.is_file():
        raise VideoNotFoundError(f"{p}: not a regular file (is it a directory?)")
    return p


def _ffmpeg_url(p: Path) -> str:
    # "file:" stops ffmpeg from reading names such as "http:x.mp4" or "pipe:1" as protocols.
    return "file:" + str(p.resolve())


def _split_top_level(text: str, sep: str = ",") -> list[str]:
    """Split on ``sep`` outside parentheses/brackets: ``yuv420p(tv, bt709)`` stays one token."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "([":
            depth += 1
        elif ch in ")]":
            depth = max(depth - 1, 0)
        if ch == sep and depth == 0:
            parts.append("".join(cur).strip())
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur).strip())
    return [p for p in parts if p]


def _parse_rate(token: str) -> float | None:
    m = re.fullmatch(r"([\d.]+)(k?)", token.strip())
    if not m:
        return None
    value = float(m.group(1)) * (1000.0 if m.group(2) else 1.0)
    return value if value > 0 else None


_STREAM_RE = re.compile(r"^\s*Stream #\d+:(\d+)\S*:\s*(\w+):\s*(.*)$")
_DURATION_RE = re.compile(r"Duration:\s*(\d+):(\d+):(\d+(?:\.\d+)?)")
_INPUT_RE = re.compile(r"^Input #\d+,\s*(.*?),\s*from\s")
_ROTATION_RE = re.compile(r"rotation of (-?\d+(?:\.\d+)?) degrees", re.IGNORECASE)
_ROTATE_TAG_RE = re.compile(r"^\s*rotate\s*:\s*(-?\d+(?:\.\d+)?)\s*$")
_OPEN_ERROR_RE = re.compile(r"Error opening input(?: file)?[^:]*:\s*(.*)$")


def _parse_probe(text: str, path: Path) -> VideoInfo:
    """Parse ``ffmpeg -i`` stderr into a ``VideoInfo`` (raises ``NotAVideoError`` / ``NoVideoStreamError``)."""
    lines = text.splitlines()
    if not any(_INPUT_RE.match(line) for line in lines):
        reason = next((m.group(1) for line in lines if (m := _OPEN_ERROR_RE.search(line))), None)
        reason = reason or (lines[-1].strip() if lines else "no output from ffmpeg")
        raise NotAVideoError(
            f"{path}: not a readable video file (ffmpeg: {reason}); check that it is a complete video such as "
            "mp4, mov, mkv or webm"
        )
    container = next(m.group(1) for line in lines if (m := _INPUT_RE.match(line)))

    duration_s = None
    for line in lines:
        if m := _DURATION_RE.search(line):
            h, mi, s = m.groups()
            duration_s = int(h) * 3600 + int(mi) * 60 + float(s)
            break

    # First real video stream; cover art in audio files ("attached pic") is not a video.
    start = None
    for i, line in enumerate(lines):
        m = _STREAM_RE.match(line)
        if m and m.group(2) == "Video" and "(attached pic)" not in line:
            start = i
            break
    if start is None:
        kinds = sorted({m.group(2).lower() for line in lines if (m := _STREAM_RE.match(line))})
        if not kinds:  # e.g. an MP4 written with zero frames: a container header and nothing in it
            raise NoVideoStreamError(
                f"{path}: the {container.split(',')[0]} container holds no streams at all (a recording with 0 frames?)"
            )
        raise NoVideoStreamError(
            f"{path}: no video stream in file (found: {', '.join(kinds)}); pass a video, not an audio file"
        )

    m = _STREAM_RE.match(lines[start])
    assert m is not None
    stream_index = int(m.group(1))
    tokens = _split_top_level(m.group(3))
    codec = tokens[0].split()[0] if tokens else "unknown"
    pix_fmt = "unknown"
    if len(tokens) > 1 and not re.match(r"\d+x\d+", tokens[1]):
        pix_fmt = re.split(r"[\s(]", tokens[1], maxsplit=1)[0]
    width = height = 0
    fps = tbr = None
    for tok in tokens[1:]:
        if sm := re.match(r"(\d+)x(\d+)\b", tok):
            width, height = int(sm.group(1)), int(sm.group(2))
        elif tok.endswith(" fps"):
            fps = _parse_rate(tok[:-4])
        elif tok.endswith(" tbr"):
            tbr = _parse_rate(tok[:-4])
    fps = fps or tbr
    if width <= 0 or height <= 0:
        raise NotAVideoError(f"{path}: video stream has no usable frame size ({lines[start].strip()!r})")

    # Side data / metadata of this stream: indented lines until the next stream or top-level line.
    rotation = 0.0
    for line in lines[start + 1 :]:
        if _STREAM_RE.match(line) or not line.startswith("    "):
            break
        if rm := _ROTATION_RE.search(line):
            rotation = float(rm.group(1))
            break
        if rm := _ROTATE_TAG_RE.match(line):  # old-style tag is clockwise
            rotation = -float(rm.group(1))
            break
    rotation_deg = int(round(rotation)) % 360
    if rotation_deg in (90, 270):
        width, height = height, width

    n_est = int(round(duration_s * fps)) if duration_s is not None and fps else None
    return VideoInfo(
        path=path,
        width=width,
        height=height,
        fps=fps,
        duration_s=duration_s,
        rotation_deg=rotation_deg,
        n_frames_estimate=n_est,
        codec=codec,
        pix_fmt=pix_fmt,
        stream_index=stream_index,
        container=container,
    )


def probe_video(path: str | Path) -> VideoInfo:
    """Read the metadata of the first video stream of ``path`` without decoding it.

    Args:
        path: any file ffmpeg can read (the format is detected from the content, not the extension).

    Returns:
        VideoInfo with the displayed (rotation-applied) size.

    Raises:
        VideoNotFoundError: the file does not exist.
        NotAVideoError: ffmpeg does not recognise the file (empty, random bytes, text).
        NoVideoStreamError: the file has no video stream (audio only).
    """
    p = _check_file(path)
    if p.stat().st_size == 0:
        raise NotAVideoError(f"{p}: file is empty (0 bytes), not a video")
    try:
        proc = subprocess.run(
            [ffmpeg_exe(), "-hide_banner", "-nostdin", "-i", _ffmpeg_url(p)],
            capture_output=True,
            timeout=_PROBE_TIMEOUT_S,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        raise NotAVideoError(f"{p}: ffmpeg did not finish reading the header within {_PROBE_TIMEOUT_S:.0f} s") from e
    return _parse_probe(proc.stderr.decode("utf-8", errors="replace"), p)


# ---------------------------------------------------------------------------------------------------------- decode
_SHOWINFO_RE = re.compile(
    r"^\[showinfo@(src|out) @[^\]]*\].*?\bn:\s*\d+\s+pts:\s*\S+\s+pts_time:(\S+).*?\ss:(\d+)x(\d+)"
)
_LEVEL_RE = re.compile(r"\[(error|fatal|panic)\]\s*(.*)$")
_GENERIC_ERROR_RE = re.compile(
    r"^(Task finished with error code|Terminating thread with return code|Conversion failed)"
)


@dataclass(frozen=True)
class _OutRecord:
    index: int | None  # source frame index (None if it could not be matched)
    time: float | None  # pts_time in seconds (None: frame without timestamp)
    width: int
    height: int


class _StderrReader:
    """Drains ffmpeg's stderr in a thread (so full pipes never deadlock) and collects showinfo frame records.

    The decoder logs every decoded frame at ``showinfo@src`` and every piped frame at ``showinfo@out``; frames in
    between are only dropped, never reordered, so each piped frame is the next decoded frame with the same pts.
    """

    def __init__(self, stream) -> None:
        self._stream = stream
        self._cond = threading.Condition()
        self._src: deque[tuple[int, str]] = deque()  # decoded frames not yet matched: (index, pts_time text)
        self.n_src = 0
        self.out: list[_OutRecord] = []
        self.errors: list[str] = []
        self.done = False
        self._thread = threading.Thread(target=self._run, name="ffmpeg-stderr", daemon=True)
        self._thread.start()

    def _match_src(self, pts_text: str) -> int | None:
        while self._src:
            index, text = self._src.popleft()
            if text == pts_text:
                return index
        return None

    def _run(self) -> None:
        try:
            for raw in iter(self._stream.readline, b""):
                line = raw.decode("utf-8", errors="replace").rstrip()
                if m := _SHOWINFO_RE.match(line):
                    which, pts_text = m.group(1), m.group(2)
                    with self._cond:
                        if which == "src":
                            self._src.append((self.n_src, pts_text))
                            self.n_src += 1
                            continue
                        try:
                            pts = float(pts_text)
                        except ValueError:  # NOPTS
                            pts = None
                        rec = _OutRecord(self._match_src(pts_text), pts, int(m.group(3)), int(m.group(4)))
                        self.out.append(rec)
                        self._cond.notify_all()
                elif m := _LEVEL_RE.search(line):
                    with self._cond:
                        self.errors.append(m.group(2).strip())
        finally:
            with self._cond:
                self.done = True
                self._cond.notify_all()

    def frame(self, i: int) -> _OutRecord | None:
        """Record of piped frame ``i``; waits until ffmpeg logged it. ``None`` if it never will."""
        with self._cond:
            self._cond.wait_for(lambda: len(self.out) > i or self.done)
            return self.out[i] if len(self.out) > i else None

    def has_frame(self, i: int, timeout: float) -> bool:
        """Whether ffmpeg logs piped frame ``i`` (``True`` as well if it neither does nor ends within ``timeout``)."""
        with self._cond:
            finished = self._cond.wait_for(lambda: len(self.out) > i or self.done, timeout)
            return len(self.out) > i or not finished

    def join(self, timeout: float = 10.0) -> None:
        self._thread.join(timeout)


@dataclass
class _Frame:
    index: int
    time: float
    image: np.ndarray


class _FrameSelector:
    """Streaming implementation of FrameSampling: frames go in one by one, selected frames come out in order."""

    def __init__(self, sampling: FrameSampling, nominal_fps: float | None) -> None:
        self.s = sampling
        self.nominal_fps = nominal_fps
        self.stopped = False  # no later frame can be selected: the caller may stop decoding
        self._n_out = 0
        self._first_index: int | None = None
        self._prev: _Frame | None = None
        self._prev_prev_time: float | None = None
        self._t0: float | None = None
        self._k = 0
        self._last_out = -1

    def _emit(self, frames: list[_Frame]) -> list[_Frame]:
        out = []
        for f in frames:
            if f.index == self._last_out:
                continue
            if self.s.max_frames is not None and self._n_out >= self.s.max_frames:
                self.stopped = True
                break
            out.append(f)
            self._last_out = f.index
            self._n_out += 1
        if self.s.max_frames is not None and self._n_out >= self.s.max_frames:
            self.stopped = True
        return out

    def push(self, f: _Frame) -> list[_Frame]:
        if self.stopped:
            return []
        s = self.s
        if s.start_s is not None and f.time < s.start_s:
            return []
        if s.end_s is not None and f.time >= s.end_s:
            out = self.finish(next_time=f.time)
            self.stopped = True
            return out
        if self._first_index is None:
            self._first_index = f.index
        if s.fps is not None:
            return self._emit(self._push_fps(f))
        if s.every_nth is not None and (f.index - self._first_index) % s.every_nth:
            return []
        return self._emit([f])

    def _target(self) -> float:
        assert self._t0 is not None and self.s.fps is not None
        return self._t0 + self._k / self.s.fps

    def _push_fps(self, f: _Frame) -> list[_Frame]:
        if self._t0 is None:
            self._t0 = self.s.start_s if self.s.start_s is not None else f.time
        out = []
        while (t := self._target()) <= f.time + _TIME_EPS_S:
            prev = self._prev
            out.append(prev if prev is not None and t - prev.time <= f.time - t else f)
            self._k += 1
        if self._prev is not None:
            self._prev_prev_time = self._prev.time
        self._prev = f
        return out

    def finish(self, next_time: float | None = None) -> list[_Frame]:
        """Flush at end of stream (``next_time`` = time of the first frame past the window, if any)."""
        prev = self._prev
        if self.s.fps is None or prev is None or self.stopped:
            return []
        if next_time is None:
            # The last frame is shown for about one frame duration.
            if self._prev_prev_time is not None:
                dur = prev.time - self._prev_prev_time
            else:
                dur = 1.0 / self.nominal_fps if self.nominal_fps else 1.0 / self.s.fps
            next_time = prev.time + dur
        if self.s.end_s is not None:
            next_time = min(next_time, self.s.end_s)
        # Every remaining target before the end is nearest to the last frame; emit it once.
        if self._target() < next_time - _TIME_EPS_S:
            return self._emit([prev])
        return []


def _output_size(info: VideoInfo, max_side: int | None) -> tuple[int, int] | None:
    longer = max(info.width, info.height)
    if max_side is None or longer <= max_side:
        return None
    scale = max_side / longer
    return max(1, round(info.width * scale)), max(1, round(info.height * scale))


def _start_decoder(info: VideoInfo, sampling: FrameSampling) -> subprocess.Popen:
    """Start ffmpeg piping rgb24 frames; the cheap parts of the sampling run in ffmpeg, before RGB conversion."""
    import ffmpeg

    s = sampling
    # Autorotation is inserted by ffmpeg ahead of this chain, so sizes below are display sizes.
    stream = ffmpeg.input(_ffmpeg_url(info.path))[str(info.stream_index)].filter("showinfo@src", checksum=0)
    if s.start_s is not None or s.end_s is not None:
        # trim ends the stream at end_s, so ffmpeg stops decoding there instead of at the end of the file.
        window = {k: v for k, v in (("start", s.start_s), ("end", s.end_s)) if v is not None}
        stream = stream.filter("trim", **window)
    if s.every_nth is not None and s.every_nth > 1:
        stream = stream.filter("framestep", s.every_nth)  # keeps the 1st, (N+1)-th, ... frame of the window
    if (size := _output_size(info, s.max_side)) is not None:
        stream = stream.filter("scale", size[0], size[1], flags="area")
    stream = stream.filter("showinfo@out", checksum=0)  # one line (pts_time, size) per piped frame, in pipe order
    out = ffmpeg.output(stream, "pipe:", format="rawvideo", pix_fmt="rgb24", fps_mode="passthrough")
    out = out.global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+info")
    return out.run_async(cmd=ffmpeg_exe(), pipe_stdout=True, pipe_stderr=True)


def _stop(proc: subprocess.Popen, reader: _StderrReader) -> None:
    """Kill ffmpeg if still running, then close our pipe ends (stderr only after its reader thread saw EOF)."""
    if proc.poll() is None:
        proc.kill()
    for pipe in (proc.stdin, proc.stdout):
        if pipe is not None:
            try:
                pipe.close()
            except OSError:  # BrokenPipeError when flushing stdin of a killed ffmpeg
                pass
    proc.wait()
    reader.join()
    if proc.stderr is not None:
        proc.stderr.close()


def _stack(
    frames: list[_Frame], truncated: bool = False, warnings: tuple[str, ...] = (), capped: bool = False
) -> FrameChunk:
    return FrameChunk(
        images=np.stack([f.image for f in frames]),
        indices=np.array([f.index for f in frames], dtype=np.int64),
        timestamps=np.array([f.time for f in frames], dtype=np.float64),
        truncated=truncated,
        warnings=warnings,
        capped=capped,
    )


def iter_frames(path: str | Path, sampling: FrameSampling | None = None, chunk_size: int = 32) -> Iterator[FrameChunk]:
    """Decode frames of ``path`` lazily, yielding chunks of at most ``chunk_size`` selected frames.

    Memory stays bounded by one chunk plus one frame, whatever the video length. Every frame is decoded from the
    start of the file (no seeking), so ``indices`` are exact source frame numbers even for variable frame rate
    video. The time window, ``every_nth`` and ``max_side`` run inside ffmpeg, before RGB conversion (frames before
    ``start_s`` are decoded but not converted, decoding stops at ``end_s``); ``fps`` and ``max_frames`` run here,
    dropping unselected frames as they arrive and stopping ffmpeg once ``max_frames`` is reached (a warning, and
    ``capped`` on the last chunk, when the video went on past it).
    Grey, alpha and odd-sized input all come out as ``(H, W, 3) uint8`` RGB (alpha is dropped, not composited).
    Rotation metadata is applied by ffmpeg, so frames are upright and sized ``(info.height, info.width)``.

    Args:
        path: any file ffmpeg can read; a still image (even one named ``.mp4``) is a one-frame video.
        sampling: which frames to keep; ``None`` keeps all at full resolution.
        chunk_size: frames per yielded chunk (>= 1).

    Yields:
        FrameChunk objects in source order; the last one carries ``truncated`` and ``warnings``.

    Raises:
        VideoNotFoundError, NotAVideoError, NoVideoStreamError: at the call (see ``probe_video``).
        NoDecodableFramesError: during iteration, when not one frame decoded.
        NoFramesSelectedError: during iteration, when frames decoded but the time window selected none.
    """
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    # Probe now, so a missing or non-video file fails at the call, not at the first next().
    return _iter_frames(probe_video(path), sampling or FrameSampling(), chunk_size)


def _iter_frames(info: VideoInfo, sampling: FrameSampling, chunk_size: int) -> Iterator[FrameChunk]:
    p = info.path
    proc = _start_decoder(info, sampling)
    assert proc.stdout is not None
    reader = _StderrReader(proc.stderr)
    # ffmpeg already applied the window and every_nth; the selector re-checks them (no-ops then) and does fps
    # and max_frames, which need look-ahead or an early stop.
    selector = _FrameSelector(sampling, info.fps)
    pending: list[_Frame] = []
    n_piped = 0
    n_selected = 0
    stopped_early = capped = False
    try:
        while True:
            rec = reader.frame(n_piped)
            if rec is None:
                break
            w, h = rec.width, rec.height
            data = proc.stdout.read(w * h * 3)
            if len(data) < w * h * 3:
                break  # ffmpeg died mid-frame; reported as truncation below
            index = rec.index if rec.index is not None else n_piped
            t = rec.time
            if t is None:  # no timestamp: fall back to the nominal rate
                t = index / info.fps if info.fps else float(index)
            frame = _Frame(index, t, np.frombuffer(data, np.uint8).reshape(h, w, 3))
            n_piped += 1
            for f in selector.push(frame):
                # Hold a full chunk back until the next frame exists, so the last chunk can carry the warnings.
                if len(pending) == chunk_size:
                    yield _stack(pending)
                    pending = []
                pending.append(f)
                n_selected += 1
            if selector.stopped:
                stopped_early = True
                # Hitting max_frames while ffmpeg still has frames to give: the video is longer than the cap.
                at_cap = sampling.max_frames is not None and n_selected >= sampling.max_frames
                capped = at_cap and reader.has_frame(n_piped, timeout=_PROBE_TIMEOUT_S / 6)
                break
        if not stopped_early:
            for f in selector.finish():
                if len(pending) == chunk_size:
                    yield _stack(pending)
                    pending = []
                pending.append(f)
                n_selected += 1
    finally:
        _stop(proc, reader)

    n_decoded = reader.n_src
    if n_decoded == 0:
        # ffmpeg's generic "Task finished with error code ..." lines say nothing: keep the others.
        useful = [e for e in reader.errors if not _GENERIC_ERROR_RE.search(e)] or reader.errors
        detail = "; ".join(useful[-3:]) or f"ffmpeg exit code {proc.returncode}"
        raise NoDecodableFramesError(f"{p}: no decodable video frames ({detail}); the file may be damaged or empty")
    if n_selected == 0:
        raise NoFramesSelectedError(
            f"{p}: sampling selected no frames (start_s={sampling.start_s}, end_s={sampling.end_s}; "
            f"{n_decoded} frame(s) decoded, duration {info.duration_s} s)"
        )
    truncated = False
    warnings: tuple[str, ...] = ()
    if not stopped_early and (reader.errors or proc.returncode != 0):
        truncated = True
        warnings = tuple(dict.fromkeys(reader.errors))[:_MAX_WARNINGS] or (f"ffmpeg exit code {proc.returncode}",)
        log.warning(
            "%s: video is damaged or cut short; decoded %d frame(s) up to the error: %s",
            p,
            n_decoded,
            "; ".join(warnings[:3]),
        )
    if capped:
        log.warning(
            "%s: stopped at max_frames=%d (frame %d, %.2f s of about %s s); later frames are not processed, raise "
            "frames.max_frames to include them",
            p,
            sampling.max_frames,
            n_piped - 1,
            pending[-1].time if pending else float("nan"),
            "?" if info.duration_s is None else f"{info.duration_s:.2f}",
        )
    if pending:
        yield _stack(pending, truncated, warnings, capped)


def read_frames(path: str | Path, sampling: FrameSampling | None = None) -> FrameChunk:
    """Decode the selected frames of a short clip into one chunk (see ``iter_frames``; use that for long videos).

    Returns:
        FrameChunk with ``images (n, H, W, 3) uint8``, ``indices (n,)``, ``timestamps (n,)`` seconds.
    """
    chunks = list(iter_frames(path, sampling, chunk_size=256))
    last = chunks[-1]
    if len(chunks) == 1:
        return last
    return FrameChunk(
        images=np.concatenate([c.images for c in chunks]),
        indices=np.concatenate([c.indices for c in chunks]),
        timestamps=np.concatenate([c.timestamps for c in chunks]),
        truncated=last.truncated,
        warnings=last.warnings,
        capped=last.capped,
    )


# ----------------------------------------------------------------------------------------------------------- write
@functools.cache
def _has_encoder(name: str) -> bool:
    out = subprocess.run([ffmpeg_exe(), "-hide_banner", "-encoders"], capture_output=True, check=False).stdout
    return re.search(rb"^\s*V\S*\s+" + re.escape(name.encode()) + rb"\s", out, re.MULTILINE) is not None


def write_video(path: str | Path, frames: np.ndarray | Iterable[np.ndarray], fps: float, *, crf: int = 18) -> Path:
    """Encode RGB frames as an H.264 (libx264, yuv420p) video, or MPEG-4 part 2 if libx264 is missing.

    yuv420p needs even sizes, so odd widths/heights are padded with black on the right/bottom (the output is at
    most one pixel larger). ``.mp4``/``.mov`` files get ``+faststart`` so players and truncated copies can read
    them from the front. An existing file is overwritten.

    Args:
        path: output file; the container follows the extension (``.mp4`` recommended). Its folder must exist.
        frames: ``(T, H, W, 3) uint8`` array, or an iterable of ``(H, W, 3) uint8`` frames (streamed, for long clips).
        fps: frame rate in frames/s (> 0).
        crf: libx264 constant rate factor (lower is better quality; 18 is visually near-lossless).

    Returns:
        The output path.

    Raises:
        ValueError: bad shape, dtype, fps or an empty clip.
        VideoWriteError: ffmpeg failed.
    """
    import ffmpeg

    p = Path(path)
    if not fps > 0:
        raise ValueError(f"write_video({p}): fps must be > 0, got {fps}")
    if isinstance(frames, np.ndarray) and (frames.ndim != 4 or frames.shape[-1] != 3):
        raise ValueError(f"write_video({p}): frames must be (T, H, W, 3), got shape {frames.shape}")
    if not p.parent.is_dir():
        raise VideoWriteError(f"{p}: output folder {p.parent} does not exist")
    it = iter(frames)
    first = next(it, None)
    if first is None:
        raise ValueError(f"write_video({p}): no frames to write")
    first = np.asarray(first)
    if first.ndim != 3 or first.shape[-1] != 3 or first.dtype != np.uint8:
        raise ValueError(f"write_video({p}): each frame must be (H, W, 3) uint8, got {first.shape} {first.dtype}")
    h, w = first.shape[:2]

    stream = ffmpeg.input("pipe:", format="rawvideo", pix_fmt="rgb24", s=f"{w}x{h}", framerate=repr(float(fps)))
    if w % 2 or h % 2:
        stream = stream.filter("pad", w + w % 2, h + h % 2, 0, 0, color="black")
    kwargs: dict[str, object] = {"pix_fmt": "yuv420p"}
    if _has_encoder("libx264"):
        kwargs.update(vcodec="libx264", crf=crf, preset="medium")
    else:
        kwargs.update(vcodec="mpeg4", **{"q:v": 2})
    if p.suffix.lower() in (".mp4", ".mov", ".m4v"):
        kwargs["movflags"] = "+faststart"
    out = ffmpeg.output(stream, str(p), **kwargs).overwrite_output()
    out = out.global_args("-hide_banner", "-nostdin", "-nostats", "-loglevel", "level+error")
    proc = out.run_async(cmd=ffmpeg_exe(), pipe_stdin=True, pipe_stderr=True)
    assert proc.stdin is not None
    reader = _StderrReader(proc.stderr)
    n = 0
    all_sent = False
    try:
        for frame in itertools.chain([first], it):
            frame = np.asarray(frame)
            if frame.shape != (h, w, 3) or frame.dtype != np.uint8:
                raise ValueError(
                    f"write_video({p}): frame {n} is {frame.shape} {frame.dtype}, expected ({h}, {w}, 3) uint8"
                )
            proc.stdin.write(np.ascontiguousarray(frame).data)
            n += 1
        all_sent = True
    except BrokenPipeError:
        all_sent = True  # ffmpeg quit early; its exit code and message are reported below
    finally:
        if all_sent:  # let ffmpeg finish the file; otherwise _stop kills it
            try:
                proc.stdin.close()
            except BrokenPipeError:
                pass
            proc.wait()
        _stop(proc, reader)
        if not all_sent or proc.returncode != 0:
            p.unlink(missing_ok=True)  # no half-written video left behind
    if proc.returncode != 0:
        detail = "; ".join(reader.errors[-3:]) or f"exit code {proc.returncode}"
        raise VideoWriteError(f"{p}: ffmpeg failed to encode the video ({detail})")
    log.debug("wrote %s: %d frames %dx%d at %.3g fps", p, n, w, h, fps)
    return p
