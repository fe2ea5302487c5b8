"""Root pytest hook: every test run (unit tests and nbmake notebooks alike) writes
under a temporary project root, never into the repository's reports/, models/, cache/.

Set MU_ROOT yourself to keep the artefacts of a test run.
"""

import os
import tempfile


def pytest_configure(config):
    if not os.environ.get("MU_ROOT"):
        os.environ["MU_ROOT"] = tempfile.mkdtemp(prefix="mu-test-")
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # nbmake kernels inherit this: tiny toy models train ~10x faster on one thread of a shared CPU
    os.environ.setdefault("OMP_NUM_THREADS", "1")
