"""The static HTML report (flows/report.py): pictures against analytic cases, the mesh files, the Prefect summary's
link, and the page itself opened from disk in headless Chromium (3D canvas not blank, no console error, every image
and video decoded, nothing fetched from the network)."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest
import trimesh

from flows.report import mesh_views, normal_image, report_dir_for, turntable_meshes, write_report, write_video_report
from tests.flows.body_run import build_body_run


@pytest.fixture(scope="module")
def body_run(tmp_path_factory):
    return build_body_run(tmp_path_factory.mktemp("report"), n_frames=3)


@pytest.fixture(scope="module")
def report(body_run):
    return write_report(body_run)


def test_report_dir_for():
    assert str(report_dir_for("/o/clip.zarr")) == "/o/clip.report"


def test_normal_image_colours():
    n = np.zeros((2, 2, 3), np.float32)
    n[0, 0] = (0, 0, 1)
    n[0, 1] = (1, 0, 0)
    n[1, 0] = np.nan
    img = normal_image(n)
    assert img[0, 0].tolist() == [127, 127, 255] and img[0, 1].tolist() == [255, 127, 127]
    assert img[1].tolist() == [[0, 0, 0], [0, 0, 0]]  # NaN and zero normals are background


def test_mesh_views_of_a_box():
    """A 0.2 x 1.0 x 0.6 m box: its front view is 0.2 m wide, its side view 0.6 m wide, both 1 m tall."""
    box = trimesh.creation.box(extents=(0.2, 1.0, 0.6))
    front, side = mesh_views(box.vertices, box.faces, size=100)
    assert front.shape == side.shape == (100, 100, 3)
    bg = front[0, 0].copy()

    def extent(img):
        ys, xs = np.nonzero(np.abs(img.astype(int) - bg).sum(-1) > 10)
        return xs.max() - xs.min() + 1, ys.max() - ys.min() + 1

    (fw, fh), (sw, sh) = extent(front), extent(side)
    assert fh == pytest.approx(90, abs=2) and sh == pytest.approx(90, abs=2)  # 1 m fills 90 % of the side
    assert fw == pytest.approx(18, abs=2) and sw == pytest.approx(54, abs=2)


def test_turntable_meshes_turn_once():
    v = np.array([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], np.float32)
    steps = turntable_meshes(v, np.array([[0, 1, 2]]), steps=4)
    assert len(steps) == 4
    np.testing.assert_allclose(steps[0][0], v, atol=1e-6)
    np.testing.assert_allclose(steps[1][0][0], [0.0, 0.0, -1.0], atol=1e-6)  # +90° about +Y takes +X to -Z
    np.testing.assert_allclose(steps[2][0][0], [-1.0, 0.0, 0.0], atol=1e-6)


def test_report_files_and_meshes(body_run, report):
    from flows.store import open_run
    from tests.gltf_validator import assert_valid_glb

    assert report == report_dir_for(body_run) / "index.html"
    page = report.read_text()
    assert "3 sampled" not in page and "4 sampled, 3 done, 0 skipped, 1 failed" in page
    assert page.count('<tr><td>') == 3  # one row per reconstructed frame
    # self-contained: nothing is loaded by URL except the relative mesh links (the viewer script is inline)
    html_only = re.sub(r"<script>.*?</script>", "", page, flags=re.S)
    assert not re.search(r'(src|href)="(https?:)?//', html_only)
    assert set(re.findall(r'href="([^"]+)"', html_only)) == {
        f"meshes/{n}.{e}" for n in ("frame_000000", "frame_000001", "frame_000002", "avatar") for e in ("ply", "glb")}
    meshes = report.parent / "meshes"
    store = open_run(body_run)
    ply = trimesh.load(meshes / "frame_000001.ply", process=False)
    np.testing.assert_allclose(ply.vertices, store.read_mesh(1).vertices, atol=1e-6)
    assert_valid_glb(*sorted(meshes.glob("*.glb")))
    assert (report.parent / "turntable.mp4").stat().st_size > 1000


@pytest.mark.slow
def test_report_opens_in_headless_chromium(report):
    from tests.chromium import region_std, visit

    loaded = 'document.querySelector("model-viewer") && document.querySelector("model-viewer").loaded'
    seen = visit(report.resolve().as_uri(), wait_s=4, size=(1300, 1000), selectors=("model-viewer",), ready=loaded,
                 expressions=(loaded, "[...document.images].every(i => i.complete && i.naturalWidth > 0)",
                              "[...document.querySelectorAll('video')].map(v => v.videoWidth)",
                              "document.querySelector('model-viewer').availableAnimations"))  # fmt: skip
    assert seen.errors == []
    values = list(seen.values.values())
    assert values[0] is True and values[1] is True  # the glb loaded; every picture decoded
    assert values[2] == [384, 128]  # turntable and re-posed MP4s decode
    assert values[3] == ["wave"]
    box = seen.boxes["model-viewer"]
    assert box is not None and box[2] > 500 and box[3] > 300
    assert region_std(seen.screenshot, box) > 10  # not a blank canvas
    x, y, w, h = (int(v) for v in box)
    region = seen.screenshot[y + 4 : y + h - 4, x + 4 : x + w - 4].astype(int)
    body = (region.mean(-1) > 120).mean()  # the light-grey body against the dark background
    assert 0.02 < body < 0.5


@pytest.mark.slow
def test_chromium_helper_reports_page_errors(tmp_path):
    from tests.chromium import visit

    page = tmp_path / "bad.html"
    page.write_text("<html><body><script>console.error('bad thing'); throw new Error('boom');</script></body></html>")
    seen = visit(page.as_uri(), wait_s=1)
    assert any("bad thing" in e for e in seen.errors) and any("boom" in e for e in seen.errors)


def test_video_report_never_raises(tmp_path, caplog):
    from flows.pipeline import VideoResult

    result = VideoResult("/v/a.mp4", str(tmp_path / "missing.zarr"), str(tmp_path / "p"), None, 1, 0, 0, 1, 1.0)
    with caplog.at_level(logging.WARNING, logger="flows.report"):
        assert write_video_report(result) is None
    assert "could not write the HTML report" in caplog.text


def test_report_refuses_a_planted_symlink(body_run, tmp_path):
    from flows.paths import PathEscapeError

    outside = tmp_path / "outside"
    outside.mkdir()
    link = body_run.parent / "link.zarr"
    link.symlink_to(body_run)  # a store reachable under another stem, whose report folder is a planted symlink
    (body_run.parent / "link.report").symlink_to(outside)
    with pytest.raises(PathEscapeError, match="report output"):
        write_report(link)
    assert list(outside.iterdir()) == []


def test_summary_markdown_links_the_report(body_run, report):
    from flows.artifacts import video_summary_markdown
    from flows.pipeline import VideoResult

    result = VideoResult("/v/clip.mp4", str(body_run), "/o/p", None, 4, 3, 0, 1, 2.0)
    md = video_summary_markdown(result, {})
    assert f"]({report.resolve().as_uri()})" in md
    other = VideoResult("/v/b.mp4", str(body_run.parent / "b.zarr"), "/o/p", None, 1, 1, 0, 0, 1.0)
    assert "| report | (not written) |" in video_summary_markdown(other, {})
