"""Session-wide test settings: a repo-local Warp kernel cache, one torch thread, Prefect settings and one Prefect test
server for the session.

One intra-op thread: on the 2-core CI machine the tests' small tensors gain little from a second thread, and when
another process (a Prefect server, Dask workers) is busy, OpenMP threads stall and make runs several times slower.
"""

import os
import tempfile
from pathlib import Path

import pytest

os.environ.setdefault("WARP_CACHE_PATH", str(Path(__file__).resolve().parent.parent / ".cache" / "warp"))
# Prefect reads its settings when first imported: a private PREFECT_HOME and no analytics for every test.
os.environ.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="avatarize-prefect-"))
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")

import torch  # noqa: E402

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def prefect_server():
    """One ephemeral Prefect server (SQLite in the temp PREFECT_HOME) for every test of the session that runs flows."""
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield
