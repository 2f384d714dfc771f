"""File exports of an avatar and of meshes: PLY/OBJ (via trimesh) and binary glTF 2.0 (.glb, own writer).

Units are metres and the frame is Y-up (SMPL's, +Z toward the camera of the canonical view), which is also glTF's
convention, so files open upright in Blender, three.js and model-viewer without a transform. Vertex colours are
optional everywhere (PLY ``red/green/blue/alpha`` properties, glTF ``COLOR_0``).

The rigged glTF holds the canonical mesh bound to SMPL's 24-joint skeleton in the canonical pose (inverse bind
matrices), the top-4 skinning weights per vertex, a PBR material, and optionally a motion as an animation (per-joint
rotations, root translation) named after the motion, so any glTF viewer or Blender plays it back with linear blend
skinning. Every glb written here passes the Khronos glTF validator with no error and no warning (tests).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import torch

from avatar.model import Avatar
from body.lbs import NUM_JOINTS, local_rotations
from body.model import SMPL_JOINT_NAMES, SMPL_PARENTS
from body.motion import Motion
from body.rotations import matrix_to_quaternion

__all__ = ["MATERIAL_COLOUR", "save_gltf", "save_mesh", "save_mesh_glb", "save_posed_meshes", "top_k_avatar",
           "top_k_weights"]

MATERIAL_COLOUR = (0.8, 0.78, 0.75, 1.0)
"""Base colour (linear RGBA) of the glTF material of a mesh without vertex colours: a light clay grey."""


def _np(x) -> np.ndarray:
    return x.detach().cpu().numpy() if isinstance(x, torch.Tensor) else np.asarray(x)


def _colours_u8(vertex_colors, n: int) -> np.ndarray | None:
    """Vertex colours (V, 3|4), uint8 or float in [0, 1], as (V, 4) uint8 RGBA; None stays None."""
    if vertex_colors is None:
        return None
    c = _np(vertex_colors)
    if c.ndim != 2 or c.shape[0] != n or c.shape[1] not in (3, 4):
        raise ValueError(f"vertex_colors must be ({n}, 3) or ({n}, 4), got {tuple(c.shape)}")
    if c.dtype != np.uint8:
        c = np.clip(np.round(c.astype(np.float64) * 255.0), 0, 255).astype(np.uint8)
    if c.shape[1] == 3:
        c = np.concatenate([c, np.full((n, 1), 255, np.uint8)], axis=1)
    return np.ascontiguousarray(c)


def save_mesh(path: str | Path, vertices, faces, vertex_colors=None) -> Path:
    """Write one mesh; the format follows the suffix (.ply, .obj via trimesh; .glb via :func:`save_mesh_glb`).

    Args:
        path: output file.
        vertices: (V, 3) float, metres, Y-up.
        faces: (F, 3) int.
        vertex_colors: optional (V, 3|4) uint8 or float in [0, 1] RGB(A), written as PLY colour properties or glTF
            ``COLOR_0``.
    """
    path = Path(path)
    if path.suffix.lower() == ".glb":
        return save_mesh_glb(path, vertices, faces, vertex_colors=vertex_colors)
    import trimesh

    path.parent.mkdir(parents=True, exist_ok=True)
    v = _np(vertices)
    colours = _colours_u8(vertex_colors, len(v))
    trimesh.Trimesh(v, _np(faces), vertex_colors=colours, process=False).export(path)
    return path


def save_posed_meshes(directory: str | Path, vertices, faces, fmt: str = "ply", stem: str = "frame",
                      vertex_colors=None) -> list[Path]:  # fmt: skip
    """Write posed meshes ``<directory>/<stem>_<i:06d>.<fmt>``.

    Args:
        directory: output folder (created).
        vertices: (N, V, 3) posed vertices (e.g. ``repose_fast``), or a list of (V_i, 3) arrays.
        faces: (F, 3) shared faces, or a list of per-mesh faces.
        fmt: "ply", "obj" or "glb".
        vertex_colors: optional (V, 3|4) colours shared by all meshes, or a list of per-mesh colours.
    """
    if fmt not in ("ply", "obj", "glb"):
        raise ValueError(f"fmt must be 'ply', 'obj' or 'glb', got {fmt!r}")
    directory = Path(directory)
    faces_list = faces if isinstance(faces, list | tuple) else [faces] * len(vertices)
    if len(faces_list) != len(vertices):
        raise ValueError(f"got {len(vertices)} vertex arrays but {len(faces_list)} face arrays")
    colours = vertex_colors if isinstance(vertex_colors, list | tuple) else [vertex_colors] * len(vertices)
    if len(colours) != len(vertices):
        raise ValueError(f"got {len(vertices)} vertex arrays but {len(colours)} colour arrays")
    return [save_mesh(directory / f"{stem}_{i:06d}.{fmt}", v, f, c)
            for i, (v, f, c) in enumerate(zip(vertices, faces_list, colours, strict=True))]  # fmt: skip


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


def top_k_avatar(avatar: Avatar, k: int = 4) -> Avatar:
    """A shallow copy of ``avatar`` whose skinning weights are its top-k weights (as the glTF carries them)."""
    j, w = top_k_weights(avatar.skin_weights, k)
    dense = torch.zeros_like(avatar.skin_weights).scatter_(1, j.to(avatar.device), w.to(avatar.skin_weights))
    return dataclasses.replace(avatar, skin_weights=dense)


def _quat_xyzw(rot: torch.Tensor) -> np.ndarray:
    """Rotation matrices (..., 3, 3) -> glTF quaternions (..., 4) as (x, y, z, w)."""
    q = matrix_to_quaternion(rot)  # (w, x, y, z)
    return _np(torch.cat([q[..., 1:], q[..., :1]], dim=-1)).astype(np.float32)




class _GlbBuilder:
    """Accumulates one binary buffer and its buffer views / accessors for a glTF 2.0 file."""

    def __init__(self) -> None:
        self.blob = bytearray()
        self.views: list = []
        self.accessors: list = []

    def add(self, array: np.ndarray, component: int, kind: str, target: int | None = None, minmax: bool = False,
            normalized: bool = False) -> int:  # fmt: skip
        """Append ``array`` (count first) as a tightly packed, 4-byte aligned view + accessor; return its index."""
        import pygltflib as gl

        data = np.ascontiguousarray(array).tobytes()
        while len(self.blob) % 4:
            self.blob.append(0)
        self.views.append(gl.BufferView(buffer=0, byteOffset=len(self.blob), byteLength=len(data), target=target))
        self.blob.extend(data)
        count = array.shape[0]
        acc = gl.Accessor(bufferView=len(self.views) - 1, componentType=component, count=count, type=kind,
                          normalized=True if normalized else None)  # fmt: skip
        if minmax:
            flat = array.reshape(count, -1)
            acc.min = [float(x) for x in flat.min(0)]
            acc.max = [float(x) for x in flat.max(0)]
        self.accessors.append(acc)
        return len(self.accessors) - 1

    def primitive(self, verts: np.ndarray, faces: np.ndarray, colours: np.ndarray | None, **skin_attributes: int):
        """A triangle primitive with positions, normals, optional COLOR_0 and material 0."""
        import pygltflib as gl

        normals = _vertex_normals_np(verts, faces)
        attributes = gl.Attributes(POSITION=self.add(verts, gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER, minmax=True),
                                   NORMAL=self.add(normals, gl.FLOAT, gl.VEC3, gl.ARRAY_BUFFER), **skin_attributes)
        if colours is not None:
            attributes.COLOR_0 = self.add(colours, gl.UNSIGNED_BYTE, gl.VEC4, gl.ARRAY_BUFFER, normalized=True)
        indices = self.add(faces.reshape(-1), gl.UNSIGNED_INT, gl.SCALAR, gl.ELEMENT_ARRAY_BUFFER, minmax=True)
        return gl.Primitive(attributes=attributes, indices=indices, material=0, mode=gl.TRIANGLES)

    def save(self, gltf, path: Path) -> Path:
        import pygltflib as gl

        gltf.accessors = self.accessors
        gltf.bufferViews = self.views
        gltf.buffers = [gl.Buffer(byteLength=len(self.blob))]
        gltf.set_binary_blob(bytes(self.blob))
        gltf.save_binary(str(path))
        return path


def _vertex_normals_np(verts: np.ndarray, faces: np.ndarray) -> np.ndarray:
    """Unit area-weighted vertex normals (V, 3) float32; vertices on no face get +Y (glTF needs unit normals)."""
    from geometry.queries import vertex_normals

    n = _np(vertex_normals(torch.from_numpy(verts)[None].float(), torch.from_numpy(faces.astype(np.int64)))[0])
    n = n.astype(np.float64)
    length = np.linalg.norm(n, axis=-1, keepdims=True)
    n = np.where(length > 1e-8, n / np.maximum(length, 1e-12), np.array([0.0, 1.0, 0.0]))
    return n.astype(np.float32)


def _material(name: str, has_colours: bool):
    """A rough, non-metallic PBR material; vertex colours (if any) multiply a white base colour."""
    import pygltflib as gl

    base = [1.0, 1.0, 1.0, 1.0] if has_colours else list(MATERIAL_COLOUR)
    return gl.Material(name=name, doubleSided=True,
                       pbrMetallicRoughness=gl.PbrMetallicRoughness(baseColorFactor=base, metallicFactor=0.0,
                                                                    roughnessFactor=0.8))  # fmt: skip


def save_mesh_glb(path: str | Path, vertices, faces, vertex_colors=None, name: str = "mesh") -> Path:
    """Write one static mesh as a binary glTF with normals, a material and optional vertex colours.

    Args:
        path: output ``.glb``.
        vertices: (V, 3) float, metres, Y-up.
        faces: (F, 3) int.
        vertex_colors: optional (V, 3|4) uint8 or float in [0, 1] RGB(A) (``COLOR_0``).
        name: mesh / node / scene name.
    """
    import pygltflib as gl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts = np.ascontiguousarray(_np(vertices), dtype=np.float32)
    faces_np = np.ascontiguousarray(_np(faces), dtype=np.uint32)
    if verts.ndim != 2 or verts.shape[1] != 3 or faces_np.ndim != 2 or faces_np.shape[1] != 3 or not len(faces_np):
        raise ValueError(f"save_mesh_glb({path}): need vertices (V, 3) and faces (F >= 1, 3), got "
                         f"{verts.shape} and {faces_np.shape}")  # fmt: skip
    colours = _colours_u8(vertex_colors, len(verts))
    b = _GlbBuilder()
    primitive = b.primitive(verts, faces_np, colours)
    gltf = gl.GLTF2(asset=gl.Asset(generator="avatarize", version="2.0"), scene=0,
                    scenes=[gl.Scene(name=name, nodes=[0])], nodes=[gl.Node(name=name, mesh=0)],
                    meshes=[gl.Mesh(name=name, primitives=[primitive])],
                    materials=[_material(f"{name}_material", colours is not None)])  # fmt: skip
    return b.save(gltf, path)


def save_gltf(path: str | Path, avatar: Avatar, motion: Motion | None = None, name: str = "avatar",
              animation_name: str = "motion", vertex_colors=None) -> Path:  # fmt: skip
    """Write the rigged canonical mesh (and ``motion`` as its animation) as a binary glTF 2.0 file.

    Joint nodes carry the canonical pose as their rest transform (local translation = bone offset, rotation = the
    canonical local rotation); inverse bind matrices are the inverse canonical global joint transforms, so the
    file's rest pose reproduces the canonical mesh and the animation reproduces ``repose_fast`` with top-4 weights.
    glTF has no frame range or frame rate: the scene's and the animation's ``extras`` hold ``frame_start``,
    ``frame_end`` (inclusive, 0-based) and ``fps``, which Blender imports as custom properties.

    Args:
        path: output ``.glb`` path.
        avatar: trained avatar.
        motion: optional motion to include as animation ``animation_name`` (LINEAR interpolation at ``motion.fps``).
        name: mesh / scene name.
        animation_name: name of the animation (Blender's action), e.g. the motion file's stem.
        vertex_colors: optional (V, 3|4) uint8 or float in [0, 1] colours of the canonical mesh (``COLOR_0``).
    """
    import pygltflib as gl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    verts = _np(avatar.vertices).astype(np.float32)
    faces = _np(avatar.faces).astype(np.uint32)
    colours = _colours_u8(vertex_colors, len(verts))
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

    b = _GlbBuilder()
    a_jnt = b.add(joints_k, gl.UNSIGNED_SHORT, gl.VEC4, gl.ARRAY_BUFFER)
    a_wgt = b.add(weights_k, gl.FLOAT, gl.VEC4, gl.ARRAY_BUFFER)
    primitive = b.primitive(verts, faces, colours, JOINTS_0=a_jnt, WEIGHTS_0=a_wgt)
    a_ibm = b.add(ibm_col, gl.FLOAT, gl.MAT4)

    nodes = []
    for j in range(NUM_JOINTS):
        children = [c for c in range(NUM_JOINTS) if SMPL_PARENTS[c] == j]
        nodes.append(gl.Node(name=SMPL_JOINT_NAMES[j], translation=[float(x) for x in offsets[j]],
                             rotation=[float(x) for x in rest_quats[j]], children=children or None))  # fmt: skip
    mesh_node = len(nodes)
    nodes.append(gl.Node(name=name, mesh=0, skin=0))
    scene = gl.Scene(name=name, nodes=[0, mesh_node])
    gltf = gl.GLTF2(
        asset=gl.Asset(generator="avatarize", version="2.0"),
        scene=0,
        scenes=[scene],
        nodes=nodes,
        meshes=[gl.Mesh(name=name, primitives=[primitive])],
        materials=[_material(f"{name}_material", colours is not None)],
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
        a_t = b.add(times, gl.FLOAT, gl.SCALAR, minmax=True)
        samplers, channels = [], []
        for j in range(NUM_JOINTS):
            samplers.append(gl.AnimationSampler(input=a_t, output=b.add(quats[:, j], gl.FLOAT, gl.VEC4),
                                                interpolation=gl.ANIM_LINEAR))  # fmt: skip
            channels.append(gl.AnimationChannel(sampler=j, target=gl.AnimationChannelTarget(node=j, path="rotation")))
        root_t = (_np(rest[0])[None] + np.asarray(motion.transl, np.float32)).astype(np.float32)
        samplers.append(gl.AnimationSampler(input=a_t, output=b.add(root_t, gl.FLOAT, gl.VEC3),
                                            interpolation=gl.ANIM_LINEAR))
        channels.append(gl.AnimationChannel(sampler=len(samplers) - 1,
                                            target=gl.AnimationChannelTarget(node=0, path="translation")))
        frames = {"frame_start": 0, "frame_end": int(motion.num_frames) - 1, "fps": float(motion.fps)}
        gltf.animations = [gl.Animation(name=animation_name, samplers=samplers, channels=channels, extras=frames)]
        scene.extras = {**frames, "animation": animation_name}
    return b.save(gltf, path)
