"""Fault injection for the reliability tests: instrument the pipeline in whichever process runs the frame steps (the
test process, a spawned process-pool worker, or a driver subprocess) and record every call, so a test can count what
a re-run recomputed.

Run as a driver: ``python -m tests.reliability._faults_hooks RUN.json`` installs the hooks of RUN["hooks"], runs
``process_video`` and writes the result to RUN["result"] (JSON).
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from flows.store import open_run


@dataclass(frozen=True)
class Hooks:
    """What to do around the pipeline's work in the instrumented process.

    Attributes:
        calls: file that gets one line ``<kind> <frame> <pid>`` per call (kind: detect, fit, preview).
        sleep_s: seconds each preview step sleeps first (slows the frame stage down so a test can act mid-run).
        kill_at: SIGKILL this process when the preview step of this frame starts (once: ``marker`` remembers it).
        raise_at: raise ``RuntimeError`` in the preview step of this frame (every time).
        marker: file created just before the kill.
    """

    calls: str
    sleep_s: float = 0.0
    kill_at: int | None = None
    raise_at: int | None = None
    marker: str | None = None

    def to_json(self) -> str:
        """JSON text (for initargs and driver files)."""
        return json.dumps(asdict(self))


def _log(hooks: Hooks, kind: str, frame: int = -1) -> None:
    with open(hooks.calls, "a", encoding="utf-8") as fh:
        fh.write(f"{kind} {frame} {os.getpid()}\n")


def install(hooks_json: str, setattr_: Callable[[Any, str, Any], None] = setattr) -> None:
    """Wrap ``stages.detect_frames``, ``icon.fit.fit_body`` and ``frame_batch.render_frame_preview`` in this process.

    ``setattr_`` is ``monkeypatch.setattr`` in the test process (undone after the test); plain ``setattr`` in workers.
    """
    import icon.fit
    from flows import frame_batch, stages

    hooks = Hooks(**json.loads(hooks_json))
    detect, fit, preview = stages.detect_frames, icon.fit.fit_body, frame_batch.render_frame_preview

    def detect_logged(*args: Any, **kwargs: Any) -> Any:
        _log(hooks, "detect")
        return detect(*args, **kwargs)

    def fit_logged(*args: Any, **kwargs: Any) -> Any:
        _log(hooks, "fit")
        return fit(*args, **kwargs)

    def preview_logged(ctx: Any, t: int) -> None:
        _log(hooks, "preview", t)
        if hooks.kill_at == t and hooks.marker and not Path(hooks.marker).exists():
            Path(hooks.marker).touch()
            os.kill(os.getpid(), signal.SIGKILL)
        if hooks.raise_at == t:
            raise RuntimeError(f"injected fault on frame {t}")
        time.sleep(hooks.sleep_s)
        preview(ctx, t)

    setattr_(stages, "detect_frames", detect_logged)
    setattr_(icon.fit, "fit_body", fit_logged)
    setattr_(frame_batch, "render_frame_preview", preview_logged)


def read_calls(path: str | Path) -> list[tuple[str, int, int]]:
    """The calls logged so far: (kind, frame, pid)."""
    p = Path(path)
    if not p.exists():
        return []
    return [(k, int(t), int(pid)) for k, t, pid in (line.split() for line in p.read_text().splitlines())]


def chunk_snapshot(store_path: str | Path, frames: list[int]) -> dict[str, tuple[bytes, int]]:
    """Bytes and mtime (ns) of every per-frame chunk file of ``frames`` in the store (``<array>/c/<t>/...``)."""
    root = Path(store_path)
    wanted = {str(t) for t in frames}
    snap = {}
    for f in root.rglob("*"):
        parts = f.relative_to(root).parts
        if f.is_file() and "c" in parts:
            i = parts.index("c")
            if i + 1 < len(parts) and parts[i + 1] in wanted:
                snap[str(f.relative_to(root))] = (f.read_bytes(), f.stat().st_mtime_ns)
    return snap


def open_all_with_xarray(store_path: str | Path, consolidated: bool | None) -> list[str]:
    """Open every frame-indexed group of the store with ``xarray.open_zarr`` and load it; returns the groups opened."""
    import xarray as xr

    opened = []
    for group in ("frames", "fits/init", "fits/refined", "normals", None):
        ds = xr.open_zarr(store_path, group=group, consolidated=consolidated)
        ds.load()
        opened.append(group or "/")
    return opened


def status_names(store_path: str | Path) -> list[str]:
    """Per-frame status of the store as lower-case names."""
    from flows.store import FrameStatus

    return [FrameStatus(int(s)).name.lower() for s in open_run(store_path).status()]


def _drive(run_file: str) -> int:
    run = json.loads(Path(run_file).read_text())
    install(json.dumps(run["hooks"]))
    from flows import pipeline
    from flows.runners import RunnerConfig

    result = pipeline.process_video(
        run["video"], run["out"], run["config"], RunnerConfig(**run.get("runner", {})), run.get("batch_size", 1)
    )
    Path(run["result"]).write_text(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    sys.exit(_drive(sys.argv[1]))
