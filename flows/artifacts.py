"""Prefect artifacts of the pipeline: the frame table and markdown summaries (the progress artifact is updated by
the flow itself as frame batches finish). Call only inside a flow or task run.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.results import DirectoryResult, FrameRecord, VideoResult

__all__ = ["frame_table", "publish_directory_artifact", "publish_video_artifacts", "video_summary_markdown"]

_MAX_LISTED_FAILURES = 20


def _num(x: float | None, digits: int = 3) -> float | None:
    """JSON-safe rounded number (NaN/inf/None -> None)."""
    if x is None or not math.isfinite(x):
        return None
    return round(float(x), digits)


def frame_table(records: Sequence[FrameRecord]) -> list[dict[str, Any]]:
    """One row per frame: position, source frame, status, reason, fit loss, keypoint error, seconds per stage."""
    stages = sorted({k for r in records for k in r.seconds})
    rows = []
    for r in records:
        row: dict[str, Any] = {
            "frame": r.t,
            "source_frame": r.source_index,
            "status": r.status,
            "reason": r.reason,
            "fit_loss": _num(r.fit_loss),
            "keypoint_error_px": _num(r.keypoint_error_px, 2),
        }
        for s in stages:
            row[f"s_{s}"] = _num(r.seconds.get(s))
        rows.append(row)
    return rows


def _report_link(store: str) -> str:
    """Markdown link to the run's HTML report (``file://``, opens from disk), or a note when none was written."""
    from flows.report import report_dir_for

    page = report_dir_for(store) / "index.html"
    if not page.is_file():
        return "(not written)"
    return f"[{page.name}]({page.resolve().as_uri()}) `{page}`"


def video_summary_markdown(result: VideoResult, reasons: dict[int, str]) -> str:
    """Markdown summary of one video: counts, output paths, contact sheet, HTML report link, seconds per stage,
    failures."""
    lines = [
        f"# {Path(result.video).name}: {result.message}",
        "",
        "| | |",
        "|---|---|",
        f"| source | `{result.video}` |",
        f"| run store | `{result.store}` |",
        f"| previews | `{result.preview_dir}` |",
        f"| contact sheet | `{result.contact_sheet or '(no finished frame)'}` |",
        f"| report | {_report_link(result.store)} |",
        f"| frames | {result.n_frames} total, {result.n_done} done, {result.n_skipped} skipped, "
        f"{result.n_failed} failed |",
        f"| wall time | {result.seconds:.1f} s |",
    ]
    if result.stage_seconds:
        total = sum(result.stage_seconds.values()) or 1.0
        lines += ["", "| stage | seconds | share |", "|---|---|---|"]
        for name, sec in sorted(result.stage_seconds.items(), key=lambda kv: -kv[1]):
            lines.append(f"| {name} | {sec:.2f} | {100 * sec / total:.0f}% |")
    if reasons:
        lines += ["", "## Frames skipped or failed", ""]
        for t, why in list(sorted(reasons.items()))[:_MAX_LISTED_FAILURES]:
            lines.append(f"- frame {t}: {why}")
        if len(reasons) > _MAX_LISTED_FAILURES:
            lines.append(f"- … and {len(reasons) - _MAX_LISTED_FAILURES} more (see frames.json)")
    return "\n".join(lines) + "\n"


def publish_video_artifacts(
    slug: str, result: VideoResult, records: Sequence[FrameRecord], reasons: dict[int, str]
) -> None:
    """Create the frame table and the markdown summary of a video run (keys ``<slug>-frames``, ``<slug>-summary``)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_table_artifact(
        table=frame_table(records), key=f"{slug}-frames", description=f"Frames of {Path(result.video).name}"
    )
    create_markdown_artifact(
        markdown=video_summary_markdown(result, reasons),
        key=f"{slug}-summary",
        description=f"avatarize run of {Path(result.video).name}",
    )


def publish_directory_artifact(slug: str, video_dir: Path, out_dir: Path, result: DirectoryResult) -> None:
    """Markdown summary of one directory scan (key ``<slug>-scan``)."""
    from prefect.artifacts import create_markdown_artifact

    lines = [f"# Scan of `{video_dir}`: {result.message}", "", f"Outputs and ledger in `{out_dir}`.", ""]
    if result.processed:
        lines += ["| video | result | store | contact sheet |", "|---|---|---|---|"]
        for r in result.processed:
            lines.append(f"| `{Path(r.video).name}` | {r.message} | `{r.store}` | `{r.contact_sheet or '-'}` |")
    if result.failed:
        lines += ["", "## Videos that could not be processed", ""]
        lines += [f"- `{p}`: {msg}" for p, msg in result.failed.items()]
    if result.growing:
        lines += ["", "## Still being written (next scan)", ""]
        lines += [f"- `{p}`" for p in result.growing]
    create_markdown_artifact(markdown="\n".join(lines) + "\n", key=f"{slug}-scan", description="avatarize scan")
