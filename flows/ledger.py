"""Which videos of a watched directory are done: a directory scan that ignores files still being written, and a JSON
ledger keyed on path + size + mtime + config digest, so scheduled scans process each new or changed video once.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

log = logging.getLogger(__name__)

__all__ = [
    "LEDGER_NAME",
    "VIDEO_EXTENSIONS",
    "Ledger",
    "LedgerEntry",
    "LedgerError",
    "VideoFile",
    "find_videos",
    "settled_videos",
]

LEDGER_NAME = "avatarize-ledger.json"
"""File name of the ledger inside the output directory."""

LEDGER_VERSION = 1

VIDEO_EXTENSIONS: tuple[str, ...] = (".mp4", ".mov", ".m4v", ".mkv", ".webm", ".avi")
"""Extensions (lower case) scanned for by default."""

EntryStatus = Literal["completed", "completed_with_failures", "failed"]


class LedgerError(ValueError):
    """The ledger file exists but cannot be read; the message says which file and what to do."""


@dataclass(frozen=True)
class VideoFile:
    """A candidate video and the identity the ledger keys on.

    Attributes:
        path: absolute path (symlinks in the directory part resolved only as far as the scan followed them).
        size: bytes.
        mtime_ns: modification time in nanoseconds.
    """

    path: Path
    size: int
    mtime_ns: int


@dataclass
class LedgerEntry:
    """What happened to one video.

    Attributes:
        size: bytes when processed.
        mtime_ns: modification time (ns) when processed.
        config_digest: ``PipelineConfig.digest()`` of the run.
        status: "completed", "completed_with_failures" (some frames FAILED) or "failed" (the video was rejected).
        store: path of the run store (None when the video failed before one existed).
        message: error or summary text.
        finished_at: ISO-8601 UTC time.
    """

    size: int
    mtime_ns: int
    config_digest: str
    status: EntryStatus
    store: str | None = None
    message: str = ""
    finished_at: str = ""


def find_videos(root: str | Path, extensions: Iterable[str] = VIDEO_EXTENSIONS) -> list[VideoFile]:
    """All regular files under ``root`` (recursive, following symlinks, each directory visited once so symlink loops
    end) whose extension is in ``extensions`` (case-insensitive); hidden files and folders are skipped. Sorted by path.

    Raises:
        NotADirectoryError: ``root`` is not a directory.
    """
    root = Path(root).absolute()
    if not root.is_dir():
        raise NotADirectoryError(f"{root}: video directory not found (or not a directory)")
    exts = {e.lower() if e.startswith(".") else "." + e.lower() for e in extensions}
    seen_dirs: set[tuple[int, int]] = set()
    found: dict[tuple[int, int], VideoFile] = {}
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        try:
            st = os.stat(dirpath)
        except OSError:
            dirnames[:] = []
            continue
        key = (st.st_dev, st.st_ino)
        if key in seen_dirs:  # a symlink loop or a second link to a folder already scanned
            dirnames[:] = []
            continue
        seen_dirs.add(key)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith(".") or Path(name).suffix.lower() not in exts:
                continue
            p = Path(dirpath) / name
            try:
                fst = p.stat()  # follows a file symlink; a dangling one raises
            except OSError:
                continue
            if not p.is_file():
                continue
            # The same file reached twice (hard or symbolic link) is processed once, under its first path.
            found.setdefault((fst.st_dev, fst.st_ino), VideoFile(p, fst.st_size, fst.st_mtime_ns))
    return sorted(found.values(), key=lambda v: str(v.path))


def settled_videos(
    root: str | Path, settle_seconds: float = 5.0, extensions: Iterable[str] = VIDEO_EXTENSIONS
) -> tuple[list[VideoFile], list[Path]]:
    """Scan twice, ``settle_seconds`` apart, and keep the videos whose size and mtime did not change (and are not
    empty): a file still being copied or recorded is left for the next scan.

    Returns:
        (settled videos, paths skipped because they are still changing or empty)
    """
    first = {v.path: v for v in find_videos(root, extensions)}
    if settle_seconds > 0 and first:
        time.sleep(settle_seconds)
    second = find_videos(root, extensions) if settle_seconds > 0 else list(first.values())
    settled, growing = [], []
    for v in second:
        before = first.get(v.path)
        if before is None or before.size != v.size or before.mtime_ns != v.mtime_ns or v.size == 0:
            growing.append(v.path)
        else:
            settled.append(v)
    return settled, growing


class Ledger:
    """The JSON ledger ``<out>/avatarize-ledger.json``: video path -> :class:`LedgerEntry`.

    Every :meth:`record` re-reads the file under an exclusive lock and replaces it atomically (temp file + rename),
    so concurrent flows writing to the same output directory never lose each other's entries and a killed writer
    never leaves a torn file.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()

    @classmethod
    def in_dir(cls, out_dir: str | Path) -> Ledger:
        """The ledger of an output directory."""
        return cls(Path(out_dir) / LEDGER_NAME)

    def _read(self) -> dict[str, LedgerEntry]:
        if not self.path.exists():
            return {}
        try:
            data = json.loads(self.path.read_text())
            if data.get("version") != LEDGER_VERSION:
                raise ValueError(f"unsupported ledger version {data.get('version')!r}")
            return {k: LedgerEntry(**v) for k, v in data["videos"].items()}
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise LedgerError(
                f"{self.path}: unreadable ledger ({e}); move it away to reprocess every video in the directory"
            ) from e

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._lock, open(self.path.with_name(self.path.name + ".lock"), "a+") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _write(self, entries: dict[str, LedgerEntry]) -> None:
        payload = {"version": LEDGER_VERSION, "videos": {k: asdict(v) for k, v in sorted(entries.items())}}
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_text(json.dumps(payload, indent=1))
        os.replace(tmp, self.path)

    def entries(self) -> dict[str, LedgerEntry]:
        """All entries: absolute video path (str) -> entry."""
        return self._read()

    def get(self, path: str | Path) -> LedgerEntry | None:
        """The entry of ``path``, or None."""
        return self._read().get(str(Path(path).absolute()))

    def needs_processing(self, video: VideoFile, config_digest: str, retry_failed: bool = False) -> bool:
        """True when ``video`` has no entry for its current size, mtime and config digest (new or changed), or when
        its entry failed and ``retry_failed`` is set."""
        entry = self.get(video.path)
        if entry is None:
            return True
        same = entry.size == video.size and entry.mtime_ns == video.mtime_ns and entry.config_digest == config_digest
        return not same or (retry_failed and entry.status != "completed")

    def record(
        self,
        video: VideoFile,
        config_digest: str,
        status: EntryStatus,
        store: str | Path | None = None,
        message: str = "",
    ) -> LedgerEntry:
        """Write the outcome for ``video`` (replacing an older entry of that path)."""
        entry = LedgerEntry(
            size=video.size,
            mtime_ns=video.mtime_ns,
            config_digest=config_digest,
            status=status,
            store=None if store is None else str(store),
            message=message,
            finished_at=datetime.now(UTC).isoformat(timespec="seconds"),
        )
        with self._locked():
            entries = self._read()
            entries[str(Path(video.path).absolute())] = entry
            self._write(entries)
        return entry
