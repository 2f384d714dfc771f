"""Tests for flows/ledger.py: directory scan (extensions, hidden files, links, loops), settling, the JSON ledger."""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import pytest

from flows.ledger import LEDGER_NAME, Ledger, LedgerError, VideoFile, find_videos, settled_videos


def touch(path: Path, data: bytes = b"x" * 10) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


class TestFindVideos:
    def test_extensions_recursive_and_hidden(self, tmp_path):
        touch(tmp_path / "a.mp4")
        touch(tmp_path / "sub" / "deeper" / "b.MOV")
        touch(tmp_path / "notes.txt")
        touch(tmp_path / ".hidden.mp4")
        touch(tmp_path / ".cache" / "c.mp4")
        found = [v.path.relative_to(tmp_path).as_posix() for v in find_videos(tmp_path)]
        assert found == ["a.mp4", "sub/deeper/b.MOV"]
        assert [v.path.name for v in find_videos(tmp_path, extensions=["txt"])] == ["notes.txt"]

    def test_symlink_loop_and_duplicate_links(self, tmp_path):
        touch(tmp_path / "sub" / "a.mp4")
        os.symlink(tmp_path, tmp_path / "sub" / "loop")  # a loop back to the root
        os.symlink(tmp_path / "sub" / "a.mp4", tmp_path / "link.mp4")  # the same file twice
        os.symlink(tmp_path / "missing.mp4", tmp_path / "dangling.mp4")
        found = find_videos(tmp_path)
        assert len(found) == 1
        assert found[0].size == 10

    def test_not_a_directory(self, tmp_path):
        with pytest.raises(NotADirectoryError, match="not found"):
            find_videos(tmp_path / "nope")


class TestSettledVideos:
    def test_growing_and_empty_files_wait(self, tmp_path):
        touch(tmp_path / "done.mp4")
        touch(tmp_path / "empty.mp4", b"")
        growing = touch(tmp_path / "growing.mp4")
        stop = threading.Event()

        def append() -> None:
            while not stop.is_set():
                with open(growing, "ab") as f:
                    f.write(b"y" * 100)
                time.sleep(0.02)

        writer = threading.Thread(target=append)
        writer.start()
        try:
            settled, waiting = settled_videos(tmp_path, settle_seconds=0.3)
        finally:
            stop.set()
            writer.join()
        assert [v.path.name for v in settled] == ["done.mp4"]
        assert sorted(p.name for p in waiting) == ["empty.mp4", "growing.mp4"]

    def test_no_settle_time_scans_once(self, tmp_path):
        touch(tmp_path / "a.mp4")
        settled, waiting = settled_videos(tmp_path, settle_seconds=0)
        assert [v.path.name for v in settled] == ["a.mp4"] and waiting == []


class TestLedger:
    def video(self, tmp_path, name="a.mp4", data=b"x" * 10) -> VideoFile:
        p = touch(tmp_path / name, data)
        st = p.stat()
        return VideoFile(p, st.st_size, st.st_mtime_ns)

    def test_new_changed_and_config(self, tmp_path):
        ledger = Ledger.in_dir(tmp_path / "out")
        v = self.video(tmp_path)
        assert ledger.needs_processing(v, "d1")
        ledger.record(v, "d1", "completed", store=tmp_path / "out" / "a.zarr", message="ok")
        assert not ledger.needs_processing(v, "d1")
        assert ledger.needs_processing(v, "d2")  # another config
        changed = VideoFile(v.path, v.size + 1, v.mtime_ns)
        assert ledger.needs_processing(changed, "d1")
        touched = VideoFile(v.path, v.size, v.mtime_ns + 1)
        assert ledger.needs_processing(touched, "d1")
        entry = Ledger.in_dir(tmp_path / "out").get(v.path)  # a fresh reader sees the file
        assert entry is not None and entry.status == "completed" and entry.store.endswith("a.zarr")

    def test_failed_entries_are_skipped_unless_retry(self, tmp_path):
        ledger = Ledger.in_dir(tmp_path)
        v = self.video(tmp_path)
        ledger.record(v, "d", "failed", message="NotAVideoError: bad")
        assert not ledger.needs_processing(v, "d")
        assert ledger.needs_processing(v, "d", retry_failed=True)

    def test_file_is_valid_json_and_concurrent_writers_keep_all(self, tmp_path):
        ledger = Ledger.in_dir(tmp_path / "out")
        videos = [self.video(tmp_path, f"v{i}.mp4") for i in range(8)]
        threads = [
            threading.Thread(target=Ledger.in_dir(tmp_path / "out").record, args=(v, "d", "completed")) for v in videos
        ]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        data = json.loads((tmp_path / "out" / LEDGER_NAME).read_text())
        assert data["version"] == 1 and len(data["videos"]) == 8
        assert len(ledger.entries()) == 8
        assert not list((tmp_path / "out").glob("*.tmp"))

    def test_corrupt_ledger_is_a_clear_error(self, tmp_path):
        (tmp_path / LEDGER_NAME).write_text("{not json")
        with pytest.raises(LedgerError, match="move it away"):
            Ledger.in_dir(tmp_path).entries()
