"""The run lock of a store: one run writes a store at a time (``fcntl.flock`` on ``<store>.lock`` beside it)."""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from flows.store_types import RunStoreBusyError

# ---------------------------------------------------------------------------------------------------- the run lock
LOCK_POLL_S = 0.2
"""Seconds between attempts while waiting for a store's run lock."""


def run_lock_path(path: str | Path) -> Path:
    """The lock file of the store at ``path``: ``<store>.lock`` beside it (outside, so a rebuild keeps it)."""
    p = Path(path)
    return p.with_name(p.name + ".lock")


def _lock_holder(fd: int) -> str:
    """What the lock file says about its (last) holder, for messages."""
    try:
        text = os.pread(fd, 512, 0).decode(errors="replace").strip()
    except OSError:
        text = ""
    return text or "unknown holder"


@contextlib.contextmanager
def lock_run(
    path: str | Path,
    timeout_s: float | None = None,
    on_wait: Callable[[str], None] | None = None,
) -> Iterator[Path]:
    """Hold the run lock of the store at ``path`` while the block runs: one run writes a store at a time.

    The lock is an ``fcntl.flock`` on ``<store>.lock``. The kernel drops it when the holding process exits or is
    killed, so a crashed run never leaves a stale lock: the file stays (naming its last holder) but the next run
    takes it at once. Locks are per open file, so two threads of one process exclude each other too. (flock is not
    reliable on some network file systems; keep stores on a local disk.)

    Args:
        path: the store directory (need not exist yet).
        timeout_s: give up after this many seconds with :class:`RunStoreBusyError`; ``0`` tries once, ``None`` waits
            as long as it takes.
        on_wait: called once with the holder's description when the lock is busy and the call starts waiting.

    Yields:
        The lock file path.
    """
    lock = run_lock_path(path)
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        start = time.monotonic()
        waited = False
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                holder = _lock_holder(fd)
                if timeout_s is not None and time.monotonic() - start >= timeout_s:
                    raise RunStoreBusyError(
                        f"{path}: another run is writing this store ({holder}); wait for it to finish or run again "
                        "later"
                    ) from None
                if not waited and on_wait is not None:
                    on_wait(holder)
                waited = True
                time.sleep(LOCK_POLL_S)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"pid {os.getpid()} on {socket.gethostname()} since {time.strftime('%Y-%m-%d %H:%M:%S')}"
                  .encode(), 0)  # fmt: skip
        try:
            yield lock
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)
