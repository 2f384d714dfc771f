"""Resume bookkeeping of a video run: the finished stages recorded in the store, whether an existing store may be
resumed, the per-frame report (frames.json) and the contact sheet of finished frames."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict
from pathlib import Path

import numpy as np

from flows.config import PipelineConfig
from flows.frame_batch import tile_path
from flows.resources import run_logger
from flows.results import FrameRecord, RunStoreMismatchError, SourceInfo
from flows.store import FrameStatus, NotARunStoreError, RunStore, SchemaVersionError, open_run

log = logging.getLogger(__name__)

MAX_SHEET_TILES = 48
"""At most this many frames (evenly spaced) go on the contact sheet."""
STAGES = ("frames", "fit_init")
"""The whole-video stages recorded as done in the store (per-frame work is tracked in /status)."""


# ------------------------------------------------------------------------------------------------- store & report
def open_for_resume(
    store_path: Path, source: SourceInfo, config: PipelineConfig, overwrite: bool, replace_mismatched: bool
) -> set[str]:
    """Stages already done in an existing store that matches the source and config; empty for a new store.

    Raises:
        RunStoreMismatchError: the store holds another video or config and ``replace_mismatched`` is off, or the
            path holds something that is not a run store (never replaced automatically).
    """
    if not store_path.exists() or overwrite:
        return set()
    try:
        store = open_run(store_path, "r")
    except SchemaVersionError as e:
        if replace_mismatched:
            return set()
        raise RunStoreMismatchError(f"{e}; pass overwrite=True (--overwrite) to rebuild it") from e
    except NotARunStoreError as e:
        raise RunStoreMismatchError(
            f"{store_path}: exists but is not an avatarize run store ({e}); move it away or choose another output"
        ) from e
    same_source = store.attrs.source_sha256 == source.sha256
    same_config = store.config_digest == config.digest()
    if same_source and same_config:
        return store.stages_done() & set(STAGES)
    what = "another source file" if not same_source else "another configuration"
    if replace_mismatched:
        run_logger().info("%s: made from %s; rebuilding it", store_path, what)
        return set()
    raise RunStoreMismatchError(
        f"{store_path}: made from {what} (store sha256 {store.attrs.source_sha256[:12]}…, digest "
        f"{store.config_digest}); pass overwrite=True (--overwrite) to rebuild it or choose "
        "another output folder"
    )


def load_records(preview_dir: Path) -> dict[int, FrameRecord]:
    path = preview_dir / "frames.json"
    if not path.is_file():
        return {}
    try:
        return {r["t"]: FrameRecord(**r) for r in json.loads(path.read_text())}
    except (OSError, ValueError, TypeError, KeyError):
        log.warning("%s: unreadable frame report; starting a new one", path)
        return {}


def save_records(preview_dir: Path, records: dict[int, FrameRecord]) -> Path:
    preview_dir.mkdir(parents=True, exist_ok=True)
    path = preview_dir / "frames.json"
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps([asdict(records[t]) for t in sorted(records)], indent=1))
    os.replace(tmp, path)
    return path


def sync_records(store: RunStore, records: dict[int, FrameRecord]) -> None:
    """Status and reason of every record from the store (the store is the truth)."""
    status = store.status()
    reasons = store.reasons()
    indices = store.attrs.frame_indices
    for t in range(store.n_frames):
        r = records.get(t) or FrameRecord(t=t, source_index=int(indices[t]), timestamp=float("nan"))
        r.status = FrameStatus(int(status[t])).name.lower()
        r.reason = reasons.get(t, "")
        records[t] = r


def sheet_pick(positions: np.ndarray) -> np.ndarray:
    """At most ``MAX_SHEET_TILES`` of ``positions``, evenly spaced (all of them when they fit)."""
    if positions.size <= MAX_SHEET_TILES:
        return positions
    return positions[np.linspace(0, positions.size - 1, MAX_SHEET_TILES).round().astype(int)]


def write_contact_sheet(preview_dir: Path, store: RunStore) -> Path | None:
    from flows.previews import contact_sheet, read_png, write_png

    done = np.flatnonzero(store.status() == FrameStatus.DONE)
    tiles_t = np.array([int(t) for t in done if tile_path(preview_dir, int(t)).is_file()], dtype=np.int64)
    if not tiles_t.size:
        return None
    sheet = contact_sheet([read_png(tile_path(preview_dir, int(t))) for t in sheet_pick(tiles_t)])
    return write_png(preview_dir / "contact_sheet.png", sheet)

