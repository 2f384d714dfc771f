"""ICON's implicit stage: local body-guided point features, the occupancy MLP, surface reconstruction with optional
hand/foot replacement by the body's, and the safetensors weight format (pure compute except ``save/load``).

Per query point the features are (as in ICON): the signed distance to the fitted body (clipped, scaled), the body's
barycentric normal at the closest point, the clothed normal sampled pixel-aligned from the front map where that
closest body point is visible from the camera and from the back map where it is not, and the visibility itself.
The MLP maps them to an occupancy logit (inside > 0).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from torch import nn

from geometry.cameras import Camera, check_points
from geometry.queries import MeshBVH, SignMethod, check_faces, check_vertices, interpolate_face_attributes

__all__ = [
    "FEATURE_NAMES",
    "WEIGHTS_FORMAT",
    "BodyPointFeatures",
    "ImplicitConfig",
    "ImplicitNet",
    "PointFeatureSampler",
    "assemble_features",
    "blend_front_back",
    "body_point_features",
    "body_vertex_visibility",
    "hands_feet_vertex_mask",
    "load_implicit_net",
    "point_features",
    "read_implicit_net_config",
    "reconstruct_surface",
    "replace_body_parts",
    "sample_clothed_normals",
    "sample_pixels",
    "save_implicit_net",
]

logger = logging.getLogger(__name__)

WEIGHTS_FORMAT = "avatarize-implicit-net/1"
FEATURE_NAMES = ("sdf", "body_nx", "body_ny", "body_nz", "cloth_nx", "cloth_ny", "cloth_nz", "visibility")
"""Channel order of the point features (C = 8)."""

HAND_JOINTS = ("left_wrist", "right_wrist", "left_hand", "right_hand")
FOOT_JOINTS = ("left_ankle", "right_ankle", "left_foot", "right_foot")


class ImplicitConfig(BaseModel):
    """Architecture and feature settings of the implicit occupancy net (stored with its weights)."""

    model_config = ConfigDict(extra="forbid")

    hidden: tuple[int, ...] = Field(
        (256, 128, 64), description="Widths of the hidden layers (ICON: 512, 256, 128); a 1-wide logit layer follows."
    )
    skip_layers: tuple[int, ...] = Field(
        (2,),
        description="Indices (1-based over the linear layers after the first) whose input gets the point features "
        "re-concatenated, ICON-style; e.g. (2,) for hidden (256, 128, 64) feeds layer 128->64 with 128 + C inputs.",
    )
    negative_slope: float = Field(0.01, ge=0, lt=1, description="LeakyReLU slope of the hidden layers.")
    sdf_scale: float = Field(0.05, gt=0, description="Metres per unit of the signed-distance feature.")
    sdf_clip: float = Field(
        0.5,
        gt=0,
        description="The signed distance is clipped to +-sdf_clip metres first. Keep it beyond the farthest garment "
        "(long hair, dress hems): clipped points look alike, so points far behind the body inside the silhouette "
        "would inherit the occupancy of hair and hems and grow sheets along the viewing axis.",
    )
    sign_method: SignMethod = Field(
        "winding",
        description="Inside test of the body for the SDF sign: winding (robust to the self-intersections "
        "of posed bodies) or normal (faster, needs a clean closed mesh).",
    )
    visibility_tolerance: float = Field(
        2e-3, gt=0, description="Metres along the ray within which a body vertex does not occlude itself."
    )

    @field_validator("hidden")
    @classmethod
    def _check_hidden(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(w < 1 for w in value):
            raise ValueError(f"hidden must be a non-empty tuple of positive widths, got {value}")
        return value

    @field_validator("skip_layers")
    @classmethod
    def _check_skips(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if any(i < 1 for i in value):
            raise ValueError(f"skip_layers index linear layers after the first (>= 1), got {value}")
        return tuple(sorted(set(value)))

    @property
    def num_features(self) -> int:
        """Point feature channels C."""
        return len(FEATURE_NAMES)


# ---------------------------------------------------------------------------------------------------------- features
def body_vertex_visibility(
    body_vertices: torch.Tensor,
    faces: torch.Tensor,
    camera: Camera,
    tolerance: float = 2e-3,
    bvh: MeshBVH | None = None,
) -> torch.Tensor:
    """Per-vertex visibility of the body from the camera (1 visible, 0 occluded), one ray per vertex.

    Args:
        body_vertices: (B, V, 3) camera-space body vertices (metres).
        faces: (F, 3) int64 faces.
        camera: Camera with batch size B or 1.
        tolerance: Hits closer than this (metres) in front of a vertex do not occlude it.
        bvh: Optional BVH of these vertices.

    Returns:
        (B, V) float visibility in the dtype of the vertices.
    """
    from geometry.render import point_visibility

    vis = point_visibility(body_vertices, faces, camera, body_vertices, tolerance=tolerance, bvh=bvh)
    return vis.to(body_vertices.dtype)


@dataclass
class BodyPointFeatures:
    """Body-derived parts of the point features (independent of the clothed normal maps).

    Attributes:
        sdf: (B, N) signed distance to the body (metres, negative inside, not clipped).
        normal: (B, N, 3) unit barycentric body normal at the closest body point.
        visibility: (B, N) visibility of the closest body point in [0, 1] (vertex visibility interpolated).
        pixels: (B, N, 2) camera projection (u, v) of the query points (pixels of the camera's image).
    """

    sdf: torch.Tensor
    normal: torch.Tensor
    visibility: torch.Tensor
    pixels: torch.Tensor


def body_point_features(
    points: torch.Tensor,
    bvh: MeshBVH,
    vertex_visibility: torch.Tensor,
    camera: Camera,
) -> BodyPointFeatures:
    """SDF, body normal, visibility and pixel position of query points for a prebuilt body BVH.

    Args:
        points: (B, N, 3) camera-space points (metres).
        bvh: Signed BVH ("winding" or "normal") of the (B, V, 3) body vertices.
        vertex_visibility: (B, V) per-vertex visibility (see ``body_vertex_visibility``).
        camera: Camera with batch size B or 1.

    Returns:
        BodyPointFeatures.
    """
    check_points(points)
    if bvh.sign_method == "none":
        raise ValueError("body_point_features needs a signed BVH (sign_method 'winding' or 'normal')")
    cp = bvh.query(points)
    vis = interpolate_face_attributes(
        vertex_visibility.to(points.dtype)[..., None].expand(bvh.batch_size, -1, -1),
        bvh.faces, cp.face_index, cp.barycentric,
    )[..., 0]  # fmt: skip
    return BodyPointFeatures(cp.signed_distance, cp.normal, vis, camera.project(points))


def sample_pixels(images: torch.Tensor, pixels: torch.Tensor, image_size: tuple[int, int]) -> torch.Tensor:
    """Bilinear lookup of images at pixel positions (zeros outside the image), any image resolution.

    Args:
        images: (B, H', W', C) images showing the camera's view at any resolution.
        pixels: (B, N, 2) pixel coordinates (u, v) in the camera's image of size ``image_size``.
        image_size: (height, width) of the camera image the pixels refer to.

    Returns:
        (B, N, C) samples in the dtype of ``pixels``.
    """
    height, width = image_size
    maps = images.permute(0, 3, 1, 2).to(pixels.dtype)
    # align_corners=False: -1/+1 are the outer image edges, so the lookup does not depend on the map's resolution.
    grid = torch.stack([pixels[..., 0] / width * 2.0 - 1.0, pixels[..., 1] / height * 2.0 - 1.0], dim=-1)
    out = nn.functional.grid_sample(maps, grid[:, :, None], mode="bilinear", padding_mode="zeros", align_corners=False)
    return out[..., 0].transpose(1, 2)


def sample_clothed_normals(
    normal_front: torch.Tensor,
    normal_back: torch.Tensor,
    pixels: torch.Tensor,
    visibility: torch.Tensor,
    image_size: tuple[int, int],
) -> torch.Tensor:
    """Bilinearly sample front and back clothed normals at pixels and blend them by the body visibility.

    A point whose closest body point is visible takes the front map, an occluded one the back map; visibility is
    interpolated between body vertices, so points near the body's visibility boundary mix both (which keeps the
    feature continuous). Samples outside the image are zero, like the maps outside the silhouette.

    Args:
        normal_front: (B, H, W, 3) front normal maps (any resolution showing the camera's view).
        normal_back: (B, H, W, 3) back normal maps in the same image frame.
        pixels: (B, N, 2) pixel coordinates (u, v) in the camera's image of size ``image_size``.
        visibility: (B, N) weight of the front map in [0, 1].
        image_size: (height, width) of the camera image the pixels refer to.

    Returns:
        (B, N, 3) sampled normals (not renormalised: their length falls off across the silhouette boundary).
    """
    sampled = sample_pixels(torch.cat([normal_front, normal_back], dim=-1), pixels, image_size)
    return blend_front_back(sampled[..., :3], sampled[..., 3:], visibility)


def blend_front_back(front: torch.Tensor, back: torch.Tensor, visibility: torch.Tensor) -> torch.Tensor:
    """(B, N, 3) visibility-weighted mix of front and back samples (B, N, 3), visibility (B, N) in [0, 1]."""
    w = visibility[..., None].clamp(0.0, 1.0)
    return w * front + (1.0 - w) * back


def assemble_features(body: BodyPointFeatures, clothed_normal: torch.Tensor, config: ImplicitConfig) -> torch.Tensor:
    """Stack the point features in ``FEATURE_NAMES`` order.

    Args:
        body: Body parts of the features.
        clothed_normal: (B, N, 3) sampled clothed normals.
        config: Feature scaling.

    Returns:
        (B, N, C) features.
    """
    sdf = body.sdf.clamp(-config.sdf_clip, config.sdf_clip) / config.sdf_scale
    return torch.cat([sdf[..., None], body.normal, clothed_normal, body.visibility[..., None]], dim=-1)


def _check_maps(normal_front: torch.Tensor, normal_back: torch.Tensor, batch: int) -> None:
    for name, m in (("normal_front", normal_front), ("normal_back", normal_back)):
        if not isinstance(m, torch.Tensor) or m.ndim != 4 or m.shape[-1] != 3:
            shape = tuple(m.shape) if isinstance(m, torch.Tensor) else type(m).__name__
            raise ValueError(f"{name} must be a (B, H, W, 3) normal map tensor, got {shape}")
        if m.shape[0] not in (1, batch):
            raise ValueError(f"{name} has batch size {m.shape[0]}, the body has {batch}")
    if normal_front.shape != normal_back.shape:
        raise ValueError(f"normal_front {tuple(normal_front.shape)} and normal_back {tuple(normal_back.shape)} differ")


class PointFeatureSampler:
    """Point features of one batch of bodies and normal maps; the BVH and vertex visibility are built once, so
    repeated queries (marching-cubes batches) cost one closest-point query and one texture lookup each.

    Args:
        body_vertices: (B, V, 3) camera-space vertices of the fitted body (metres).
        faces: (F, 3) int64 body faces.
        normal_front: (B, H, W, 3) clothed front normal maps in [-1, 1], zeros outside the silhouette.
        normal_back: (B, H, W, 3) clothed back normal maps, in the front camera's image frame.
        camera: Camera of the maps (batch B or 1); its width/height define the pixel frame.
        config: Feature settings (default ``ImplicitConfig()``).
    """

    def __init__(
        self,
        body_vertices: torch.Tensor,
        faces: torch.Tensor,
        normal_front: torch.Tensor,
        normal_back: torch.Tensor,
        camera: Camera,
        config: ImplicitConfig | None = None,
    ) -> None:
        check_vertices(body_vertices, "body_vertices")
        check_faces(faces, body_vertices.shape[1])
        batch = body_vertices.shape[0]
        _check_maps(normal_front, normal_back, batch)
        self.config = ImplicitConfig() if config is None else config
        self.camera = camera
        self.bvh = MeshBVH(body_vertices, faces, sign_method=self.config.sign_method)
        self.vertex_visibility = body_vertex_visibility(
            body_vertices, faces, camera, self.config.visibility_tolerance, bvh=self.bvh
        )
        device = body_vertices.device
        self.normal_front = normal_front.to(device).expand(batch, -1, -1, -1)
        self.normal_back = normal_back.to(device).expand(batch, -1, -1, -1)

    def body_features(self, points: torch.Tensor) -> BodyPointFeatures:
        """Body parts of the features of (B, N, 3) points."""
        return body_point_features(points, self.bvh, self.vertex_visibility, self.camera)

    def __call__(self, points: torch.Tensor) -> torch.Tensor:
        """(B, N, C) features of (B, N, 3) camera-space points (B may be 1 to broadcast)."""
        check_points(points)
        body = self.body_features(points)
        clothed = sample_clothed_normals(
            self.normal_front, self.normal_back, body.pixels, body.visibility, (self.camera.height, self.camera.width)
        )
        return assemble_features(body, clothed, self.config)


def point_features(
    points: torch.Tensor,
    body_vertices: torch.Tensor,
    faces: torch.Tensor,
    normal_front: torch.Tensor,
    normal_back: torch.Tensor,
    camera: Camera,
    config: ImplicitConfig | None = None,
) -> torch.Tensor:
    """ICON's local point features (see ``FEATURE_NAMES``); builds the body BVH for one call.

    Args:
        points: (B, N, 3) camera-space query points (metres).
        body_vertices: (B, V, 3) camera-space vertices of the fitted body.
        faces: (F, 3) int64 body faces.
        normal_front: (B, H, W, 3) clothed front normal maps, zeros outside the silhouette.
        normal_back: (B, H, W, 3) clothed back normal maps (front image frame).
        camera: Orthographic or perspective camera of the maps, batch B or 1.
        config: Feature scaling and sign method (default ``ImplicitConfig()``).

    Returns:
        (B, N, C) float features, C = 8: scaled clipped SDF, body normal (3), clothed normal (3), visibility.
    """
    check_points(points, batch=body_vertices.shape[0] if isinstance(body_vertices, torch.Tensor) else None)
    return PointFeatureSampler(body_vertices, faces, normal_front, normal_back, camera, config)(points)


# --------------------------------------------------------------------------------------------------------------- net
class ImplicitNet(nn.Module):
    """Occupancy MLP on point features: LeakyReLU hidden layers, the input re-concatenated at ``skip_layers``.

    Args:
        config: Architecture (default ``ImplicitConfig()``).
    """

    def __init__(self, config: ImplicitConfig | None = None) -> None:
        super().__init__()
        self.config = ImplicitConfig() if config is None else config
        c = self.config.num_features
        widths = (*self.config.hidden, 1)
        layers = []
        prev = c
        for i, w in enumerate(widths):
            fan_in = prev + (c if i in self.config.skip_layers else 0)
            layers.append(nn.Linear(fan_in, w))
            prev = w
        self.layers = nn.ModuleList(layers)
        self.activation = nn.LeakyReLU(self.config.negative_slope)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Occupancy logits.

        Args:
            features: (..., C) point features (see ``point_features``).

        Returns:
            (...) logits, > 0 inside the clothed surface.
        """
        if features.shape[-1] != self.config.num_features:
            raise ValueError(f"features must have {self.config.num_features} channels, got {tuple(features.shape)}")
        x = features
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if i in self.config.skip_layers:
                x = torch.cat([x, features], dim=-1)
            x = layer(x)
            if i < last:
                x = self.activation(x)
        return x[..., 0]


# ----------------------------------------------------------------------------------------------------- reconstruction
def hands_feet_vertex_mask(
    lbs_weights: torch.Tensor, joint_names: tuple[str, ...] | None = None, threshold: float = 0.5
) -> torch.Tensor:
    """Body vertices belonging to the hands and feet: summed skinning weight of the wrist/hand/ankle/foot joints.

    Args:
        lbs_weights: (V, J) skinning weights (e.g. ``BodyModel.lbs_weights``), rows summing to 1.
        joint_names: Names of the J joints (default SMPL's 24, ``body.model.SMPL_JOINT_NAMES``).
        threshold: A vertex is a hand/foot vertex when those joints' weights sum above this.

    Returns:
        (V,) bool mask.
    """
    if joint_names is None:
        from body.model import SMPL_JOINT_NAMES

        joint_names = SMPL_JOINT_NAMES
    if lbs_weights.ndim != 2 or lbs_weights.shape[1] != len(joint_names):
        raise ValueError(f"lbs_weights must be (V, {len(joint_names)}), got {tuple(lbs_weights.shape)}")
    idx = [joint_names.index(n) for n in (*HAND_JOINTS, *FOOT_JOINTS)]
    return lbs_weights[:, idx].sum(dim=1) > threshold


def replace_body_parts(
    vertices: np.ndarray,
    faces: np.ndarray,
    body_vertices: torch.Tensor,
    body_faces: torch.Tensor,
    part_mask: torch.Tensor,
    max_distance: float = 0.04,
) -> tuple[np.ndarray, np.ndarray]:
    """Replace the reconstruction's hands and feet by the body's (ICON's hand replacement, also for feet).

    Reconstructed faces touching a vertex whose closest body point lies on a hand/foot face (all three corners in
    ``part_mask``) within ``max_distance`` are removed; the body's hand/foot faces are appended. The two parts are not
    stitched: an open seam remains around wrists and ankles (ICON re-meshes with Poisson reconstruction; we keep
    the concatenation, which renders and measures correctly but is not watertight).

    Args:
        vertices: (V, 3) reconstructed vertices.
        faces: (F, 3) int64 reconstructed faces.
        body_vertices: (V_b, 3) body vertices in the same frame.
        body_faces: (F_b, 3) int64 body faces.
        part_mask: (V_b,) bool hand/foot vertices (see ``hands_feet_vertex_mask``).
        max_distance: Metres; reconstructed vertices farther from the body keep their faces (e.g. sleeves).

    Returns:
        vertices (V', 3) float32, faces (F', 3) int64, without unreferenced vertices.
    """
    bv = body_vertices.detach().to("cpu", torch.float32)
    bf = body_faces.detach().to("cpu", torch.long)
    mask = part_mask.detach().to("cpu", torch.bool)
    if mask.shape != (bv.shape[0],):
        raise ValueError(f"part_mask must be ({bv.shape[0]},) bool, got {tuple(mask.shape)}")
    face_is_part = mask[bf].all(dim=1)
    part_faces = bf[face_is_part]
    if len(part_faces) == 0 or len(faces) == 0:
        return vertices.astype(np.float32), faces.astype(np.int64)
    points = torch.from_numpy(np.asarray(vertices, np.float32))[None]
    cp = MeshBVH(bv[None], bf, sign_method="none").query(points, normals=False)
    near_part = face_is_part[cp.face_index[0].clamp(min=0)] & (cp.distance[0] < max_distance)
    drop = near_part.numpy()[faces].any(axis=1)
    kept = faces[~drop]
    used = np.unique(kept)
    remap = np.full(len(vertices), -1, np.int64)
    remap[used] = np.arange(len(used))
    body_used = torch.unique(part_faces).numpy()
    body_remap = np.full(bv.shape[0], -1, np.int64)
    body_remap[body_used] = np.arange(len(body_used)) + len(used)
    out_v = np.concatenate([vertices[used], bv.numpy()[body_used]]).astype(np.float32)
    out_f = np.concatenate([remap[kept], body_remap[part_faces.numpy()]]).astype(np.int64)
    return out_v, out_f


def reconstruct_surface(
    net: nn.Module,
    body_vertices: torch.Tensor,
    faces: torch.Tensor,
    normal_front: torch.Tensor,
    normal_back: torch.Tensor,
    camera: Camera,
    resolution: int = 256,
    coarse_resolution: int = 32,
    replace_hands_feet: bool = False,
    *,
    lbs_weights: torch.Tensor | None = None,
    margin: float = 0.2,
    body_band: tuple[float, float] | None = (0.03, 0.08),
    batch_points: int = 2**16,
    config: ImplicitConfig | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Clothed surface of one person: coarse-to-fine marching cubes of the net's logits over the body's box.

    Args:
        net: Maps (..., C) features to (...) occupancy logits (an ``ImplicitNet``); evaluated in no-grad mode.
        body_vertices: (V, 3) camera-space vertices of the fitted body (metres).
        faces: (F, 3) int64 body faces.
        normal_front: (H, W, 3) clothed front normal map.
        normal_back: (H, W, 3) clothed back normal map.
        camera: Camera of the maps, batch size 1.
        resolution: Samples per axis of the box at the finest level (finer along the box's shorter sides).
        coarse_resolution: Samples per axis of the first level.
        replace_hands_feet: Replace hands and feet by the body's (``replace_body_parts``; needs ``lbs_weights``).
        lbs_weights: (V, 24) body skinning weights (``BodyModel.lbs_weights``) selecting the hand/foot vertices.
        margin: Metres added around the body's bounding box (loose garments and hair reach beyond the body).
        body_band: (inside, outside) metres, a prior that the clothed surface lies near the fitted body: points deeper
            than ``inside`` in the body are forced inside and points farther than ``outside`` from it are forced
            outside (a continuous clamp of the logit; the net decides in between). Local features cannot tell depth
            along the viewing axis, so far from the body the net's occupancy hovers near 0.5 and would otherwise
            leave sheets and bubbles there; garments reaching farther than ``outside`` are cut. None disables it.
        batch_points: Points per net evaluation.
        config: Feature settings (default: ``net.config`` if it has one, else ``ImplicitConfig()``).

    Returns:
        vertices (V', 3) float32 and faces (F', 3) int64 (outward, counter-clockwise), the largest component of the
        level set; empty arrays if the net puts no surface in the box.
    """
    from geometry.surface import extract_surface

    if not isinstance(body_vertices, torch.Tensor) or body_vertices.ndim != 2 or body_vertices.shape[1] != 3:
        raise ValueError(
            f"body_vertices must be a (V, 3) tensor of one body, got {getattr(body_vertices, 'shape', '')}"
        )
    for name, m in (("normal_front", normal_front), ("normal_back", normal_back)):
        if not isinstance(m, torch.Tensor) or m.ndim != 3 or m.shape[-1] != 3:
            raise ValueError(f"{name} must be an (H, W, 3) tensor of one view, got {getattr(m, 'shape', '')}")
    if camera.batch_size != 1:
        raise ValueError(f"reconstruct_surface reconstructs one person: camera batch size must be 1, got "
                         f"{camera.batch_size}")  # fmt: skip
    if body_band is not None and not (body_band[0] >= 0 and body_band[1] > 0):
        raise ValueError(f"body_band must be (inside >= 0, outside > 0) metres or None, got {body_band}")
    if replace_hands_feet and lbs_weights is None:
        raise ValueError("replace_hands_feet needs lbs_weights (e.g. BodyModel().lbs_weights) to find hands and feet")
    if config is None:
        config = getattr(net, "config", None)
        config = config if isinstance(config, ImplicitConfig) else ImplicitConfig()
    device = body_vertices.device
    sampler = PointFeatureSampler(body_vertices[None], faces, normal_front[None], normal_back[None], camera, config)

    def field(points: torch.Tensor) -> torch.Tensor:
        features = sampler(points[None].to(body_vertices.dtype))
        logits = net(features)[0]
        if body_band is not None:
            sdf = features[0, :, 0] * config.sdf_scale  # clipped at sdf_clip, beyond the band
            logits = torch.minimum(logits, (body_band[1] - sdf) / config.sdf_scale)
            logits = torch.maximum(logits, (-body_band[0] - sdf) / config.sdf_scale)
        return logits

    # The body's box plus a margin, not a cube: an axis-aligned box bounds how far along the viewing axis an
    # ambiguous prediction can extend (normal maps say nothing about depth beyond the body's).
    lo = body_vertices.detach().amin(dim=0).double().cpu().numpy() - margin
    hi = body_vertices.detach().amax(dim=0).double().cpu().numpy() + margin
    bounds = np.stack([lo, hi])
    was_training = net.training
    net.eval()
    try:
        vertices, tri = extract_surface(
            field, bounds, resolution=resolution, coarse_resolution=coarse_resolution, level=0.0, inside="above",
            batch_points=batch_points, keep_largest=True, device=device,
        )  # fmt: skip
    finally:
        net.train(was_training)
    if replace_hands_feet and len(tri):
        part = hands_feet_vertex_mask(lbs_weights)
        vertices, tri = replace_body_parts(vertices, tri, body_vertices, faces, part)
    return vertices, tri


# -------------------------------------------------------------------------------------------------------- weights IO
def save_implicit_net(path: str | Path, net: ImplicitNet) -> Path:
    """Write the net's weights to a safetensors file with its config as JSON metadata (no pickle).

    Args:
        path: Output file, e.g. ``icon/weights/implicit_net.safetensors`` (parent created).

    Returns:
        The path.
    """
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": WEIGHTS_FORMAT, "config": net.config.model_dump_json()})
    return path


def read_implicit_net_config(path: str | Path) -> ImplicitConfig:
    """The config stored in an implicit-net safetensors file."""
    from safetensors import safe_open

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"implicit-net weights {path} not found; train them with `avatarize train implicit`")
    with safe_open(str(path), framework="pt") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT or "config" not in meta:
        raise ValueError(f"{path} is not an implicit-net weights file (metadata format {meta.get('format')!r}, "
                         f"expected {WEIGHTS_FORMAT!r})")  # fmt: skip
    return ImplicitConfig.model_validate_json(meta["config"])


def load_implicit_net(path: str | Path, device: str | torch.device = "cpu") -> ImplicitNet:
    """Build an ``ImplicitNet`` from a file written by ``save_implicit_net`` (eval mode, on ``device``)."""
    from safetensors.torch import load_file

    net = ImplicitNet(read_implicit_net_config(path))
    net.load_state_dict(load_file(str(path), device="cpu"))
    return net.to(device).eval()
