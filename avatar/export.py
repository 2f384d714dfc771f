"""File exports of an avatar: posed meshes (PLY/OBJ via trimesh) and a rigged, animated binary glTF (.glb).

The glTF holds the canonical mesh bound to SMPL's 24-joint skeleton in the canonical pose (inverse bind matrices),
the top-4 skinning weights per vertex, and optionally a motion as an animation (per-joint rotations, root
translation), so any glTF viewer or Blender plays it back with linear blend skinning.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from avatar.lbs import NUM_JOINTS, local_rotations
from avatar.model import Avatar
from body.model import SMPL_JOINT_NAMES, SMPL_PARENTS
from body.motion import Motion
from body.rotations import matrix_to_quaternion

__all__ = ["save_gltf", "save_mesh", "save_posed_meshes", "top_k_weights"]


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def save_mesh(path: str | Path, vertices, faces, colours=None) -> Path:
    """Write one mesh (vertices (V, 3), faces (F, 3), optional colours (V, 3) RGB in [0, 1]); the format follows the
    suffix (.ply, .obj, .glb, ...)."""
    import trimesh

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rgb = None if colours is None else (np.clip(_np(colours), 0, 1) * 255 + 0.5).astype(np.uint8)
    trimesh.Trimesh(_np(vertices), _np(faces), vertex_colors=rgb, process=False).export(path)
    return path


def save_posed_meshes(
    directory: str | Path, vertices, faces, fmt: str = "ply", stem: str = "frame", colours=None
) -> list[Path]:
    """Write posed meshes ``<directory>/<stem>_<i:06d>.<fmt>``.

    Args:
        directory: output folder (created).
        vertices: (N, V, 3) posed vertices (e.g. ``repose_fast``), or a list of (V_i, 3) arrays.
        faces: (F, 3) shared faces, or a list of per-mesh faces.
        fmt: "ply" or "obj".
        colours: optional (V, 3) RGB in [0, 1] shared by every mesh (one topology).
    """
    if fmt not in ("ply", "obj"):
        raise ValueError(f"fmt must be 'ply' or 'obj', got {fmt!r}")
    directory = Path(directory)
    faces_list = faces if isinstance(faces, list | tuple) else [faces] * len(vertices)
    if len(faces_list) != len(vertices):
        raise ValueError(f"got {len(vertices)} vertex arrays but {len(faces_list)} face arrays")
    pairs = enumerate(zip(vertices, faces_list, strict=True))
    return [save_mesh(directory / f"{stem}_{i:06d}.{fmt}", v, f, colours) for i, (v, f) in pairs]


def top_k_weights(weights: torch.Tensor, k: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    """The k largest skinning weights per vertex, renormalised to sum to 1.

    Args:
        weights: (V, J) weights.
        k: influences kept per vertex.

    Returns:
        joints (V, k) int64 and weights (V, k) float32, sorted by decreasing weight.
    """
    if weights.ndim != 2:
        raise ValueError(f"weights must be (V, J), got {tuple(weights.shape)}")
    w, j = torch.topk(weights.float(), k, dim=-1)
    w = w.clamp(min=0)
    w = w / w.sum(-1, keepdim=True).clamp(min=1e-12)
    return j, w


def _quat_xyzw(rot: torch.Tensor) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> glTF quaternions (..., 4) as (x, y, z, w)."""
    q = matrix_to_quaternion(rot)  # (w, x, y, z)
    return _np(torch.cat([q[..., 1:], q[..., :1]], dim=-1)).astype(np.float32)


def save_gltf(path: str | Path, avatar: Avatar, motion: Motion | None = None, name: str = "avatar") -> Path:
    """Write the rigged canonical mesh (and ``motion`` as its animation) as a binary glTF 2.0 file.

    Joint nodes carry the canonical pose as their rest transform (local translation = bone offset, rotation = the
    canonical local rotation); inverse bind matrices are the inverse canonical global joint transforms, so the
    file's rest pose reproduces the canonical mesh and the animation reproduces ``repose_fast`` with top-4 weights.

    Args:
        path: output ``.glb`` path.
        avatar: trained avatar.
        motion: optional motion to include as animation "motion" (LINEAR interpolation at ``motion.fps``).
        name: mesh / scene name.
    """
    import pygltflib as gl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts = _np(avatar.vertices).astype(np.float32)
    faces = _np(avatar.faces).astype(np.uint32)
    from geometry.queries import vertex_normals

    normals = _np(vertex_normals(avatar.vertices[None].float(), avatar.faces.long())[0]).astype(np.float32)
    joints_k, weights_k = top_k_weights(avatar.skin_weights.cpu(), 4)
    joints_k = _np(joints_k).astype(np.uint16)
    weights_k = _np(weights_k).astype(np.float32)
    rest = avatar.rest_joints.cpu().float()
    canonical_pose = avatar.canonical_pose.cpu().float()[None]
    zero = torch.zeros(1, 3)
    m_canon = avatar.canonical_transforms.cpu().float()
    ibm = _np(torch.linalg.inv(m_canon)).astype(np.float32)  # (24, 4, 4) row-major
    ibm_col = np.ascontiguousarray(ibm.transpose(0, 2, 1)).reshape(NUM_JOINTS, 16)  # glTF is column-major
    offsets = rest.clone()
    offsets[1:] = rest[1:] - rest[list(SMPL_PARENTS[1:])]
    rest_quats = _quat_xyzw(local_rotations(zero, canonical_pose)[0])

    blob = bytearray()
    views: list[gl.BufferView] = []
    accessors: list[gl.Accessor] = []

    def add(array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False) -> int:
        data = np.ascontiguousarray(array).tobytes()
        while len(blob) % 4:
            blob.append(0)
        views.append(gl.BufferView(buffer=0, byteOffset=len(blob), byteLength=len(data), target=target))
        blob.extend(data)
        count = array.shape[0]
        acc = gl.Accessor(bufferView=len(views) - 1, componentType=component, count=count, type=kind)
        if minmax:
            flat = array.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(0)]
            acc.max = [float(x) for x in flat.max(0)]
        accessors.append(acc)
        return len(accessors) - 1

    a_pos = add(verts, gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER, minmax=True)
    a_nrm = add(normals, gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER)
    a_jnt = add(joints_k, gl.UNSIGNED_SHORT, gl.VEC4, gl.ARRAY_BUFFER)
    a_wgt = add(weights_k, gl.FLOAT, gl.VEC4, gl.ARRAY_BUFFER)
    attributes = dict(POSITION=a_pos, NORMAL=a_nrm, JOINTS_0=a_jnt, WEIGHTS_0=a_wgt)
    if avatar.has_colour:  # glTF vertex colours are linear; the fused colours are sRGB
        attributes["COLOR_0"] = add(_np(avatar.vertex_colours).clip(0, 1).astype(np.float32) ** 2.2, gl.FLOAT, gl.VEC3,
                                    gl.ARRAY_BUFFER)  # fmt: skip
    a_idx = add(faces.reshape(-1), gl.UNSIGNED_INT, gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER, minmax=True)
    a_ibm = add(ibm_col, gl.FLOAT, gl.MAT4)

    nodes = []
    for j in range(NUM_JOINTS):
        children = [c for c in range(NUM_JOINTS) if SMPL_PARENTS[c] == j]
        nodes.append(gl.Node(name=SMPL_JOINT_NAMES[j], translation=[float(x) for x in offsets[j]],
                             rotation=[float(x) for x in rest_quats[j]], children=children or None))  # fmt: skip
    mesh_node = len(nodes)
    nodes.append(gl.Node(name=name, mesh=0, skin=0))
    primitive = gl.Primitive(
        attributes=gl.Attributes(**attributes), indices=a_idx,
        mode=gl.TRIANGLES,
    )
    gltf = gl.GLTF2(
        asset=gl.Asset(generator="avatarize", version="2.0"),
        scene=0,
        scenes=[gl.Scene(name=name, nodes=[0, mesh_node])],
        nodes=nodes,
        meshes=[gl.Mesh(name=name, primitives=[primitive])],
        skins=[gl.Skin(name=f"{name}_skeleton", joints=list(range(NUM_JOINTS)), skeleton=0,
                       inverseBindMatrices=a_ibm)],  # fmt: skip
    )
    if motion is not None:
        go = torch.as_tensor(motion.global_orient, dtype=torch.float32)
        bp = torch.as_tensor(motion.body_pose, dtype=torch.float32)
        quats = _quat_xyzw(local_rotations(go, bp))  # (N, 24, 4)
        for i in range(1, len(quats)):  # keep consecutive keys in one hemisphere for linear interpolation
            flip = (quats[i] * quats[i - 1]).sum(-1) < 0
            quats[i, flip] *= -1
        times = (np.arange(motion.num_frames, dtype=np.float32) / np.float32(motion.fps)).astype(np.float32)
        a_t = add(times, gl.FLOAT, gl.SCALAR, minmax=True)
        samplers, channels = [], []
        for j in range(NUM_JOINTS):
            samplers.append(gl.AnimationSampler(input=a_t, output=add(quats[:, j], gl.FLOAT, gl.VEC4),
                                                interpolation=gl.LINEAR))  # fmt: skip
            channels.append(gl.AnimationChannel(sampler=j, target=gl.AnimationChannelTarget(node=j, path="rotation")))
        root_t = (_np(rest[0])[None] + np.asarray(motion.transl, np.float32)).astype(np.float32)
        samplers.append(gl.AnimationSampler(input=a_t, output=add(root_t, gl.FLOAT, gl.VEC3), interpolation=gl.LINEAR))
        channels.append(gl.AnimationChannel(sampler=len(samplers) - 1,
                                            target=gl.AnimationChannelTarget(node=0, path="translation")))
        gltf.animations = [gl.Animation(name="motion", samplers=samplers, channels=channels)]
    gltf.accessors = accessors
    gltf.bufferViews = views
    gltf.buffers = [gl.Buffer(byteLength=len(blob))]
    gltf.set_binary_blob(bytes(blob))
    gltf.save_binary(str(path))
    return path
