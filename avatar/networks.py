"""The avatar's networks: skinning-weight fields (inverse: posed point + frame code, forward: canonical point) and
the pose-conditioned signed distance field in canonical space (SCANimate, Saito et al. CVPR'21).

Networks take points in a normalised frame (``(x - center) / scale``, set by the caller) so that the body fills
roughly the unit cube; the SDF returns distances in those normalised units.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from avatar.lbs import joint_neighbourhood
from body.lbs import NUM_JOINTS

__all__ = ["PoseConditionedSDF", "SkinningNet", "positional_encoding"]


def positional_encoding(x: torch.Tensor, num_frequencies: int) -> torch.Tensor:
    """NeRF-style encoding ``[x, sin(2^k pi x), cos(2^k pi x)]`` for k < num_frequencies; (..., 3) -> (..., 3 + 6k)."""
    if num_frequencies <= 0:
        return x
    freqs = (2.0 ** torch.arange(num_frequencies, dtype=x.dtype, device=x.device)) * math.pi
    xf = (x[..., None, :] * freqs[:, None]).flatten(-2)
    return torch.cat([x, torch.sin(xf), torch.cos(xf)], dim=-1)


class SkinningNet(nn.Module):
    """Point (and optional per-frame latent code) -> 24 skinning weights (softmax).

    Args:
        num_frequencies: positional-encoding frequencies of the point.
        width: hidden width.
        depth: number of hidden layers.
        num_codes: number of per-frame latent codes (0 for a pose-independent forward net).
        code_dim: latent code size.
    """

    def __init__(self, num_frequencies: int = 4, width: int = 128, depth: int = 4, num_codes: int = 0,
                 code_dim: int = 16) -> None:  # fmt: skip
        super().__init__()
        self.num_frequencies = num_frequencies
        self.code_dim = code_dim if num_codes > 0 else 0
        self.codes = nn.Embedding(num_codes, code_dim) if num_codes > 0 else None
        if self.codes is not None:
            nn.init.zeros_(self.codes.weight)
        layers: list[nn.Module] = []
        dim = 3 + 6 * num_frequencies + self.code_dim
        for _ in range(depth):
            layers += [nn.Linear(dim, width), nn.Softplus(beta=20.0)]
            dim = width
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(width, NUM_JOINTS)

    def logits(self, points: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Unnormalised log-weights (B, N, 24) for points (B, N, 3) and frame indices (B,) (inverse nets only)."""
        h = positional_encoding(points, self.num_frequencies)
        if self.codes is not None:
            if frame is None:
                raise ValueError("this skinning net is conditioned on a frame code: pass frame indices (B,)")
            code = self.codes(frame.to(device=points.device, dtype=torch.long))[:, None]
            h = torch.cat([h, code.expand(-1, points.shape[1], -1)], dim=-1)
        return self.head(self.body(h))

    def forward(self, points: torch.Tensor, frame: torch.Tensor | None = None) -> torch.Tensor:
        """Skinning weights (B, N, 24), rows summing to 1."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        return torch.softmax(self.logits(points, frame), dim=-1)


class PoseConditionedSDF(nn.Module):
    """Signed distance in canonical space conditioned on the pose, each point seeing only the joints that move it.

    The pose enters as per-joint features (B, 23, 6) (``avatar.lbs.pose_features``); a point with forward skinning
    weights w (N, 24) gets ``attention = clamp(w @ neighbourhood, 0, 1)`` (23 values: its bone's joint, parent and
    children), and the network's pose input is ``attention[..., None] * features`` flattened (SCANimate's
    skinning-weight attention). Geometric initialisation (Atzmon & Lipman) starts it as a sphere of radius
    ``init_radius``.

    Args:
        num_frequencies: positional-encoding frequencies of the point.
        width: hidden width.
        depth: number of hidden layers (the input is re-concatenated halfway).
        init_radius: radius of the initial sphere (normalised units).
    """

    def __init__(self, num_frequencies: int = 4, width: int = 256, depth: int = 6, init_radius: float = 0.5) -> None:
        super().__init__()
        self.num_frequencies = num_frequencies
        self.point_dim = 3 + 6 * num_frequencies
        self.pose_dim = (NUM_JOINTS - 1) * 6
        self.register_buffer("neighbourhood", joint_neighbourhood(), persistent=False)
        in_dim = self.point_dim + self.pose_dim
        self.skip = depth // 2
        self.layers = nn.ModuleList()
        dim = in_dim
        for i in range(depth):
            if i == self.skip:
                dim += in_dim
            lin = nn.Linear(dim, width)
            nn.init.normal_(lin.weight, 0.0, math.sqrt(2.0) / math.sqrt(width))
            nn.init.zeros_(lin.bias)
            if i == 0:
                lin.weight.data[:, 3:] = 0.0  # start from the plain coordinates only
            if i == self.skip:
                lin.weight.data[:, dim - in_dim + 3 :] = 0.0
            self.layers.append(lin)
            dim = width
        self.out = nn.Linear(width, 1)
        nn.init.normal_(self.out.weight, math.sqrt(math.pi) / math.sqrt(width), 1e-4)
        nn.init.constant_(self.out.bias, -init_radius)
        self.act = nn.Softplus(beta=100.0)

    def pose_input(self, weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """Attended pose input (B, N, 138) from skinning weights (B, N, 24) and pose features (B, 23, 6)."""
        attention = (weights @ self.neighbourhood.to(weights)).clamp(0.0, 1.0)  # (B, N, 23)
        return (attention[..., None] * features[:, None].to(weights)).flatten(-2)

    def forward(self, points: torch.Tensor, weights: torch.Tensor, features: torch.Tensor) -> torch.Tensor:
        """SDF (B, N) at normalised canonical points (B, N, 3) with their skinning weights (B, N, 24) for poses
        given as features (B, 23, 6)."""
        if points.ndim != 3 or points.shape[-1] != 3:
            raise ValueError(f"points must be (B, N, 3), got {tuple(points.shape)}")
        if features.ndim != 3 or features.shape[1:] != (NUM_JOINTS - 1, 6):
            raise ValueError(f"features must be (B, 23, 6), got {tuple(features.shape)}")
        x = torch.cat([positional_encoding(points, self.num_frequencies), self.pose_input(weights, features)], -1)
        h = x
        for i, lin in enumerate(self.layers):
            if i == self.skip:
                h = torch.cat([h, x], dim=-1)
            h = self.act(lin(h))
        return self.out(h)[..., 0]
