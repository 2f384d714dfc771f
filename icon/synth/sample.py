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
from geometry.cameras import Camera, OrthographicCamera, PerspectiveCamera
from geometry.queries import MeshBVH, interpolate_face_attributes
from geometry.render import RenderResult, render_mesh
from geometry.surface import extract_surface
from icon.fit import BodyFit
from icon.synth.appearance import (
    label_albedo,
    render_background,
    sample_lighting,
    sample_material,
    shade,
    widen_print,
)
from icon.synth.config import SynthConfig
from icon.synth.degrade import degrade_image
from icon.synth.garments import ClothedField, RestLandmarks, sample_outfit
from icon.synth.poses import perturb_params, sample_body_params
from icon.synth.scene import (
    StudioLighting,
    ambient_occlusion,
    camera_rays,
    occluder_mask,
    perspective_crop_view,
    render_floor,
    sample_studio_lighting,
    shade_studio,
    shadow_factor,
)

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
        camera: (3,) float32 orthographic camera (scale px/m, cx px, cy px) for an S x S crop; for a perspective
            sample the weak-perspective camera that matches it at the person's depth.
        garments: Garment family of each garment, e.g. ["loose_top", "trousers", "hair"].
        pose_family: The pose family the body pose was drawn around.
        intrinsics: (3,) float32 (focal px, cx px, cy px) of the perspective crop camera the maps were rendered with,
            focal 0 for a weak-perspective sample; None when the config has no perspective cameras (the original
            generator). The body and clothed mesh then sit in front of the camera (z < 0).
        mask_unoccluded: (S, S) bool person pixels before occluders (None when the config has no occluders); ``mask``
            and the clothed normal maps keep only the visible part (occluder pixels False / zero).
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
    intrinsics: np.ndarray | None = None
    mask_unoccluded: np.ndarray | None = None

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

    def render_camera(self) -> Camera:
        """The batch-1 camera the maps were rendered with (perspective when ``intrinsics`` has a focal length)."""
        s = self.rgb.shape[0]
        if self.intrinsics is not None and float(self.intrinsics[0]) > 0:
            c = torch.as_tensor(self.intrinsics, dtype=torch.float32)
            return PerspectiveCamera(focal=c[0:1], cx=c[1:2], cy=c[2:3], width=s, height=s)
        return self.orthographic_camera()

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


def _clothed_surface(
    cloth: ClothedField, config: SynthConfig, device: torch.device
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
        inside="below", batch_points=2**17, keep_largest=False, device=device,
    )  # fmt: skip
    return verts, tri_faces, cube


def _place_camera(
    rng: np.random.Generator, rng_scene: np.random.Generator, verts: np.ndarray, tri_faces: np.ndarray,
    config: SynthConfig,
) -> tuple[np.ndarray, Camera, np.ndarray, np.ndarray | None]:  # fmt: skip
    """The person's translation (3,), the crop camera, its weak-perspective (scale, cx, cy) and the perspective
    intrinsics (None for the original generator, focal 0 for a weak-perspective sample of a perspective config).

    Weak perspective: the person fills fill_range of the crop, centred up to a small random shift (drawn for
    perspective samples too, to keep the original stream aligned). Perspective: see ``perspective_crop_view``.
    """
    size = config.image_size
    lo, hi = verts.min(0), verts.max(0)
    extent = float(max(hi[0] - lo[0], hi[1] - lo[1]))
    scale = rng.uniform(*config.fill_range) * size / extent
    shift = rng.uniform(-config.max_shift, config.max_shift, 2) * size / scale
    intrinsics = None if config.perspective_probability == 0 else np.zeros(3, np.float32)
    if config.perspective_probability > 0 and rng_scene.random() < config.perspective_probability:
        view = perspective_crop_view(
            rng_scene, verts, tri_faces, size, config.fov_range, config.source_fill_range, config.source_size,
            config.crop_margin,
        )  # fmt: skip
        return view.transl, view.camera, view.weak_perspective(), view.intrinsics
    transl = np.array([-(lo[0] + hi[0]) / 2 + shift[0], -(lo[1] + hi[1]) / 2 + shift[1], 0.0], np.float32)
    camera = OrthographicCamera(
        scale=torch.tensor([scale], dtype=torch.float32), cx=torch.tensor([size / 2.0]),
        cy=torch.tensor([size / 2.0]), width=size, height=size,
    )  # fmt: skip
    return transl, camera, np.array([scale, size / 2.0, size / 2.0], np.float32), intrinsics


def _shade_hits(
    rng: np.random.Generator, rng_scene: np.random.Generator, albedo: torch.Tensor, hits: torch.Tensor,
    normals: torch.Tensor, view: torch.Tensor, bvh: MeshBVH, config: SynthConfig,
) -> tuple[torch.Tensor, StudioLighting | None]:  # fmt: skip
    """(N, 3) colours of the visible hits (N, 3) with normals (N, 3) and view directions (N, 3): the original
    Lambert light, or studio lights with optional shadows and ambient occlusion (then also returned)."""
    light = sample_lighting(rng)  # drawn in both modes: keeps the original stream aligned
    if config.lighting != "studio":
        return shade(albedo, normals, light), None
    studio = sample_studio_lighting(rng_scene, config.specular)
    shadow = shadow_factor(bvh, hits, normals, studio.key_direction) if config.shadows else None
    occlusion = None
    if config.ambient_occlusion_rays > 0:
        occlusion = ambient_occlusion(bvh, hits, normals, rng_scene, config.ambient_occlusion_rays)
    return shade_studio(albedo, normals, view, studio, shadow, occlusion), studio


def _render_clothed(
    rng: np.random.Generator,
    rng_scene: np.random.Generator,
    verts: np.ndarray,
    tri_faces: np.ndarray,
    transl: np.ndarray,
    camera: Camera,
    bvh: MeshBVH,
    cloth: ClothedField,
    materials: list,
    config: SynthConfig,
) -> tuple[torch.Tensor, RenderResult]:
    """Clothed render: mask, normals, albedo from the garment label at each hit, shading, background.

    Returns:
        (S, S, 3) float image in [0, 1] and the mesh render (mask, normals) of the translated surface ``verts``.
    """
    v_t = torch.from_numpy(verts)[None]
    f_t = torch.from_numpy(tri_faces)
    ren = render_mesh(v_t, f_t, camera, bvh=bvh)
    mask = ren.mask[0]
    hits = interpolate_face_attributes(v_t, f_t, ren.face_index, ren.barycentric)[0][mask]
    field_device = cloth.vertices.device
    field = cloth.evaluate((hits - torch.from_numpy(transl)).to(field_device))
    albedo = label_albedo(field.label.cpu(), field.rest.cpu(), materials)
    _, dirs = camera_rays(camera)
    colour, studio = _shade_hits(rng, rng_scene, albedo, hits, ren.normal_front[0][mask], -dirs[mask], bvh, config)
    kind = config.backgrounds[int(rng.integers(len(config.backgrounds)))]
    if kind == "floor":
        floor_light = studio if studio is not None else sample_studio_lighting(rng_scene)
        feet = verts[np.argmin(verts[:, 1])]
        background = torch.from_numpy(render_floor(rng_scene, camera, bvh, feet, floor_light, config.shadows))
    else:
        background = torch.from_numpy(render_background(rng, kind, config.image_size))
    image = background.clone()
    image[mask] = colour
    return image, ren


def _finish_image(
    rng_scene: np.random.Generator, image: torch.Tensor, mask: np.ndarray, config: SynthConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Partial occluder (composited into the image, removed from the mask) and degradations of the image.

    Returns:
        (S, S, 3) uint8 RGB, (S, S) bool visible mask, (S, S) bool mask before occluders (None without occluders).
    """
    mask_unoccluded = None
    if config.occluder_probability > 0:
        mask_unoccluded = mask.copy()
        if rng_scene.random() < config.occluder_probability:
            occ = occluder_mask(rng_scene, mask)
            kind = ("flat", "noise", "tiles")[int(rng_scene.integers(3))]
            occ_colour = render_background(rng_scene, kind, config.image_size)
            image[torch.from_numpy(occ)] = torch.from_numpy(occ_colour[occ] * rng_scene.uniform(0.5, 1.0))
            mask = mask & ~occ
    img = image.numpy()
    if config.degradations:
        img, _ = degrade_image(rng_scene, img, config.degradations, config.degradation_probability)
    return (img * 255.0 + 0.5).astype(np.uint8), mask, mask_unoccluded


def _sample_outfit_and_materials(
    rng: np.random.Generator, rng_scene: np.random.Generator, marks: RestLandmarks, posed: torch.Tensor,
    rest: torch.Tensor, config: SynthConfig,
) -> tuple[list, list]:  # fmt: skip
    """The outfit and the materials (skin first, then one per garment; wide prints when switched on)."""
    garments = sample_outfit(rng, marks, posed.cpu().numpy(), rest.cpu().numpy(), config.garment_probabilities)
    materials = [sample_material(rng, "skin")] + [sample_material(rng, g.family) for g in garments]
    if config.wide_prints:
        materials = materials[:1] + [
            widen_print(rng_scene, m) if g.family != "hair" else m for g, m in zip(garments, materials[1:], strict=True)
        ]
    return garments, materials


def make_sample(
    seed: int, model: BodyModel, config: SynthConfig | None = None, device: torch.device | str | None = None
) -> SynthSample:
    """Generate the synthetic clothed person of ``seed`` (same seed, config and device -> identical arrays).

    Args:
        seed: Non-negative integer; see icon.synth.config for the train / held-out seed ranges.
        model: Body model (SMPL format, 10 betas), e.g. ``BodyModel()``.
        config: Generator settings (default ``SynthConfig()``).
        device: Device of the clothed-field evaluation and surface extraction (the Warp BVH queries, most of the
            time), e.g. "cuda"; default CPU. Renders and shading stay on the CPU. A CUDA run may differ from a CPU
            run in the last bits of the surface.

    Returns:
        SynthSample.
    """
    config = SynthConfig() if config is None else config
    if int(seed) < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    if model.num_betas != 10:
        raise ValueError(f"make_sample needs a body model with 10 betas, got {model.num_betas}")
    rng = np.random.default_rng([int(seed), 0x5E7])
    # Domain-randomisation draws come from their own stream, so the original stream (and output) is unchanged
    # whenever the switches are off.
    rng_scene = np.random.default_rng([int(seed), 0xD0A])
    field_device = torch.device("cpu" if device is None else device)

    # Body (untranslated) and its rest pose.
    params, family = sample_body_params(
        rng, config.beta_clip, config.pose_noise, config.max_tilt, families=config.pose_families,
        beta_distribution=config.beta_distribution,
    )  # fmt: skip
    posed, _ = body_vertices(model, params)
    rest, rest_joints = body_vertices(model, params, rest=True)
    faces = model.faces.cpu()
    marks = RestLandmarks.from_joints(rest_joints.cpu().numpy())
    garments, materials = _sample_outfit_and_materials(rng, rng_scene, marks, posed, rest, config)
    cloth = ClothedField(posed.to(field_device), faces.to(field_device), rest.to(field_device), marks, garments)

    verts, tri_faces, cube = _clothed_surface(cloth, config, field_device)
    if len(tri_faces) == 0:
        raise RuntimeError(f"seed {seed}: the clothed surface is empty")

    transl, camera, weak, intrinsics = _place_camera(rng, rng_scene, verts, tri_faces, config)
    params = params.replace(transl=transl[None])
    verts = (verts + transl).astype(np.float32)

    bvh = MeshBVH(torch.from_numpy(verts)[None], torch.from_numpy(tri_faces), sign_method="normal")
    image, ren = _render_clothed(rng, rng_scene, verts, tri_faces, transl, camera, bvh, cloth, materials, config)
    rgb, mask, mask_unoccluded = _finish_image(rng_scene, image, ren.mask[0].numpy(), config)
    keep = torch.from_numpy(mask)[..., None]

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
        mask=mask,
        normal_front=(ren.normal_front[0] * keep).numpy().astype(np.float32),
        normal_back=(ren.normal_back[0] * keep).numpy().astype(np.float32),
        body_normal_front=body_ren.normal_front[0].numpy().astype(np.float32),
        body_normal_back=body_ren.normal_back[0].numpy().astype(np.float32),
        points=pts,
        occupancy=inside.astype(np.float32),
        vertices=verts,
        faces=tri_faces.astype(np.int64),
        body=params,
        fit_body=fit,
        camera=weak,
        garments=[g.family for g in garments],
        pose_family=family,
        intrinsics=intrinsics,
        mask_unoccluded=mask_unoccluded,
    )
