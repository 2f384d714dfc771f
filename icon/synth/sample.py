"""One synthetic clothed person from a seed: body, outfit, watertight clothed mesh, camera, RGB / mask / normal
maps, body normals of a perturbed fit, and occupancy samples.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import torch

from body.model import BodyModel
from body.params import BODY_PARAM_NAMES, BodyParams
from geometry.cameras import OrthographicCamera
from geometry.queries import MeshBVH, interpolate_face_attributes
from geometry.render import RenderResult, render_mesh
from geometry.surface import extract_surface
from icon.fit import BodyFit
from icon.synth.appearance import label_albedo, render_background, sample_lighting, sample_material, shade
from icon.synth.config import SynthConfig
from icon.synth.garments import ClothedField, RestLandmarks, sample_outfit
from icon.synth.poses import perturb_params, sample_body_params

__all__ = ["SynthSample", "body_vertices", "make_sample"]

logger = logging.getLogger(__name__)


@dataclass
class SynthSample:
    """One synthetic clothed person (numpy, no batch axis). Camera space = world: Y up, metres, camera looks along -z.

    Attributes:
        seed: The seed it was made from.
        rgb: (S, S, 3) uint8 image.
        mask: (S, S) bool silhouette of the clothed person.
        normal_front: (S, S, 3) float32 ground-truth clothed front normals, zeros outside the mask.
        normal_back: (S, S, 3) float32 ground-truth clothed back normals, zeros outside the mask.
        body_normal_front: (S, S, 3) float32 front normals of the perturbed body fit, zeros outside its silhouette.
        body_normal_back: (S, S, 3) float32 back normals of the perturbed body fit.
        points: (P, 3) float32 occupancy query points (metres).
        occupancy: (P,) float32, 1 inside the clothed mesh, 0 outside.
        vertices: (V, 3) float32 clothed mesh vertices (watertight, outward counter-clockwise faces).
        faces: (F, 3) int64 clothed mesh faces.
        body: exact body parameters (numpy float32, B = 1: betas (1, 10), global_orient (1, 3), body_pose (1, 69),
            transl (1, 3)).
        fit_body: perturbed ("fitted") body parameters, likewise.
        camera: (3,) float32 orthographic camera (scale px/m, cx px, cy px) for an S x S crop.
        garments: Garment family of each garment, e.g. ["loose_top", "trousers", "hair"].
        pose_family: The pose family the body pose was drawn around.
    """

    seed: int
    rgb: np.ndarray
    mask: np.ndarray
    normal_front: np.ndarray
    normal_back: np.ndarray
    body_normal_front: np.ndarray
    body_normal_back: np.ndarray
    points: np.ndarray
    occupancy: np.ndarray
    vertices: np.ndarray
    faces: np.ndarray
    body: BodyParams
    fit_body: BodyParams
    camera: np.ndarray
    garments: list[str]
    pose_family: str

    @classmethod
    def from_array_fields(cls, arrays: dict[str, np.ndarray], **others) -> SynthSample:
        """Inverse of ``array_fields``: the flat arrays (body parameters without the batch axis) plus the
        non-array fields (seed, garments, pose_family)."""
        arrays = dict(arrays)
        body = {name: arrays.pop(name)[None] for name in BODY_PARAM_NAMES}
        fit = {name: arrays.pop("fit_" + name)[None] for name in BODY_PARAM_NAMES}
        return cls(body=BodyParams(**body), fit_body=BodyParams(**fit), **arrays, **others)

    def fitted_body(self, device: torch.device | str | None = None) -> BodyFit:
        """The perturbed ("fitted") parameters and the camera as a one-frame ``icon.fit.BodyFit`` (the initial fit the
        SMPL feedback loop starts from); zero losses and keypoint error."""
        camera = torch.as_tensor(np.asarray(self.camera, np.float32)[None], device=device)
        return BodyFit.from_params(self.fit_body.to(device, torch.float32), camera, int(self.rgb.shape[0]))

    def orthographic_camera(self) -> OrthographicCamera:
        """The sample's camera as a batch-1 OrthographicCamera."""
        s = self.rgb.shape[0]
        c = torch.as_tensor(self.camera, dtype=torch.float32)
        return OrthographicCamera(scale=c[0:1], cx=c[1:2], cy=c[2:3], width=s, height=s)

    def array_fields(self) -> dict[str, np.ndarray]:
        """All numpy arrays by name; the body parameters flat without the batch axis (``betas`` (10,), ...,
        ``fit_betas``, ...), as stored in shards."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if isinstance(getattr(self, f.name), np.ndarray)}
        out.update({k: v[0] for k, v in self.body.to_npz_dict().items()})
        out.update({k: v[0] for k, v in self.fit_body.to_npz_dict(prefix="fit_").items()})
        return out


def body_vertices(model: BodyModel, params: BodyParams, rest: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Posed (or, with ``rest``, T-pose shaped, untranslated) vertices (V, 3) and joints (24, 3) of one body (B = 1)."""
    if len(params) != 1:
        raise ValueError(f"body_vertices poses one body (B = 1), got {len(params)}")
    p = params.to(model.device, model.dtype)
    with torch.no_grad():
        if rest:
            out = model(betas=p.betas)
        else:
            out = model(p.betas, p.global_orient, p.body_pose, p.transl)
    return out.vertices[0].float(), out.joints[0].float()


def _sample_points(
    rng: np.random.Generator, vertices: np.ndarray, faces: np.ndarray, bounds: np.ndarray, config: SynthConfig
) -> np.ndarray:
    """Near-surface (area-weighted surface points + Gaussian offsets) and uniform points in ``bounds``."""
    n = config.num_points
    n_surf = int(round(n * config.surface_fraction))
    tri = vertices[faces].astype(np.float64)
    area = 0.5 * np.linalg.norm(np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0]), axis=1)
    f = rng.choice(len(faces), size=n_surf, p=area / area.sum())
    r1, r2 = rng.random(n_surf), rng.random(n_surf)
    s = np.sqrt(r1)
    bary = np.stack([1 - s, s * (1 - r2), s * r2], axis=1)
    surf = (tri[f] * bary[..., None]).sum(axis=1)
    sigma = np.asarray(config.surface_sigmas, dtype=np.float64)[rng.integers(len(config.surface_sigmas), size=n_surf)]
    surf = surf + rng.normal(size=(n_surf, 3)) * sigma[:, None]
    uniform = bounds[0] + rng.random((n - n_surf, 3)) * (bounds[1] - bounds[0])
    return np.concatenate([surf, uniform]).astype(np.float32)


def _clothed_surface(cloth: ClothedField, config: SynthConfig) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The clothed surface (V, 3) float, (F, 3) int on an isotropic grid over the person's box, and the (2, 3) cube
    sampled. Every component is kept: at coarse grids a thin limb can separate from the torso, and dropping it would
    remove body from the ground truth."""
    box = cloth.bounds()
    side = float((box[1] - box[0]).max())
    spacing = side / (config.grid_resolution - 1)
    counts = np.ceil((box[1] - box[0]) / spacing).astype(int) + 1
    cube = np.stack([box[0], box[0] + (counts.max() - 1) * spacing])  # extract_surface samples a cube
    verts, tri_faces = extract_surface(
        cloth, cube, resolution=int(counts.max()), coarse_resolution=config.coarse_resolution, level=0.0,
        inside="below", batch_points=2**17, keep_largest=False,
    )  # fmt: skip
    return verts, tri_faces, cube


def _render_clothed(
    rng: np.random.Generator,
    verts: np.ndarray,
    tri_faces: np.ndarray,
    transl: np.ndarray,
    camera: OrthographicCamera,
    bvh: MeshBVH,
    cloth: ClothedField,
    materials: list,
    config: SynthConfig,
) -> tuple[np.ndarray, RenderResult]:
    """Clothed render: mask, normals, albedo from the garment label at each hit, shading, background.

    Returns:
        (S, S, 3) uint8 image and the mesh render (mask, normals) of the translated surface ``verts``.
    """
    v_t = torch.from_numpy(verts)[None]
    f_t = torch.from_numpy(tri_faces)
    ren = render_mesh(v_t, f_t, camera, bvh=bvh)
    mask = ren.mask[0]
    hits = interpolate_face_attributes(v_t, f_t, ren.face_index, ren.barycentric)[0][mask]
    field = cloth.evaluate(hits - torch.from_numpy(transl))
    albedo = label_albedo(field.label, field.rest, materials)
    light = sample_lighting(rng)
    colour = shade(albedo, ren.normal_front[0][mask], light)
    size = config.image_size
    background = torch.from_numpy(render_background(rng, config.backgrounds[int(rng.integers(len(config.backgrounds)))],
                                                    size))  # fmt: skip
    image = background.clone()
    image[mask] = colour
    return (image.numpy() * 255.0 + 0.5).astype(np.uint8), ren


def make_sample(seed: int, model: BodyModel, config: SynthConfig | None = None) -> SynthSample:
    """Generate the synthetic clothed person of ``seed`` (same seed and config -> identical arrays).

    Args:
        seed: Non-negative integer; see icon.synth.config for the train / held-out seed ranges.
        model: Body model (SMPL format, 10 betas), e.g. ``BodyModel()``.
        config: Generator settings (default ``SynthConfig()``).

    Returns:
        SynthSample.
    """
    config = SynthConfig() if config is None else config
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if model.num_betas != 10:
        raise ValueError(f"make_sample needs a body model with 10 betas, got {model.num_betas}")
    rng = np.random.default_rng([int(seed), 0x5E7])
    size = config.image_size

    # Body (untranslated) and its rest pose.
    params, family = sample_body_params(rng, config.beta_clip, config.pose_noise, config.max_tilt)
    posed, _ = body_vertices(model, params)
    rest, rest_joints = body_vertices(model, params, rest=True)
    faces = model.faces.cpu()
    marks = RestLandmarks.from_joints(rest_joints.cpu().numpy())
    garments = sample_outfit(rng, marks, posed.cpu().numpy(), rest.cpu().numpy(), config.garment_probabilities)
    materials = [sample_material(rng, "skin")] + [sample_material(rng, g.family) for g in garments]
    cloth = ClothedField(posed.cpu(), faces, rest.cpu(), marks, garments)

    verts, tri_faces, cube = _clothed_surface(cloth, config)
    if len(tri_faces) == 0:
        raise RuntimeError(f"seed {seed}: the clothed surface is empty")

    # Weak-perspective camera: the person fills fill_range of the crop, centred up to a small random shift.
    lo, hi = verts.min(0), verts.max(0)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    scale = rng.uniform(*config.fill_range) * size / extent
    shift = rng.uniform(-config.max_shift, config.max_shift, 2) * size / scale
    transl = np.array([-(lo[0] + hi[0]) / 2 + shift[0], -(lo[1] + hi[1]) / 2 + shift[1], 0.0], np.float32)
    params = params.replace(transl=transl[None])
    verts = (verts + transl).astype(np.float32)
    camera = OrthographicCamera(
        scale=torch.tensor([scale], dtype=torch.float32), cx=torch.tensor([size / 2.0]),
        cy=torch.tensor([size / 2.0]), width=size, height=size,
    )  # fmt: skip

    bvh = MeshBVH(torch.from_numpy(verts)[None], torch.from_numpy(tri_faces), sign_method="normal")
    rgb, ren = _render_clothed(rng, verts, tri_faces, transl, camera, bvh, cloth, materials, config)
    mask = ren.mask[0]

    # Body normals of a perturbed fit (what a downstream net sees at test time).
    fit = perturb_params(
        params, rng, config.perturb_betas, config.perturb_pose, config.perturb_orient, config.perturb_transl
    )
    fit_verts, _ = body_vertices(model, fit)
    body_ren = render_mesh(fit_verts.cpu()[None], faces, camera)

    # Occupancy samples against the extracted (ground-truth) mesh.
    pts = _sample_points(rng, verts, tri_faces, cube + transl, config)
    if len(pts):
        inside = bvh.query(torch.from_numpy(pts)[None]).inside[0].numpy()
    else:
        inside = np.zeros(0, bool)

    return SynthSample(
        seed=int(seed),
        rgb=rgb,
        mask=mask.numpy(),
        normal_front=ren.normal_front[0].numpy().astype(np.float32),
        normal_back=ren.normal_back[0].numpy().astype(np.float32),
        body_normal_front=body_ren.normal_front[0].numpy().astype(np.float32),
        body_normal_back=body_ren.normal_back[0].numpy().astype(np.float32),
        points=pts,
        occupancy=inside.astype(np.float32),
        vertices=verts,
        faces=tri_faces.astype(np.int64),
        body=params,
        fit_body=fit,
        camera=np.array([scale, size / 2.0, size / 2.0], np.float32),
        garments=[g.family for g in garments],
        pose_family=family,
    )
