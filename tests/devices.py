"""Device parameters for device-parametrised tests: the CUDA case is always collected and reported as skipped where no
CUDA device is present (never silently left out)."""

import pytest
import torch

CUDA = pytest.param(
    "cuda", marks=pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine"), id="cuda"
)
DEVICES = ["cpu", CUDA]
