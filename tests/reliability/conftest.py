"""Reliability tests (issue #9): each test records table rows ``(case, expected, seen)`` for ``bench/reliability.py``.

Use the ``reliability_row`` fixture::

    def test_empty_file(tmp_path, reliability_row):
        ...
        reliability_row("empty .mp4 file", "a VideoError naming the file", f"{type(err).__name__}: {err}")

Rows live in the test item's ``user_properties``; when ``AVATARIZE_RELIABILITY_LOG`` names a file, every row is
appended to it as one JSON line together with the test's outcome (``passed``/``failed``/``skipped``), so the bench
script prints what the assertions actually checked, not a hand-written claim.
"""

from __future__ import annotations

import json
import os

import pytest

_LOG_ENV = "AVATARIZE_RELIABILITY_LOG"


@pytest.fixture
def reliability_row(request):
    """Return ``record(case: str, expected: str, seen: str)`` adding one row to this test's report."""

    def record(case: str, expected: str, seen: str) -> None:
        row = {"case": case, "expected": expected, "seen": str(seen)}
        request.node.user_properties.append(("reliability_row", row))

    return record


def pytest_runtest_logreport(report):
    path = os.environ.get(_LOG_ENV)
    if not path or report.when != "call" and not (report.when == "setup" and report.outcome != "passed"):
        return
    rows = [value for key, value in report.user_properties if key == "reliability_row"]
    if not rows:
        rows = [{"case": report.nodeid.split("::")[-1], "expected": "(no row recorded)", "seen": ""}]
    with open(path, "a", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps({**row, "test": report.nodeid, "outcome": report.outcome,
                                 "seconds": round(report.duration, 2)}) + "\n")
