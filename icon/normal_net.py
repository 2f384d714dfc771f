"""Body-guided clothed normal prediction (ICON's normal net): image + body normal maps → front/back clothed normals.

Owns the network (`NormalNet`, two small U-Nets), its config, losses, the batched inference entry point
(`predict_normals`), the angular-error metric and the safetensors weight format. Pure compute, except the explicit
`save_normal_net` / `load_normal_net` helpers taking paths.

Normal maps follow docs/conventions.md: camera space, unit length, front = nearest surface, back = farthest surface,
both pixel-aligned to the front view, zeros outside the mask.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = "avatarize.normal_net/1"
_EPS = 1e-6
# Input channels of each side's network: RGB (3) + that side's body normals (3) + mask (1).
_IN_CHANNELS = 7

ArrayLike = torch.Tensor | np.ndarray


class NormalNetConfig(BaseModel):
    """Architecture of the normal net (stored with its weights)."""

    model_config = ConfigDict(extra="forbid")

    base_channels: int = Field(16, ge=4, le=256)
    """Channels of the full-resolution U-Net level; each level down doubles them (capped at `max_channels`)."""
    max_channels: int = Field(64, ge=4, le=1024)
    """Upper bound on channels at any level (keeps deep configs small)."""
    depth: int = Field(4, ge=1, le=6)
    """Number of stride-2 down-sampling levels; inputs are padded to a multiple of 2**depth internally."""
    residual_blocks: int = Field(2, ge=0, le=16)
    """Residual blocks at the bottleneck (the pix2pixHD global-generator trunk, shortened)."""
    norm: Literal["group", "instance", "batch", "none"] = "group"
    """Normalisation after each convolution; `group` does not depend on the batch size (good for small batches)."""
    image_size: int = Field(128, ge=16, le=2048)
    """Side (px) of the square images the net was trained at; `predict_normals` resizes inputs to it and back."""

    def channels(self, level: int) -> int:
        """Channels at U-Net `level` (0 = full resolution)."""
        return min(self.base_channels * 2**level, self.max_channels)


# ----------------------------------------------------------------------------------------------------------------------
# Network
# ----------------------------------------------------------------------------------------------------------------------


def _norm_layer(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        groups = math.gcd(channels, 8)
        return nn.GroupNorm(groups, channels)
    if kind == "instance":
        return nn.InstanceNorm2d(channels, affine=True)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class _ConvBlock(nn.Sequential):
    """3×3 convolution → normalisation → SiLU."""

    def __init__(self, c_in: int, c_out: int, norm: str, stride: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=norm == "none"),
            _norm_layer(norm, c_out),
            nn.SiLU(inplace=True),
        )


class _ResidualBlock(nn.Module):
    def __init__(self, channels: int, norm: str) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            _norm_layer(norm, channels),
            nn.SiLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=norm == "none"),
            _norm_layer(norm, channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class _UNet(nn.Module):
    """Compact U-Net: conv encoder (stride-2), residual trunk, bilinear-upsampling decoder with skips, 1×1 head.

    The head is zero-initialised so the network starts by predicting zero.
    """

    def __init__(self, c_in: int, c_out: int, config: NormalNetConfig) -> None:
        super().__init__()
        norm = config.norm
        self.depth = config.depth
        ch = [config.channels(i) for i in range(config.depth + 1)]
        self.stem = nn.Sequential(_ConvBlock(c_in, ch[0], norm), _ConvBlock(ch[0], ch[0], norm))
        self.down = nn.ModuleList(
            nn.Sequential(_ConvBlock(ch[i - 1], ch[i], norm, stride=2), _ConvBlock(ch[i], ch[i], norm))
            for i in range(1, config.depth + 1)
        )
        self.trunk = nn.Sequential(*(_ResidualBlock(ch[-1], norm) for _ in range(config.residual_blocks)))
        self.up = nn.ModuleList(
            nn.Sequential(_ConvBlock(ch[i] + ch[i - 1], ch[i - 1], norm), _ConvBlock(ch[i - 1], ch[i - 1], norm))
            for i in range(config.depth, 0, -1)
        )
        self.head = nn.Conv2d(ch[0], c_out, 1)
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        H, W = x.shape[-2:]
        k = 2**self.depth
        pad_h, pad_w = (-H) % k, (-W) % k
        if pad_h or pad_w:
            x = F.pad(x, (0, pad_w, 0, pad_h))
        x = self.stem(x)
        skips = []
        for down in self.down:
            skips.append(x)
            x = down(x)
        x = self.trunk(x)
        for up in self.up:
            skip = skips.pop()
            x = F.interpolate(x, size=skip.shape[-2:], mode="bilinear", align_corners=False)
            x = up(torch.cat([x, skip], dim=1))
        return self.head(x)[..., :H, :W]


def unit_normals(n: torch.Tensor, dim: int = 1) -> torch.Tensor:
    """Normalise vectors along `dim` to unit length; (near-)zero vectors stay (near-)zero instead of NaN."""
    return n / n.norm(dim=dim, keepdim=True).clamp_min(_EPS)


class NormalNet(nn.Module):
    """Front and back clothed-normal predictors, each a U-Net on RGB + that side's body normals + mask.

    Each side predicts a *residual* on the body normals: ``normal = normalize(body_normal + Δ)``, masked to the
    silhouette. The last layer of each U-Net is zero-initialised, so an untrained net returns exactly the (unit,
    masked) body normals, i.e. the non-learned baseline; training only has to learn the clothing's deviation (and the
    normals of loose garments outside the body, where the body normal is zero).

    `forward` works channels-first on prepared tensors; use `predict_normals` for (B, H, W, C) images at any size.
    """

    def __init__(self, config: NormalNetConfig | None = None) -> None:
        super().__init__()
        self.config = config or NormalNetConfig()
        self.front = _UNet(_IN_CHANNELS, 3, self.config)
        self.back = _UNet(_IN_CHANNELS, 3, self.config)

    @staticmethod
    def _side(net: _UNet, rgb: torch.Tensor, mask: torch.Tensor, body: torch.Tensor) -> torch.Tensor:
        delta = net(torch.cat([rgb * mask, body * mask, mask], dim=1))
        return unit_normals(body + delta) * mask

    def forward(
        self, rgb: torch.Tensor, mask: torch.Tensor, body_front: torch.Tensor, body_back: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Predict clothed normals.

        Args:
            rgb: (B, 3, H, W) float in [-1, 1].
            mask: (B, 1, H, W) float in {0, 1}, the person's silhouette.
            body_front: (B, 3, H, W) float, front body normals (zeros off the body).
            body_back: (B, 3, H, W) float, back body normals.

        Returns:
            (front, back), each (B, 3, H, W) float: unit normals inside the mask, zeros outside.
        """
        front = self._side(self.front, rgb, mask, body_front)
        back = self._side(self.back, rgb, mask, body_back)
        return front, back


# ----------------------------------------------------------------------------------------------------------------------
# Losses and metric
# ----------------------------------------------------------------------------------------------------------------------


def masked_l1(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean absolute error over the masked pixels. pred, gt (B, C, H, W); mask (B, 1, H, W) in {0, 1}."""
    denom = (mask.sum() * pred.shape[1]).clamp_min(1.0)
    return ((pred - gt).abs() * mask).sum() / denom


def multiscale_gradient_loss(pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """L1 between the finite-difference gradients of `pred` and `gt` at `scales` dyadic scales, inside the mask.

    A structural term (wrinkles, folds, edges) that needs no pretrained network. Only pixel pairs fully inside the
    mask count, so the silhouette edge itself is left to the L1 term.
    """
    total = pred.new_zeros(())
    for s in range(scales):
        if s:
            pred = F.avg_pool2d(pred, 2)
            gt = F.avg_pool2d(gt, 2)
            mask = (F.avg_pool2d(mask, 2) > 0.999).to(mask.dtype)
        if min(pred.shape[-2:]) < 2:
            break
        for dim in (-1, -2):
            d_pred = pred.diff(dim=dim)
            d_gt = gt.diff(dim=dim)
            m = mask.narrow(dim, 1, mask.shape[dim] - 1) * mask.narrow(dim, 0, mask.shape[dim] - 1)
            total = total + masked_l1(d_pred, d_gt, m)
    return total / scales


def normal_loss(
    pred: torch.Tensor, gt: torch.Tensor, mask: torch.Tensor, w_gradient: float = 0.5, scales: int = 3
) -> torch.Tensor:
    """Training loss of one side: masked L1 on normals + `w_gradient` × multi-scale gradient L1.

    Args:
        pred, gt: (B, 3, H, W) normals. mask: (B, 1, H, W) in {0, 1}.
    """
    loss = masked_l1(pred, gt, mask)
    if w_gradient > 0:
        loss = loss + w_gradient * multiscale_gradient_loss(pred, gt, mask, scales)
    return loss


def angular_error_deg(pred: ArrayLike, gt: ArrayLike, mask: ArrayLike) -> torch.Tensor:
    """Per-image mean angle (degrees) between `pred` and `gt` normals over the mask.

    Args:
        pred, gt: (B, H, W, 3) normals (normalised here; a zero vector counts as 90° off any unit normal).
        mask: (B, H, W) bool.

    Returns:
        (B,) float64 tensor on pred's device; NaN for an image with an empty mask.
    """
    pred_t = torch.as_tensor(pred).double()
    gt_t = torch.as_tensor(gt, device=pred_t.device).double()
    mask_t = torch.as_tensor(mask, device=pred_t.device).bool()
    if pred_t.ndim != 4 or pred_t.shape[-1] != 3 or gt_t.shape != pred_t.shape or mask_t.shape != pred_t.shape[:-1]:
        raise ValueError(
            f"angular_error_deg expects pred, gt (B, H, W, 3) and mask (B, H, W); got {tuple(pred_t.shape)}, "
            f"{tuple(gt_t.shape)}, {tuple(mask_t.shape)}"
        )
    p = unit_normals(pred_t, dim=-1)
    g = unit_normals(gt_t, dim=-1)
    # atan2(|p×g|, p·g) is accurate for small angles, unlike acos; atan2(0, 0) = 0 would make a missing normal
    # perfect, so zero vectors are set to 90° explicitly.
    angle = torch.rad2deg(torch.atan2(torch.linalg.cross(p, g).norm(dim=-1), (p * g).sum(-1)))
    present = (pred_t.norm(dim=-1) > _EPS) & (gt_t.norm(dim=-1) > _EPS)
    angle = torch.where(present, angle, torch.full_like(angle, 90.0))
    m = mask_t.double()
    count = m.sum(dim=(1, 2))
    return (angle * m).sum(dim=(1, 2)) / count.where(count > 0, torch.nan)


# ----------------------------------------------------------------------------------------------------------------------
# Input preparation and inference
# ----------------------------------------------------------------------------------------------------------------------


def _check_batch(images: torch.Tensor, masks: torch.Tensor, body_front: torch.Tensor, body_back: torch.Tensor) -> None:
    if images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"images must be (B, H, W, 3) uint8 or float in [0, 1]; got shape {tuple(images.shape)}")
    B, H, W = images.shape[:3]
    if tuple(masks.shape) != (B, H, W):
        raise ValueError(f"masks must be (B, H, W) = {(B, H, W)} bool, matching images; got {tuple(masks.shape)}")
    for name, n in (("body_normals_front", body_front), ("body_normals_back", body_back)):
        if tuple(n.shape) != (B, H, W, 3):
            raise ValueError(f"{name} must be (B, H, W, 3) = {(B, H, W, 3)}, matching images; got {tuple(n.shape)}")


def _resize_normals(n: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly resize (B, 3, H, W) normal maps; re-normalise, keeping pixels that were mostly off-surface at 0."""
    n = F.interpolate(n, size=size, mode="bilinear", align_corners=False, antialias=True)
    length = n.norm(dim=1, keepdim=True)
    return torch.where(length > 0.5, n / length.clamp_min(_EPS), torch.zeros_like(n))


def prepare_inputs(
    images: torch.Tensor,
    masks: torch.Tensor,
    body_front: torch.Tensor,
    body_back: torch.Tensor,
    size: tuple[int, int] | None = None,
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Boundary (B, H, W, C) tensors → the channels-first inputs of `NormalNet.forward`, resized to `size` (H, W).

    images uint8 in [0, 255] or float in [0, 1] → rgb in [-1, 1]; masks bool → {0, 1} float (nearest-ish resize by a
    0.5 threshold on the bilinear average); body normals re-normalised after resizing.
    """
    rgb = images.permute(0, 3, 1, 2)
    rgb = rgb.float() / 255.0 if rgb.dtype == torch.uint8 else rgb.float()
    rgb = rgb * 2.0 - 1.0
    mask = masks[:, None].float()
    bf = body_front.permute(0, 3, 1, 2).float()
    bb = body_back.permute(0, 3, 1, 2).float()
    if size is not None and tuple(size) != tuple(rgb.shape[-2:]):
        rgb = F.interpolate(rgb, size=size, mode="bilinear", align_corners=False, antialias=True)
        mask = (F.interpolate(mask, size=size, mode="bilinear", align_corners=False, antialias=True) > 0.5).float()
        bf = _resize_normals(bf, size)
        bb = _resize_normals(bb, size)
    # Contiguous NCHW: permuted (channels-last strided) inputs would switch every convolution to another layout.
    return rgb.contiguous(), mask.contiguous(), (bf * mask).contiguous(), (bb * mask).contiguous()


def working_size(config: NormalNetConfig, height: int, width: int) -> tuple[int, int]:
    """The (H, W) at which the net processes an (height, width) image: longer side = `config.image_size`."""
    scale = config.image_size / max(height, width)
    return max(1, round(height * scale)), max(1, round(width * scale))


@torch.no_grad()
def predict_normals(
    net: NormalNet,
    images: ArrayLike,
    masks: ArrayLike,
    body_normals_front: ArrayLike,
    body_normals_back: ArrayLike,
    batch_size: int = 16,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predict clothed front/back normal maps for a batch of person crops.

    Inputs are resized so the longer side equals the net's `image_size`, and the outputs are resized back, re-normalised
    and masked with the full-resolution masks. Runs on the net's device in chunks of `batch_size`.

    Args:
        net: a `NormalNet` (its device is used; it is put in eval mode for the call).
        images: (B, H, W, 3) uint8, or float in [0, 1].
        masks: (B, H, W) bool silhouettes.
        body_normals_front: (B, H, W, 3) float, camera-space body normals of the nearest surface (zeros off the body).
        body_normals_back: (B, H, W, 3) float, of the farthest surface.

    Returns:
        (front, back), each (B, H, W, 3) float32 on the device of `images` (CPU for numpy input): unit normals inside
        the mask, zeros outside.
    """
    out_device = images.device if isinstance(images, torch.Tensor) else torch.device("cpu")
    images_t = torch.as_tensor(images)
    masks_t = torch.as_tensor(masks).bool()
    bf_t = torch.as_tensor(body_normals_front)
    bb_t = torch.as_tensor(body_normals_back)
    _check_batch(images_t, masks_t, bf_t, bb_t)
    B, H, W = images_t.shape[:3]
    device = next(net.parameters()).device
    size = working_size(net.config, H, W)
    was_training = net.training
    net.eval()
    fronts, backs = [], []
    try:
        for i in range(0, B, batch_size):
            sl = slice(i, i + batch_size)
            full_mask = masks_t[sl].to(device)
            rgb, mask, bf, bb = prepare_inputs(
                images_t[sl].to(device), full_mask, bf_t[sl].to(device), bb_t[sl].to(device), size
            )
            front, back = net(rgb, mask, bf, bb)
            if size != (H, W):
                front = F.interpolate(front, size=(H, W), mode="bilinear", align_corners=False)
                back = F.interpolate(back, size=(H, W), mode="bilinear", align_corners=False)
            m = full_mask[:, None].float()
            fronts.append((unit_normals(front) * m).permute(0, 2, 3, 1).to(out_device))
            backs.append((unit_normals(back) * m).permute(0, 2, 3, 1).to(out_device))
    finally:
        net.train(was_training)
    return torch.cat(fronts), torch.cat(backs)


# ----------------------------------------------------------------------------------------------------------------------
# Weights IO
# ----------------------------------------------------------------------------------------------------------------------


def save_normal_net(path: str | Path, net: NormalNet, config: NormalNetConfig | None = None) -> Path:
    """Write the net's weights to a safetensors file; the config goes into the metadata as JSON (no pickle)."""
    from safetensors.torch import save_file

    config = config or net.config
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().cpu().contiguous() for k, v in net.state_dict().items()}
    save_file(tensors, str(path), metadata={"format": WEIGHTS_FORMAT, "config": config.model_dump_json()})
    return path


def read_normal_net_config(path: str | Path) -> NormalNetConfig:
    """Read only the config stored in a normal-net safetensors file."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt", device="cpu") as f:
        meta = f.metadata() or {}
    if meta.get("format") != WEIGHTS_FORMAT:
        raise ValueError(
            f"{path} is not a normal-net weights file (metadata format {meta.get('format')!r}, expected "
            f"{WEIGHTS_FORMAT!r}); train one with `avatarize train normal-net`."
        )
    return NormalNetConfig.model_validate(json.loads(meta["config"]))


def load_normal_net(path: str | Path, device: str | torch.device = "cpu") -> NormalNet:
    """Load a `NormalNet` written by `save_normal_net`, on `device`, in eval mode."""
    from safetensors.torch import load_file

    config = read_normal_net_config(path)
    net = NormalNet(config)
    net.load_state_dict(load_file(str(path), device="cpu"))
    return net.to(device).eval()
