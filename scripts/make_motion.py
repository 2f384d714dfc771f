"""Write the bundled motion `assets/motions/wave.npz`: 3 s of a right-hand wave at 30 fps, from hand-set keyframes.

The keyframes (below) are authored here, not captured: at 5 fps the right arm rises, the forearm waves four times
and the arm comes down, with a small weight shift; `body.motion.resample_motion` slerps them to 30 fps. The file is
a plain SMPL npz (`poses` (N, 72), `trans`, `fps`, `up_axis='y'`) readable by `body.motion.load_motion`.

Usage: python scripts/make_motion.py [--out assets/motions/wave.npz] [--fps 30]
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from body.motion import Motion, resample_motion, save_motion

KEY_FPS = 5.0
# (body joint index j in 1..23, axis) -> the body_pose column 3 * (j - 1) + axis
L_SHOULDER_Z, R_SHOULDER_Z = 3 * 15 + 2, 3 * 16 + 2
R_ELBOW_Z, R_ELBOW_Y = 3 * 18 + 2, 3 * 18 + 1
SPINE3_Z, L_HIP_Z, R_HIP_Z = 3 * 8 + 2, 3 * 0 + 2, 3 * 1 + 2


def wave_keyframes() -> Motion:
    """16 keyframes at 5 fps (3 s): rest, raise the right arm, wave the forearm 4 times, lower it."""
    n = 16
    pose = np.zeros((n, 69), np.float32)
    pose[:, L_SHOULDER_Z] = -1.15  # left arm down at the side (negative z lowers the left arm)
    # right upper arm: down (+1.15) -> a little above horizontal (-0.3) -> down
    shoulder = [1.15, 0.5, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, -0.3, 0.3, 0.9, 1.15]
    # right forearm: straight -> bent up, swinging +-0.35 rad about the bent position (the wave)
    elbow = [0.0, -0.6, -1.2, -0.85, -1.55, -0.85, -1.55, -0.85, -1.55, -0.85, -1.55, -1.2, -1.0, -0.5, -0.1, 0.0]
    pose[:, R_SHOULDER_Z] = shoulder
    pose[:, R_ELBOW_Z] = elbow
    pose[:, R_ELBOW_Y] = -0.2 * np.sin(np.linspace(0, np.pi, n))  # forearm turned slightly forward while raised
    sway = 0.06 * np.sin(np.linspace(0, 2 * np.pi, n))
    pose[:, SPINE3_Z] = sway  # upper body leans with the wave
    pose[:, L_HIP_Z] = -sway * 0.5  # weight shift
    pose[:, R_HIP_Z] = -sway * 0.5
    orient = np.zeros((n, 3), np.float32)
    transl = np.zeros((n, 3), np.float32)
    transl[:, 0] = 0.02 * np.sin(np.linspace(0, 2 * np.pi, n))
    return Motion(fps=KEY_FPS, global_orient=orient, body_pose=pose, transl=transl)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("assets/motions/wave.npz"))
    parser.add_argument("--fps", type=float, default=30.0)
    args = parser.parse_args()
    motion = resample_motion(wave_keyframes(), args.fps)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    path = save_motion(motion, args.out)
    print(f"wrote {path} ({motion.num_frames} frames at {motion.fps:g} fps, {path.stat().st_size / 1e3:.1f} kB)")


if __name__ == "__main__":
    main()
