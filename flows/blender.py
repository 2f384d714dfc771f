"""Blender as a client of the exports (optional extra ``avatarize[blender]``: ``bpy``, Python 3.11): import a rigged
glb headless, read back what Blender made of it (bones, weights, action, skinned vertices), render a frame with
Workbench and convert to FBX.

Blender's glTF importer maps keys to frames with the scene's frame rate (24 fps by default) and ignores the file's
frame range, which glTF cannot express; :func:`import_glb` therefore reads ``fps``/``frame_start``/``frame_end``
from the scene ``extras`` that ``avatar.export.save_gltf`` writes, sets them on the Blender scene *before* importing,
so the motion's key i lands on frame i. Blender is Z-up: a glTF point (x, y, z) becomes (x, -z, y).
``bpy`` is imported lazily; everything here works on Blender's single global scene, reset on each import.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)

__all__ = ["BlenderImport", "bpy_available", "export_fbx", "glb_extras", "glb_to_fbx", "import_glb", "import_fbx",
           "render_workbench", "rest_vertices", "skinned_vertices", "vertex_weight_sums"]  # fmt: skip


@dataclass
class BlenderImport:
    """What Blender made of an imported file.

    Attributes:
        mesh: name of the (first) skinned mesh object.
        armature: name of the armature object.
        n_bones: bones in the armature.
        n_vertices: vertices of the mesh.
        action: name of the armature's action (None without animation).
        action_range: (first, last) keyed frame of the action.
        scene_range: the scene's (frame_start, frame_end) after import.
        fps: the scene's frame rate (fps / fps_base).
    """

    mesh: str
    armature: str
    n_bones: int
    n_vertices: int
    action: str | None
    action_range: tuple[float, float] | None
    scene_range: tuple[int, int]
    fps: float


def bpy_available() -> bool:
    """True when Blender's Python module imports (``pip install 'avatarize[blender]'``)."""
    try:
        import bpy  # noqa: F401
    except ImportError:
        return False
    return True


def _bpy():
    try:
        import bpy
    except ImportError as e:
        raise RuntimeError("Blender's Python module is not installed: pip install 'avatarize[blender]' "
                           "(bpy==5.0.1, Python 3.11 only)") from e  # fmt: skip
    return bpy


def glb_extras(path: str | Path) -> dict:
    """The default scene's ``extras`` of a .glb (``{}`` when none), read from its JSON chunk."""
    data = Path(path).read_bytes()
    if data[:4] != b"glTF":
        raise ValueError(f"{path}: not a binary glTF (.glb) file")
    length, kind = struct.unpack_from("<I4s", data, 12)
    if kind != b"JSON":
        raise ValueError(f"{path}: first glb chunk is not JSON")
    doc = json.loads(data[20 : 20 + length])
    scenes = doc.get("scenes") or [{}]
    return dict(scenes[doc.get("scene", 0)].get("extras") or {})


def _reset(bpy) -> None:
    bpy.ops.wm.read_factory_settings(use_empty=True)


def _objects(bpy, kind: str) -> list:
    return [o for o in bpy.context.scene.objects if o.type == kind]


def _skinned_mesh(bpy):
    meshes = [o for o in _objects(bpy, "MESH") if o.find_armature() is not None]
    if not meshes:
        raise ValueError("no skinned mesh in the Blender scene")
    return meshes[0]


def _summary(bpy) -> BlenderImport:
    scene = bpy.context.scene
    mesh = _skinned_mesh(bpy)
    arm = mesh.find_armature()
    action = arm.animation_data.action if arm.animation_data else None
    return BlenderImport(mesh=mesh.name, armature=arm.name, n_bones=len(arm.data.bones),
                         n_vertices=len(mesh.data.vertices), action=action.name if action else None,
                         action_range=tuple(action.frame_range) if action else None,
                         scene_range=(scene.frame_start, scene.frame_end),
                         fps=scene.render.fps / scene.render.fps_base)  # fmt: skip


def import_glb(path: str | Path) -> BlenderImport:
    """Reset Blender, apply the file's frame rate and range (scene extras), import the glb; return what it made."""
    bpy = _bpy()
    path = Path(path)
    extras = glb_extras(path)
    _reset(bpy)
    scene = bpy.context.scene
    if "fps" in extras:
        fps = float(extras["fps"])
        scene.render.fps = max(1, round(fps))
        scene.render.fps_base = scene.render.fps / fps
    result = bpy.ops.import_scene.gltf(filepath=str(path))
    if result != {"FINISHED"}:
        raise ValueError(f"{path}: Blender's glTF importer returned {result}")
    if "frame_start" in extras and "frame_end" in extras:
        scene.frame_start, scene.frame_end = int(extras["frame_start"]), int(extras["frame_end"])
    return _summary(bpy)


def import_fbx(path: str | Path) -> BlenderImport:
    """Reset Blender and import an FBX file; return what it made."""
    bpy = _bpy()
    _reset(bpy)
    bpy.ops.import_scene.fbx(filepath=str(path))
    return _summary(bpy)


def vertex_weight_sums() -> np.ndarray:
    """(V,) sum of each vertex's vertex-group weights on the skinned mesh."""
    bpy = _bpy()
    mesh = _skinned_mesh(bpy)
    return np.array([sum(g.weight for g in v.groups) for v in mesh.data.vertices], np.float64)


def _to_gltf_frame(co: np.ndarray, matrix) -> np.ndarray:
    world = np.array(matrix, np.float64)
    pts = co.reshape(-1, 3) @ world[:3, :3].T + world[:3, 3]
    return np.stack([pts[:, 0], pts[:, 2], -pts[:, 1]], axis=-1)  # Blender Z-up -> glTF Y-up


def rest_vertices() -> np.ndarray:
    """(V, 3) bind-pose (unskinned) world positions of the skinned mesh, in glTF's frame (Y-up, metres)."""
    bpy = _bpy()
    mesh = _skinned_mesh(bpy)
    co = np.empty(len(mesh.data.vertices) * 3, np.float64)
    mesh.data.vertices.foreach_get("co", co)
    return _to_gltf_frame(co, mesh.matrix_world)


def skinned_vertices(frame: int) -> np.ndarray:
    """(V, 3) world positions of the skinned mesh at ``frame``, in glTF's frame (Y-up, metres)."""
    bpy = _bpy()
    scene = bpy.context.scene
    scene.frame_set(frame)
    mesh = _skinned_mesh(bpy)
    evaluated = mesh.evaluated_get(bpy.context.evaluated_depsgraph_get())
    data = evaluated.to_mesh()
    co = np.empty(len(data.vertices) * 3, np.float64)
    data.vertices.foreach_get("co", co)
    evaluated.to_mesh_clear()
    return _to_gltf_frame(co, mesh.matrix_world)


def render_workbench(png: str | Path, frame: int, size: int = 512) -> Path:
    """Render the scene at ``frame`` with Workbench (studio light; vertex colours if the mesh has them, else material
    colours) through an orthographic camera facing the mesh from the front (glTF +Z, Blender -Y); write an RGB PNG."""
    bpy = _bpy()
    scene = bpy.context.scene
    pts = skinned_vertices(frame)  # glTF frame
    lo, hi = pts.min(0), pts.max(0)
    centre = (lo + hi) / 2
    for obj in scene.objects:  # the importer's bone-shape sphere and the armature are not part of the picture
        obj.hide_render = obj.type != "MESH" or obj.find_armature() is None
    cam_data = bpy.data.cameras.new("front")
    cam_data.type = "ORTHO"
    cam_data.ortho_scale = float((hi - lo).max() * 1.15)
    cam = bpy.data.objects.new("front", cam_data)
    scene.collection.objects.link(cam)
    cam.location = (float(centre[0]), -float(centre[2]) - 10.0, float(centre[1]))  # glTF +Z is Blender -Y
    cam.rotation_euler = (math.pi / 2, 0.0, 0.0)  # looks along Blender +Y
    scene.camera = cam
    scene.render.engine = "BLENDER_WORKBENCH"
    scene.display.shading.light = "STUDIO"
    # Vertex colours (the glb's COLOR_0, imported as a colour attribute) when the mesh has them, else the material.
    coloured = any(o.type == "MESH" and len(o.data.color_attributes) > 0 for o in scene.objects if not o.hide_render)
    scene.display.shading.color_type = "VERTEX" if coloured else "MATERIAL"
    scene.render.resolution_x = scene.render.resolution_y = size
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = "PNG"
    scene.render.image_settings.color_mode = "RGB"
    png = Path(png)
    png.parent.mkdir(parents=True, exist_ok=True)
    scene.render.filepath = str(png)
    scene.frame_set(frame)
    bpy.ops.render.render(write_still=True)
    return png


def export_fbx(path: str | Path) -> Path:
    """Export the armature and skinned mesh (with the baked action) of the current scene as FBX."""
    bpy = _bpy()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    result = bpy.ops.export_scene.fbx(filepath=str(path), object_types={"ARMATURE", "MESH"}, use_selection=False,
                                      bake_anim=True, add_leaf_bones=False)  # fmt: skip
    if result != {"FINISHED"}:
        raise ValueError(f"{path}: Blender's FBX exporter returned {result}")
    return path


def glb_to_fbx(glb: str | Path, fbx: str | Path) -> Path:
    """Convert a rigged, animated glb to FBX through Blender (frame rate and range from the glb's extras)."""
    import_glb(glb)
    bpy = _bpy()
    for obj in list(bpy.context.scene.objects):  # the importer's bone-shape helper would be exported as a mesh
        if obj.type == "MESH" and obj.find_armature() is None:
            bpy.data.objects.remove(obj)
    return export_fbx(fbx)
