"""The CLI's console (flows/console.py): private Prefect server settings, the engine-chatter filter, and a real
`avatarize run` on the demo clip whose output holds the result lines and none of the third-party noise."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from flows.console import _ProjectOnly, private_prefect_env
from flows.video import NotAVideoError

ROOT = Path(__file__).resolve().parents[2]
NOISE = [r"TensorFlow Lite", r"XNNPACK", r"absl::", r"W0000", r"inference_feedback_manager", r"landmark_projection",
         r"Warp CUDA", r"Warp \d+\.\d+\.\d+ initialized", r"Module .* load on device", r"telemetry", r"Traceback",
         r"database is locked", r"Starting temporary server", r"Finished in state"]  # fmt: skip


def _clean_env(monkeypatch):
    for key in ("PREFECT_SERVER_ANALYTICS_ENABLED", "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
                "PREFECT_SERVER_DATABASE_CONNECTION_URL", "PREFECT_API_DATABASE_CONNECTION_URL"):  # fmt: skip
        monkeypatch.delenv(key, raising=False)


def test_private_prefect_env_turns_analytics_off_and_keeps_the_database_in_the_output(monkeypatch, tmp_path):
    _clean_env(monkeypatch)
    env = private_prefect_env(tmp_path / "out")
    assert env["PREFECT_SERVER_ANALYTICS_ENABLED"] == "false"
    db = tmp_path / "out" / ".prefect" / "prefect.db"
    assert env["PREFECT_SERVER_DATABASE_CONNECTION_URL"] == f"sqlite+aiosqlite:///{db}"
    assert (tmp_path / "out" / ".prefect").is_dir()
    # what the user set stays
    monkeypatch.setenv("PREFECT_API_DATABASE_CONNECTION_URL", "postgresql+asyncpg://db/prefect")
    monkeypatch.setenv("PREFECT_SERVER_ANALYTICS_ENABLED", "true")
    assert private_prefect_env(tmp_path / "o2") == {"PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"}


def _record(path: str, level: int, msg: str, exc: BaseException | None = None) -> logging.LogRecord:
    exc_info = (type(exc), exc, None) if exc is not None else None
    return logging.LogRecord("prefect.task_runs", level, path, 1, msg, None, exc_info)


def test_engine_chatter_and_expected_error_tracebacks_are_filtered():
    flt = _ProjectOnly((NotAVideoError,))
    engine = os.path.join("site-packages", "prefect", "task_engine.py")
    assert not flt.filter(_record(engine, logging.INFO, "Finished in state Completed()"))
    bad = NotAVideoError("x.mp4: file is empty (0 bytes), not a video")
    assert not flt.filter(_record(engine, logging.ERROR, "Task run failed with exception", bad))
    assert not flt.filter(_record(engine, logging.ERROR, "Finished in state Failed('... NotAVideoError: x.mp4')"))
    assert flt.filter(_record(engine, logging.ERROR, "Task run failed with exception", RuntimeError("bug")))
    assert flt.filter(_record(str(ROOT / "flows" / "stages.py"), logging.INFO, "demo.mp4: 2 frames extracted"))


@pytest.mark.slow
def test_run_on_the_demo_clip_prints_only_the_projects_lines(tmp_path):
    """~3 min on 2 busy cores: a temporary Prefect server, 2 frames of the fast preset, no avatar."""
    from flows.bundled import demo_clip_path

    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}  # as a user's shell: no test settings
    env.update(PYTHONPATH=str(ROOT), HOME=str(tmp_path))  # a fresh PREFECT_HOME (~/.prefect) as on a new machine
    cmd = [sys.executable, "-m", "flows.cli", "run", str(demo_clip_path()), "--out", str(tmp_path / "out"), "-c",
           "fast", "--max-frames", "2", "--set", "avatar_enabled=false"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp_path, timeout=900)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output[-3000:]
    for pattern in NOISE:
        assert not re.search(pattern, output), f"{pattern!r} in:\n{output}"
    assert "demo.mp4: completed: 2 done, 0 skipped" in proc.stdout
    assert f"store: {tmp_path / 'out' / 'demo.zarr'}" in proc.stdout and "contact sheet:" in proc.stdout
    assert (tmp_path / "out" / ".prefect" / "prefect.db").is_file()  # the temporary server's own database
    assert not (tmp_path / ".prefect" / "prefect.db").exists()
