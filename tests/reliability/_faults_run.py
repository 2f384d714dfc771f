"""Shared pieces of the fault and concurrency tests: a tiny clip and config, and a driver subprocess running
``process_video`` with fault hooks (see ``_faults_hooks``) against the test's Prefect server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.flows.conftest import make_tiny_config, write_clip
from tests.reliability._faults_hooks import Hooks

ROOT = Path(__file__).resolve().parents[2]
N_FRAMES = 5
DRIVER_TIMEOUT_S = 240


def tiny_config():
    """The flow tests' tiny config (``make_tiny_config``) with this module's frame count."""
    return make_tiny_config(N_FRAMES)


def make_clip(folder: Path, name: str = "clip.mp4") -> Path:
    """A 5-frame 256 px person clip."""
    return write_clip(folder / name, n=N_FRAMES)


def driver_env(api_url: str | None = None) -> dict[str, str]:
    """Environment of a driver subprocess: this test session's Prefect settings and server, one torch thread."""
    from prefect.settings import PREFECT_API_URL

    env = dict(os.environ)
    env.update(
        PREFECT_API_URL=api_url or str(PREFECT_API_URL.value()),
        OMP_NUM_THREADS="1",
        PYTHONPATH=str(ROOT),
    )
    return env


def start_driver(
    work: Path, video: Path, out: Path, config, hooks: Hooks, runner: dict | None = None, api_url: str | None = None
) -> tuple[subprocess.Popen, Path]:
    """Start ``process_video`` in a subprocess with ``hooks``; returns the process and its result file."""
    work.mkdir(parents=True, exist_ok=True)
    result = work / "result.json"
    run = {
        "video": str(video),
        "out": str(out),
        "config": config.model_dump(mode="json"),
        "runner": runner or {"kind": "thread", "workers": 1},
        "batch_size": 1,
        "hooks": json.loads(hooks.to_json()),
        "result": str(result),
    }
    run_file = work / "run.json"
    run_file.write_text(json.dumps(run))
    log = (work / "driver.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.reliability._faults_hooks", str(run_file)],
        cwd=ROOT,
        env=driver_env(api_url),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    return proc, result


def tail(path: Path, n: int = 40) -> str:
    """Last lines of a log file, for failure messages."""
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"
