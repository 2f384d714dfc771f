"""Issue #9, faults: a frame task raising, a full disk, the flow process or a worker process killed, the Prefect server
restarted. After each fault a re-run completes, the frames done before are byte-identical and not recomputed (their
chunk files keep bytes and mtime; the instrumented steps are not called for them), the store opens with xarray and the
per-frame status says what happened."""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from flows import frame_batch, pipeline
from flows.store import FrameStatus, RunStoreError, open_run, run_lock_path
from tests.reliability import _faults_hooks as hooks_mod
from tests.reliability._faults_hooks import (
    Hooks,
    chunk_snapshot,
    install,
    open_all_with_xarray,
    read_calls,
    status_names,
)
from tests.reliability._faults_run import DRIVER_TIMEOUT_S, N_FRAMES, make_clip, start_driver, tail, tiny_config


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    return make_clip(tmp_path_factory.mktemp("fault_clip"))


def _rerun_and_check(clip: Path, out: Path, cfg, monkeypatch, tmp_path: Path, runner=None) -> dict:
    """Re-run ``process_video`` with counting hooks; check the done frames are untouched, the rest finished, the
    store opens with xarray. Returns what was seen."""
    store_path = out / f"{clip.stem}.zarr"
    before = open_run(store_path).status()
    done = [int(t) for t in np.flatnonzero(before == FrameStatus.DONE)]
    snap = chunk_snapshot(store_path, done)
    calls = tmp_path / "rerun_calls.txt"
    install(Hooks(calls=str(calls)).to_json(), monkeypatch.setattr)
    result = pipeline.process_video(clip, out, cfg, runner=runner, batch_size=1)
    recomputed = sorted(t for k, t, _ in read_calls(calls) if k == "preview")
    redone_stages = sorted({k for k, _, _ in read_calls(calls) if k != "preview"})
    after = chunk_snapshot(store_path, done)
    assert result.n_done == N_FRAMES and result.n_failed == 0, status_names(store_path)
    assert not set(recomputed) & set(done), f"done frames recomputed: {recomputed}"
    assert recomputed == [t for t in range(N_FRAMES) if t not in done]
    assert redone_stages == [], f"finished stages re-run: {redone_stages}"
    assert snap and after == snap, "chunks of done frames changed"
    groups = open_all_with_xarray(store_path, consolidated=True)
    return {
        "done_before": done,
        "recomputed": recomputed,
        "chunks_kept": len(snap),
        "xarray": groups,
        "status": status_names(store_path),
    }


def _seen(first: str, rerun: dict) -> str:
    redone = f"frames {rerun['recomputed']} only" if rerun["recomputed"] else "nothing"
    return (
        f"{first}; re-run recomputed {redone} (no detect/fit), {rerun['chunks_kept']} chunk "
        f"files of done frames {rerun['done_before']} byte-identical with the same mtime, all {N_FRAMES} done, "
        f"xarray opened {', '.join(rerun['xarray'])}"
    )


# --------------------------------------------------------------------------------------------------- task raises
def test_task_raises_on_one_frame(prefect_server, clip, cfg, tmp_path, monkeypatch, reliability_row):
    out = tmp_path / "out"
    with monkeypatch.context() as m:
        install(Hooks(calls=str(tmp_path / "calls.txt"), raise_at=2).to_json(), m.setattr)
        first = pipeline.process_video(clip, out, cfg, batch_size=1)
    assert first.n_failed == 1 and first.n_done == N_FRAMES - 1
    first_status = status_names(first.store)
    assert first_status == ["done", "done", "failed", "done", "done"]
    reason = open_run(first.store).reasons()[2]
    assert "injected fault on frame 2" in reason and reason.startswith("preview: RuntimeError")
    rerun = _rerun_and_check(clip, out, cfg, monkeypatch, tmp_path)
    reliability_row(
        "a task raises on one frame",
        "the other frames complete; that frame FAILED with the reason; re-run retries only it",
        _seen(f"first run: {first.message}, status {first_status}, frame 2 reason {reason!r}", rerun),
    )


# ------------------------------------------------------------------------------------------------------ disk full
def test_disk_full_while_writing_a_chunk(prefect_server, clip, cfg, tmp_path, monkeypatch, reliability_row):
    """A per-frame step writes a normals chunk (as reconstruction does); the chunk writer of frame 2 gets half its
    bytes out, then ENOSPC, on every attempt of the first run (the frame task's automatic retry included)."""
    import zarr.storage._local as local

    def normals_step(ctx, t):
        s = ctx.store.image_size
        n = np.full((1, s, s, 3), (t + 1) / 10, np.float16)
        ctx.store.write_normals([t], n, -n)

    def steps(config=None):
        return [("normals", normals_step), ("preview", frame_batch.render_frame_preview)]

    monkeypatch.setattr(frame_batch, "frame_steps", steps)
    target = os.path.join("normals", "front", "c", "2", "0", "0", "0")
    real_put, hits = local._put, []

    def put_disk_full(path, value, exclusive=False):
        if str(path).endswith(target):  # the disk stays full for the whole first run (its task retry included)
            hits.append(str(path))
            path.parent.mkdir(parents=True, exist_ok=True)
            with local._atomic_write(path, "wb", exclusive=exclusive) as fh:
                data = bytes(value.as_buffer_like())
                fh.write(data[: len(data) // 2])
                fh.flush()
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        return real_put(path, value, exclusive)

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(local, "_put", put_disk_full)
        first = pipeline.process_video(clip, out, cfg, batch_size=1)
    store_path = Path(first.store)
    assert hits, "the disk-full writer was never reached"
    assert status_names(store_path) == ["done", "done", "failed", "done", "done"]
    reason = open_run(store_path).reasons()[2]
    assert "No space left on device" in reason and reason.startswith("normals: OSError")
    leftovers = [str(p.relative_to(store_path)) for p in store_path.rglob("*.partial")]
    assert leftovers == [], f"temporary chunk files left: {leftovers}"
    assert not (store_path / target).exists(), "a partial chunk was left in place"
    back = open_run(store_path).read_normals([2]).back  # frame 2's other chunk (written first) stays readable
    assert back.shape == (1, 128, 128, 3)
    rerun = _rerun_and_check(clip, out, cfg, monkeypatch, tmp_path)
    rewritten = open_run(store_path).read_normals([2]).front
    np.testing.assert_array_equal(rewritten, np.full((1, 128, 128, 3), 0.3, np.float16))
    reliability_row(
        "disk full while writing a chunk",
        "no corrupt chunk left, a clear error, re-run completes",
        _seen(
            f"frame 2 FAILED after {len(hits)} attempts (task retry included) with "
            f"{reason.replace(str(store_path), '<store>')!r}; no chunk file and no "
            "*.partial temp left for it (zarr writes temp + rename); the other frames done",
            rerun,
        ),
    )


# ------------------------------------------------------------------------------------------- processes killed
@pytest.mark.slow
def test_flow_process_killed(prefect_server, clip, cfg, tmp_path, monkeypatch, reliability_row):
    """The process running process_video (thread runner: it also runs the frame tasks) is SIGKILLed as frame 3's step
    starts."""
    out = tmp_path / "out"
    hooks = Hooks(calls=str(tmp_path / "calls.txt"), kill_at=3, marker=str(tmp_path / "killed"))
    proc, _ = start_driver(tmp_path / "driver", clip, out, cfg, hooks)
    rc = proc.wait(DRIVER_TIMEOUT_S)
    assert rc == -signal.SIGKILL, f"driver exited {rc}:\n{tail(tmp_path / 'driver' / 'driver.log')}"
    store_path = out / f"{clip.stem}.zarr"
    killed = status_names(store_path)
    assert killed == ["done", "done", "done", "pending", "pending"], killed
    open_all_with_xarray(store_path, consolidated=False)  # readable as the kill left it
    holder = run_lock_path(store_path).read_text()
    assert f"pid {proc.pid} " in holder
    t0 = time.monotonic()
    rerun = _rerun_and_check(clip, out, cfg, monkeypatch, tmp_path)
    rerun_s = time.monotonic() - t0
    reliability_row(
        "flow process killed (SIGKILL mid-run)",
        "re-run resumes: done frames kept and not recomputed, store valid, status truthful",
        _seen(
            f"killed at frame 3: status {killed}, store readable by xarray as left; the dead run's lock "
            f"({holder.split(' since')[0]}) was taken at once by the re-run ({rerun_s:.1f} s in all)",
            rerun,
        ),
    )


@pytest.mark.slow
def test_worker_process_killed(prefect_server, clip, cfg, tmp_path, monkeypatch, reliability_row):
    """Process runner (one spawned worker): the worker is SIGKILLed as frame 2's step starts."""
    from prefect.task_runners import ProcessPoolTaskRunner

    from flows.runners import RunnerConfig

    hooks = Hooks(calls=str(tmp_path / "calls.txt"), kill_at=2, marker=str(tmp_path / "killed"))

    def runner_with_hooks(config=None):
        return ProcessPoolTaskRunner(max_workers=1, initializer=hooks_mod.install, initargs=(hooks.to_json(),))

    out = tmp_path / "out"
    with monkeypatch.context() as m:
        m.setattr(pipeline, "build_task_runner", runner_with_hooks)
        first = pipeline.process_video(clip, out, cfg, runner=RunnerConfig(kind="process", workers=1), batch_size=1)
    store_path = Path(first.store)
    calls = [(t, pid) for k, t, pid in read_calls(hooks.calls) if k == "preview"]
    worker_pids = sorted({pid for _, pid in calls})
    assert Path(hooks.marker).exists() and os.getpid() not in worker_pids, "the kill did not happen in a worker"
    per_frame = {t: [pid for f, pid in calls if f == t] for t in range(N_FRAMES)}
    assert len(worker_pids) == 2, f"expected the killed worker and its replacement, got {worker_pids}"
    assert len(per_frame[2]) == 2 and per_frame[2][0] != per_frame[2][1], per_frame  # killed, then redone elsewhere
    assert all(len(per_frame[t]) == 1 for t in (0, 1)), per_frame  # done before the kill: never redone
    status = status_names(store_path)
    assert status == ["done"] * N_FRAMES and first.n_failed == 0, (status, open_run(store_path).reasons())
    rerun = _rerun_and_check(clip, out, cfg, monkeypatch, tmp_path)
    assert rerun["recomputed"] == []
    reliability_row(
        "a worker process killed mid-batch",
        "frames done stay done and are not redone; the lost frames are retried; the run completes",
        _seen(
            f"process runner, worker pid {worker_pids[0]} SIGKILLed at frame 2 (BrokenProcessPool): the flow kept "
            f"going, re-ran the lost batches once in a new pool (pid {worker_pids[1]}); preview calls per frame "
            f"{ {t: len(p) for t, p in per_frame.items()} }; status {status}",
            rerun,
        ),
    )


# ------------------------------------------------------------------------------------------ Prefect server restart
@pytest.mark.slow
def test_prefect_server_restarted(clip, cfg, tmp_path, monkeypatch, reliability_row):
    """A real `prefect server start` (own PREFECT_HOME, SQLite) is stopped after the first frame is done and started
    again on the same port; the run's client rides it out on its retries."""
    from tests.flows.test_deployment_server import _free_port, _spawn, _stop, _wait_healthy

    home = tmp_path / "prefect-home"
    home.mkdir()
    port = _free_port()
    api_url = f"http://127.0.0.1:{port}/api"
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(PREFECT_HOME=str(home), PREFECT_API_URL=api_url, PREFECT_SERVER_ANALYTICS_ENABLED="false")
    args = ["server", "start", "--host", "127.0.0.1", "--port", str(port), "--analytics-off", "--no-ui"]
    args.append("--no-services")  # the API alone: starts faster, and a run needs nothing else
    server = _spawn(args, env, home / "server1.log")
    restarted = None
    driver = None
    try:
        _wait_healthy(server, api_url, home / "server1.log")
        out = tmp_path / "out"
        hooks = Hooks(calls=str(tmp_path / "calls.txt"), sleep_s=0.5)
        driver, result_file = start_driver(tmp_path / "driver", clip, out, cfg, hooks, api_url=api_url)
        store_path = out / f"{clip.stem}.zarr"
        deadline = time.monotonic() + DRIVER_TIMEOUT_S
        while time.monotonic() < deadline and driver.poll() is None:
            with contextlib.suppress(RunStoreError, FileNotFoundError):  # the store may be mid-creation
                if "done" in status_names(store_path):
                    break
            time.sleep(0.1)
        assert driver.poll() is None, f"driver ended early:\n{tail(tmp_path / 'driver' / 'driver.log')}"
        at_stop = status_names(store_path)
        t_down = time.monotonic()
        _stop(server)
        restarted = _spawn(args, env, home / "server2.log")
        _wait_healthy(restarted, api_url, home / "server2.log")
        down_s = time.monotonic() - t_down
        rc = driver.wait(DRIVER_TIMEOUT_S)
        log = tail(tmp_path / "driver" / "driver.log")
        assert rc == 0, f"driver exited {rc}:\n{log}"
        final = status_names(store_path)
        assert final == ["done"] * N_FRAMES, (final, open_run(store_path).reasons())
        preview_calls = sorted(t for k, t, _ in read_calls(hooks.calls) if k == "preview")
        assert preview_calls == list(range(N_FRAMES)), preview_calls  # each frame once: nothing redone
        open_all_with_xarray(store_path, consolidated=True)
        flow_state = _flow_run_state(api_url)
    finally:
        if driver is not None and driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        _stop(server)
        if restarted is not None:
            _stop(restarted)
    reliability_row(
        "Prefect server restarted during a run",
        "the run completes (or a re-run resumes); nothing lost, nothing recomputed",
        f"server stopped with frames {at_stop}, back after {down_s:.0f} s; the run went on through the client's "
        f"retries and completed: status {final}, each frame computed once, xarray opens; the restarted server "
        f"records the flow run as {flow_state}",
    )


def _flow_run_state(api_url: str) -> str:
    """State name of the (single) process-video flow run on the server at ``api_url``, read in a subprocess."""
    code = (
        "from prefect.client.orchestration import get_client\n"
        "with get_client(sync_client=True) as c:\n"
        "    print(','.join(sorted(r.state.name for r in c.read_flow_runs())))\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_API")}
    env["PREFECT_API_URL"] = api_url
    res = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    return res.stdout.strip() or f"unknown ({res.stderr.strip()[-200:]})"
