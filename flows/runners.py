"""Task runners as configuration (threads, one process per device, Dask) and device leases for frame tasks.

A flow never hard-codes where its tasks run: it gets a :class:`RunnerConfig`, builds the Prefect task runner with
:func:`build_task_runner`, and each device-bound task takes a device with :func:`lease_device` for as long as it
computes, so two tasks never share one GPU whatever the runner schedules.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import re
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

log = logging.getLogger(__name__)

__all__ = ["RunnerConfig", "build_task_runner", "lease_device", "parse_devices", "resolve_device"]

_DEVICE_RE = re.compile(r"^(cpu|cuda(:\d+)?|mps)$")
_LEASE_POLL_S = 0.05


def parse_devices(text: str | Sequence[str] | None) -> list[str]:
    """Parse ``"cpu,cpu"`` / ``"cuda:0,cuda:1"`` (or a list) into device names; ``None``/empty gives ``[]``.

    Raises:
        ValueError: a name that is not ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
    """
    if text is None:
        return []
    items = text.split(",") if isinstance(text, str) else list(text)
    devices = [d.strip() for d in items if d and d.strip()]
    for d in devices:
        if not _DEVICE_RE.match(d):
            raise ValueError(f"device {d!r}: expected cpu, cuda, cuda:N or mps (e.g. --devices cuda:0,cuda:1)")
    return devices


def resolve_device(name: str) -> str:
    """Turn ``"auto"`` into ``"cuda"`` when CUDA is available, else ``"cpu"``; other names pass through."""
    if name != "auto":
        return name
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class RunnerConfig(BaseModel):
    """Where the tasks of a flow run. Serialisable, so it can be a deployment parameter."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["thread", "process", "dask"] = Field(
        "thread",
        description="thread: a thread pool in the flow's process (default); process: a spawned process "
        "pool, one worker per device; dask: a Dask cluster via prefect-dask (LocalCluster, or `address`).",
    )
    workers: int | None = Field(
        None,
        ge=1,
        description="Number of workers; default: one per device if devices are given, else the CPU count "
        "(threads) or 2 (process, dask).",
    )
    devices: list[str] = Field(
        default_factory=list,
        description="Torch devices the frame tasks lease, e.g. ['cuda:0', 'cuda:1'] or "
        "['cpu', 'cpu']; empty: the pipeline config's device for every task.",
    )
    address: str | None = Field(None, description="Address of a running Dask scheduler (kind='dask' only).")
    threads_per_worker: int | None = Field(
        None, ge=1, description="Torch intra-op threads per process/Dask worker; default: CPU count / workers."
    )

    @field_validator("devices", mode="before")
    @classmethod
    def _parse(cls, v: Any) -> Any:
        return parse_devices(v) if isinstance(v, str | list | tuple) else v

    @model_validator(mode="after")
    def _check(self) -> RunnerConfig:
        if self.address is not None and self.kind != "dask":
            raise ValueError(f"runner: address is only used with kind='dask', got kind={self.kind!r}")
        return self

    @property
    def n_workers(self) -> int:
        """Effective number of workers."""
        if self.workers is not None:
            return self.workers
        if self.devices:
            return len(self.devices)
        return (os.cpu_count() or 1) if self.kind == "thread" else 2

    def torch_threads(self) -> int:
        """Torch threads each process/Dask worker should use so workers do not oversubscribe the CPUs."""
        if self.threads_per_worker is not None:
            return self.threads_per_worker
        return max(1, (os.cpu_count() or 1) // self.n_workers)


def _init_worker(torch_threads: int) -> None:
    """Process-pool worker initialiser: bound torch's intra-op threads (runs once per spawned worker)."""
    import torch

    torch.set_num_threads(torch_threads)


def build_task_runner(config: RunnerConfig | None = None) -> Any:
    """Build the Prefect task runner ``config`` describes (Dask only needs prefect-dask when asked for).

    Returns:
        A ``ThreadPoolTaskRunner``, ``ProcessPoolTaskRunner`` or ``prefect_dask.DaskTaskRunner``.
    """
    config = config or RunnerConfig()
    if config.kind == "thread":
        from prefect.task_runners import ThreadPoolTaskRunner

        return ThreadPoolTaskRunner(max_workers=config.n_workers)
    if config.kind == "process":
        from prefect.task_runners import ProcessPoolTaskRunner

        return ProcessPoolTaskRunner(
            max_workers=config.n_workers, initializer=_init_worker, initargs=(config.torch_threads(),)
        )
    try:
        from prefect_dask import DaskTaskRunner
    except ImportError as e:  # pragma: no cover - prefect-dask is a dependency
        raise RuntimeError("runner kind 'dask' needs prefect-dask: pip install 'prefect-dask>=0.3.7'") from e
    if config.address:
        return DaskTaskRunner(address=config.address)
    return DaskTaskRunner(
        cluster_kwargs={
            "n_workers": config.n_workers,
            "threads_per_worker": 1,
            "processes": True,
            "dashboard_address": None,
        }
    )


def _lock_dir() -> Path:
    d = Path(tempfile.gettempdir()) / f"avatarize-devices-{os.getuid()}"
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def lease_device(devices: Sequence[str], timeout_s: float | None = None) -> Iterator[str]:
    """Hold one of ``devices`` exclusively (across threads and processes of this machine) while the block runs.

    Slot ``i`` of the list is one lock file, so ``["cpu", "cpu"]`` gives two CPU slots and ``["cuda:0", "cuda:1"]``
    one slot per GPU. Waits (polling) until a slot is free.

    Args:
        devices: device names; empty yields ``"cpu"`` without locking.
        timeout_s: give up after this many seconds (``TimeoutError``); ``None`` waits forever.

    Yields:
        The leased device name.
    """
    if not devices:
        yield "cpu"
        return
    names = [re.sub(r"[^a-z0-9]+", "-", d.lower()) for d in devices]
    # Slots are per name and occurrence: the second "cpu" is "cpu-1", shared by all flows on this machine.
    seen: dict[str, int] = {}
    paths = []
    for n in names:
        k = seen.get(n, 0)
        seen[n] = k + 1
        paths.append(_lock_dir() / f"{n}-{k}.lock")
    start = time.monotonic()
    while True:
        for device, path in zip(devices, paths, strict=True):
            fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                continue
            try:
                yield device
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)
            return
        if timeout_s is not None and time.monotonic() - start > timeout_s:
            raise TimeoutError(f"no free device among {list(devices)} after {timeout_s:.0f} s")
        time.sleep(_LEASE_POLL_S)
