"""Generate synthetic clothed humans (icon.synth) into a sharded, resumable Zarr dataset with a manifest.

Train samples use seeds 0..N-1 (plus --start), held-out ones (--heldout) seeds from 1,000,000 on, so the splits never
overlap. Shards already complete in --out are skipped, so rerunning a killed command resumes it; ``manifest.json`` in
--out records the config, seeds, per-shard counts and seconds and the run's samples/s. ``--preset wide`` turns the
domain randomisation on (icon.synth.config.PRESETS). Optionally writes a contact sheet PNG of the first 64 samples
(RGB | clothed front normals) and per-sample PNG previews.

Usage: nice -n 10 python scripts/make_synth.py --n 20000 --out out/synth/wide_train --preset wide --workers 16 \
           [--device cuda] [--contact-sheet out/synth/wide_train/contact.png]
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
_DEVICE = None


def _init_worker(config_json: str, device: str) -> None:
    """Per-process body model and config (each worker runs single-threaded torch)."""
    global _MODEL, _CONFIG, _DEVICE
    import torch
    import warp as wp

    from body.model import BodyModel
    from icon.synth.config import SynthConfig

    torch.set_num_threads(1)
    wp.config.quiet = True
    _MODEL = BodyModel()
    _CONFIG = SynthConfig.model_validate_json(config_json)
    _DEVICE = None if device == "cpu" else device


def _make(seed: int):
    from icon.synth.sample import make_sample

    return make_sample(seed, _MODEL, _CONFIG, device=_DEVICE)


def _samples(seeds: list[int], config, workers: int, device: str) -> Iterator:
    """Samples in seed order, from a pool of spawned processes when workers > 1."""
    if not seeds:
        return
    if workers <= 1:
        _init_worker(config.model_dump_json(), device)
        for s in seeds:
            yield _make(s)
        return
    import multiprocessing as mp

    ctx = mp.get_context("spawn")
    with ctx.Pool(workers, initializer=_init_worker, initargs=(config.model_dump_json(), device)) as pool:
        yield from pool.imap(_make, seeds, chunksize=1)


def _normals_rgb(n: np.ndarray) -> np.ndarray:
    fg = np.abs(n).sum(-1, keepdims=True) > 0
    return ((n * 0.5 + 0.5) * 255 * fg).astype(np.uint8)


def preview_image(sample) -> np.ndarray:
    """(S, 5 S, 3) uint8: RGB | clothed normals front | back | body-fit normals front | back."""
    maps = (sample.normal_front, sample.normal_back, sample.body_normal_front, sample.body_normal_back)
    return np.concatenate([sample.rgb, *(_normals_rgb(m) for m in maps)], axis=1)


def contact_sheet(samples, columns: int = 8, tile: int = 128) -> np.ndarray:
    """(rows * tile, columns * 2 tile, 3) uint8 grid of RGB | clothed front normal pairs, ``tile`` px each."""
    from PIL import Image

    tiles = []
    for s in samples:
        pair = [Image.fromarray(a).resize((tile, tile), Image.BILINEAR) for a in (s.rgb, _normals_rgb(s.normal_front))]
        tiles.append(np.concatenate([np.asarray(p) for p in pair], axis=1))
    while len(tiles) % columns:
        tiles.append(np.zeros_like(tiles[0]))
    rows = [np.concatenate(tiles[i : i + columns], axis=1) for i in range(0, len(tiles), columns)]
    return np.concatenate(rows, axis=0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, required=True, help="number of samples")
    parser.add_argument("--out", type=Path, required=True, help="output directory of the shards and manifest")
    parser.add_argument("--preset", default="default", help="generator preset (icon.synth.config.PRESETS)")
    parser.add_argument("--size", type=int, default=None, help="image side S (pixels; default: preset)")
    parser.add_argument("--heldout", action="store_true", help="use held-out seeds (from 1,000,000)")
    parser.add_argument("--start", type=int, default=0, help="first seed offset within the split")
    parser.add_argument("--workers", type=int, default=1, help="generator processes")
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="device of the Warp field queries")
    parser.add_argument("--shard-size", type=int, default=64, help="samples per shard")
    parser.add_argument("--grid", type=int, default=None, help="marching-cubes resolution (default: config)")
    parser.add_argument("--points", type=int, default=None, help="occupancy points per sample (default: config)")
    parser.add_argument("--contact-sheet", type=Path, default=None, help="PNG of the first 64 samples")
    parser.add_argument("--preview", type=int, default=0, help="write PNG previews of the first K samples")
    parser.add_argument("--preview-dir", type=Path, default=REPO / "out" / "synth_preview")
    args = parser.parse_args()

    from PIL import Image
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    from icon.synth.config import split_seeds, synth_preset
    from icon.synth.shards import SynthDataset, shard_paths, write_dataset

    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            parser.error("--device cuda: no CUDA device is visible to torch; use --device cpu")
    overrides = {}
    if args.size is not None:
        overrides["image_size"] = args.size
    if args.grid is not None:
        overrides["grid_resolution"] = args.grid
    if args.points is not None:
        overrides["num_points"] = args.points
    config = synth_preset(args.preset, **overrides)
    seeds = split_seeds("heldout" if args.heldout else "train", args.n, args.start)
    info = {"preset": args.preset, "device": args.device, "workers": args.workers, "cpus": os.cpu_count()}
    if args.preview:
        args.preview_dir.mkdir(parents=True, exist_ok=True)
    previewed = 0

    def on_sample(sample) -> None:
        nonlocal previewed
        progress.advance(task)
        if previewed < args.preview:
            Image.fromarray(preview_image(sample)).save(args.preview_dir / f"synth_{sample.seed:07d}.png")
            previewed += 1

    start = time.perf_counter()
    columns = (TextColumn("[bold]synth"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn())
    with Progress(*columns) as progress:
        task = progress.add_task("samples", total=len(seeds))
        manifest = write_dataset(
            args.out, seeds, config, lambda s: _samples(s, config, args.workers, args.device), args.shard_size,
            info=info, on_sample=on_sample,
        )  # fmt: skip
    elapsed = time.perf_counter() - start
    run = manifest["run"]
    made = run.get("samples_this_run", 0)
    print(
        f"{manifest['complete_samples']}/{manifest['num_samples']} samples in {len(manifest['shards'])} shards -> "
        f"{args.out}; this run {made} samples in {elapsed:.1f} s ({made / max(elapsed, 1e-9):.3f} samples/s, "
        f"{args.workers} workers, {args.device})"
    )
    if args.contact_sheet is not None:
        data = SynthDataset(shard_paths(args.out))
        first = [data[i] for i in range(min(64, len(data)))]
        args.contact_sheet.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(contact_sheet(first)).save(args.contact_sheet)
        print(f"contact sheet of {len(first)} samples -> {args.contact_sheet}")


if __name__ == "__main__":
    main()
