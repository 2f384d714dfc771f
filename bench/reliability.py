"""Print issue #9's reliability table: every case in tests/reliability with what was expected and what was seen.

    python bench/reliability.py [-k EXPR] [--markdown out.md]

Runs ``pytest tests/reliability`` in a subprocess with ``AVATARIZE_RELIABILITY_LOG`` set, so each row is written by
the test that checked it (see tests/reliability/conftest.py) together with that test's outcome.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def run_cases(keyword: str | None) -> tuple[list[dict], int]:
    """Run the reliability tests; return their recorded rows and pytest's exit code."""
    with tempfile.TemporaryDirectory() as tmp:
        log = Path(tmp) / "rows.jsonl"
        env = {**os.environ, "AVATARIZE_RELIABILITY_LOG": str(log)}
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(ROOT / "tests" / "reliability")]
        if keyword:
            cmd += ["-k", keyword]
        code = subprocess.call(cmd, cwd=ROOT, env=env)
        rows = [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []
    return rows, code


def format_table(rows: list[dict], width: int = 60) -> str:
    """Plain-text table: case | expected | seen | outcome (long cells wrapped)."""
    header = ("case", "expected", "seen", "outcome")
    widths = (34, 44, width, 8)
    lines = [" | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)), "-+-".join("-" * w for w in widths)]
    for row in rows:
        cells = [textwrap.wrap(str(row.get(k, "")), w) or [""] for k, w in zip(header, widths, strict=True)]
        for i in range(max(len(c) for c in cells)):
            lines.append(" | ".join((c[i] if i < len(c) else "").ljust(w) for c, w in zip(cells, widths, strict=True)))
    return "\n".join(lines)


def format_markdown(rows: list[dict]) -> str:
    def esc(text: str) -> str:
        return str(text).replace("|", "\\|").replace("\n", " ")

    lines = ["| case | expected | seen | outcome |", "|---|---|---|---|"]
    lines += [f"| {esc(r['case'])} | {esc(r['expected'])} | {esc(r['seen'])} | {r['outcome']} |" for r in rows]
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-k", dest="keyword", help="pytest -k expression to run a subset")
    parser.add_argument("--markdown", type=Path, help="also write the table as Markdown to this file")
    args = parser.parse_args()
    rows, code = run_cases(args.keyword)
    print()
    print(format_table(rows))
    passed = sum(r["outcome"] == "passed" for r in rows)
    print(f"\n{len(rows)} cases, {passed} as expected, {len(rows) - passed} not (pytest exit code {code})")
    if args.markdown:
        args.markdown.write_text(format_markdown(rows) + "\n")
    return 0 if code == 0 and passed == len(rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
