"""Every measured value the test suite's quality floors are based on, printed next to its floor.

Runs the quality tests (the same code path as ``make test``) with ``AVATARIZE_QUALITY_REPORT`` set, so each floor check
(tests/quality.py) records its measured value, then prints one table: test, quantity, value now, the value measured
when the floor was set, the bound and whether it holds. Re-measure after a change of weights or method, then move the
``Floor(bound, measured=...)`` declarations in the test files (one block per test, with the margin in a comment).

    python bench/quality_floors.py            # normal net, per-frame reconstruction, body-fit yaw (~2-4 min on 2 cores)
    python bench/quality_floors.py --demo     # also the demo clip end to end (+3-4 min)
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

QUALITY_TESTS = [
    "tests/icon/test_normal_net.py::test_shipped_weights_quality_floors",
    "tests/icon/test_implicit.py::test_shipped_weights_beat_the_naked_body",
    "tests/icon/test_reconstruct.py::test_shipped_reconstruction_quality_floors",
    "tests/icon/test_fit.py::test_fit_recovers_keypoints_and_silhouette",
]
DEMO_TEST = "tests/flows/test_pipeline_full.py::test_demo_clip_end_to_end"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--demo", action="store_true", help="also run the demo clip end to end (slow)")
    args = parser.parse_args()
    tests = QUALITY_TESTS + ([DEMO_TEST] if args.demo else [])
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "floors.jsonl"
        env = {**os.environ, "AVATARIZE_QUALITY_REPORT": str(report)}
        env.setdefault("OMP_NUM_THREADS", "1")
        run = subprocess.run([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *tests], cwd=ROOT,
                             env=env, capture_output=True, text=True)  # fmt: skip
        rows = [json.loads(line) for line in report.read_text().splitlines()] if report.exists() else []
    if not rows:
        print(run.stdout[-3000:], run.stderr[-3000:])
        raise SystemExit("no floor values were recorded")
    print("| test | quantity | now | when set | floor | holds |\n|---|---|---:|---:|---:|---|")
    for r in rows:
        op = "<" if r["kind"] == "max" else ">"
        print(f"| {r['test']} | {r['name']} | {r['value']:.4g} | {r['measured']:.4g} | {op} {r['bound']:g} | "
              f"{'yes' if r['ok'] else '**NO**'} |")  # fmt: skip
    print(f"\npytest: {run.stdout.strip().splitlines()[-1] if run.stdout.strip() else run.returncode}")


if __name__ == "__main__":
    main()
