"""The reliability harness itself: rows recorded by a test reach bench/reliability.py's log with the outcome."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_rows_reach_log_with_outcome(tmp_path, reliability_row):
    test_file = tmp_path / "test_probe.py"
    test_file.write_text(
        "def test_ok(reliability_row):\n    reliability_row('ok case', 'works', 'worked')\n\n"
        "def test_bad(reliability_row):\n    reliability_row('bad case', 'works', 'broke')\n    assert False\n"
    )
    (tmp_path / "conftest.py").write_text((ROOT / "tests" / "reliability" / "conftest.py").read_text())
    log = tmp_path / "rows.jsonl"
    env = {"AVATARIZE_RELIABILITY_LOG": str(log), "PATH": "/usr/bin:/bin"}
    subprocess.call([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", str(test_file)],
                    cwd=tmp_path, env=env, stdout=subprocess.DEVNULL)
    rows = {r["case"]: r for r in map(json.loads, log.read_text().splitlines())}
    assert rows["ok case"]["outcome"] == "passed" and rows["ok case"]["seen"] == "worked"
    assert rows["bad case"]["outcome"] == "failed"
    reliability_row("harness", "rows carry the test outcome", "passed → passed, assert False → failed")
