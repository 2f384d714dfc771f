"""The bundled motion body/data/motions/wave.npz reads back and waves the right hand."""

from __future__ import annotations

import numpy as np
import torch

from body import load_motion
from flows.bundled import default_motion_path

WAVE = default_motion_path()


def test_wave_motion(body_model):
    motion = load_motion(WAVE)
    assert motion.fps == 30.0 and 60 <= motion.num_frames <= 120
    with torch.no_grad():
        joints = body_model(global_orient=torch.as_tensor(motion.global_orient),
                            body_pose=torch.as_tensor(motion.body_pose),
                            transl=torch.as_tensor(motion.transl)).joints.numpy()  # fmt: skip
    mid = motion.num_frames // 2
    r_wrist, r_shoulder, l_wrist, l_shoulder = 21, 17, 20, 16
    assert joints[mid, r_wrist, 1] > joints[mid, r_shoulder, 1] + 0.1  # right hand up
    assert joints[mid, l_wrist, 1] < joints[mid, l_shoulder, 1] - 0.3  # left hand down
    assert joints[0, r_wrist, 1] < joints[0, r_shoulder, 1] - 0.3  # starts and ends at rest
    # the wave: the right wrist swings sideways several times
    x = joints[:, r_wrist, 0]
    swings = np.sum(np.diff(np.sign(np.diff(x))) != 0)
    assert swings >= 6
