"""The viewer (flows/viewer.py, ``avatarize view``): store lookup, the crop's picture plane, what one frame shows, and
the served page in headless Chromium while another process holds the store's run lock (read-only: no file changes)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest

from flows.viewer import find_store, frame_view, image_plane
from tests.flows.body_run import CROP, build_body_run

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def body_run(tmp_path_factory):
    return build_body_run(tmp_path_factory.mktemp("viewer"), n_frames=3)


def test_find_store(body_run, tmp_path):
    assert find_store(body_run) == body_run
    assert find_store(body_run.parent) == body_run
    with pytest.raises(ValueError, match="no run store"):
        find_store(tmp_path)
    with pytest.raises(ValueError, match="no such run store"):
        find_store(tmp_path / "missing")
    for stem in ("a", "b"):
        (tmp_path / f"{stem}.zarr").mkdir()
        (tmp_path / f"{stem}.zarr" / "zarr.json").write_text("{}")
    with pytest.raises(ValueError, match="2 run stores"):
        find_store(tmp_path)
    assert find_store(tmp_path, "b") == tmp_path / "b.zarr"


def test_image_plane_maps_the_crop():
    """Pixel (u, v) = (cx + s x, cy - s y): the crop's centre pixel is at ((S/2 - cx)/s, (cy - S/2)/s), S/s wide."""
    centre, side = image_plane((50.0, 40.0, 70.0), 100)
    np.testing.assert_allclose(centre, [(50 - 40) / 50, (70 - 50) / 50])
    assert side == pytest.approx(2.0)


def test_frame_view(body_run):
    from body import BodyModel
    from flows.store import open_run

    store = open_run(body_run)
    view = frame_view(store, 1, BodyModel())
    assert view.status == "done" and view.reason == ""
    assert view.tile.shape == view.mask.shape == (CROP, CROP, 3)
    # the fixture's reconstruction is the fitted body itself: the viewer's body must land exactly on it
    np.testing.assert_allclose(view.body[0], view.mesh[0], atol=1e-5)
    assert view.camera == pytest.approx((CROP / 2.3, CROP / 2, CROP / 2))
    np.testing.assert_allclose(view.losses, np.linspace(1.0, 0.4, 4), rtol=1e-6)
    assert (view.mask[store.read_frames([1]).mask[0]] == 255).all()
    failed = frame_view(store, 3, BodyModel())
    assert failed.status == "failed" and failed.reason == "no person" and failed.mesh is None and failed.body is None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _faded_in(screenshot: np.ndarray) -> bool:
    """The scene fades in from white; done when the background below the meshes shows the viewer's dark grey."""
    return float(screenshot[820:880, 400:900].mean()) < 100


def _tree(path: Path) -> dict[str, tuple[int, int]]:
    return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in path.rglob("*") if p.is_file()}


@pytest.mark.slow
def test_viewer_serves_a_locked_store_read_only(body_run):
    from flows.store import lock_run
    from tests.chromium import chromium_binary, region_std, visit

    chromium_binary()  # skip before starting a server when there is no browser
    port = _free_port()
    before = _tree(body_run)
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    with lock_run(body_run, timeout_s=0):  # a run is "writing" the store: the viewer must not wait for the lock
        command = [sys.executable, "-m", "flows.cli", "view", str(body_run.parent), "--port", str(port)]
        proc = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        try:
            for _ in range(240):
                try:
                    if urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2).status == 200:
                        break
                except OSError:
                    time.sleep(0.5)
                assert proc.poll() is None, proc.stdout.read()
            else:
                pytest.fail("the viewer did not answer on its port")
            seen = visit(f"http://127.0.0.1:{port}/", wait_s=15, size=(1400, 900), selectors=("canvas",),
                         expressions=("document.body.innerText",), settled=_faded_in)  # fmt: skip
        finally:
            proc.terminate()
            out = proc.communicate(timeout=30)[0]
    assert seen.errors == []
    assert _faded_in(seen.screenshot)
    text = seen.values["document.body.innerText"]
    assert "frame 0" in text and "done" in text and "(read-only)" in text and "play 'wave'" in text
    box = seen.boxes["canvas"]
    assert box is not None and box[2] >= 1000
    scene = seen.screenshot[200:800, 350:980]  # the middle of the 3D view: clear of the GUI panel and notifications
    assert region_std(scene, (0, 0, scene.shape[1], scene.shape[0])) > 10  # the 3D view is not blank
    assert (scene.mean(-1) > 170).mean() > 0.01  # light meshes on the dark background
    assert f"http://127.0.0.1:{port}" in out
    assert _tree(body_run) == before  # nothing in the store was written
