"""Zarr v3 shards of synthetic samples: ``save_shard`` / ``load_shard`` / ``write_shards`` and a streaming torch
``SynthDataset``. The only module of icon.synth that touches files.

Layout of one shard (a Zarr group): one array per SynthSample array field with a leading sample axis and one sample
per chunk; meshes are zero-padded to the shard's largest (``vertices`` (n, Vmax, 3), ``faces`` (n, Fmax, 3) int32)
with true sizes in ``num_vertices`` / ``num_faces``; seeds, garments, pose families and the generator config live in
the group attributes.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np
import torch

from icon.synth.config import SynthConfig
from icon.synth.sample import SynthSample, make_sample

__all__ = ["SHARD_FORMAT", "SynthDataset", "load_shard", "save_shard", "shard_paths", "write_shards"]

logger = logging.getLogger(__name__)

SHARD_FORMAT = "avatarize-synth-shard/1"
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
