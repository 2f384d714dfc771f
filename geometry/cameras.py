"""Batched pinhole and orthographic cameras: projection to pixels and per-pixel rays (see docs/conventions.md).

Camera space is OpenGL-style (x right, y up, looking along -z); pixels have u to the right, v down and pixel (i, j)
has its centre at (u, v) = (j + 0.5, i + 0.5). World = camera space unless the caller transforms points first.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

__all__ = ["OrthographicCamera", "PerspectiveCamera", "Camera", "pixel_centers", "check_points"]


def check_points(points: torch.Tensor, name: str = "points", batch: int | None = None) -> None:
    """Raise a ValueError unless ``points`` is a (B, N, 3) floating tensor (with B == ``batch`` when given)."""
    if not isinstance(points, torch.Tensor):
        raise ValueError(f"{name} must be a torch.Tensor of shape (B, N, 3), got {type(points).__name__}")
    if points.ndim != 3 or points.shape[-1] != 3:
        raise ValueError(f"{name} must have shape (B, N, 3), got {tuple(points.shape)}")
    if not points.is_floating_point():
        raise ValueError(f"{name} must be a floating tensor, got {points.dtype}")
    if batch is not None and points.shape[0] != batch:
        raise ValueError(f"{name} has batch size {points.shape[0]} but the camera has batch size {batch}")


def pixel_centers(height: int, width: int, device=None, dtype=torch.float32) -> torch.Tensor:
    """Pixel-centre coordinates of an image.

    Args:
        height: Image height H in pixels.
        width: Image width W in pixels.
        device: Torch device of the result.
        dtype: Floating dtype of the result.

    Returns:
        (H, W, 2) tensor of (u, v) = (j + 0.5, i + 0.5) for pixel (row i, col j).
    """
    v = torch.arange(height, device=device, dtype=dtype) + 0.5
    u = torch.arange(width, device=device, dtype=dtype) + 0.5
    vv, uu = torch.meshgrid(v, u, indexing="ij")
    return torch.stack([uu, vv], dim=-1)


def _as_batch(value, name: str) -> torch.Tensor:
    t = torch.as_tensor(value)
    if not t.is_floating_point():
        t = t.to(torch.get_default_dtype())
    if t.ndim == 0:
        t = t.reshape(1)
    if t.ndim != 1:
        raise ValueError(f"camera parameter {name} must be a (B,) tensor, got shape {tuple(t.shape)}")
    return t


class _CameraBase:
    """Methods shared by the camera dataclasses (which define cx, cy, width, height)."""

    _param_names: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        self._check_common(self._param_names)

    def _check_common(self, names: tuple[str, ...]) -> None:
        if int(self.width) <= 0 or int(self.height) <= 0:
            raise ValueError(f"camera width/height must be positive ints, got {self.width}x{self.height}")
        values = [_as_batch(getattr(self, n), n) for n in names]
        batch = max(v.shape[0] for v in values)
        for n, v in zip(names, values, strict=True):
            if v.shape[0] not in (1, batch):
                raise ValueError(f"camera parameter {n} has batch size {v.shape[0]}, others have {batch}")
            object.__setattr__(self, n, v.expand(batch).to(values[0].device))
        object.__setattr__(self, "width", int(self.width))
        object.__setattr__(self, "height", int(self.height))

    @property
    def batch_size(self) -> int:
        """Number of cameras B."""
        return int(self.cx.shape[0])

    def _pixel_plane(self, k: torch.Tensor, height: int | None, width: int | None, device, dtype):
        """Pixel centres of the view resampled to (height, width), mapped to (x, y) = ((u - cx), (cy - v)) / k.

        ``k`` is the (B,) pixels-per-unit factor (orthographic scale or focal length); returns (B, H, W) x and y.
        """
        height = self.height if height is None else int(height)
        width = self.width if width is None else int(width)
        sx = width / self.width
        sy = height / self.height
        cx = self.cx.to(device=device, dtype=dtype)[:, None, None] * sx
        cy = self.cy.to(device=device, dtype=dtype)[:, None, None] * sy
        k = k.to(device=device, dtype=dtype)[:, None, None]
        uv = pixel_centers(height, width, device, dtype)
        x = (uv[None, ..., 0] - cx) / (k * sx)
        y = (cy - uv[None, ..., 1]) / (k * sy)
        return x, y

    def to(self, device=None, dtype=None):
        """Copy with parameters moved to ``device`` / cast to ``dtype``."""
        fields = {n: getattr(self, n).to(device=device, dtype=dtype) for n in self._param_names}
        return replace(self, **fields)

    def project(self, points: torch.Tensor) -> torch.Tensor:
        """Project camera-space points to pixels (differentiable).

        Args:
            points: (B, N, 3) camera-space points in metres.

        Returns:
            (B, N, 2) pixel coordinates (u, v): u to the right, v down.
        """
        check_points(points, batch=None)
        return self._project(points)

    def depth(self, points: torch.Tensor) -> torch.Tensor:
        """Depth along the viewing axis, -z (metres; positive in front of a perspective camera).

        Args:
            points: (B, N, 3) camera-space points.

        Returns:
            (B, N) depth.
        """
        check_points(points)
        return -points[..., 2]

    def _param(self, name: str, like: torch.Tensor) -> torch.Tensor:
        p = getattr(self, name).to(device=like.device, dtype=like.dtype)
        if p.shape[0] != like.shape[0]:
            if p.shape[0] == 1:
                return p.expand(like.shape[0])
            raise ValueError(f"points have batch size {like.shape[0]} but the camera has batch size {p.shape[0]}")
        return p


@dataclass(frozen=True)
class OrthographicCamera(_CameraBase):
    """Orthographic camera: u = cx + scale * x, v = cy - scale * y; rays travel along -z.

    Weak perspective (ICON) is this camera plus the body translation.

    Attributes:
        scale: (B,) pixels per metre.
        cx: (B,) principal point u in pixels.
        cy: (B,) principal point v in pixels.
        width: Image width W in pixels.
        height: Image height H in pixels.
    """

    scale: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    _param_names = ("scale", "cx", "cy")

    def _project(self, points: torch.Tensor) -> torch.Tensor:
        s = self._param("scale", points)[:, None]
        u = self._param("cx", points)[:, None] + s * points[..., 0]
        v = self._param("cy", points)[:, None] - s * points[..., 1]
        return torch.stack([u, v], dim=-1)

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Invert ``project``: pixels (B, N, 2) and depth (B, N) (= -z) to camera-space points (B, N, 3)."""
        s = self._param("scale", pixels)[:, None]
        x = (pixels[..., 0] - self._param("cx", pixels)[:, None]) / s
        y = (self._param("cy", pixels)[:, None] - pixels[..., 1]) / s
        return torch.stack([x, y, -depth], dim=-1)

    def rays(
        self, height: int | None = None, width: int | None = None, device=None, dtype=torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays through pixel centres.

        Origins lie on the plane z = 0; an orthographic ray is a full line, so ray casters must start it in front
        of the scene (``render`` shifts origins towards +z past the mesh).

        Args:
            height: Image height H (default: camera height); the view is kept, the pixel grid resampled.
            width: Image width W (default: camera width).
            device: Torch device (default: the camera parameters' device).
            dtype: Floating dtype.

        Returns:
            origins (B, H, W, 3) and unit directions (B, H, W, 3), all directions (0, 0, -1).
        """
        device = self.cx.device if device is None else device
        x, y = self._pixel_plane(self.scale, height, width, device, dtype)
        origins = torch.stack([x, y, torch.zeros_like(x)], dim=-1)
        directions = torch.zeros_like(origins)
        directions[..., 2] = -1.0
        return origins, directions


@dataclass(frozen=True)
class PerspectiveCamera(_CameraBase):
    """Pinhole camera at the origin looking along -z: u = cx + f * x / (-z), v = cy - f * y / (-z).

    Attributes:
        focal: (B,) focal length in pixels.
        cx: (B,) principal point u in pixels.
        cy: (B,) principal point v in pixels.
        width: Image width W in pixels.
        height: Image height H in pixels.
    """

    focal: torch.Tensor
    cx: torch.Tensor
    cy: torch.Tensor
    width: int
    height: int
    _param_names = ("focal", "cx", "cy")

    def _project(self, points: torch.Tensor) -> torch.Tensor:
        f = self._param("focal", points)[:, None]
        inv = 1.0 / (-points[..., 2])
        u = self._param("cx", points)[:, None] + f * points[..., 0] * inv
        v = self._param("cy", points)[:, None] - f * points[..., 1] * inv
        return torch.stack([u, v], dim=-1)

    def unproject(self, pixels: torch.Tensor, depth: torch.Tensor) -> torch.Tensor:
        """Invert ``project``: pixels (B, N, 2) and depth (B, N) (= -z) to camera-space points (B, N, 3)."""
        f = self._param("focal", pixels)[:, None]
        x = (pixels[..., 0] - self._param("cx", pixels)[:, None]) * depth / f
        y = (self._param("cy", pixels)[:, None] - pixels[..., 1]) * depth / f
        return torch.stack([x, y, -depth], dim=-1)

    def rays(
        self, height: int | None = None, width: int | None = None, device=None, dtype=torch.float32
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Rays from the camera centre through pixel centres.

        Args:
            height: Image height H (default: camera height); the view is kept, the pixel grid resampled.
            width: Image width W (default: camera width).
            device: Torch device (default: the camera parameters' device).
            dtype: Floating dtype.

        Returns:
            origins (B, H, W, 3) (all zero) and unit directions (B, H, W, 3).
        """
        device = self.cx.device if device is None else device
        x, y = self._pixel_plane(self.focal, height, width, device, dtype)
        directions = torch.stack([x, y, -torch.ones_like(x)], dim=-1)
        directions = directions / directions.norm(dim=-1, keepdim=True)
        origins = torch.zeros_like(directions)
        return origins, directions


Camera = OrthographicCamera | PerspectiveCamera
