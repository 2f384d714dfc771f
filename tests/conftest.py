"""Session-wide test settings: a repo-local Warp kernel cache and one torch thread.

One intra-op thread: on the 2-core CI machine the tests' small tensors gain little from a second thread, and when
another process (a Prefect server, Dask workers) is busy, OpenMP threads stall and make runs several times slower.
"""

import os
from pathlib import Path

os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parent.parent / ".cache" / "warp"))

import torch  # noqa: E402

torch.set_num_threads(1)
