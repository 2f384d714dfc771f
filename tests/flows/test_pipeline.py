"""Tests for the pipeline flows (flows/pipeline.py) and their helpers: runners, previews, artifacts, resume, the
directory scan with a bad file, the Dask and process runners, and the plain-file `avatarize frames` command."""

from __future__ import annotations

import shutil
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import yaml

from flows import frame_batch, pipeline, resume, stages
from flows.artifacts import frame_table, video_summary_markdown
from flows.ledger import Ledger
from flows.previews import contact_sheet, preview_tile, read_png, write_png
from flows.runners import RunnerConfig, build_task_runner, lease_device, parse_devices
from flows.store import FrameStatus, open_run
from tests.flows.conftest import CLIP_FRAMES, write_clip


# ------------------------------------------------------------------------------------------------------- runners
class TestRunners:
    def test_parse_devices(self):
        assert parse_devices("cpu, cpu") == ["cpu", "cpu"]
        assert parse_devices("cuda:0,cuda:1") == ["cuda:0", "cuda:1"]
        assert parse_devices(None) == [] and parse_devices("") == []
        with pytest.raises(ValueError, match="gpu0"):
            parse_devices("gpu0")

    def test_config(self):
        assert RunnerConfig().kind == "thread"
        r = RunnerConfig(kind="process", devices="cuda:0,cuda:1")
        assert r.devices == ["cuda:0", "cuda:1"] and r.n_workers == 2
        assert RunnerConfig(kind="dask", workers=3).n_workers == 3
        with pytest.raises(ValueError, match="address"):
            RunnerConfig(kind="thread", address="tcp://x:8786")
        with pytest.raises(ValueError):
            RunnerConfig(kind="gpu")

    def test_build(self):
        from prefect.task_runners import ProcessPoolTaskRunner, ThreadPoolTaskRunner
        from prefect_dask import DaskTaskRunner

        assert isinstance(build_task_runner(RunnerConfig()), ThreadPoolTaskRunner)
        assert isinstance(build_task_runner(RunnerConfig(kind="process", devices="cpu,cpu")), ProcessPoolTaskRunner)
        assert isinstance(build_task_runner(RunnerConfig(kind="dask")), DaskTaskRunner)
        assert isinstance(build_task_runner(RunnerConfig(kind="dask", address="tcp://127.0.0.1:1")), DaskTaskRunner)

    def test_lease_is_exclusive_per_slot(self):
        devices = [f"cuda:{90 + i}" for i in range(2)]  # names no other test uses
        held: list[str] = []
        peak = []
        lock = threading.Lock()

        def work() -> None:
            with lease_device(devices) as d:
                with lock:
                    assert d not in held, "two holders of one device"
                    held.append(d)
                    peak.append(len(held))
                time.sleep(0.05)
                with lock:
                    held.remove(d)

        threads = [threading.Thread(target=work) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert max(peak) <= 2 and len(peak) == 6

    def test_lease_timeout(self):
        with lease_device(["cuda:97"]), pytest.raises(TimeoutError), lease_device(["cuda:97"], timeout_s=0.1):
            pass


# ------------------------------------------------------------------------------------------------------ previews
class TestPreviews:
    def test_tile_and_sheet(self, tmp_path):
        img = np.full((64, 64, 3), 100, np.uint8)
        mask = np.zeros((64, 64), bool)
        mask[16:48, 20:44] = True
        normals = np.zeros((64, 64, 3), np.float32)
        normals[..., 2] = 1.0
        kp = np.array([[10.5, 10.5, 0.9], [30.5, 30.5, 0.1], [np.nan, np.nan, 0.0]], np.float32)
        tile = preview_tile(img, kp, normals, mask, size=32, label="3")
        assert tile.shape == (32, 32, 3) and tile.dtype == np.uint8
        full = preview_tile(img, kp, normals, mask)
        assert not np.array_equal(full[32, 32], img[32, 32])  # the body is blended in
        sheet = contact_sheet([tile] * 5, gap=2)
        assert sheet.shape == (2 * 32 + 2, 3 * 32 + 4, 3)
        p = write_png(tmp_path / "a" / "sheet.png", sheet)
        np.testing.assert_array_equal(read_png(p), sheet)
        with pytest.raises(ValueError, match="no tiles"):
            contact_sheet([])


# ---------------------------------------------------------------------------------------------------- artifacts
def test_frame_table_and_summary():
    records = [
        pipeline.FrameRecord(0, 0, 0.0, "done", "", 1.23456, 4.5, {"detect": 0.1, "fit": 0.2}),
        pipeline.FrameRecord(1, 2, 0.2, "failed", "preview: boom", None, float("nan"), {"detect": 0.1}),
    ]
    rows = frame_table(records)
    assert rows[0]["fit_loss"] == 1.235 and rows[0]["s_fit"] == 0.2
    assert rows[1]["keypoint_error_px"] is None and rows[1]["s_fit"] is None
    result = pipeline.VideoResult("/v/a.mp4", "/o/a.zarr", "/o/a.preview", None, 2, 1, 0, 1, 3.0, {"fit": 0.2})
    md = video_summary_markdown(result, {1: "preview: boom"})
    assert "completed with failures: 1" in md and "/o/a.zarr" in md and "frame 1: preview: boom" in md


def test_resolve_config(tiny_config):
    assert pipeline.resolve_config(tiny_config) is tiny_config
    assert pipeline.resolve_config("fast").person.crop_size == 256
    assert pipeline.resolve_config(tiny_config.model_dump(mode="json")).digest() == tiny_config.digest()


# ------------------------------------------------------------------------------------------------- process_video
@pytest.fixture(scope="module")
def processed(prefect_server, clip, tiny_config, tmp_path_factory):
    out = tmp_path_factory.mktemp("processed")
    result = pipeline.process_video(clip, out, tiny_config, batch_size=2)
    return result, out


def test_process_video_makes_a_complete_store(processed, clip, tiny_config):
    import xarray as xr

    result, out = processed
    assert result.n_frames == CLIP_FRAMES and result.n_done == CLIP_FRAMES
    assert result.n_failed == 0 and result.status == "completed"
    assert Path(result.store) == out / "astronaut.zarr"
    store = open_run(result.store)
    assert store.attrs.source_sha256 == pipeline.probe_source.fn(clip).sha256
    assert store.attrs.frame_indices == list(range(CLIP_FRAMES))
    assert store.attrs.config == tiny_config.model_dump(mode="json")
    assert store.attrs.body_model_id
    assert (store.status() == FrameStatus.DONE).all()
    fit = store.read_fit("init")
    assert np.isfinite(fit.betas.numpy()).all() and np.isfinite(fit.camera.numpy()).all()
    np.testing.assert_allclose(fit.betas.numpy(), fit.betas.numpy()[:1].repeat(CLIP_FRAMES, 0))  # one shared β
    frames = store.read_frames()
    assert frames.mask.any(axis=(1, 2)).all() and (frames.keypoints[..., 2] > 0.5).sum(axis=1).min() >= 6
    ds = xr.open_zarr(result.store, group="frames", consolidated=True)
    assert ds["image"].shape == (CLIP_FRAMES, 128, 128, 3)
    assert xr.open_zarr(result.store, group="fits/init")["betas"].dims == ("frame", "beta")
    sheet = read_png(result.contact_sheet)
    assert sheet.shape[0] >= pipeline.PREVIEW_TILE_PX
    rows = yaml.safe_load(Path(result.preview_dir, "frames.json").read_text())
    assert [r["status"] for r in rows] == ["done"] * CLIP_FRAMES
    assert all(r["fit_loss"] is not None and {"detect", "crop", "fit", "preview"} <= set(r["seconds"]) for r in rows)


def test_artifacts_were_published(processed):
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    keys = ["astronaut-progress", "astronaut-frames", "astronaut-summary"]
    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=keys)))
    by_key = {a.key: a for a in arts}
    assert set(keys) <= set(by_key)
    assert {a.type for a in arts} >= {"progress", "table", "markdown"}
    assert any(a.type == "progress" and float(a.data) == 100.0 for a in arts)
    # the summary links the run's HTML report, which the flow wrote beside the store
    report = Path(processed[1]) / "astronaut.report" / "index.html"
    assert report.is_file() and f"{CLIP_FRAMES} sampled, {CLIP_FRAMES} done" in report.read_text()
    assert f"]({report.resolve().as_uri()})" in by_key["astronaut-summary"].data


def test_rerun_is_a_no_op_and_mismatch_is_an_error(processed, clip, tiny_config, monkeypatch):
    result, out = processed
    calls = []
    monkeypatch.setattr(stages, "detect_frames", lambda *a, **k: calls.append("detect"))
    again = pipeline.process_video(clip, out, tiny_config)
    assert calls == [] and again.n_done == CLIP_FRAMES

    source = pipeline.probe_source.fn(clip)
    store_path = Path(result.store)
    other_source = pipeline.SourceInfo(**{**source.__dict__, "sha256": "0" * 64})
    with pytest.raises(pipeline.RunStoreMismatchError, match="another source file"):
        resume.open_for_resume(store_path, other_source, tiny_config, overwrite=False, replace_mismatched=False)
    assert resume.open_for_resume(store_path, other_source, tiny_config, False, replace_mismatched=True) == set()
    other_cfg = tiny_config.model_copy(update={"device": "cpu"})
    with pytest.raises(pipeline.RunStoreMismatchError, match="another configuration"):
        resume.open_for_resume(store_path, source, other_cfg, overwrite=False, replace_mismatched=False)
    assert resume.open_for_resume(store_path, source, tiny_config, False, False) == {"frames", "fit_init"}
    (out / "junk.zarr").mkdir()
    with pytest.raises(pipeline.RunStoreMismatchError, match="not an avatarize run store"):
        resume.open_for_resume(out / "junk.zarr", source, tiny_config, overwrite=False, replace_mismatched=True)


def test_frame_batch_marks_failures_and_keeps_going(processed, tiny_config, tmp_path, monkeypatch):
    result, _ = processed
    store_path = tmp_path / "copy.zarr"
    shutil.copytree(result.store, store_path)
    store = open_run(store_path, "r+")
    store.set_status([1, 2, 3], FrameStatus.PENDING)

    def step(ctx, t):
        if t == 2:
            raise RuntimeError("bad frame")

    monkeypatch.setattr(frame_batch, "frame_steps", lambda config=None: [("check", step)])
    with pytest.raises(pipeline.FrameBatchError) as info:
        pipeline.process_frame_batch.fn(str(store_path), [0, 1, 2, 3], tiny_config, str(tmp_path))
    res = info.value.result
    assert res.done == [1, 3] and list(res.failed) == [2]  # frame 0 was DONE already: not redone
    assert "check: RuntimeError: bad frame" in res.failed[2]
    assert store.status().tolist() == [1, 1, 2, 1, 1]
    assert "bad frame" in store.reasons()[2]
    import pickle

    again = pickle.loads(pickle.dumps(info.value))  # crosses process and Dask boundaries intact
    assert again.result.failed == res.failed


def test_resume_after_a_failed_frame(prefect_server, clip, tiny_config, tmp_path, monkeypatch):
    original = pipeline.render_frame_preview
    rendered: list[int] = []

    def failing(ctx, t):
        rendered.append(t)
        if t == 3:
            raise RuntimeError("simulated crash on frame 3")
        original(ctx, t)

    monkeypatch.setattr(frame_batch, "render_frame_preview", failing)
    first = pipeline.process_video(clip, tmp_path, tiny_config, batch_size=2)
    assert first.n_failed == 1 and first.message == "completed with failures: 1"
    store = open_run(first.store)
    assert store.status()[3] == FrameStatus.FAILED and "simulated crash" in store.reasons()[3]
    assert first.n_done == CLIP_FRAMES - 1

    import icon.fit

    fits, detects = [], []
    monkeypatch.setattr(icon.fit, "fit_body", lambda *a, **k: fits.append(1))
    monkeypatch.setattr(stages, "detect_frames", lambda *a, **k: detects.append(1))
    rendered.clear()

    def counting(ctx, t):
        rendered.append(t)
        original(ctx, t)

    monkeypatch.setattr(frame_batch, "render_frame_preview", counting)
    second = pipeline.process_video(clip, tmp_path, tiny_config, batch_size=2)
    assert rendered == [3], "only the failed frame is recomputed"
    assert fits == [] and detects == []
    assert second.n_done == CLIP_FRAMES and second.n_failed == 0
    assert (open_run(second.store).status() == FrameStatus.DONE).all()


# --------------------------------------------------------------------------------------------- process_directory
@pytest.mark.slow
def test_process_directory_bad_file_ledger_and_changes(prefect_server, tiny_config, tmp_path):
    videos = tmp_path / "videos"
    write_clip(videos / "one.mp4")
    write_clip(videos / "sub" / "two.mp4", shift=6)
    (videos / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(4000))
    (videos / "sub" / "loop").symlink_to(videos)
    out = tmp_path / "out"

    first = pipeline.process_directory(videos, out, tiny_config, settle_seconds=0.2)
    assert sorted(Path(r.video).name for r in first.processed) == ["one.mp4", "two.mp4"]
    assert all(r.n_done == CLIP_FRAMES for r in first.processed)
    assert (
        list(first.failed) == [str(videos / "broken.mp4")]
        and "NotAVideoError" in first.failed[str(videos / "broken.mp4")]
    )
    assert (out / "one.zarr").is_dir() and (out / "sub" / "two.zarr").is_dir()
    entries = Ledger.in_dir(out).entries()
    assert {Path(p).name: e.status for p, e in entries.items()} == {
        "one.mp4": "completed",
        "two.mp4": "completed",
        "broken.mp4": "failed",
    }

    second = pipeline.process_directory(videos, out, tiny_config, settle_seconds=0.2)
    assert second.processed == [] and second.failed == {} and len(second.unchanged) == 3

    time.sleep(0.05)
    write_clip(videos / "one.mp4", n=CLIP_FRAMES - 1, shift=8)  # replaced by a new recording
    third = pipeline.process_directory(videos, out, tiny_config, settle_seconds=0.2)
    assert [Path(r.video).name for r in third.processed] == ["one.mp4"]
    assert third.processed[0].n_frames == CLIP_FRAMES - 1  # rebuilt from the new file, not resumed
    assert open_run(out / "one.zarr").attrs.source_sha256 == pipeline.probe_source.fn(videos / "one.mp4").sha256


# ---------------------------------------------------------------------------------------------- other runners
@pytest.mark.slow
@pytest.mark.parametrize(
    "runner",
    [RunnerConfig(kind="dask", workers=2), RunnerConfig(kind="process", devices=["cpu", "cpu"])],
    ids=["dask-2-workers", "process-2-devices"],
)
def test_other_runners(prefect_server, clip, tiny_config, tmp_path, runner):
    result = pipeline.process_video(clip, tmp_path, tiny_config, runner=runner, batch_size=2)
    assert result.n_done == CLIP_FRAMES and result.n_failed == 0
    assert len(list(Path(result.preview_dir, "tiles").glob("*.png"))) == CLIP_FRAMES


# ------------------------------------------------------------------------------------------------------- CLI
@pytest.mark.slow
def test_cli_frames_writes_plain_files(clip, tiny_config, tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    cfg_file = tmp_path / "tiny.yaml"
    cfg_file.write_text(yaml.safe_dump(tiny_config.model_dump(mode="json")))
    res = CliRunner().invoke(
        app, ["frames", str(clip), "--out", str(tmp_path / "o"), "-c", str(cfg_file), "--max-frames", "3"]
    )
    assert res.exit_code == 0, res.output
    folder = tmp_path / "o" / "astronaut"
    assert len(list((folder / "crops").glob("*.png"))) == 3 and len(list((folder / "masks").glob("*.png"))) == 3
    kp = np.load(folder / "keypoints.npz")
    assert kp["keypoints"].shape == (3, 33, 3) and kp["valid"].all()
    fit = np.load(folder / "fit.npz")
    assert fit["betas"].shape == (3, 10) and int(fit["image_size"]) == 128
    assert (folder / "contact_sheet.png").is_file()


def test_cli_help_and_bad_options():
    from typer.testing import CliRunner

    from flows.cli import app

    runner = CliRunner()
    for cmd in ("run", "serve", "frames"):
        res = runner.invoke(app, [cmd, "--help"])
        assert res.exit_code == 0 and "--out" in res.output
    res = runner.invoke(app, ["run", "x.mp4", "--out", "o", "--devices", "gpu7"])
    assert res.exit_code == 2
    res = runner.invoke(app, ["frames", "x.mp4", "--out", "o", "--config", "nope"])
    assert res.exit_code == 2
