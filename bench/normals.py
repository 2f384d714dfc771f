"""Benchmark of the normal net on held-out synthetic samples: mean angular error (degrees) inside the clothed silhouette
of (a) the perturbed body fit's own normals and (b) the predicted clothed normals, front and back. Prints a table;
also split into pixels the body covers and pixels only clothing/hair covers (where the body has no normal: 90°).

    python bench/normals.py --data out/synth_normal/heldout --weights weights/normal_net.safetensors [--device cpu]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np  # noqa: E402
import torch  # noqa: E402

from icon.normal_net import angular_error_deg, load_normal_net, predict_normals  # noqa: E402
from icon.synth.shards import SynthDataset, shard_paths  # noqa: E402
from icon.train_normal import collate_normal_samples  # noqa: E402


def measure(net, dataset, limit: int | None, batch_size: int) -> dict[str, np.ndarray]:
    """Per-frame mean errors: {"{body,pred}_{front,back}_{all,on,off}": (N,) degrees} and seconds per frame."""
    n = len(dataset) if limit is None else min(limit, len(dataset))
    out: dict[str, list[torch.Tensor]] = {}
    seconds = 0.0
    for i in range(0, n, batch_size):
        b = collate_normal_samples([dataset[j] for j in range(i, min(i + batch_size, n))])
        t = time.perf_counter()
        front, back = predict_normals(net, b["rgb"], b["mask"], b["body_normal_front"], b["body_normal_back"])
        seconds += time.perf_counter() - t
        m = b["mask"]
        for side, pred in (("front", front), ("back", back)):
            body, gt = b[f"body_normal_{side}"], b[f"normal_{side}"]
            on = m & (body.norm(dim=-1) > 0)
            for region, mask in (("all", m), ("on", on), ("off", m & ~on)):
                out.setdefault(f"body_{side}_{region}", []).append(angular_error_deg(body, gt, mask))
                out.setdefault(f"pred_{side}_{region}", []).append(angular_error_deg(pred, gt, mask))
    res = {k: torch.cat(v).numpy() for k, v in out.items()}
    res["seconds_per_frame"] = np.array([seconds / max(1, n)])
    return res


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, required=True, help="folder of held-out synthetic shards (*.zarr)")
    parser.add_argument("--weights", type=Path, required=True, help="normal-net safetensors")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="use at most this many frames")
    parser.add_argument("--batch-size", type=int, default=16)
    args = parser.parse_args()

    from rich.console import Console
    from rich.table import Table

    paths = shard_paths(args.data)
    if not paths:
        raise SystemExit(f"no shards (*.zarr) in {args.data}: generate them with scripts/make_synth.py --heldout")
    dataset = SynthDataset(paths)
    net = load_normal_net(args.weights, args.device)
    res = measure(net, dataset, args.limit, args.batch_size)
    frames = len(res["body_front_all"])

    table = Table(title=f"Normal net vs body normals: mean angular error (deg) over {frames} held-out frames")
    for col in ("side", "pixels", "body normals", "predicted", "relative improvement"):
        table.add_column(col, justify="left" if col in ("side", "pixels") else "right")
    regions = {"all": "inside silhouette", "on": "  on the body fit", "off": "  clothing/hair only"}
    for side in ("front", "back"):
        for region, label in regions.items():
            body = float(np.nanmean(res[f"body_{side}_{region}"]))
            pred = float(np.nanmean(res[f"pred_{side}_{region}"]))
            style = "bold" if region == "all" else None
            table.add_row(side, label, f"{body:.2f}", f"{pred:.2f}", f"{100 * (1 - pred / body):.1f} %", style=style)
    console = Console()
    console.print(table)
    cfg = net.config
    console.print(
        f"net: {cfg.model_dump()} ({sum(p.numel() for p in net.parameters()) / 1e6:.2f} M params); "
        f"{1000 * res['seconds_per_frame'][0]:.1f} ms/frame on {args.device}; "
        "clothing/hair-only pixels have no body normal (counted as 90° for the body)."
    )


if __name__ == "__main__":
    main()
