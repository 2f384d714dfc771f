"""Tests for flows.store: layout, per-frame chunking, typed round trips, status/resume, concurrency, schema checks."""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from pathlib import Path

import numpy as np
import pytest
import torch
import xarray as xr
import zarr

from flows.store import (
    FIT_FIELDS,
    SCHEMA_VERSION,
    FrameNotWrittenError,
    FrameStatus,
    NotARunStoreError,
    ReadOnlyStoreError,
    RunAttrs,
    RunStore,
    RunStoreExistsError,
    SchemaVersionError,
    create_run,
    open_run,
    sha256_file,
)

T, S, ITERS = 4, 16, 5


def make_attrs(n: int = T) -> RunAttrs:
    return RunAttrs(
        source_path="/videos/clip.mp4",
        source_sha256="ab" * 32,
        fps=30.0,
        frame_indices=[3 * i for i in range(n)],
        body_model_id="avatarize-body-v1",
        config={"crop": {"size": S}, "fast": True},
        code_version="0.1.0",
    )


@pytest.fixture
def run(tmp_path: Path) -> RunStore:
    return create_run(tmp_path / "clip.zarr", n_frames=T, image_size=S, attrs=make_attrs(), refine_iters=ITERS)


def frame_data(indices: list[int], seed: int = 0) -> dict[str, np.ndarray]:
    """Distinct, non-fill data per frame (so zarr writes a chunk for each)."""
    rng = np.random.default_rng(seed)
    n = len(indices)
    return {
        "images": rng.integers(1, 255, size=(n, S, S, 3), dtype=np.uint8),
        "masks": rng.random((n, S, S)) > 0.5,
        "crops": rng.random((n, 3)).astype(np.float32) * 100,
        "keypoints": rng.random((n, 33, 3)).astype(np.float32),
        "timestamps": np.array(indices, dtype=np.float64) / 10.0,
    }


def fit_data(n: int, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {name: torch.randn(n, width, generator=g) for name, (width, _) in FIT_FIELDS.items()}


def write_frame_worker(path: str, t: int) -> None:
    """One frame task in another process: data first, status last."""
    store = open_run(path, mode="r+")
    store.write_frames([t], **frame_data([t], seed=t))
    store.write_fit("init", [t], **fit_data(1, seed=t))
    store.write_mesh(t, np.full((3, 3), t, np.float32), np.array([[0, 1, 2]]))
    if t % 2:
        store.set_status([t], FrameStatus.FAILED, reason=f"frame {t} failed: no person")
    else:
        store.set_status([t], FrameStatus.DONE)


def chunk_files(array_dir: Path) -> list[str]:
    """Chunk keys present on disk, e.g. ``c/0/0``; ``.partial`` temp files would show up here too."""
    return sorted(p.relative_to(array_dir).as_posix() for p in (array_dir / "c").rglob("*") if p.is_file())


# ---------------------------------------------------------------------------------------------------- create / open
class TestLayout:
    def test_arrays_shapes_dtypes_fill(self, run: RunStore) -> None:
        g = zarr.open_group(run.path, mode="r", use_consolidated=False)
        expected = {
            "frames/image": ((T, S, S, 3), np.uint8, ("frame", "y", "x", "channel")),
            "frames/mask": ((T, S, S), np.bool_, ("frame", "y", "x")),
            "frames/crop": ((T, 3), np.float32, ("frame", "crop_param")),
            "frames/keypoints": ((T, 33, 3), np.float32, ("frame", "keypoint", "keypoint_component")),
            "frames/timestamp": ((T,), np.float64, ("frame",)),
            "fits/loss": ((T, ITERS), np.float32, ("frame", "iteration")),
            "normals/front": ((T, S, S, 3), np.float16, ("frame", "y", "x", "channel")),
            "normals/back": ((T, S, S, 3), np.float16, ("frame", "y", "x", "channel")),
            "status": ((T,), np.int8, ("frame",)),
        }
        for stage in ("init", "refined"):
            for name, (width, dim) in FIT_FIELDS.items():
                expected[f"fits/{stage}/{name}"] = ((T, width), np.float32, ("frame", dim))
        for key, (shape, dtype, dims) in expected.items():
            arr = g[key]
            assert arr.shape == shape, key
            assert arr.dtype == dtype, key
            assert arr.chunks == (1, *shape[1:]), key  # one frame per chunk
            assert arr.metadata.dimension_names == dims, key
            assert arr.metadata.zarr_format == 3
        assert g["frames/image"][...].max() == 0 and not g["frames/mask"][...].any()
        assert np.isnan(g["fits/init/betas"][...]).all() and np.isnan(g["normals/front"][...]).all()
        assert (g["status"][...] == FrameStatus.PENDING).all()
        assert {"meshes", "avatar"} <= set(g.group_keys())

    def test_attrs_round_trip(self, run: RunStore) -> None:
        store = open_run(run.path)
        assert store.attrs == make_attrs()
        assert store.attrs.schema_version == SCHEMA_VERSION
        assert store.attrs.config == {"crop": {"size": S}, "fast": True}
        assert (store.n_frames, store.image_size, store.refine_iters, store.mode) == (T, S, ITERS, "r")

    def test_create_refuses_existing_path_unless_overwrite(self, run: RunStore) -> None:
        with pytest.raises(RunStoreExistsError, match="overwrite=True"):
            create_run(run.path, n_frames=T, image_size=S, attrs=make_attrs())
        run.set_status([0], FrameStatus.DONE)
        fresh = create_run(run.path, n_frames=2, image_size=8, attrs=make_attrs(2), overwrite=True)
        assert fresh.status().tolist() == [0, 0] and fresh.image_size == 8

    def test_create_checks_arguments(self, tmp_path: Path) -> None:
        with pytest.raises(ValueError, match="frame_indices has 4 entries"):
            create_run(tmp_path / "a.zarr", n_frames=3, image_size=S, attrs=make_attrs())
        with pytest.raises(ValueError, match="source_sha256"):
            RunAttrs(**{**make_attrs().model_dump(), "source_sha256": "xyz"})
        with pytest.raises(ValueError, match="JSON"):
            RunAttrs(**{**make_attrs().model_dump(), "config": {"bad": object()}})


class TestOpenErrors:
    def test_missing_path(self, tmp_path: Path) -> None:
        with pytest.raises(NotARunStoreError, match="no such run store"):
            open_run(tmp_path / "nope.zarr")

    def test_plain_directory_and_file(self, tmp_path: Path) -> None:
        (tmp_path / "dir.zarr").mkdir()
        with pytest.raises(NotARunStoreError, match="no zarr.json"):
            open_run(tmp_path / "dir.zarr")
        (tmp_path / "file.zarr").write_text("hi")
        with pytest.raises(NotARunStoreError, match="found a file"):
            open_run(tmp_path / "file.zarr")

    def test_foreign_zarr_group_and_array_and_v2(self, tmp_path: Path) -> None:
        zarr.open_group(tmp_path / "g.zarr", mode="w", zarr_format=3, attributes={"x": 1})
        with pytest.raises(NotARunStoreError, match="not an avatarize run store"):
            open_run(tmp_path / "g.zarr")
        zarr.create_array(tmp_path / "a.zarr", shape=(2,), dtype="int8", zarr_format=3)
        with pytest.raises(NotARunStoreError, match="array"):
            open_run(tmp_path / "a.zarr")
        zarr.open_group(tmp_path / "v2.zarr", mode="w", zarr_format=2)
        with pytest.raises(NotARunStoreError, match="Zarr v2"):
            open_run(tmp_path / "v2.zarr")

    @pytest.mark.parametrize("version", [SCHEMA_VERSION + 1, 0, "1"])
    def test_schema_version(self, run: RunStore, version: object) -> None:
        zarr.open_group(run.path, mode="r+", use_consolidated=False).attrs["schema_version"] = version
        match = {SCHEMA_VERSION + 1: "upgrade avatarize", 0: "old store schema", "1": "integer"}[version]
        with pytest.raises(SchemaVersionError, match=match):
            open_run(run.path)

    def test_read_only_refuses_writes(self, run: RunStore) -> None:
        store = open_run(run.path, mode="r")
        with pytest.raises(ReadOnlyStoreError, match="mode='r\\+'"):
            store.set_status([0], FrameStatus.DONE)
        with pytest.raises(ValueError, match="mode must be"):
            open_run(run.path, mode="w")  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------------ round trips
class TestRoundTrip:
    def test_frames(self, run: RunStore) -> None:
        data = frame_data([3, 1])
        run.write_frames(np.array([3, 1]), **{**data, "images": torch.from_numpy(data["images"])})
        got = open_run(run.path).read_frames()
        assert got.indices.tolist() == [0, 1, 2, 3]
        np.testing.assert_array_equal(got.image[[3, 1]], data["images"])
        np.testing.assert_array_equal(got.mask[[3, 1]], data["masks"])
        np.testing.assert_array_equal(got.crop[[3, 1]], data["crops"])
        np.testing.assert_array_equal(got.keypoints[[3, 1]], data["keypoints"])
        np.testing.assert_array_equal(got.timestamp[[3, 1]], data["timestamps"])
        assert np.isnan(got.crop[[0, 2]]).all() and got.image[0].max() == 0
        sub = run.read_frames([1])
        assert sub.image.shape == (1, S, S, 3) and sub.image.dtype == np.uint8 and sub.mask.dtype == np.bool_

    def test_fits_torch_in_torch_out(self, run: RunStore) -> None:
        fit = fit_data(2)
        run.write_fit("refined", [0, 2], **fit)
        got = open_run(run.path).read_fit("refined")
        for name in FIT_FIELDS:
            value = getattr(got, name)
            assert isinstance(value, torch.Tensor) and value.dtype == torch.float32
            assert value.shape == (T, FIT_FIELDS[name][0])
            torch.testing.assert_close(value[[0, 2]], fit[name])
            assert torch.isnan(value[[1, 3]]).all()
        assert torch.isnan(run.read_fit("init").betas).all()
        # the body parameters come as one BodyParams; written back from it in one call
        assert len(got.body) == T and got.body.betas is got.betas
        run.write_fit("init", [1, 3], **got.body[[0, 2]].as_dict(), camera=got.camera[[0, 2]])
        again = run.read_fit("init", [1, 3])
        torch.testing.assert_close(again.body.body_pose, fit["body_pose"])
        with pytest.raises(ValueError, match="stage"):
            run.read_fit("final")  # type: ignore[arg-type]

    def test_keypoints3d_and_fit_info(self, run: RunStore) -> None:
        kp3 = np.random.default_rng(0).normal(size=(2, 33, 4)).astype(np.float32)
        run.write_keypoints3d([2, 0], kp3)
        run.write_fit_info([1, 3], np.array([0.9, 0.1]), np.array([512.0, np.nan]))
        again = open_run(run.path)
        got = again.read_keypoints3d()
        assert got.shape == (T, 33, 4) and got.dtype == np.float32
        np.testing.assert_array_equal(got[[2, 0]], kp3)
        assert np.isnan(got[[1, 3]]).all()
        conf, focal = again.read_fit_info()
        np.testing.assert_allclose(conf[[1, 3]], [0.9, 0.1])
        assert focal[1] == 512.0 and np.isnan(focal[[0, 2, 3]]).all() and np.isnan(conf[[0, 2]]).all()
        run.write_fit_info([0], np.array([0.5]))  # weak perspective: no focal length
        assert np.isnan(run.read_fit_info([0])[1]).all()
        with pytest.raises(ValueError, match="keypoints3d"):
            run.write_keypoints3d([0], kp3[:, :, :3])

    def test_loss_pads_early_stop(self, run: RunStore) -> None:
        run.write_loss([1], np.array([[3.0, 2.0, 1.0]]))
        loss = run.read_loss()
        assert loss.shape == (T, ITERS) and loss.dtype == np.float32
        np.testing.assert_array_equal(loss[1, :3], [3, 2, 1])
        assert np.isnan(loss[1, 3:]).all() and np.isnan(loss[0]).all()

    def test_normals(self, run: RunStore) -> None:
        front = np.random.default_rng(0).uniform(-1, 1, (1, S, S, 3))
        run.write_normals([2], torch.from_numpy(front), -front)
        got = run.read_normals([2])
        assert got.front.dtype == np.float16
        np.testing.assert_allclose(got.front, front, atol=1e-3)
        np.testing.assert_allclose(got.back, -front, atol=1e-3)

    def test_meshes(self, run: RunStore) -> None:
        assert run.mesh_frames() == []
        v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 1]], np.float64)
        f = torch.tensor([[0, 1, 2], [0, 1, 3]])
        run.write_mesh(2, v, f)
        mesh = open_run(run.path).read_mesh(2)
        np.testing.assert_array_equal(mesh.vertices, v)
        np.testing.assert_array_equal(mesh.faces, f.numpy())
        g = zarr.open_group(run.path, mode="r", use_consolidated=False)
        assert g["meshes/000002/vertices"].dtype == np.float32 and g["meshes/000002/faces"].dtype == np.int32
        run.write_mesh(2, v[:3], f[:1])  # replacing keeps the frame listed once with the new mesh
        assert run.mesh_frames() == [2] and len(run.read_mesh(2).faces) == 1
        with pytest.raises(FrameNotWrittenError, match="frame 1"):
            run.read_mesh(1)
        with pytest.raises(ValueError, match="vertex ids"):
            run.write_mesh(0, v, [[0, 1, 9]])

    def test_avatar(self, run: RunStore) -> None:
        with pytest.raises(FrameNotWrittenError):
            run.read_avatar_mesh()
        assert run.read_avatar_curves() == {}
        run.write_avatar_mesh(np.eye(3), [[0, 1, 2]])
        run.write_avatar_curves({"loss": np.linspace(1, 0, 7), "lr": torch.tensor([1e-3, 5e-4])})
        store = open_run(run.path)
        assert len(store.read_avatar_mesh().faces) == 1
        curves = store.read_avatar_curves()
        assert sorted(curves) == ["loss", "lr"] and curves["loss"].shape == (7,)
        np.testing.assert_allclose(curves["lr"], [1e-3, 5e-4])
        with pytest.raises(ValueError, match="curve name"):
            run.write_avatar_curves({"a/b": np.zeros(2)})


class TestValidation:
    def test_bad_shapes_write_nothing(self, run: RunStore) -> None:
        data = frame_data([0])
        with pytest.raises(ValueError, match=r"keypointss?: expected shape \(1, 33, 3\)"):
            run.write_frames([0], **{**data, "keypoints": np.zeros((1, 17, 3))})
        assert np.isnan(run.read_frames([0]).crop).all() and run.read_frames([0]).image.max() == 0
        with pytest.raises(ValueError, match="uint8"):
            run.write_frames([0], **{**data, "images": data["images"].astype(np.float32)})
        with pytest.raises(ValueError, match="betas"):
            run.write_fit("init", [0], **{**fit_data(1), "betas": torch.zeros(1, 16)})

    def test_bad_indices(self, run: RunStore) -> None:
        with pytest.raises(ValueError, match=r"\[0, 4\)"):
            run.set_status([4], FrameStatus.DONE)
        with pytest.raises(ValueError, match="duplicate"):
            run.set_status([1, 1], FrameStatus.DONE)
        with pytest.raises(ValueError, match="integers"):
            run.set_status([0.5], FrameStatus.DONE)
        with pytest.raises(ValueError, match="one integer"):
            run.write_mesh([0, 1], np.eye(3), [[0, 1, 2]])  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------------- status / resume
class TestStatus:
    def test_status_reasons_pending(self, run: RunStore) -> None:
        assert run.pending() == [0, 1, 2, 3]
        run.set_status([0], FrameStatus.DONE, reason="ignored for done")
        run.set_status([1, 2], FrameStatus.FAILED, reason=["fit diverged", "no person"])
        run.set_status(3, FrameStatus.SKIPPED, reason="blurry")
        store = open_run(run.path)
        assert store.status().tolist() == [1, 2, 2, 3] and store.status().dtype == np.int8
        assert store.reasons() == {1: "fit diverged", 2: "no person", 3: "blurry"}
        assert store.pending() == [1, 2]
        assert store.pending([0, 2]) == [2]
        run.set_status([1], FrameStatus.DONE)  # a retried frame loses its failure message
        assert run.reasons() == {2: "no person", 3: "blurry"}
        run.set_status([2], FrameStatus.PENDING)
        assert run.pending() == [2]
        with pytest.raises(ValueError, match="2 strings"):
            run.set_status([0, 1], FrameStatus.FAILED, reason=["only one"])
        with pytest.raises(ValueError):
            run.set_status([0], 7)

    def test_one_chunk_file_per_frame(self, run: RunStore) -> None:
        idx = list(range(T))
        run.write_frames(idx, **frame_data(idx))
        run.write_fit("init", idx, **fit_data(T))
        run.write_loss(idx, np.ones((T, ITERS)))
        run.write_normals(idx, np.ones((T, S, S, 3)), -np.ones((T, S, S, 3)))
        run.set_status(idx, FrameStatus.FAILED, reason="x")
        root = run.path
        # Chunk keys use the default "/" separator: c/<t>/0/... with one file per frame and nothing else.
        assert chunk_files(root / "frames/image") == [f"c/{t}/0/0/0" for t in idx]
        assert chunk_files(root / "frames/mask") == [f"c/{t}/0/0" for t in idx]
        assert chunk_files(root / "frames/keypoints") == [f"c/{t}/0/0" for t in idx]
        assert chunk_files(root / "frames/crop") == [f"c/{t}/0" for t in idx]
        assert chunk_files(root / "frames/timestamp") == [f"c/{t}" for t in idx]
        assert chunk_files(root / "fits/init/body_pose") == [f"c/{t}/0" for t in idx]
        assert chunk_files(root / "fits/loss") == [f"c/{t}/0" for t in idx]
        assert chunk_files(root / "normals/back") == [f"c/{t}/0/0/0" for t in idx]
        assert chunk_files(root / "status") == [f"c/{t}" for t in idx]
        assert chunk_files(root / "status_reason") == [f"c/{t}" for t in idx]
        meta = json.loads((root / "frames/image/zarr.json").read_text())
        assert all(c["name"] != "sharding_indexed" for c in meta["codecs"])

    def test_multiprocess_disjoint_frames(self, run: RunStore) -> None:
        ctx = multiprocessing.get_context("spawn")  # zarr runs an event-loop thread: never fork after using it
        with ctx.Pool(2) as pool:
            pool.starmap(write_frame_worker, [(str(run.path), t) for t in range(T)])
        store = open_run(run.path)
        frames = store.read_frames()
        fits = store.read_fit("init")
        for t in range(T):
            expected = frame_data([t], seed=t)
            np.testing.assert_array_equal(frames.image[t], expected["images"][0])
            np.testing.assert_array_equal(frames.keypoints[t], expected["keypoints"][0])
            torch.testing.assert_close(fits.body_pose[t], fit_data(1, seed=t)["body_pose"][0])
            np.testing.assert_array_equal(store.read_mesh(t).vertices, np.full((3, 3), t))
        assert store.status().tolist() == [1, 2, 1, 2]
        assert store.reasons() == {1: "frame 1 failed: no person", 3: "frame 3 failed: no person"}
        assert store.mesh_frames() == [0, 1, 2, 3] and store.pending() == [1, 3]


# -------------------------------------------------------------------------------------------------- xarray / finalize
class TestXarray:
    def _write_some(self, run: RunStore) -> None:
        run.write_frames([0, 1], **frame_data([0, 1]))
        run.write_fit("init", [0], **fit_data(1))
        run.write_mesh(0, np.eye(3), [[0, 1, 2]])
        run.set_status([0], FrameStatus.DONE)

    def _check(self, path: Path, **kw: object) -> None:
        frames = xr.open_zarr(path, group="frames", **kw)
        assert dict(frames.sizes) == {
            "frame": T,
            "y": S,
            "x": S,
            "channel": 3,
            "crop_param": 3,
            "keypoint": 33,
            "keypoint_component": 3,
            "keypoint3d_component": 4,
        }
        assert frames.image.dtype == np.uint8 and frames.mask.dtype == np.bool_  # fill values do not mask data
        np.testing.assert_array_equal(frames.image[1].values, frame_data([0, 1])["images"][1])
        init = xr.open_zarr(path, group="fits/init", **kw)
        assert init.body_pose.dims == ("frame", "body_pose_param") and init.body_pose.shape == (T, 69)
        assert np.isfinite(init.betas[0].values).all() and np.isnan(init.betas[1].values).all()
        root = xr.open_zarr(path, **kw)
        assert root.status.values.tolist() == [1, 0, 0, 0] and root.attrs["fps"] == 30.0
        mesh = xr.open_zarr(path, group="meshes/000000", **kw)
        assert mesh.vertices.dims == ("vertex", "xyz")

    def test_before_finalize(self, run: RunStore) -> None:
        self._write_some(run)
        self._check(run.path, consolidated=False)

    def test_after_finalize(self, run: RunStore) -> None:
        self._write_some(run)
        run.finalize()
        assert "consolidated_metadata" in json.loads((run.path / "zarr.json").read_text())
        self._check(run.path, consolidated=True)
        self._check(run.path)
        # The typed API still opens (and writes to) a finalized store.
        store = open_run(run.path, mode="r+")
        store.set_status([1], FrameStatus.DONE)
        assert store.status().tolist() == [1, 1, 0, 0] and store.attrs == make_attrs()


def test_sha256_file(tmp_path: Path) -> None:
    data = np.random.default_rng(0).bytes(3 * 1024 + 17)
    (tmp_path / "v.bin").write_bytes(data)
    assert sha256_file(tmp_path / "v.bin", chunk_bytes=1024) == hashlib.sha256(data).hexdigest()
