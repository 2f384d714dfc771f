"""Blender round trip of the rigged glTF: the real client imports what ``avatarize repose`` writes.

Writes ``avatar.glb`` of an avatar with a motion (``avatar.export.save_gltf``), imports it headless with Blender's
Python module (``bpy``, extra ``avatarize[blender]``) and reports: bones, the spread of per-vertex weight sums, the
action's name and frame range against the motion, how far posing moves the mesh, the distance between Blender's
skinned vertices and ``repose_fast`` (top-4 weights) at a few frames, a Workbench render of one frame (PNG), and an
FBX export re-imported. Writes the numbers as JSON next to the PNG and FBX.

Usage: python bench/blender_roundtrip.py [--avatar out/demo/demo.avatar] [--motion assets/motions/wave.npz]
       [--frame 45] [--out out/blender_roundtrip]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

from avatar.export import save_gltf, top_k_avatar
from avatar.model import load_avatar
from avatar.repose import repose_fast
from body import Motion, load_motion
from flows import blender

ROOT = Path(__file__).resolve().parent.parent


def blender_vs_ours(avatar, motion: Motion, frames: list[int]) -> dict[int, tuple[float, float]]:
    """Per frame: (mean, max) distance in metres between Blender's skinned vertices (current scene) and
    ``repose_fast`` of the avatar with the same top-4 weights, matched through the bind-pose positions."""
    from scipy.spatial import cKDTree

    rest = blender.rest_vertices()
    dist, index = cKDTree(avatar.vertices.numpy()).query(rest)
    if dist.max() > 1e-4:
        raise AssertionError(f"Blender's bind-pose mesh differs from the avatar's by up to {dist.max():.2e} m")
    av4 = top_k_avatar(avatar, 4)
    out = {}
    for k in frames:
        one = Motion(fps=motion.fps, global_orient=motion.global_orient[k : k + 1],
                     body_pose=motion.body_pose[k : k + 1], transl=motion.transl[k : k + 1])  # fmt: skip
        ours = repose_fast(av4, one)[0].numpy()[index]
        err = np.linalg.norm(blender.skinned_vertices(k) - ours, axis=-1)
        out[k] = (float(err.mean()), float(err.max()))
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--avatar", type=Path, default=ROOT / "out" / "demo" / "demo.avatar")
    ap.add_argument("--motion", type=Path, default=ROOT / "assets" / "motions" / "wave.npz")
    ap.add_argument("--frame", type=int, default=None, help="frame to render (default: the middle one)")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "blender_roundtrip")
    args = ap.parse_args()
    if not blender.bpy_available():
        sys.exit("bpy is not installed: pip install 'avatarize[blender]' (bpy==5.0.1, Python 3.11)")
    if not (args.avatar / "avatar.json").is_file():
        sys.exit(f"{args.avatar}: no avatar there; run `make demo` first or pass --avatar")
    avatar = load_avatar(args.avatar)
    motion = load_motion(args.motion)
    frame = motion.num_frames // 2 if args.frame is None else args.frame
    glb = save_gltf(args.out / "avatar.glb", avatar, motion, name=args.avatar.stem, animation_name=args.motion.stem)

    t0 = time.perf_counter()
    imported = blender.import_glb(glb)
    t_import = time.perf_counter() - t0
    sums = blender.vertex_weight_sums()
    moved = np.linalg.norm(blender.skinned_vertices(frame) - blender.rest_vertices(), axis=-1)
    errors = blender_vs_ours(avatar, motion, [0, frame, motion.num_frames - 1])
    t0 = time.perf_counter()
    png = blender.render_workbench(args.out / f"{args.motion.stem}_frame{frame:03d}.png", frame)
    t_render = time.perf_counter() - t0
    fbx = blender.glb_to_fbx(glb, args.out / "avatar.fbx")
    back = blender.import_fbx(fbx)

    rows = [
        ("bones", imported.n_bones, "24"),
        ("vertices (Blender / avatar)", f"{imported.n_vertices} / {len(avatar.vertices)}", "equal"),
        ("weight sum min..max", f"{sums.min():.6f}..{sums.max():.6f}", "1"),
        ("action", imported.action, args.motion.stem),
        ("action frames", imported.action_range, (0.0, float(motion.num_frames - 1))),
        ("scene frames @ fps", f"{imported.scene_range} @ {imported.fps:g}", f"(0, {motion.num_frames - 1}) @ "
                                                                              f"{motion.fps:g}"),
        (f"vertex moved by frame {frame} (max, m)", f"{moved.max():.3f}", "> 0"),
        *[(f"Blender vs repose_fast, frame {k} (mean / max µm)", f"{1e6 * m:.2f} / {1e6 * x:.2f}", "~0")
          for k, (m, x) in errors.items()],
        ("import / render s", f"{t_import:.2f} / {t_render:.2f}", ""),
        ("FBX re-import: bones, vertices, action", f"{back.n_bones}, {back.n_vertices}, {back.action}", ""),
    ]  # fmt: skip
    width = max(len(r[0]) for r in rows)
    print(f"{'check':<{width}} | value | expected")
    for name, value, expected in rows:
        print(f"{name:<{width}} | {value} | {expected}")
    print(f"render: {png}\nfbx: {fbx}")
    result = {"glb": str(glb), "png": str(png), "fbx": str(fbx), "import": imported.__dict__,
              "weight_sum": [float(sums.min()), float(sums.max())], "moved_max_m": float(moved.max()),
              "blender_vs_repose_fast_m": {str(k): v for k, v in errors.items()}, "fbx_import": back.__dict__,
              "seconds": {"import": t_import, "render": t_render}}  # fmt: skip
    (args.out / "blender_roundtrip.json").write_text(json.dumps(result, indent=1, default=str))


if __name__ == "__main__":
    main()
