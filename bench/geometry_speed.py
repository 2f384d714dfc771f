"""Benchmark of geometry/: closest-point and signed-distance queries, ray-cast and differentiable renders,
coarse-to-fine vs dense surface extraction. Prints a table.

    python bench/geometry_speed.py [--device cuda|cpu] [--quick]
"""

from __future__ import annotations

import argparse
import math
import os
import time
from pathlib import Path

_REPO = Path(__file__).resolve().parents[1]
# This script is named like the package it measures: run as a file, its own folder would shadow `geometry`.
os.environ.setdefault("WARP_CACHE_PATH", str(_REPO / ".cache" / "warp"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import trimesh  # noqa: E402
import warp as wp  # noqa: E402

from geometry.cameras import OrthographicCamera  # noqa: E402
from geometry.diffrender import edge_topology, render_differentiable  # noqa: E402
from geometry.metrics import sample_surface  # noqa: E402
from geometry.queries import MeshBVH  # noqa: E402
from geometry.render import render_mesh  # noqa: E402
from geometry.surface import evaluate_grid, extract_surface  # noqa: E402


def lumpy_body(device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A closed ~27k-face test surface with body-like bumps and folds (a displaced UV sphere, 1.7 m tall)."""
    m = trimesh.creation.uv_sphere(radius=1.0, count=[84, 84])
    v = torch.tensor(np.asarray(m.vertices), dtype=torch.float32)
    bump = 1 + 0.12 * torch.sin(5 * v[:, 0]) * torch.cos(7 * v[:, 1]) + 0.08 * torch.sin(9 * v[:, 2])
    v = v * bump[:, None] * torch.tensor([0.3, 0.85, 0.2])
    return v[None].to(device), torch.tensor(np.asarray(m.faces), dtype=torch.long, device=device)


def timed(fn, device: torch.device, repeats: int) -> float:
    """Median wall time of fn() in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append(time.perf_counter() - t)
    return float(np.median(times))


def camera_for(res: int, device: torch.device) -> OrthographicCamera:
    c = torch.tensor([res / 2.0], device=device)
    return OrthographicCamera(torch.tensor([res / 2.0], device=device), c, c, res, res)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (CPU smoke run)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (1 is steadier on a busy host)")
    args = parser.parse_args()
    device = torch.device(args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    wp.config.quiet = True
    wp.init()
    v, f = lumpy_body(device)
    rows: list[tuple[str, str, str]] = []
    print(f"device {device}, mesh {v.shape[1]} vertices / {f.shape[0]} faces, torch threads {torch.get_num_threads()}")

    # Closest point / signed distance: near-surface points as ICON samples them (surface + 5 cm noise).
    counts = [100_000] if args.quick else [100_000, 1_000_000]
    for n in counts:
        surf = sample_surface(v, f, n, seed=0).points
        pts = surf + 0.05 * torch.randn(surf.shape, generator=torch.Generator().manual_seed(0)).to(device)
        for method in ("none", "normal", "winding"):
            t_build = timed(lambda method=method: MeshBVH(v, f, sign_method=method), device, args.repeats)
            bvh = MeshBVH(v, f, sign_method=method)
            t = timed(lambda bvh=bvh, pts=pts: bvh.query(pts), device, args.repeats)
            label = {
                "none": "closest point",
                "normal": "signed dist (pseudo-normal)",
                "winding": "signed dist (winding)",
            }
            rows.append(
                (
                    f"{label[method]}, {n:.0e} pts",
                    f"{n / t:,.0f} queries/s",
                    f"{t * 1e3:.1f} ms (build {t_build * 1e3:.1f} ms)",
                )
            )

    # Full ray-cast render (mask, front/back depth, faces, barycentrics, normals).
    for res in (512,):
        cam = camera_for(res, device)
        bvh = MeshBVH(v, f, sign_method="none")
        t = timed(lambda cam=cam: render_mesh(v, f, cam), device, args.repeats)
        t_refit = timed(lambda cam=cam, bvh=bvh: render_mesh(v, f, cam, bvh=bvh), device, args.repeats)
        rows.append(
            (
                f"render_mesh {res}x{res}",
                f"{1 / t:.1f} renders/s",
                f"{t * 1e3:.1f} ms ({t_refit * 1e3:.1f} ms w/ prebuilt BVH)",
            )
        )

    # Differentiable normals (front+back) + soft silhouette, forward + backward.
    topo = edge_topology(f)
    for res in (256, 512):
        cam = camera_for(res, device)

        def step(cam=cam):
            x = v.clone().requires_grad_(True)
            r = render_differentiable(x, f, cam, topology=topo)
            loss = r.normal_front.abs().mean() + r.normal_back.abs().mean() + r.silhouette.mean()
            loss.backward()

        def forward(cam=cam):
            with torch.no_grad():
                render_differentiable(v, f, cam, topology=topo)

        t = timed(step, device, args.repeats)
        t_fwd = timed(forward, device, args.repeats)
        rows.append(
            (f"diff normals+silhouette {res}x{res}", "fwd+bwd", f"{t * 1e3:.1f} ms (fwd only {t_fwd * 1e3:.1f} ms)")
        )

    # Coarse-to-fine vs dense extraction of an analytic SDF of a lumpy ellipsoid.
    res = 128 if args.quick else 256
    scale = torch.tensor([0.3, 0.85, 0.2], device=device)

    def field(p):
        q = p / scale
        r = q.norm(dim=-1)
        bump = 1 + 0.12 * torch.sin(5 * q[:, 0] / r.clamp(min=1e-6)) * torch.cos(7 * q[:, 1] / r.clamp(min=1e-6))
        return (r - bump) * 0.3

    bounds = [[-0.5, -1.1, -0.4], [0.5, 1.1, 0.4]]
    coarse = 2 ** int(math.log2(res // 8)) + 1
    fields = [("analytic SDF", field)]
    if device.type == "cuda":
        mlp = torch.nn.Sequential(
            torch.nn.Linear(3, 512),
            torch.nn.Softplus(),
            torch.nn.Linear(512, 256),
            torch.nn.Softplus(),
            torch.nn.Linear(256, 128),
            torch.nn.Softplus(),
            torch.nn.Linear(128, 1),
        ).to(device)

        def mlp_field(p):  # ICON-width MLP cost, output ignored so the surface stays the analytic one
            return field(p) + 0.0 * mlp(p)[:, 0]

        fields.append(("SDF + ICON-size MLP", mlp_field))
    for name, fn in fields:
        kw = dict(level=0.0, inside="below", device=device)
        t_dense = timed(lambda fn=fn, kw=kw: extract_surface(fn, bounds, res, None, **kw), device, 1)
        t_c2f = timed(lambda fn=fn, kw=kw: extract_surface(fn, bounds, res, coarse, **kw), device, 1)
        n_eval = evaluate_grid(fn, bounds, res, coarse, level=0.0, device=device).num_evaluated
        rows.append(
            (
                f"extract {res}^3 ({name})",
                f"c2f {t_c2f:.2f} s vs dense {t_dense:.2f} s",
                f"speedup {t_dense / t_c2f:.1f}x, {n_eval / res**3:.1%} points evaluated (coarse {coarse})",
            )
        )

    width = [max(len(r[i]) for r in rows) for i in range(3)]
    for r in rows:
        print("  ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


if __name__ == "__main__":
    main()
