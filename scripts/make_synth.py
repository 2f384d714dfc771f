"""Generate synthetic clothed humans (icon.synth) into Zarr shards, with a progress bar and a samples/s summary.

Train samples use seeds 0..N-1 (plus --start), held-out ones (--heldout) seeds from 1,000,000 on, so the splits never
overlap. Optionally writes PNG previews (RGB | clothed normals front/back | perturbed-fit body normals front/back).

Usage: python scripts/make_synth.py --n 1000 --size 256 --out out/synth/train [--heldout] [--workers 2]
"""

from __future__ import annotations

import argparse
import os
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
os.environ.setdefault("WARP_CACHE_PATH", str(REPO / ".cache" / "warp"))

_MODEL = None
_CONFIG = None


def _init_worker(config_json: str) -> None:
    """Per-process body model and config (each worker runs single-threaded torch)."""
    global _MODEL, _CONFIG
    import torch
    import warp as wp

    from body.model import BodyModel
    from icon.synth.config import SynthConfig

    torch.set_num_threads(1)
    wp.config.quiet = True
    _MODEL = BodyModel()
    _CONFIG = SynthConfig.model_validate_json(config_json)


def _make(seed: int):
    from icon.synth.sample import make_sample

    return make_sample(seed, _MODEL, _CONFIG)


def _samples(seeds: list[int], config, workers: int) -> Iterator:
    """Samples in seed order, from a pool of spawned processes when workers > 1."""
    if workers <= 1:
        _init_worker(config.model_dump_json())
        for s in seeds:
            yield _make(s)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(config.model_dump_json(),)) as pool:
        yield from pool.imap(_make, seeds, chunksize=1)


def preview_image(sample) -> np.ndarray:
    """(S, 5 S, 3) uint8: RGB | clothed normals front | back | body-fit normals front | back."""

    def normals(n):
        fg = np.abs(n).sum(-1, keepdims=True) > 0
        return ((n * 0.5 + 0.5) * 255 * fg).astype(np.uint8)

    maps = (sample.normal_front, sample.normal_back, sample.body_normal_front, sample.body_normal_back)
    return np.concatenate([sample.rgb, *(normals(m) for m in maps)], axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--size", type=int, default=256, help="image side S (pixels)")
    parser.add_argument("--out", type=Path, required=True, help="output directory of the shards")
    parser.add_argument("--heldout", action="store_true", help="use held-out seeds (from 1,000,000)")
    parser.add_argument("--start", type=int, default=0, help="first seed offset within the split")
    parser.add_argument("--workers", type=int, default=1, help="generator processes")
    parser.add_argument("--shard-size", type=int, default=64, help="samples per shard")
    parser.add_argument("--grid", type=int, default=None, help="marching-cubes resolution (default: config)")
    parser.add_argument("--points", type=int, default=None, help="occupancy points per sample (default: config)")
    parser.add_argument("--preview", type=int, default=0, help="write PNG previews of the first K samples")
    parser.add_argument("--preview-dir", type=Path, default=REPO / "out" / "synth_preview")
    args = parser.parse_args()

    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from icon.synth.config import SynthConfig, split_seeds
    from icon.synth.shards import save_shard

    overrides = {"image_size": args.size}
    if args.grid is not None:
        overrides["grid_resolution"] = args.grid
    if args.points is not None:
        overrides["num_points"] = args.points
    config = SynthConfig(**overrides)
    seeds = split_seeds("heldout" if args.heldout else "train", args.n, args.start)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "config.json").write_text(config.model_dump_json(indent=2))
    if args.preview:
        args.preview_dir.mkdir(parents=True, exist_ok=True)

    from PIL import Image

    start = time.perf_counter()
    buffer, shards, done = [], 0, 0
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("samples", total=len(seeds))
        for sample in _samples(seeds, config, args.workers):
            if done < args.preview:
                Image.fromarray(preview_image(sample)).save(args.preview_dir / f"synth_{sample.seed:07d}.png")
            buffer.append(sample)
            done += 1
            progress.advance(task)
            if len(buffer) == args.shard_size:
                save_shard(args.out / f"shard_{shards:05d}.zarr", buffer, config)
                shards, buffer = shards + 1, []
        if buffer:
            save_shard(args.out / f"shard_{shards:05d}.zarr", buffer, config)
            shards += 1
    elapsed = time.perf_counter() - start
    print(f"{done} samples in {shards} shards -> {args.out}  ({elapsed:.1f} s, {done / elapsed:.3f} samples/s)")


if __name__ == "__main__":
    main()
