"""Issue #9, concurrency: two runs on the same video at once, a directory scan meeting a store another run is writing,
and the run lock of a holder that died. The store's run lock (flows.store.lock_run) makes the second run wait (or a
scan skip the video until its next pass); the store stays valid."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from flows import pipeline
from flows.ledger import Ledger
from flows.store import RunStoreBusyError, lock_run, run_lock_path
from tests.reliability._faults_hooks import Hooks, install, open_all_with_xarray, read_calls, status_names
from tests.reliability._faults_run import (
    DRIVER_TIMEOUT_S,
    N_FRAMES,
    ROOT,
    driver_env,
    make_clip,
    start_driver,
    tail,
    tiny_config,
)


@pytest.fixture(scope="module")
def cfg():
    return tiny_config()


@pytest.mark.slow
def test_two_runs_on_the_same_video_at_once(prefect_server, cfg, tmp_path, monkeypatch, reliability_row):
    """Run A (a subprocess, slowed to ~0.5 s per frame) holds the store; run B starts meanwhile in this process."""
    clip = make_clip(tmp_path / "videos")
    out = tmp_path / "out"
    a_hooks = Hooks(calls=str(tmp_path / "a_calls.txt"), sleep_s=0.5)
    proc, a_result = start_driver(tmp_path / "a", clip, out, cfg, a_hooks)
    lock = run_lock_path(out / f"{clip.stem}.zarr")
    deadline = time.monotonic() + DRIVER_TIMEOUT_S
    while time.monotonic() < deadline and proc.poll() is None:
        if lock.exists() and f"pid {proc.pid} " in lock.read_text():
            break
        time.sleep(0.05)
    assert proc.poll() is None, f"run A ended before B started:\n{tail(tmp_path / 'a' / 'driver.log')}"
    b_calls = tmp_path / "b_calls.txt"
    install(Hooks(calls=str(b_calls)).to_json(), monkeypatch.setattr)
    b_start = time.time()
    b = pipeline.process_video(clip, out, cfg, batch_size=1)
    b_end = time.time()
    proc.wait(DRIVER_TIMEOUT_S)
    assert proc.returncode == 0, tail(tmp_path / "a" / "driver.log")
    a_previews = sorted(t for k, t, _ in read_calls(a_hooks.calls) if k == "preview")
    assert a_previews == list(range(N_FRAMES))
    assert read_calls(b_calls) == [], f"run B recomputed: {read_calls(b_calls)}"
    assert b.n_done == N_FRAMES and status_names(b.store) == ["done"] * N_FRAMES
    store_path = Path(b.store)
    # A's last write (the DONE of its last frame) falls inside B's run: B was started before it and waited for it.
    last_write = max(p.stat().st_mtime for p in store_path.rglob("*") if p.is_file() and "c" in p.parts)
    assert b_start < last_write <= b_end, "B did not overlap A and wait for it"
    groups = open_all_with_xarray(store_path, consolidated=True)
    reliability_row(
        "two runs on the same video at once",
        "the second waits for the first (store lock), then resumes without recomputing; the store stays valid",
        f"B started while A held the lock, waited {last_write - b_start:.1f} s for A's last write, then found every "
        f"frame done: B ran no detect/fit/preview (A ran preview on {a_previews}); status "
        f"{status_names(store_path)}; xarray opened {', '.join(groups)}",
    )


def test_scan_skips_a_store_another_run_writes(prefect_server, cfg, tmp_path, reliability_row):
    """process_directory meets a store whose lock another run holds: left for the next scan, not in the ledger."""
    videos, out = tmp_path / "videos", tmp_path / "out"
    clip = make_clip(videos)
    store_path = out / f"{clip.stem}.zarr"
    with lock_run(store_path):  # another run holds the store (a separate open file: excludes this process too)
        busy = pipeline.process_directory(videos, out, cfg, settle_seconds=0)
    assert busy.busy == [str(clip)] and busy.processed == [] and busy.failed == {}
    assert Ledger.in_dir(out).entries() == {}, "a busy video must not be recorded as done"
    assert not store_path.exists()
    later = pipeline.process_directory(videos, out, cfg, settle_seconds=0)
    assert [r.n_done for r in later.processed] == [N_FRAMES] and later.busy == []
    entry = Ledger.in_dir(out).get(clip)
    assert entry is not None and entry.status == "completed"
    reliability_row(
        "directory scan meets a store being written",
        "the scan skips it (no ledger entry) and the next scan processes it",
        f"first scan: {busy.message}, ledger empty, no store written; next scan: {later.message}, ledger "
        f"{entry.status}",
    )


_HOLDER = """
import sys, time
from flows.store import lock_run
with lock_run(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


def test_lock_of_a_dead_holder_is_released(tmp_path, reliability_row):
    """A process holding a store's lock is SIGKILLed: the next run takes the lock at once (no stale lock)."""
    store_path = tmp_path / "clip.zarr"
    holder = subprocess.Popen(
        [sys.executable, "-c", _HOLDER, str(store_path)], cwd=ROOT, env=driver_env("http://127.0.0.1:9/api"),
        stdout=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunStoreBusyError, match=f"pid {holder.pid} ") as busy:
            with lock_run(store_path, timeout_s=0.3):
                pass
        os.killpg(holder.pid, signal.SIGKILL)
        holder.wait(30)
    finally:
        if holder.poll() is None:
            os.killpg(holder.pid, signal.SIGKILL)
    t0 = time.monotonic()
    with lock_run(store_path, timeout_s=0) as lock:
        taken_s = time.monotonic() - t0
        assert f"pid {os.getpid()} " in lock.read_text()

    order: list[str] = []

    def hold(name: str) -> None:
        with lock_run(store_path):
            order.append(f"{name} in")
            time.sleep(0.2)
            order.append(f"{name} out")

    threads = [threading.Thread(target=hold, args=(n,)) for n in ("t1", "t2")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert order[0].endswith(" in") and order[1] == order[0].replace(" in", " out"), order  # never interleaved
    reliability_row(
        "run lock whose holder died",
        "no stale lock: the next run takes it at once; a live holder is named; threads exclude each other",
        f"live holder: {type(busy.value).__name__} naming it ({str(busy.value).split('(')[1].split(')')[0]}); after "
        f"SIGKILL the lock was taken in {taken_s * 1000:.0f} ms; two threads ran {order}",
    )


def test_avatar_command_refuses_a_store_being_written(tmp_path, monkeypatch, reliability_row):
    """`avatarize avatar STORE` takes the store's run lock: while a run holds it, the command exits with the holder
    named and trains nothing; once the lock is free it goes ahead (training patched out to a marker)."""
    from typer.testing import CliRunner

    from flows import avatar_flow
    from flows.cli import app

    store = tmp_path / "clip.zarr"
    calls = []

    class Done:
        avatar_dir, curves_png, preview, seconds = tmp_path / "clip.avatar", None, None, {"total": 0.0}

    def fake_train(*args, **kwargs):
        calls.append(args[0])
        return Done()

    monkeypatch.setattr(avatar_flow, "train_avatar_flow", fake_train)
    with lock_run(store):
        busy = CliRunner().invoke(app, ["avatar", str(store), "--no-preview"])
    assert busy.exit_code == 1 and "error:" in busy.output and "pid" in busy.output and calls == []
    free = CliRunner().invoke(app, ["avatar", str(store), "--no-preview"])
    assert free.exit_code == 0 and calls == [store]
    reliability_row("`avatarize avatar` on a store a run is writing", "refused naming the holder; nothing trained",
                    f"busy: exit {busy.exit_code}, {busy.output.strip().splitlines()[-1][:90]}; "
                    f"free: exit {free.exit_code}, trained {len(calls)}x")  # fmt: skip
