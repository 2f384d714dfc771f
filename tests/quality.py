"""Quality floors: each assertion on a measured quality number names its bound and the value measured when the bound
was set, and all floors of a test are checked before it fails, so one run shows every regression at once.

With ``AVATARIZE_QUALITY_REPORT=<file.jsonl>`` every check also appends ``{name, value, bound, measured, kind, ok}``
to that file: `bench/quality_floors.py` runs the quality tests that way and prints the table the floors come from.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import asdict, dataclass, field


@dataclass(frozen=True)
class Floor:
    """A bound on one measured number: ``kind`` "max" means value < bound passes, "min" means value > bound passes.

    ``measured`` is the value measured when the bound was set (on the CPU test machine, 2026-12-03); the margin is
    the gap between the two, stated beside each floor where it is declared.
    """

    bound: float
    measured: float
    kind: str = "max"

    def passes(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        return value < self.bound if self.kind == "max" else value > self.bound


@dataclass
class FloorChecks:
    """Collects floor checks of one test; `assert_all` fails with every broken floor listed."""

    test: str
    detail: str = ""  # per-item values shown when a floor breaks
    failures: list[str] = field(default_factory=list)

    def check(self, name: str, value: float, floor: Floor) -> bool:
        value = float(value)
        ok = floor.passes(value)
        report = os.environ.get("AVATARIZE_QUALITY_REPORT")
        if report:
            with open(report, "a") as fh:
                row = {"test": self.test, "name": name, "value": value, "ok": ok, **asdict(floor)}
                fh.write(json.dumps(row) + "\n")
        if not ok:
            op = "<" if floor.kind == "max" else ">"
            need = f"{op} {floor.bound:g} (measured {floor.measured:g} when set)"
            self.failures.append(f"{name} = {value:.4g}, floor needs {need}")
        return ok

    def assert_all(self) -> None:
        detail = f" ({self.detail})" if self.detail else ""
        assert not self.failures, f"{self.test}{detail}: quality floors broken:\n  " + "\n  ".join(self.failures)
