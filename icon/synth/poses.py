"""Random body shapes and plausible poses for synthetic people, and the fit-error perturbation of their parameters.

Poses are drawn around a small library of everyday postures (standing, walking, arms out, arms bent, arms crossed,
slight crouch), jittered per joint and clamped to approximate joint limits. Everything is numpy + a seeded
``numpy.random.Generator`` so a sample is reproducible from its seed.
"""

from __future__ import annotations

import numpy as np
from scipy.spatial.transform import Rotation

from body.params import BodyParams

__all__ = ["POSE_FAMILIES", "perturb_params", "sample_body_params", "sample_body_pose"]

POSE_FAMILIES: tuple[str, ...] = ("standing", "walking", "arms_out", "arms_bent", "arms_crossed", "crouch")

# SMPL joint indices (see body.model.SMPL_JOINT_NAMES).
_L_HIP, _R_HIP, _SPINE1, _L_KNEE, _R_KNEE, _SPINE2, _L_ANKLE, _R_ANKLE, _SPINE3 = 1, 2, 3, 4, 5, 6, 7, 8, 9
_L_FOOT, _R_FOOT, _NECK, _L_COLLAR, _R_COLLAR, _HEAD = 10, 11, 12, 13, 14, 15
_L_SHOULDER, _R_SHOULDER, _L_ELBOW, _R_ELBOW, _L_WRIST, _R_WRIST, _L_HAND, _R_HAND = 16, 17, 18, 19, 20, 21, 22, 23

# Relative jitter per joint (multiplies the configured pose noise); limbs' roots vary most, hands/feet least.
_JITTER = np.ones(24)
_JITTER[[_SPINE1, _SPINE2, _SPINE3]] = 0.5
_JITTER[[_NECK, _HEAD]] = 0.8
_JITTER[[_L_COLLAR, _R_COLLAR]] = 0.4
_JITTER[[_L_FOOT, _R_FOOT, _L_HAND, _R_HAND]] = 0.5
_JITTER[[_L_KNEE, _R_KNEE, _L_ELBOW, _R_ELBOW]] = 0.7


def _limits() -> np.ndarray:
    """(24, 3, 2) approximate per-axis limits (radians) of each joint's local axis-angle, SMPL rest frames."""
    lim = np.zeros((24, 3, 2))
    lim[:, :, 0], lim[:, :, 1] = -np.pi, np.pi  # root and unlisted joints: free
    for j, sign in ((_L_HIP, 1), (_R_HIP, -1)):
        lim[j] = [[-2.0, 0.6], [-0.8, 0.8], sorted((sign * -0.3, sign * 1.0))]
    for j in (_L_KNEE, _R_KNEE):
        lim[j] = [[0.0, 2.4], [-0.1, 0.1], [-0.1, 0.1]]
    for j in (_L_ANKLE, _R_ANKLE):
        lim[j] = [[-0.6, 0.7], [-0.3, 0.3], [-0.3, 0.3]]
    for j in (_L_FOOT, _R_FOOT, _L_HAND, _R_HAND):
        lim[j] = [[-0.3, 0.3]] * 3
    for j in (_SPINE1, _SPINE2, _SPINE3):
        lim[j] = [[-0.3, 0.6], [-0.5, 0.5], [-0.35, 0.35]]
    lim[_NECK] = [[-0.5, 0.6], [-0.7, 0.7], [-0.4, 0.4]]
    lim[_HEAD] = [[-0.4, 0.5], [-0.6, 0.6], [-0.3, 0.3]]
    for j in (_L_COLLAR, _R_COLLAR):
        lim[j] = [[-0.3, 0.3]] * 3
    for j, sign in ((_L_ELBOW, 1), (_R_ELBOW, -1)):
        lim[j] = [[-0.3, 0.3], sorted((0.0, -sign * 2.6)), [-0.3, 0.3]]
    for j in (_L_WRIST, _R_WRIST):
        lim[j] = [[-0.7, 0.7], [-0.5, 0.5], [-0.9, 0.9]]
    return lim


_LIMITS = _limits()


def _rotvec(*rotations: Rotation) -> np.ndarray:
    """Axis-angle of the product of rotations (leftmost applied last)."""
    total = Rotation.identity()
    for r in rotations:
        total = total * r
    return total.as_rotvec()


def _arm(pose: np.ndarray, side: int, down: float, forward: float, twist: float, elbow: float) -> None:
    """Pose one arm: twist about its own axis, lower it by ``down``, swing it forward, bend the elbow forward."""
    shoulder, elbow_j = (_L_SHOULDER, _L_ELBOW) if side > 0 else (_R_SHOULDER, _R_ELBOW)
    pose[shoulder] = _rotvec(
        Rotation.from_euler("x", -forward),  # hanging arm (-y) towards +z
        Rotation.from_euler("z", -side * down),  # the arm at +/-x towards -y
        Rotation.from_euler("x", twist),  # about the arm's own axis (mirror-symmetric: same sign)
    )
    pose[elbow_j] = [0.0, -side * elbow, 0.0]  # forearm towards +z for a hanging arm


def _leg(pose: np.ndarray, side: int, flex: float, abduct: float, knee: float) -> None:
    """Pose one leg: thigh forward by ``flex`` and sideways by ``abduct``, shin back by ``knee``."""
    hip, knee_j, ankle = (_L_HIP, _L_KNEE, _L_ANKLE) if side > 0 else (_R_HIP, _R_KNEE, _R_ANKLE)
    pose[hip] = _rotvec(Rotation.from_euler("z", side * abduct), Rotation.from_euler("x", -flex))
    pose[knee_j] = [knee, 0.0, 0.0]
    pose[ankle] = [-0.5 * max(knee - flex, 0.0), 0.0, 0.0]  # keep the foot roughly level


def sample_body_pose(rng: np.random.Generator, family: str | None = None, noise: float = 0.08) -> np.ndarray:
    """A plausible body pose around one of ``POSE_FAMILIES``.

    Args:
        rng: Seeded generator.
        family: One of POSE_FAMILIES, or None to draw one uniformly.
        noise: Standard deviation (radians) of the per-joint jitter added to the family's pose.

    Returns:
        (69,) float32 axis-angle body pose (joints 1..23).
    """
    if family is None:
        family = POSE_FAMILIES[int(rng.integers(len(POSE_FAMILIES)))]
    if family not in POSE_FAMILIES:
        raise ValueError(f"pose family must be one of {POSE_FAMILIES}, got {family!r}")
    u = rng.uniform
    pose = np.zeros((24, 3))
    legs = [(s, u(-0.05, 0.12), u(0.0, 0.12), u(0.0, 0.15)) for s in (1, -1)]
    arms = [(s, u(1.1, 1.35), u(-0.15, 0.25), u(-0.2, 0.3), u(0.05, 0.45)) for s in (1, -1)]
    if family == "walking":
        step = u(0.25, 0.55)
        lead = 1 if rng.random() < 0.5 else -1
        legs = [(lead, step, u(0.0, 0.08), u(0.05, 0.25)), (-lead, -0.6 * step, u(0.0, 0.08), u(0.3, 0.8))]
        arms = [(s, u(1.15, 1.35), -s * lead * 0.7 * step, u(-0.2, 0.2), u(0.2, 0.7)) for s in (1, -1)]
    elif family == "arms_out":
        arms = [(s, u(-0.1, 0.7), u(-0.2, 0.5), u(-0.3, 0.3), u(0.0, 0.6)) for s in (1, -1)]
        legs = [(s, u(-0.05, 0.1), u(0.0, 0.25), u(0.0, 0.1)) for s in (1, -1)]
    elif family == "arms_bent":
        arms = [(s, u(0.8, 1.35), u(-0.1, 0.6), u(-0.4, 0.4), u(1.0, 2.1)) for s in (1, -1)]
    elif family == "arms_crossed":
        arms = [(s, u(1.05, 1.25), u(0.35, 0.6), u(1.1, 1.4), u(1.7, 2.1)) for s in (1, -1)]
    elif family == "crouch":
        flex = u(0.3, 0.9)
        legs = [(s, flex + u(-0.1, 0.1), u(0.05, 0.25), flex * u(1.2, 1.7)) for s in (1, -1)]
        pose[_SPINE1] = [u(0.05, 0.3), 0.0, 0.0]
        pose[_SPINE2] = [u(0.0, 0.15), 0.0, 0.0]
        if rng.random() < 0.5:
            arms = [(s, u(0.9, 1.3), u(0.2, 0.8), u(-0.2, 0.3), u(0.5, 1.5)) for s in (1, -1)]
    for leg in legs:
        _leg(pose, *leg)
    for arm in arms:
        _arm(pose, *arm)
    pose[_L_COLLAR] = [0.0, 0.0, u(-0.15, 0.05)]
    pose[_R_COLLAR] = [0.0, 0.0, -pose[_L_COLLAR][2]]
    pose = pose + rng.normal(0.0, noise, size=(24, 3)) * _JITTER[:, None]
    pose = np.clip(pose, _LIMITS[..., 0], _LIMITS[..., 1])
    return pose[1:].reshape(69).astype(np.float32)


def sample_body_params(
    rng: np.random.Generator,
    beta_clip: float = 2.5,
    pose_noise: float = 0.08,
    max_tilt: float = 0.1,
    num_betas: int = 10,
) -> tuple[BodyParams, str]:
    """Shape from N(0, 1) clipped to +-beta_clip, a pose, a full turn about the vertical axis plus a small tilt.

    Args:
        rng: Seeded generator.
        beta_clip: Betas are clipped to [-beta_clip, beta_clip].
        pose_noise: Per-joint jitter (radians), see ``sample_body_pose``.
        max_tilt: Largest tilt (radians) of the vertical axis, drawn uniformly per axis in [-max_tilt, max_tilt].
        num_betas: Number of shape coefficients.

    Returns:
        (one body's parameters (numpy float32, B = 1) with zero translation, pose family name).
    """
    family = POSE_FAMILIES[int(rng.integers(len(POSE_FAMILIES)))]
    betas = np.clip(rng.normal(0.0, 1.0, num_betas), -beta_clip, beta_clip).astype(np.float32)
    body_pose = sample_body_pose(rng, family, pose_noise)
    yaw = rng.uniform(0.0, 2.0 * np.pi)
    tilt_x, tilt_z = rng.uniform(-max_tilt, max_tilt, 2)
    orient = _rotvec(Rotation.from_euler("x", tilt_x), Rotation.from_euler("z", tilt_z), Rotation.from_euler("y", yaw))
    params = BodyParams(betas[None], orient.astype(np.float32)[None], body_pose[None], np.zeros((1, 3), np.float32))
    return params, family


def perturb_params(
    params: BodyParams,
    rng: np.random.Generator,
    betas_sigma: float,
    pose_sigma: float,
    orient_sigma: float,
    transl_sigma: float,
) -> BodyParams:
    """Simulate a body-fit error: Gaussian noise on betas and joint rotations, a small root rotation and a shift.

    Args:
        params: Exact parameters of one body (B = 1).
        rng: Seeded generator.
        betas_sigma: Std of the noise added to each beta.
        pose_sigma: Std (radians) of the noise added to each body-pose axis-angle component.
        orient_sigma: Std (radians) per axis of a random rotation composed with the root rotation.
        transl_sigma: Std (metres) of the noise added to each translation component.

    Returns:
        New BodyParams (numpy float32, B = 1).
    """
    if len(params) != 1:
        raise ValueError(f"perturb_params perturbs one body (B = 1), got {len(params)}")
    p = params.numpy()
    betas = (p.betas[0] + rng.normal(0.0, betas_sigma, p.betas[0].shape)).astype(np.float32)
    body_pose = (p.body_pose[0] + rng.normal(0.0, pose_sigma, p.body_pose[0].shape)).astype(np.float32)
    delta = Rotation.from_rotvec(rng.normal(0.0, orient_sigma, 3))
    orient = (delta * Rotation.from_rotvec(p.global_orient[0])).as_rotvec().astype(np.float32)
    transl = (p.transl[0] + rng.normal(0.0, transl_sigma, 3)).astype(np.float32)
    return BodyParams(betas[None], orient[None], body_pose[None], transl[None])
