"""Write the fixed quality fixtures of the test suite: `tests/data/quality_frames.npz`.

Eight held-out synthetic clothed people from `icon.synth` (seeds 1,000,900-1,000,907: in the held-out range, disjoint
from the training seeds 0-959 of both shipped nets, the bench seeds 1,000,000-1,000,127 and the validation seeds
1,000,500-1,000,523 named in weights/README.md), at 128 px (the normal net's size), with their ground-truth front/back
normals, the perturbed fit's body normals, the exact and perturbed body parameters, the camera and the ground-truth
clothed mesh. Stored compactly: images uint8, masks bit-packed, normal maps float16, meshes float32 vertices + uint16
faces. Deterministic: `tests/icon/test_quality.py` regenerates one frame and compares.

Usage: python scripts/make_quality_fixtures.py [--out tests/data/quality_frames.npz]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from body import BodyModel
from icon.synth import HELDOUT_SEED_START, SynthConfig, make_sample

SEEDS = [HELDOUT_SEED_START + 900 + i for i in range(8)]
CONFIG = SynthConfig(image_size=128, grid_resolution=96, num_points=0)
PARAMS = ("betas", "global_orient", "body_pose", "transl", "fit_betas", "fit_global_orient", "fit_body_pose",
          "fit_transl", "camera")  # fmt: skip


def param_value(sample, name: str) -> np.ndarray:
    """One of PARAMS from a `SynthSample` without the batch axis: ``fit_x`` reads ``sample.fit_body.x``."""
    if name == "camera":
        return sample.camera
    if name.startswith("fit_"):
        return getattr(sample.fit_body, name[4:])[0]
    return getattr(sample.body, name)[0]


def pack_sample(sample) -> dict[str, np.ndarray]:
    """One `SynthSample` as compact arrays (suffix-free names; the caller prefixes the frame index)."""
    if len(sample.vertices) >= 2**16:
        raise ValueError(f"seed {sample.seed}: {len(sample.vertices)} vertices do not fit uint16 faces")
    out = {
        "rgb": sample.rgb.astype(np.uint8),
        "mask": np.packbits(sample.mask),
        "vertices": sample.vertices.astype(np.float32),
        "faces": sample.faces.astype(np.uint16),
    }
    for name in ("normal_front", "normal_back", "body_normal_front", "body_normal_back"):
        out[name] = getattr(sample, name).astype(np.float16)
    for name in PARAMS:
        out[name] = np.asarray(param_value(sample, name), np.float32)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    default = Path(__file__).resolve().parents[1] / "tests" / "data" / "quality_frames.npz"
    parser.add_argument("--out", type=Path, default=default)
    args = parser.parse_args()
    model = BodyModel()
    arrays: dict[str, np.ndarray] = {
        "seeds": np.asarray(SEEDS, np.int64),
        "synth_config": np.frombuffer(CONFIG.model_dump_json().encode(), np.uint8),
    }
    for i, seed in enumerate(SEEDS):
        s = make_sample(seed, model, CONFIG)
        print(f"seed {seed}: {s.garments} {s.pose_family}, {len(s.vertices)} vertices, mask {s.mask.mean():.3f}")
        arrays.update({f"{i}/{k}": v for k, v in pack_sample(s).items()})
        arrays[f"{i}/garments"] = np.frombuffer(json.dumps(s.garments).encode(), np.uint8)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
