"""Zarr v3 shards of synthetic samples: ``save_shard`` / ``load_shard`` / ``write_shards``, the resumable sharded
dataset writer ``write_dataset`` (with its manifest JSON) and a streaming torch ``SynthDataset``. The only module of
icon.synth that touches files.

Layout of one shard (a Zarr group): one array per SynthSample array field with a leading sample axis and one sample
per chunk; meshes are zero-padded to the shard's largest (``vertices`` (n, Vmax, 3), ``faces`` (n, Fmax, 3) int32)
with true sizes in ``num_vertices`` / ``num_faces``; seeds, garments, pose families and the generator config live in
the group attributes.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import torch

from icon.synth.config import SynthConfig
from icon.synth.sample import SynthSample, make_sample

__all__ = [
    "DATASET_FORMAT",
    "MANIFEST_NAME",
    "SHARD_FORMAT",
    "SynthDataset",
    "finished_shards",
    "load_shard",
    "plan_shards",
    "read_manifest",
    "save_shard",
    "shard_paths",
    "write_dataset",
    "write_shards",
]

logger = logging.getLogger(__name__)

SHARD_FORMAT = "avatarize-synth-shard/1"
DATASET_FORMAT = "avatarize-synth-dataset/1"
MANIFEST_NAME = "manifest.json"
_MESH = ("vertices", "faces")
_DIMS = {
    "rgb": ("sample", "row", "col", "channel"),
    "mask": ("sample", "row", "col"),
    "normal_front": ("sample", "row", "col", "xyz"),
    "normal_back": ("sample", "row", "col", "xyz"),
    "body_normal_front": ("sample", "row", "col", "xyz"),
    "body_normal_back": ("sample", "row", "col", "xyz"),
    "points": ("sample", "point", "xyz"),
    "occupancy": ("sample", "point"),
    "vertices": ("sample", "vertex", "xyz"),
    "faces": ("sample", "face", "corner"),
    "intrinsics": ("sample", "focal_cx_cy"),
    "mask_unoccluded": ("sample", "row", "col"),
}


def _create(group, name: str, data: np.ndarray) -> None:
    dims = _DIMS.get(name, ("sample",) + tuple(f"{name}_{i}" for i in range(data.ndim - 1)))
    arr = group.create_array(
        name, shape=data.shape, chunks=(1,) + data.shape[1:], dtype=data.dtype, dimension_names=dims
    )
    arr[...] = data


def save_shard(path: str | Path, samples: Sequence[SynthSample], config: SynthConfig | None = None) -> Path:
    """Write samples as one Zarr v3 group (a directory store; overwritten if it exists).

    Args:
        path: Directory of the shard, e.g. ``out/synth/train/shard_00000.zarr``.
        samples: Samples of one image size and one occupancy point count.
        config: The generator config, stored in the attributes.

    Returns:
        The shard path.
    """
    import zarr

    if not samples:
        raise ValueError("save_shard needs at least one sample")
    path = Path(path)
    first = samples[0]
    for s in samples:
        if s.rgb.shape != first.rgb.shape or s.points.shape != first.points.shape:
            raise ValueError(
                f"all samples of a shard need the same image size and point count: seed {s.seed} has "
                f"{s.rgb.shape}/{s.points.shape}, seed {first.seed} has {first.rgb.shape}/{first.points.shape}"
            )
    group = zarr.open_group(str(path), mode="w", zarr_format=3)
    for name in first.array_fields():
        if name in _MESH:
            continue
        _create(group, name, np.stack([s.array_fields()[name] for s in samples]))
    n = len(samples)
    vmax = max(len(s.vertices) for s in samples)
    fmax = max(len(s.faces) for s in samples)
    verts = np.zeros((n, vmax, 3), np.float32)
    faces = np.zeros((n, fmax, 3), np.int32)
    for i, s in enumerate(samples):
        verts[i, : len(s.vertices)] = s.vertices
        faces[i, : len(s.faces)] = s.faces
    _create(group, "vertices", verts)
    _create(group, "faces", faces)
    _create(group, "num_vertices", np.array([len(s.vertices) for s in samples], np.int64))
    _create(group, "num_faces", np.array([len(s.faces) for s in samples], np.int64))
    group.attrs.update(
        {
            "format": SHARD_FORMAT,
            "num_samples": n,
            "seeds": [int(s.seed) for s in samples],
            "garments": [list(s.garments) for s in samples],
            "pose_families": [s.pose_family for s in samples],
            "config": None if config is None else config.model_dump(mode="json"),
        }
    )
    return path


class _ShardReader:
    """Random access to the samples of one shard (opened lazily, reading one chunk per array and sample)."""

    def __init__(self, path: str | Path):
        import zarr

        self.path = Path(path)
        if not self.path.exists():
            raise FileNotFoundError(f"shard {self.path} does not exist")
        self.group = zarr.open_group(str(self.path), mode="r")
        attrs = dict(self.group.attrs)
        if attrs.get("format") != SHARD_FORMAT:
            raise ValueError(f"{self.path} is not a synthetic-sample shard (format {attrs.get('format')!r})")
        self.attrs = attrs
        self.arrays = {name: self.group[name] for name in self.group.array_keys()}

    def __len__(self) -> int:
        return int(self.attrs["num_samples"])

    def read(self, i: int, with_mesh: bool = True) -> SynthSample:
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} out of range for {self.path} with {len(self)} samples")
        kw = {n: a[i] for n, a in self.arrays.items() if n not in (*_MESH, "num_vertices", "num_faces")}
        if with_mesh:
            nv, nf = int(self.arrays["num_vertices"][i]), int(self.arrays["num_faces"][i])
            kw["vertices"] = self.arrays["vertices"][i, :nv]
            kw["faces"] = self.arrays["faces"][i, :nf].astype(np.int64)
        else:
            kw["vertices"] = np.zeros((0, 3), np.float32)
            kw["faces"] = np.zeros((0, 3), np.int64)
        return SynthSample.from_array_fields(
            kw,
            seed=int(self.attrs["seeds"][i]),
            garments=list(self.attrs["garments"][i]),
            pose_family=str(self.attrs["pose_families"][i]),
        )


def load_shard(path: str | Path, with_mesh: bool = True) -> list[SynthSample]:
    """Read every sample of a shard written by ``save_shard``.

    Args:
        path: Shard directory.
        with_mesh: If False, skip the clothed meshes (empty vertex/face arrays).

    Returns:
        Samples in stored order.
    """
    reader = _ShardReader(path)
    return [reader.read(i, with_mesh) for i in range(len(reader))]


def shard_paths(directory: str | Path) -> list[Path]:
    """Sorted shard directories (``*.zarr``) in ``directory``."""
    return sorted(Path(directory).glob("*.zarr"))


def write_shards(
    out_dir: str | Path,
    seeds: Iterable[int],
    config: SynthConfig | None = None,
    shard_size: int = 64,
    model=None,
    on_sample: Callable[[SynthSample], None] | None = None,
) -> list[Path]:
    """Generate the samples of ``seeds`` in order and write them as shards ``shard_00000.zarr``, ... (serially).

    Args:
        out_dir: Output directory (created).
        seeds: Seeds, e.g. ``split_seeds("train", 1000)``.
        config: Generator config (default ``SynthConfig()``), stored in every shard.
        shard_size: Samples per shard.
        model: Body model (default: the embedded ``BodyModel()``).
        on_sample: Called after each sample (e.g. to advance a progress bar).

    Returns:
        Paths of the written shards.
    """
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    config = SynthConfig() if config is None else config
    if model is None:
        from body.model import BodyModel

        model = BodyModel()
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths: list[Path] = []
    buffer: list[SynthSample] = []
    for seed in seeds:
        buffer.append(make_sample(int(seed), model, config))
        if on_sample is not None:
            on_sample(buffer[-1])
        if len(buffer) == shard_size:
            paths.append(save_shard(out_dir / f"shard_{len(paths):05d}.zarr", buffer, config))
            buffer = []
    if buffer:
        paths.append(save_shard(out_dir / f"shard_{len(paths):05d}.zarr", buffer, config))
    logger.info("wrote %d shards to %s", len(paths), out_dir)
    return paths


def plan_shards(seeds: Sequence[int], shard_size: int) -> list[list[int]]:
    """Split ``seeds`` in order into consecutive shards of ``shard_size`` (the last may be smaller)."""
    if shard_size < 1:
        raise ValueError(f"shard_size must be >= 1, got {shard_size}")
    seeds = [int(s) for s in seeds]
    return [seeds[i : i + shard_size] for i in range(0, len(seeds), shard_size)]


def _shard_name(index: int) -> str:
    return f"shard_{index:05d}.zarr"


def finished_shards(out_dir: str | Path, plan: Sequence[Sequence[int]], config: SynthConfig) -> set[int]:
    """Indices of planned shards already complete in ``out_dir``: the final directory exists (shards are written
    under a temporary name and renamed when whole), it holds exactly the planned seeds, and the same config."""
    out_dir = Path(out_dir)
    want = config.model_dump(mode="json")
    done = set()
    for i, seeds in enumerate(plan):
        path = out_dir / _shard_name(i)
        if not (path / "zarr.json").exists():
            continue
        try:
            attrs = _ShardReader(path).attrs
        except (ValueError, OSError, KeyError) as err:
            logger.warning("shard %s is unreadable (%s); it will be rewritten", path, err)
            continue
        if attrs.get("seeds") == list(seeds) and attrs.get("config") == want:
            done.add(i)
    return done


def read_manifest(out_dir: str | Path) -> dict | None:
    """The dataset manifest of ``out_dir`` (see ``write_dataset``), or None if there is none yet."""
    path = Path(out_dir) / MANIFEST_NAME
    return json.loads(path.read_text()) if path.exists() else None


def _write_json_atomic(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=1))
    os.replace(tmp, path)


def write_dataset(
    out_dir: str | Path,
    seeds: Sequence[int],
    config: SynthConfig,
    generate: Callable[[list[int]], Iterator[SynthSample]],
    shard_size: int = 256,
    info: dict | None = None,
    on_sample: Callable[[SynthSample], None] | None = None,
) -> dict:
    """Write the samples of ``seeds`` as shards ``shard_00000.zarr``, ... and a manifest; resumable.

    Shards already complete (same seeds and config, see ``finished_shards``) are skipped, so a killed run picks up
    where it stopped: each shard is written as ``shard_i.zarr.partial`` and renamed when whole, and the manifest
    (``manifest.json``: format, config, seed range, per-shard seeds / counts / seconds, totals) is rewritten after
    each shard. A directory holding shards of another config is refused.

    Args:
        out_dir: Output directory (created).
        seeds: Seeds of the samples, e.g. ``split_seeds("train", 20_000)``.
        config: Generator config (stored in the manifest and in every shard).
        generate: Maps a list of seeds to an iterator of their samples *in the same order* (serial or a process
            pool; see scripts/make_synth.py).
        shard_size: Samples per shard.
        info: Extra manifest entries about the run (device, workers, preset, command).
        on_sample: Called after each generated sample (a progress bar).

    Returns:
        The manifest dict (as written).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    plan = plan_shards(seeds, shard_size)
    config_json = config.model_dump(mode="json")
    old = read_manifest(out_dir)
    if old is not None and (old.get("config") != config_json or old.get("shard_size") != shard_size):
        raise ValueError(
            f"{out_dir} holds a dataset of another config or shard size; write to a new directory or delete it"
        )
    done = finished_shards(out_dir, plan, config)
    previous = {s["name"]: s for s in (old or {}).get("shards", [])}
    manifest = {
        "format": DATASET_FORMAT,
        "config": config_json,
        "shard_size": shard_size,
        "num_samples": sum(len(p) for p in plan),
        "seeds": {"first": plan[0][0] if plan else None, "last": plan[-1][-1] if plan else None},
        "run": {**(info or {}), "started_utc": datetime.now(UTC).isoformat(timespec="seconds")},
        "shards": [previous[_shard_name(i)] for i in sorted(done) if _shard_name(i) in previous],
    }
    todo = [i for i in range(len(plan)) if i not in done]
    logger.info("%d of %d shards already complete in %s; %d to write", len(done), len(plan), out_dir, len(todo))
    start = time.perf_counter()
    made = 0
    stream = generate([s for i in todo for s in plan[i]])
    for i in todo:
        shard_start = time.perf_counter()
        buffer = []
        for _ in plan[i]:
            buffer.append(next(stream))
            if on_sample is not None:
                on_sample(buffer[-1])
        if [s.seed for s in buffer] != plan[i]:
            raise RuntimeError(f"generate returned seeds {[s.seed for s in buffer]} for shard {i}, expected {plan[i]}")
        final = out_dir / _shard_name(i)
        partial = out_dir / (_shard_name(i) + ".partial")
        shutil.rmtree(partial, ignore_errors=True)
        save_shard(partial, buffer, config)
        shutil.rmtree(final, ignore_errors=True)
        os.replace(partial, final)
        made += len(buffer)
        manifest["shards"].append(
            {
                "name": final.name,
                "first_seed": plan[i][0],
                "last_seed": plan[i][-1],
                "count": len(buffer),
                "seconds": round(time.perf_counter() - shard_start, 2),
                "garments": _counts(g for s in buffer for g in s.garments),
                "pose_families": _counts(s.pose_family for s in buffer),
            }
        )
        manifest["shards"].sort(key=lambda s: s["name"])
        elapsed = time.perf_counter() - start
        manifest["run"].update(
            {"samples_this_run": made, "seconds_this_run": round(elapsed, 2),
             "samples_per_second": round(made / max(elapsed, 1e-9), 4)}
        )  # fmt: skip
        manifest["complete_samples"] = sum(s["count"] for s in manifest["shards"])
        _write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    manifest["complete_samples"] = sum(s["count"] for s in manifest["shards"])
    _write_json_atomic(out_dir / MANIFEST_NAME, manifest)
    return manifest


def _counts(names: Iterable[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for n in names:
        out[n] = out.get(n, 0) + 1
    return dict(sorted(out.items()))


class SynthDataset(torch.utils.data.Dataset):
    """Map-style dataset over shards, reading one sample's chunks per item (safe with DataLoader workers).

    Items are ``SynthSample`` objects (numpy); batch them with a custom ``collate_fn``.

    Args:
        paths: Shard directories (see ``shard_paths``).
        with_mesh: Also read the clothed meshes (off for image-only training, which saves most of the IO).
    """

    def __init__(self, paths: Sequence[str | Path], with_mesh: bool = False):
        self.paths = [Path(p) for p in paths]
        if not self.paths:
            raise ValueError("SynthDataset needs at least one shard path")
        self.with_mesh = with_mesh
        sizes = [len(_ShardReader(p)) for p in self.paths]
        self._offsets = np.concatenate([[0], np.cumsum(sizes)])
        self._readers: dict[int, _ShardReader] = {}

    def __len__(self) -> int:
        return int(self._offsets[-1])

    def __getitem__(self, index: int) -> SynthSample:
        if index < 0:
            index += len(self)
        if not 0 <= index < len(self):
            raise IndexError(f"index {index} out of range for {len(self)} samples")
        shard = int(np.searchsorted(self._offsets, index, side="right") - 1)
        if shard not in self._readers:
            self._readers[shard] = _ShardReader(self.paths[shard])
        return self._readers[shard].read(index - int(self._offsets[shard]), self.with_mesh)

    def __getstate__(self):
        # Open stores are not shared with worker processes; each reopens its own.
        state = dict(self.__dict__)
        state["_readers"] = {}
        return state
