"""Throughput of the video pipeline: frames/minute of ``process_video`` with 1 and 2 workers, and the share of time
per stage. Prints a table; a fresh output folder per run so nothing is resumed.

    .venv/bin/python bench/pipeline.py                       # fast preset, generated 16-frame clip, threads
    .venv/bin/python bench/pipeline.py --runner process --workers 1,2 --video assets/demo.mp4
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

_HERE = Path(__file__).resolve().parent

os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("WARP_CACHE_PATH", str(_HERE.parent / ".cache" / "warp"))


def make_clip(path: Path, n: int, size: int = 512) -> Path:
    """A person clip (skimage's astronaut drifting sideways) at 10 fps."""
    import cv2
    import numpy as np
    from skimage import data

    from flows.video import write_video

    img = cv2.resize(data.astronaut(), (size, size), interpolation=cv2.INTER_AREA)
    return write_video(path, np.stack([np.roll(img, 3 * i, axis=1) for i in range(n)]), fps=10)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--video", type=Path, help="Clip to process (default: a generated one).")
    ap.add_argument("--config", default="fast", help="Preset or YAML (default: fast).")
    ap.add_argument("--frames", type=int, default=16, help="max_frames (default 16).")
    ap.add_argument("--workers", default="1,2", help="Worker counts to compare (default 1,2).")
    ap.add_argument("--runner", default="thread", choices=["thread", "process", "dask"])
    ap.add_argument("--batch-size", type=int, default=2)
    args = ap.parse_args()

    from flows.config import load_config
    from flows.pipeline import process_video
    from flows.runners import RunnerConfig

    cfg = load_config(args.config, {"frames": {"max_frames": args.frames}})
    work = Path(tempfile.mkdtemp(prefix="avatarize-bench-"))
    video = args.video or make_clip(work / "clip.mp4", n=2 * args.frames * 2)
    print(f"video {video}, config {args.config} (digest {cfg.digest()}), runner {args.runner}, cpus {os.cpu_count()}")

    # Warm-up run (server start, model loads, kernel cache) so the timed runs compare like with like.
    process_video(video, work / "warmup", cfg, RunnerConfig(kind="thread", workers=1), args.batch_size)

    rows = []
    for n in [int(w) for w in args.workers.split(",")]:
        devices = ["cpu"] * n if args.runner == "process" else []
        runner = RunnerConfig(kind=args.runner, workers=n, devices=devices)
        t0 = time.perf_counter()
        res = process_video(video, work / f"w{n}", cfg, runner, args.batch_size)
        wall = time.perf_counter() - t0
        rows.append((n, res, wall))

    print()
    print(f"{'workers':>7} {'frames':>6} {'done':>5} {'wall s':>8} {'frames/min':>10}")
    for n, res, wall in rows:
        print(f"{n:>7} {res.n_frames:>6} {res.n_done:>5} {wall:>8.1f} {60 * res.n_frames / wall:>10.1f}")
    for n, res, _ in rows:
        total = sum(res.stage_seconds.values()) or 1.0
        print(f"\nstage time, {n} worker(s) (summed over frames; parallel stages overlap in wall time):")
        for stage, sec in sorted(res.stage_seconds.items(), key=lambda kv: -kv[1]):
            print(f"  {stage:<10} {sec:>8.2f} s {100 * sec / total:>5.1f}%")


if __name__ == "__main__":
    main()
