"""One batched type for SMPL-format body parameters (β, root orientation, body pose, translation) that fits, store
arrays, avatar pose sequences, motions and synthetic samples build on or convert to.

The arrays are either all torch tensors or all numpy arrays (``torch()`` / ``numpy()`` convert); shapes are checked on
construction, so a ``BodyParams`` always holds B consistent rows.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
import torch

__all__ = ["BODY_PARAM_NAMES", "BodyParams"]

BODY_PARAM_NAMES: tuple[str, ...] = ("betas", "global_orient", "body_pose", "transl")
_WIDTHS = {"global_orient": 3, "body_pose": 69, "transl": 3}

Array = torch.Tensor | np.ndarray


@dataclass(frozen=True)
class BodyParams:
    """Body parameters of B bodies (or B frames of one body), SMPL axis-angle convention, metres.

    Attributes:
        betas: (B, K) shape coefficients (K = the model's num_betas, 10 for the embedded model).
        global_orient: (B, 3) root rotation, axis-angle, radians.
        body_pose: (B, 69) rotations of SMPL joints 1..23, axis-angle, radians.
        transl: (B, 3) root translation in metres.

    All four are torch tensors (any device/dtype, the same for all) or all numpy arrays.
    """

    betas: Array
    global_orient: Array
    body_pose: Array
    transl: Array

    def __post_init__(self) -> None:
        values = [getattr(self, n) for n in BODY_PARAM_NAMES]
        kinds = {isinstance(v, torch.Tensor) for v in values}
        if not all(isinstance(v, torch.Tensor | np.ndarray) for v in values) or len(kinds) != 1:
            got = {n: type(v).__name__ for n, v in zip(BODY_PARAM_NAMES, values, strict=True)}
            raise ValueError(f"BodyParams needs all torch tensors or all numpy arrays, got {got}")
        shapes = {n: tuple(v.shape) for n, v in zip(BODY_PARAM_NAMES, values, strict=True)}
        b = shapes["betas"][0] if len(shapes["betas"]) == 2 else None
        ok = b is not None and shapes["betas"][1] >= 1
        ok = ok and all(shapes[n] == (b, w) for n, w in _WIDTHS.items())
        if not ok:
            raise ValueError(
                f"BodyParams needs betas (B, K), global_orient (B, 3), body_pose (B, 69), transl (B, 3) with one B; "
                f"got {shapes}"
            )
        if kinds == {True}:
            devices = {v.device for v in values}
            dtypes = {v.dtype for v in values}
            if len(devices) != 1 or len(dtypes) != 1:
                raise ValueError(f"BodyParams tensors must share device and dtype, got {devices} and {dtypes}")

    # --- construction -----------------------------------------------------------------------------------------

    @classmethod
    def of(cls, value: Any) -> BodyParams:
        """Convert in one call: a BodyParams, anything holding one as ``.body`` (``icon.fit.BodyFit``,
        ``flows.store.FitArrays``), or a mapping/object with the four named arrays (tensors are brought to one dtype;
        any numpy array makes all numpy). A 1-D ``betas`` is one shape shared by every row and is repeated."""
        if isinstance(value, BodyParams):
            return value
        if isinstance(getattr(value, "body", None), BodyParams):
            return value.body
        get = value.__getitem__ if isinstance(value, Mapping) else lambda n: getattr(value, n)
        arrays = {n: get(n) for n in BODY_PARAM_NAMES}
        if all(isinstance(a, torch.Tensor) for a in arrays.values()):
            dtype = functools.reduce(torch.promote_types, (a.dtype for a in arrays.values()))
            arrays = {n: a.to(dtype) for n, a in arrays.items()}
        else:
            arrays = {n: np.asarray(a.detach().cpu() if isinstance(a, torch.Tensor) else a) for n, a in arrays.items()}
        if arrays["betas"].ndim == 1:
            n = arrays["global_orient"].shape[0]
            betas = arrays["betas"][None]
            arrays["betas"] = betas.expand(n, -1) if isinstance(betas, torch.Tensor) else np.repeat(betas, n, axis=0)
        return cls(**arrays)

    @classmethod
    def zeros(cls, n: int, num_betas: int = 10, dtype=torch.float32, device=None) -> BodyParams:
        """n bodies of mean shape in the zero pose at the origin (torch)."""

        def z(w: int) -> torch.Tensor:
            return torch.zeros(n, w, dtype=dtype, device=device)

        return cls(z(num_betas), z(3), z(69), z(3))

    @classmethod
    def cat(cls, items: Sequence[BodyParams]) -> BodyParams:
        """Concatenate along the batch axis; all items torch (same device/dtype) or all numpy, same K."""
        if not items:
            raise ValueError("BodyParams.cat needs at least one item")
        if len({p.num_betas for p in items}) != 1:
            raise ValueError(f"BodyParams.cat: different numbers of betas {[p.num_betas for p in items]}")
        if all(p.is_torch for p in items):
            return cls(*(torch.cat([getattr(p, n) for p in items]) for n in BODY_PARAM_NAMES))
        if not any(p.is_torch for p in items):
            return cls(*(np.concatenate([getattr(p, n) for p in items]) for n in BODY_PARAM_NAMES))
        raise ValueError("BodyParams.cat: mix of torch and numpy items; convert with .torch() or .numpy() first")

    @classmethod
    def from_npz_dict(cls, data: Mapping[str, Any], prefix: str = "") -> BodyParams:
        """From ``{prefix}betas``, ``{prefix}global_orient``, ... arrays (as written by ``to_npz_dict``), numpy."""
        missing = [prefix + n for n in BODY_PARAM_NAMES if prefix + n not in data]
        if missing:
            raise ValueError(f"body parameters missing arrays {missing}")
        return cls(*(np.asarray(data[prefix + n]) for n in BODY_PARAM_NAMES))

    # --- properties -------------------------------------------------------------------------------------------

    def __len__(self) -> int:
        return int(self.betas.shape[0])

    @property
    def num_betas(self) -> int:
        return int(self.betas.shape[1])

    @property
    def is_torch(self) -> bool:
        return isinstance(self.betas, torch.Tensor)

    @property
    def device(self) -> torch.device | None:
        """The tensors' device (None for numpy)."""
        return self.betas.device if self.is_torch else None

    @property
    def dtype(self):
        return self.betas.dtype

    @property
    def poses(self) -> Array:
        """(B, 72) root orientation followed by the body pose."""
        if self.is_torch:
            return torch.cat([self.global_orient, self.body_pose], dim=1)
        return np.concatenate([self.global_orient, self.body_pose], axis=1)

    # --- conversion -------------------------------------------------------------------------------------------

    def _map(self, fn) -> BodyParams:
        return BodyParams(*(fn(getattr(self, n)) for n in BODY_PARAM_NAMES))

    def __getitem__(self, index: int | slice | Sequence[int] | np.ndarray | torch.Tensor) -> BodyParams:
        """Rows selected by a slice, an index array/tensor or a boolean mask; an int keeps the batch axis (B = 1)."""
        if isinstance(index, int | np.integer):
            n = len(self)
            if not -n <= int(index) < n:
                raise IndexError(f"BodyParams index {int(index)} out of range for {n} rows")
            index = slice(int(index), int(index) + 1 if int(index) != -1 else None)
        elif isinstance(index, torch.Tensor) and not self.is_torch:
            index = index.cpu().numpy()
        elif isinstance(index, np.ndarray | list | tuple) and self.is_torch:
            index = torch.as_tensor(np.asarray(index), device=self.device)
        return self._map(lambda a: a[index])

    def to(self, device=None, dtype=None) -> BodyParams:
        """Torch copy on ``device`` with ``dtype`` (numpy arrays are converted first)."""
        return self.torch()._map(lambda a: a.to(device=device, dtype=dtype))

    def torch(self, dtype=None, device=None) -> BodyParams:
        """As torch tensors (numpy arrays are converted; tensors are kept, or moved when dtype/device is given)."""
        if self.is_torch:
            return self if dtype is None and device is None else self._map(lambda a: a.to(device=device, dtype=dtype))
        return self._map(lambda a: torch.as_tensor(a, dtype=dtype, device=device))

    def numpy(self) -> BodyParams:
        """As numpy arrays on the CPU (tensors are detached)."""
        if not self.is_torch:
            return self
        return self._map(lambda a: a.detach().cpu().numpy())

    def detach(self) -> BodyParams:
        return self._map(lambda a: a.detach()) if self.is_torch else self

    def clone(self) -> BodyParams:
        return self._map(lambda a: a.clone() if isinstance(a, torch.Tensor) else a.copy())

    def replace(self, **arrays: Array) -> BodyParams:
        """A copy with some of the four arrays replaced (checked like a new BodyParams)."""
        unknown = set(arrays) - set(BODY_PARAM_NAMES)
        if unknown:
            raise ValueError(f"unknown body parameter names {sorted(unknown)}; expected {BODY_PARAM_NAMES}")
        return BodyParams(**{f.name: arrays.get(f.name, getattr(self, f.name)) for f in fields(self)})

    def as_dict(self) -> dict[str, Array]:
        """The four arrays by name, e.g. for ``BodyModel(**params.as_dict())``."""
        return {n: getattr(self, n) for n in BODY_PARAM_NAMES}

    def to_npz_dict(self, prefix: str = "") -> dict[str, np.ndarray]:
        """The four arrays as numpy, keyed ``{prefix}betas`` etc. (for ``np.savez`` or a store group)."""
        return {prefix + n: a for n, a in self.numpy().as_dict().items()}


class HoldsBodyParams:
    """Mixin for a class with a ``body: BodyParams`` field: reads its four groups through, so a fit, a store slice or a
    synthetic clip is used like the parameters it holds (``x.betas`` is ``x.body.betas``)."""

    body: BodyParams

    @property
    def betas(self) -> Array:
        """(B, K) shape coefficients."""
        return self.body.betas

    @property
    def global_orient(self) -> Array:
        """(B, 3) axis-angle root rotation."""
        return self.body.global_orient

    @property
    def body_pose(self) -> Array:
        """(B, 69) axis-angle rotations of joints 1..23."""
        return self.body.body_pose

    @property
    def transl(self) -> Array:
        """(B, 3) root translation in metres."""
        return self.body.transl
