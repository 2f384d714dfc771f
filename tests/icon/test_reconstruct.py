"""icon.reconstruct: refine + normals + implicit surface in one call, with the shipped weights."""


import numpy as np
import pytest
import torch

from body import BodyModel
from flows.bundled import weights_path
from icon.implicit import load_implicit_net
from icon.normal_net import load_normal_net
from icon.reconstruct import ReconstructConfig, reconstruct
from icon.refine import RefineConfig
from icon.synth import SynthConfig, make_sample

WEIGHTS = weights_path("normal_net").parent


@pytest.fixture(scope="module")
def setup():
    model = BodyModel()
    sample = make_sample(1_000_007, model, SynthConfig(image_size=128, grid_resolution=64, num_points=64))
    normal = load_normal_net(WEIGHTS / "normal_net.safetensors")
    implicit = load_implicit_net(WEIGHTS / "implicit_net.safetensors")
    return model, sample, normal, implicit


def test_reconstruct_one_frame(setup):
    model, sample, normal, implicit = setup
    cfg = ReconstructConfig(resolution=64, coarse_resolution=16, refine=RefineConfig(iterations=6, repredict_every=3,
                                                                                   render_resolution=64))
    stages = []
    rec = reconstruct(model, sample.rgb[None], sample.mask[None], sample.fitted_body(), normal, implicit, cfg,
                      progress=lambda s, i, n: stages.append(s))
    assert len(rec.meshes) == 1
    v, f = rec.meshes[0]
    assert v.shape[1] == 3 and f.shape[1] == 3 and len(f) > 100
    assert rec.losses.shape == (1, 6)
    finite = rec.losses[0][torch.isfinite(rec.losses[0])]
    assert finite[-1] <= finite[0]
    assert rec.normals_front.shape == (1, 128, 128, 3) and rec.body_vertices.shape == (1, model.num_vertices, 3)
    # the clothed mesh lies around the body: its box overlaps the refined body's box
    lo, hi = rec.body_vertices[0].amin(0).numpy(), rec.body_vertices[0].amax(0).numpy()
    assert np.all(v.min(0) < hi) and np.all(v.max(0) > lo)
    assert {"refine", "implicit"} <= set(rec.seconds)
    assert "implicit" in stages


def test_reconstruct_checks_shapes(setup):
    model, sample, normal, implicit = setup
    with pytest.raises(ValueError, match="images must be"):
        reconstruct(model, sample.rgb, sample.mask[None], sample.fitted_body(), normal, implicit)
    with pytest.raises(ValueError, match="masks must be"):
        reconstruct(model, sample.rgb[None], sample.mask[None, :64], sample.fitted_body(), normal, implicit)
