"""A synthetic clothed person performing a motion: one body shape and outfit, posed per frame, rendered by a fixed
camera. Gives clips with known ground truth (body parameters and clothed meshes per frame) for demos and benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from body.model import BodyModel
from body.params import BodyParams
from geometry.cameras import OrthographicCamera, PerspectiveCamera
from geometry.queries import MeshBVH, interpolate_face_attributes
from geometry.render import render_mesh
from geometry.surface import extract_surface
from icon.synth.appearance import Lighting, Material, label_albedo, render_background, sample_material, shade
from icon.synth.garments import ClothedField, Garment, RestLandmarks, sample_outfit

__all__ = ["ClothedPerson", "SequenceFrame", "make_person", "render_frame", "turn_and_wave_motion"]

# Outfits whose geometry follows the body in any pose (skirt/dress volumes are built for one posed body).
POSABLE_OUTFIT = {"dress": 0.0, "skirt": 0.0, "no_top": 0.0, "loose_top": 0.6, "shorts": 0.3, "no_bottom": 0.0,
                  "hair": 1.0, "long_hair": 0.0}  # fmt: skip


@dataclass
class ClothedPerson:
    """A body shape with an outfit and materials (pose-independent)."""

    betas: np.ndarray
    garments: list[Garment]
    materials: list[Material]
    marks: RestLandmarks
    rest_vertices: torch.Tensor


@dataclass
class SequenceFrame:
    """One rendered frame.

    Attributes:
        rgb: (H, W, 3) uint8.
        mask: (H, W) bool.
        vertices: (V, 3) float32 clothed mesh in camera space.
        faces: (F, 3) int64.
        body_vertices: (Vb, 3) float32 naked body in camera space.
    """

    rgb: np.ndarray
    mask: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    body_vertices: np.ndarray


def make_person(model: BodyModel, seed: int, betas: np.ndarray | None = None) -> ClothedPerson:
    """Sample a body shape and a posable outfit (tops, trousers/shorts, hair; no skirts) from ``seed``."""
    rng = np.random.default_rng([int(seed), 0xDE70])
    if betas is None:
        betas = np.clip(rng.normal(0.0, 0.8, model.num_betas), -2.0, 2.0).astype(np.float32)
    with torch.no_grad():
        rest = model(betas=torch.as_tensor(betas[None], dtype=model.dtype, device=model.device))
    rest_v = rest.vertices[0].float().cpu()
    marks = RestLandmarks.from_joints(rest.joints[0].cpu().numpy())
    garments = sample_outfit(rng, marks, rest_v.numpy(), rest_v.numpy(), POSABLE_OUTFIT)
    materials = [sample_material(rng, "skin")] + [sample_material(rng, g.family) for g in garments]
    return ClothedPerson(betas=betas, garments=garments, materials=materials, marks=marks, rest_vertices=rest_v)


def turn_and_wave_motion(
    n_frames: int, turns: float = 1.0, transl: tuple[float, float, float] = (0.0, 0.0, 0.0)
) -> BodyParams:
    """A person turning about the vertical axis by ``turns`` full turns while raising and lowering the arms.

    Returns:
        n_frames rows of body parameters (numpy float32): zero betas, the pose, ``transl`` (metres) in every frame.
    """
    go, bp = [], []
    for i in range(n_frames):
        t = i / max(n_frames - 1, 1)
        pose = np.zeros((23, 3), np.float32)
        arm = 1.15 - 0.75 * (0.5 - 0.5 * math.cos(2 * math.pi * 2 * t))  # arms down (1.15) ↔ raised (0.4)
        pose[15, 2] = -arm  # left shoulder (joint 16) about z: negative lowers the left arm
        pose[16, 2] = arm
        pose[17, 1] = -0.5 * (0.5 - 0.5 * math.cos(2 * math.pi * t))  # left elbow bends forward
        pose[18, 1] = 0.5 * (0.5 - 0.5 * math.cos(2 * math.pi * t))
        pose[0, 0] = -0.15 * math.sin(2 * math.pi * 2 * t)  # a little leg swing
        pose[1, 0] = 0.15 * math.sin(2 * math.pi * 2 * t)
        go.append(np.array([0.0, 2 * math.pi * turns * t, 0.0], np.float32))
        bp.append(pose.reshape(69))
    n = n_frames
    return BodyParams(np.zeros((n, 10), np.float32), np.stack(go).reshape(n, 3), np.stack(bp).reshape(n, 69),
                      np.tile(np.asarray(transl, np.float32), (n, 1)))  # fmt: skip


def render_frame(
    model: BodyModel,
    person: ClothedPerson,
    params: BodyParams,
    camera: OrthographicCamera | PerspectiveCamera,
    background: np.ndarray,
    light: Lighting,
    grid_resolution: int = 160,
) -> SequenceFrame:
    """Pose the clothed person (``params.betas`` is ignored: the person's own shape is used) and render it.

    Args:
        model: Body model.
        person: From ``make_person``.
        params: Pose and translation of one frame (B = 1; camera space, metres).
        camera: Camera with batch size 1.
        background: (H, W, 3) float in [0, 1].
        light: Lighting.
        grid_resolution: Marching-cubes resolution over the person's bounding cube.
    """

    if len(params) != 1:
        raise ValueError(f"render_frame poses one frame (B = 1), got {len(params)}")
    params = params.numpy()

    def t(a):
        return torch.as_tensor(np.asarray(a).reshape(1, -1), dtype=model.dtype, device=model.device)

    with torch.no_grad():
        posed = model(t(person.betas), t(params.global_orient), t(params.body_pose)).vertices[0].float().cpu()
    faces = model.faces.cpu()
    cloth = ClothedField(posed, faces, person.rest_vertices, person.marks, person.garments)
    box = cloth.bounds()
    side = float((box[1] - box[0]).max())
    cube = np.stack([box[0], box[0] + side])
    verts, tri = extract_surface(cloth, cube, resolution=grid_resolution, coarse_resolution=33, level=0.0,
                                 inside="below", batch_points=2**16)  # fmt: skip
    transl = np.asarray(params.transl[0], np.float32)
    verts = (verts + transl).astype(np.float32)
    v_t, f_t = torch.from_numpy(verts)[None], torch.from_numpy(tri)
    ren = render_mesh(v_t, f_t, camera, bvh=MeshBVH(v_t, f_t, sign_method="none"))
    mask = ren.mask[0]
    hits = interpolate_face_attributes(v_t, f_t, ren.face_index, ren.barycentric)[0][mask]
    field = cloth.evaluate(hits - torch.from_numpy(transl))
    albedo = label_albedo(field.label, field.rest, person.materials)
    image = torch.from_numpy(background).float().clone()
    image[mask] = shade(albedo, ren.normal_front[0][mask], light)
    rgb = (image.clamp(0, 1).numpy() * 255.0 + 0.5).astype(np.uint8)
    return SequenceFrame(rgb=rgb, mask=mask.numpy(), vertices=verts, faces=tri,
                         body_vertices=(posed.numpy() + transl).astype(np.float32))  # fmt: skip


def make_background(seed: int, height: int, width: int) -> np.ndarray:
    """(H, W, 3) float background (a gradient), deterministic by seed."""
    rng = np.random.default_rng([int(seed), 0xBA6])
    side = max(height, width)
    bg = render_background(rng, "gradient", side)
    return np.ascontiguousarray(bg[:height, :width])
