"""The Khronos glTF validator (npm ``gltf-validator``, run with node) as a test helper: the real client, not a lenient
reader, decides whether a .glb the project writes is valid.

The package lives in ``<repo>/.cache/npm`` (installed by ``make test-tools``; installed here on first use if missing).
Tests skip with a reason only when node itself is absent.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

VALIDATOR_VERSION = "2.0.0-dev.3.10"
NPM_PREFIX = Path(__file__).resolve().parent.parent / ".cache" / "npm"

_SCRIPT = r"""
const fs = require('fs');
const validator = require('gltf-validator');
(async () => {
  const out = {};
  for (const file of process.argv.slice(1)) {
    const report = await validator.validateBytes(new Uint8Array(fs.readFileSync(file)), {maxIssues: 50});
    out[file] = {errors: report.issues.numErrors, warnings: report.issues.numWarnings,
                 infos: report.issues.numInfos, messages: report.issues.messages, info: report.info};
  }
  process.stdout.write(JSON.stringify(out));
})().catch((e) => { console.error(String(e)); process.exit(2); });
"""


def _ensure_installed() -> Path:
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is not installed: the Khronos glTF validator (npm gltf-validator) runs on node")
    modules = NPM_PREFIX / "node_modules"
    if not (modules / "gltf-validator" / "package.json").is_file():
        npm = shutil.which("npm")
        if npm is None:
            pytest.fail(f"npm is missing: install gltf-validator into {NPM_PREFIX} (`make test-tools`)")
        NPM_PREFIX.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([npm, "install", "--prefix", str(NPM_PREFIX), "--no-audit", "--no-fund",
                               f"gltf-validator@{VALIDATOR_VERSION}"], capture_output=True, text=True)  # fmt: skip
        if done.returncode != 0:
            pytest.fail(f"could not install gltf-validator into {NPM_PREFIX}: {done.stderr[-2000:]}")
    return modules


def validate_glb(*paths: str | Path) -> dict[str, dict]:
    """Validate .glb files; returns per path ``{errors, warnings, infos, messages, info}`` as the validator reports."""
    modules = _ensure_installed()
    env = {**os.environ, "NODE_PATH": str(modules)}
    files = [str(Path(p).resolve()) for p in paths]
    done = subprocess.run(["node", "-e", _SCRIPT, *files], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        raise RuntimeError(f"gltf-validator failed: {done.stderr[-2000:]}")
    reports = json.loads(done.stdout)
    return {p: reports[f] for p, f in zip(map(str, paths), files, strict=True)}


def assert_valid_glb(*paths: str | Path) -> dict[str, dict]:
    """Fail on any validator error or warning (the messages are in the assertion)."""
    reports = validate_glb(*paths)
    bad = {p: [m for m in r["messages"] if m["severity"] <= 1] for p, r in reports.items()
           if r["errors"] or r["warnings"]}  # fmt: skip
    assert not bad, f"glTF validator errors/warnings: {json.dumps(bad, indent=1)[:4000]}"
    return reports
