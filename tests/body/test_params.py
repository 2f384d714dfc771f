"""Tests for body.params.BodyParams: shape checks, slicing, concatenation, numpy/torch and npz round trips."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from body import BodyModel
from body.params import BODY_PARAM_NAMES, BodyParams


def random_params(n: int, seed: int = 0, num_betas: int = 10) -> BodyParams:
    g = torch.Generator().manual_seed(seed)
    return BodyParams(torch.randn(n, num_betas, generator=g), torch.randn(n, 3, generator=g),
                      torch.randn(n, 69, generator=g) * 0.3, torch.randn(n, 3, generator=g))  # fmt: skip


def assert_same(a: BodyParams, b: BodyParams) -> None:
    for n in BODY_PARAM_NAMES:
        np.testing.assert_array_equal(np.asarray(getattr(a.numpy(), n)), np.asarray(getattr(b.numpy(), n)))


class TestConstruction:
    def test_shapes_and_properties(self):
        p = random_params(5)
        assert len(p) == 5 and p.num_betas == 10 and p.is_torch and p.dtype == torch.float32
        assert p.poses.shape == (5, 72)
        torch.testing.assert_close(p.poses[:, 3:], p.body_pose)
        z = BodyParams.zeros(2, num_betas=4, dtype=torch.float64)
        assert z.betas.shape == (2, 4) and z.dtype == torch.float64 and float(z.body_pose.abs().sum()) == 0

    @pytest.mark.parametrize(
        "change, match",
        [
            ({"body_pose": torch.zeros(5, 23, 3)}, "body_pose"),
            ({"transl": torch.zeros(4, 3)}, "one B"),
            ({"betas": torch.zeros(5)}, "betas"),
            ({"global_orient": np.zeros((5, 3), np.float32)}, "all torch tensors or all numpy"),
            ({"transl": torch.zeros(5, 3, dtype=torch.float64)}, "device and dtype"),
        ],
    )
    def test_shape_errors(self, change, match):
        with pytest.raises(ValueError, match=match):
            random_params(5).replace(**change)

    def test_replace_rejects_unknown_names(self):
        with pytest.raises(ValueError, match="unknown body parameter"):
            random_params(2).replace(pose=torch.zeros(2, 69))

    def test_of_converts_fit_like_objects(self):
        p = random_params(3)
        assert BodyParams.of(p) is p

        class Holder:
            body = p

        assert BodyParams.of(Holder()) is p
        shared = {"betas": np.ones(10, np.float32), "global_orient": np.zeros((3, 3)), "body_pose": np.zeros((3, 69)),
                  "transl": np.zeros((3, 3))}  # fmt: skip
        q = BodyParams.of(shared)
        assert not q.is_torch and q.betas.shape == (3, 10) and (q.betas == 1).all()
        t = BodyParams.of({n: torch.as_tensor(v) for n, v in shared.items()})
        assert t.is_torch and t.betas.shape == (3, 10)


class TestIndexing:
    def test_int_slice_mask_and_index_array(self):
        p = random_params(6)
        assert len(p[2]) == 1 and len(p[-1]) == 1
        torch.testing.assert_close(p[2].body_pose[0], p.body_pose[2])
        torch.testing.assert_close(p[-1].transl[0], p.transl[5])
        torch.testing.assert_close(p[1:4].betas, p.betas[1:4])
        torch.testing.assert_close(p[[0, 5]].global_orient, p.global_orient[[0, 5]])
        mask = torch.tensor([True, False, True, False, False, True])
        assert len(p[mask]) == 3
        n = p.numpy()
        np.testing.assert_array_equal(n[torch.tensor([1, 3])].transl, n.transl[[1, 3]])
        with pytest.raises(IndexError):
            p[6]

    def test_cat_round_trip(self):
        p = random_params(7)
        assert_same(BodyParams.cat([p[:2], p[2:3], p[3:]]), p)
        assert_same(BodyParams.cat([p.numpy()[:4], p.numpy()[4:]]), p)
        with pytest.raises(ValueError, match="mix of torch and numpy"):
            BodyParams.cat([p[:2], p.numpy()[2:]])
        with pytest.raises(ValueError, match="numbers of betas"):
            BodyParams.cat([p, random_params(2, num_betas=5)])
        with pytest.raises(ValueError, match="at least one"):
            BodyParams.cat([])


class TestConversion:
    def test_numpy_torch_round_trip(self):
        p = random_params(3).replace(body_pose=torch.randn(3, 69, requires_grad=True))
        n = p.numpy()
        assert not n.is_torch and n.betas.dtype == np.float32 and n.device is None
        assert_same(n.torch(), p)
        d = p.to(dtype=torch.float64)
        assert d.dtype == torch.float64 and d.body_pose.dtype == torch.float64
        assert n.to(dtype=torch.float64).is_torch
        assert not p.detach().body_pose.requires_grad

    def test_clone_is_independent(self):
        p = random_params(2)
        c = p.clone()
        c.betas[0, 0] = 100.0
        assert p.betas[0, 0] != 100.0
        n = p.numpy().clone()
        n.transl[0, 0] = 100.0
        assert p.transl[0, 0] != 100.0

    def test_npz_round_trip(self, tmp_path):
        p = random_params(4)
        np.savez(tmp_path / "p.npz", **p.to_npz_dict(prefix="fit_"), other=np.zeros(2))
        with np.load(tmp_path / "p.npz") as data:
            assert sorted(k for k in data if k.startswith("fit_")) == sorted("fit_" + n for n in BODY_PARAM_NAMES)
            back = BodyParams.from_npz_dict(data, prefix="fit_")
        assert_same(back, p)
        with pytest.raises(ValueError, match="missing arrays"):
            BodyParams.from_npz_dict({"betas": np.zeros((1, 10))})

    def test_drives_the_body_model(self):
        model = BodyModel()
        p = random_params(2)
        a = model(**p.as_dict())
        b = model(**p.numpy().as_dict())
        torch.testing.assert_close(a.vertices, b.vertices)
        assert a.vertices.shape == (2, model.num_vertices, 3)
