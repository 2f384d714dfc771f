"""End-to-end test of the deployment in prefect.yaml: a real `prefect server`, the process work pool, `prefect deploy`
from the repository root, a `prefect worker` and one run triggered through the API, on two tiny clips.

Every process runs with its own PREFECT_HOME and is killed (whole process group) when the module's tests end.
"""

from __future__ import annotations

import json
import math
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from flows.store import FrameStatus, open_run
from tests.flows.conftest import CLIP_FRAMES, write_clip

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
POOL = "avatarize-process"
DEPLOYMENT = "process-directory/watch-videos"
HEALTH_TIMEOUT_S = 90.0
CLI_TIMEOUT_S = 180.0
RUN_TIMEOUT_S = 360.0
STOP_TIMEOUT_S = 15.0


@dataclass
class PrefectServer:
    """A running `prefect server start` subprocess."""

    api_url: str
    env: dict[str, str]
    home: Path
    log: Path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _tail(path: Path, n: int = 60) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-n:])
    except OSError:
        return "(no log)"


def _spawn(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    """Start ``prefect <args>`` in its own process group (so teardown reaches its children), output to ``log``."""
    with log.open("wb") as fh:
        return subprocess.Popen(
            [sys.executable, "-m", "prefect", *args],
            cwd=ROOT,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )


def _stop(proc: subprocess.Popen) -> None:
    """SIGTERM the process group, then SIGKILL it if it is still there after ``STOP_TIMEOUT_S``."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            continue
        if sig == signal.SIGTERM:  # the leader exited; kill what it may have left in its group
            try:
                os.killpg(proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        return


def _prefect(server: PrefectServer, *args: str) -> str:
    """Run a prefect CLI command against ``server`` (no prompts, bounded) and return its output; fail with it."""
    res = subprocess.run(
        [sys.executable, "-m", "prefect", "--no-prompt", *args],
        cwd=ROOT,
        env=server.env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=CLI_TIMEOUT_S,
        check=False,
    )
    out = res.stdout + res.stderr
    assert res.returncode == 0, f"prefect {' '.join(args)} exited {res.returncode}:\n{out}"
    return out


def _wait_healthy(proc: subprocess.Popen, api_url: str, log: Path) -> None:
    deadline = time.monotonic() + HEALTH_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"prefect server exited with {proc.returncode} before it was healthy:\n{_tail(log)}")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=5) as r:
                if r.status == 200:
                    return
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(1.0)
    pytest.fail(f"prefect server not healthy after {HEALTH_TIMEOUT_S:.0f} s:\n{_tail(log)}")


@pytest.fixture(scope="module")
def prefect_server_process(tmp_path_factory) -> Iterator[PrefectServer]:
    """`prefect server start` on a free loopback port with a private PREFECT_HOME (SQLite); the scheduler service is
    off so the yaml's cron schedule cannot start a competing run (the concurrency limit would cancel ours)."""
    home = tmp_path_factory.mktemp("prefect-home")
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(home),
        PREFECT_API_URL=api_url,
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_CLI_PROMPT="false",
        PREFECT_API_REQUEST_TIMEOUT="120",
        PREFECT_LOGGING_LEVEL="INFO",
        PREFECT_WORKER_QUERY_SECONDS="2",
        # prefect.yaml's pull step is "{{ $PWD }}": the shell variable, not the process's cwd.
        PWD=str(ROOT),
    )
    log = home / "server.log"
    proc = _spawn(
        ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off", "--no-ui", "--no-scheduler"],
        env,
        log,
    )
    try:
        _wait_healthy(proc, api_url, log)
        yield PrefectServer(api_url, env, home, log)
    finally:
        _stop(proc)


@pytest.fixture(scope="module")
def deployed(prefect_server_process, tiny_config, tmp_path_factory) -> tuple[Path, Path]:
    """Two tiny clips (one in a subfolder), the work pool, and `prefect deploy -n watch-videos` from the repo root
    with video_dir, out_dir and a tiny config overriding the yaml's parameters. Returns (video_dir, out_dir)."""
    server = prefect_server_process
    base = tmp_path_factory.mktemp("deploy")
    videos, out = base / "videos", base / "out"
    write_clip(videos / "one.mp4")
    write_clip(videos / "sub" / "two.mp4", shift=6)
    _prefect(server, "work-pool", "create", POOL, "--type", "process")
    params = {"video_dir": str(videos), "out_dir": str(out), "config": tiny_config.model_dump(mode="json")}
    _prefect(server, "deploy", "-n", "watch-videos", "--params", json.dumps(params))
    return videos, out


@pytest.fixture(scope="module")
def worker(prefect_server_process, deployed) -> Iterator[subprocess.Popen]:
    log = prefect_server_process.home / "worker.log"
    proc = _spawn(["worker", "start", "--pool", POOL, "--type", "process"], prefect_server_process.env, log)
    try:
        yield proc
    finally:
        _stop(proc)


def test_deployment_runs_on_a_real_server_and_worker(prefect_server_process, deployed, worker):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.deployments import run_deployment
    from prefect.settings import PREFECT_API_URL, temporary_settings

    server = prefect_server_process
    videos, out = deployed
    with temporary_settings(updates={PREFECT_API_URL: server.api_url}):
        with get_client(sync_client=True) as client:
            dep = client.read_deployment_by_name(DEPLOYMENT)
            assert dep.work_pool_name == POOL and dep.entrypoint == "flows/pipeline.py:process_directory"
            assert [s.schedule.cron for s in dep.schedules] == ["*/15 * * * *"]
            assert dep.parameters["video_dir"] == str(videos) and dep.parameters["runner"]["kind"] == "process"
            (pull,) = dep.pull_steps
            assert pull["prefect.deployments.steps.set_working_directory"]["directory"] == str(ROOT)

        run = run_deployment(DEPLOYMENT, parameters={"settle_seconds": 0.5}, timeout=RUN_TIMEOUT_S, poll_interval=2)
        if worker.poll() is not None:
            pytest.fail(f"worker exited with {worker.returncode}:\n{_tail(server.home / 'worker.log')}")
        assert run.state is not None and run.state.is_completed(), (
            f"flow run {run.name} ended {run.state!r}\nworker log:\n{_tail(server.home / 'worker.log', 120)}"
        )

        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs()  # the server is private to this test: the run and its subflow runs
            assert len(runs) == 3 and all(r.state.is_completed() for r in runs), [(r.name, r.state) for r in runs]
            arts = client.read_artifacts(
                artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[r.id for r in runs]))
            )

    for store_path in (out / "one.zarr", out / "sub" / "two.zarr"):
        store = open_run(store_path)
        status = store.status()
        assert len(status) == CLIP_FRAMES
        assert np.isin(status, (FrameStatus.DONE, FrameStatus.SKIPPED)).all(), (store_path, store.reasons())
        done = np.flatnonzero(status == FrameStatus.DONE)
        assert len(done), f"{store_path}: no frame done: {store.reasons()}"
        fit = store.read_fit("init", done)
        assert np.isfinite(fit.betas.numpy()).all() and np.isfinite(fit.camera.numpy()).all()

    keys = {a.key for a in arts}
    for stem in ("one", "two"):
        assert {f"{stem}-progress", f"{stem}-frames", f"{stem}-summary"} <= keys, keys
    assert "videos-scan" in keys
    assert {a.type for a in arts} >= {"progress", "table", "markdown"}
    assert all(math.isclose(float(a.data), 100.0) for a in arts if a.type == "progress")
