"""Package data (flows/bundled.py): every default file is found through importlib.resources, in the source tree and in
a plain (non-editable) wheel installed into a fresh venv."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from flows.bundled import PRESETS, WEIGHTS, default_files, preset_path, weights_path

ROOT = Path(__file__).resolve().parents[2]

# Loads every default file with the project's own readers; prints where each came from (run inside the wheel's venv).
_LOAD_ALL = r"""
import json, sys
import flows, flows.bundled as b
from body import BodyModel, load_motion
from flows.config import load_config
from flows.video import probe_video
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net

out = {"flows": flows.__file__, "files": {k: str(v) for k, v in b.default_files().items()}}
out["presets"] = {p: load_config(p).person.crop_size for p in b.PRESETS}
out["normal_net"] = sum(p.numel() for p in load_normal_net(b.weights_path("normal_net")).parameters())
out["implicit_net"] = sum(p.numel() for p in load_implicit_net(b.weights_path("implicit_net")).parameters())
info = probe_video(b.demo_clip_path())
out["demo"] = [info.width, info.height, info.n_frames_estimate]
out["motion_frames"] = len(load_motion(b.default_motion_path()).body_pose)
out["body_vertices"] = int(BodyModel().num_vertices)
print(json.dumps(out))
"""


def test_default_files_exist_in_the_source_tree():
    files = default_files()
    assert len(files) == len(PRESETS) + len(WEIGHTS) + 4
    for name, path in files.items():
        assert path.is_file() and path.stat().st_size > 0, name
        assert ROOT in path.parents, (name, path)  # the checkout's own files, not a stale install


def test_unknown_names_are_refused():
    with pytest.raises(ValueError, match="unknown preset 'fastest'"):
        preset_path("fastest")
    with pytest.raises(ValueError, match="unknown network"):
        weights_path("depth_net")


def _copy_sources(dst: Path) -> None:
    """The checkout without build outputs or caches (a stale build/ could leak old files into the wheel)."""
    skip = shutil.ignore_patterns(".git", ".venv", ".cache", "out", "build", "*.egg-info", "__pycache__", "scratch",
                                  ".pytest_cache", ".ruff_cache")  # fmt: skip
    shutil.copytree(ROOT, dst, ignore=skip)


def test_wheel_install_finds_every_default_file(tmp_path):
    """Build a wheel, install it (no deps) into a venv that sees the shared venv's packages but not the checkout, and
    run the CLI and every default file's loader from outside the repository."""
    src, wheels, venv, work = tmp_path / "src", tmp_path / "wheels", tmp_path / "venv", tmp_path / "work"
    _copy_sources(src)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    cwd = tmp_path

    def run(cmd: list, **_) -> subprocess.CompletedProcess:
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env, cwd=cwd)
        assert proc.returncode == 0, f"{cmd[:3]} failed:\n{proc.stderr[-3000:]}"
        return proc

    run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", wheels, src])
    (wheel,) = wheels.glob("avatarize-*.whl")
    run([sys.executable, "-m", "venv", "--without-pip", venv])
    python = venv / "bin" / "python"
    site = Path(run([python, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"]).stdout.strip())
    # The shared venv's packages as a plain path entry: its own .pth files (the editable finder) are not processed.
    (site / "shared_venv.pth").write_text(sysconfig.get_path("purelib") + "\n")
    run([sys.executable, "-m", "pip", "--python", python, "install", "--no-deps", "-q", wheel])
    work.mkdir()
    cwd = work
    help_text = run([venv / "bin" / "avatarize", "--help"]).stdout
    assert "demo" in help_text and "run" in help_text
    loaded = json.loads(run([python, "-c", _LOAD_ALL]).stdout.strip().splitlines()[-1])
    assert Path(loaded["flows"]).parent.parent == site  # the installed copy, not the checkout
    for name, path in loaded["files"].items():
        assert Path(path).is_relative_to(site) and Path(path).is_file(), name
    assert loaded["presets"] == {"fast": 256, "default": 512, "quality": 512}
    assert loaded["normal_net"] > 1000 and loaded["implicit_net"] > 1000
    assert loaded["demo"][:2] == [512, 640] and loaded["demo"][2] > 10
    assert loaded["motion_frames"] == 91  # 3 s at 30 fps, both ends
    assert loaded["body_vertices"] == 13718
