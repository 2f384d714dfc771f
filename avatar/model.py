"""The trained avatar (networks, canonical mesh, skeleton) and its save/load helpers (safetensors + JSON, no pickle)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import torch

from avatar.config import AvatarConfig
from avatar.lbs import pose_features
from avatar.networks import PoseConditionedSDF, SkinningNet
from avatar.poses import FramePoses
from body.lbs import global_joint_transforms, skinning_transforms

__all__ = ["Avatar", "build_networks", "load_avatar", "save_avatar"]

FORMAT = "avatarize.avatar"
FORMAT_VERSION = 2  # 2: per-training-frame poses (held and fitted); version 1 files load with none
_TENSORS = ("betas", "rest_joints", "canonical_pose", "center", "vertices", "faces", "skin_weights",
            "reference_features", "bounds")  # fmt: skip
_POSE_SETS = ("frame_poses", "fitted_poses")
_POSE_FIELDS = ("global_orient", "body_pose", "transl")


@dataclass
class Avatar:
    """A skinned clothed avatar in the canonical Da-pose.

    Attributes:
        config: the training configuration.
        inverse_net: posed point (pelvis frame, normalised) + frame code -> weights; one code per training frame.
        forward_net: canonical point (normalised) -> weights.
        sdf_net: pose-conditioned SDF in canonical space (normalised units).
        betas: (num_betas,) body shape.
        rest_joints: (24, 3) joints of the shaped body in the zero pose (metres).
        canonical_pose: (69,) body pose of the canonical Da-pose (axis-angle).
        center: (3,) centre of the normalised canonical frame (metres); ``x_norm = (x - center) / scale``.
        scale: metres per normalised unit.
        vertices: (V, 3) canonical mesh (metres, canonical pose).
        faces: (F, 3) int64 faces, counter-clockwise seen from outside.
        skin_weights: (V, 24) forward skinning weights of the canonical mesh's vertices, rows summing to 1.
        reference_features: (23, 6) pose features the canonical mesh was extracted at.
        bounds: (2, 3) canonical box (metres) the surface is extracted in.
        history: training curves, loss name -> one value per logged step.
        frame_poses: the pose the avatar holds in each training frame (T frames, in training order): the fitted
            pose refined by ``avatar.poses.refine_frame_poses`` (equal to ``fitted_poses`` when refinement is off).
        fitted_poses: the body fits the avatar was trained from (T frames).
    """

    config: AvatarConfig
    inverse_net: SkinningNet
    forward_net: SkinningNet
    sdf_net: PoseConditionedSDF
    betas: torch.Tensor
    rest_joints: torch.Tensor
    canonical_pose: torch.Tensor
    center: torch.Tensor
    scale: float
    vertices: torch.Tensor
    faces: torch.Tensor
    skin_weights: torch.Tensor
    reference_features: torch.Tensor
    bounds: torch.Tensor
    history: dict[str, list[float]] = field(default_factory=dict)
    frame_poses: FramePoses = field(default_factory=FramePoses.empty)
    fitted_poses: FramePoses = field(default_factory=FramePoses.empty)

    @property
    def device(self) -> torch.device:
        return self.vertices.device

    @property
    def canonical_transforms(self) -> torch.Tensor:
        """(24, 4, 4) global joint transforms of the canonical pose."""
        zero = torch.zeros(1, 3, dtype=self.rest_joints.dtype, device=self.rest_joints.device)
        return global_joint_transforms(self.rest_joints, zero, self.canonical_pose[None])[0]

    @property
    def canonical_joints(self) -> torch.Tensor:
        """(24, 3) joint positions in the canonical pose (metres)."""
        return self.canonical_transforms[:, :3, 3]

    def transforms(self, global_orient: torch.Tensor, body_pose: torch.Tensor, transl: torch.Tensor | None = None):
        """(B, 24, 4, 4) skinning transforms from the canonical pose to poses (B, 3), (B, 69), (B, 3)."""
        posed = global_joint_transforms(self.rest_joints, global_orient, body_pose, transl)
        return skinning_transforms(posed, self.canonical_transforms)

    def pose_features(self, global_orient: torch.Tensor, body_pose: torch.Tensor) -> torch.Tensor:
        """(B, 23, 6) SDF pose features of poses (B, 3), (B, 69)."""
        return pose_features(global_orient, body_pose, self.canonical_pose[None])

    def normalise(self, points: torch.Tensor) -> torch.Tensor:
        """Canonical points (metres) -> the networks' normalised frame."""
        return (points - self.center.to(points)) / self.scale

    def canonical_weights(self, points: torch.Tensor) -> torch.Tensor:
        """Forward skinning weights (B, N, 24) of canonical points (B, N, 3) in metres."""
        return self.forward_net(self.normalise(points))

    def vertex_weights(self, vertices: torch.Tensor, batch_points: int = 2**16) -> torch.Tensor:
        """Forward skinning weights (V, 24) of canonical vertices (V, 3), evaluated in chunks of ``batch_points``."""
        return torch.cat([self.canonical_weights(c[None])[0] for c in vertices.split(batch_points)])

    def canonical_sdf(self, points: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Signed distance (B, N) in metres of canonical points (B, N, 3) for pose features (B, 23, 6)."""
        x = self.normalise(points)
        return self.sdf_net(x, self.forward_net(x), features) * self.scale

    def to(self, device) -> Avatar:
        """Move everything to ``device`` (in place); returns self."""
        for name in ("inverse_net", "forward_net", "sdf_net"):
            getattr(self, name).to(device)
        for name in _TENSORS:
            setattr(self, name, getattr(self, name).to(device))
        for name in _POSE_SETS:
            setattr(self, name, getattr(self, name).to(device))
        return self


def build_networks(config: AvatarConfig, num_frames: int) -> tuple[SkinningNet, SkinningNet, PoseConditionedSDF]:
    """The three networks for ``config`` (the inverse net has one latent code per training frame)."""
    inverse = SkinningNet(config.skin_frequencies, config.skin_width, config.skin_depth, num_frames, config.code_dim)
    forward = SkinningNet(config.skin_frequencies, config.skin_width, config.skin_depth)
    sdf = PoseConditionedSDF(config.sdf_frequencies, config.sdf_width, config.sdf_depth)
    return inverse, forward, sdf


def save_avatar(avatar: Avatar, directory: str | Path) -> Path:
    """Write ``avatar.safetensors`` (networks and arrays) and ``avatar.json`` (config, sizes) into ``directory``."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    tensors = {f"data.{k}": getattr(avatar, k).detach().cpu().contiguous() for k in _TENSORS}
    for s in _POSE_SETS:
        for k in _POSE_FIELDS:
            tensors[f"{s}.{k}"] = getattr(getattr(avatar, s), k).detach().cpu().float().contiguous()
    for name in ("inverse_net", "forward_net", "sdf_net"):
        for k, v in getattr(avatar, name).state_dict().items():
            tensors[f"{name}.{k}"] = v.detach().cpu().contiguous()
    save_file(tensors, str(directory / "avatar.safetensors"))
    meta = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "config": avatar.config.model_dump(mode="json"),
        "num_frames": int(avatar.inverse_net.codes.num_embeddings) if avatar.inverse_net.codes is not None else 0,
        "scale": float(avatar.scale),
        "num_vertices": int(avatar.vertices.shape[0]),
        "history": avatar.history,
    }
    (directory / "avatar.json").write_text(json.dumps(meta, indent=2))
    return directory


def load_avatar(directory: str | Path, device: str | torch.device = "cpu") -> Avatar:
    """Read an avatar written by :func:`save_avatar` onto ``device``."""
    from safetensors.torch import load_file

    directory = Path(directory)
    meta_path, data_path = directory / "avatar.json", directory / "avatar.safetensors"
    if not meta_path.is_file() or not data_path.is_file():
        raise ValueError(f"{directory}: not an avatar directory (expected avatar.json and avatar.safetensors)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format is {meta.get('format')!r}, expected {FORMAT!r}")
    if int(meta.get("version", 0)) > FORMAT_VERSION:
        raise ValueError(f"{meta_path}: avatar format version {meta['version']} is newer than this code supports")
    config = AvatarConfig(**meta["config"])
    tensors = load_file(str(data_path), device="cpu")
    nets = build_networks(config, int(meta["num_frames"]))
    for name, net in zip(("inverse_net", "forward_net", "sdf_net"), nets, strict=True):
        prefix = f"{name}."
        net.load_state_dict({k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)})
        net.eval()
    data = {k: tensors[f"data.{k}"] for k in _TENSORS}
    history = {str(k): [float(x) for x in v] for k, v in meta.get("history", {}).items()}
    poses = {
        s: FramePoses(*(tensors[f"{s}.{k}"] for k in _POSE_FIELDS)) if f"{s}.global_orient" in tensors
        else FramePoses.empty()
        for s in _POSE_SETS
    }  # fmt: skip
    avatar = Avatar(config, *nets, scale=float(meta["scale"]), history=history, **data, **poses)
    return avatar.to(device)
