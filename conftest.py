"""Root pytest hook: every test run (unit tests and nbmake notebooks alike) writes
under a temporary project root, never into the repository's reports/, models/, cache/.

Set MU_ROOT yourself to keep the artefacts of a test run. Under pytest-xdist (`make test`
runs two workers) each worker gets its own root below it, so session fixtures (the toy base,
toy sources) never race, and the notebooks run in order on one worker (they build on each other).
"""

import os
import tempfile


def pytest_configure(config):
    if not os.environ.get("MU_ROOT"):
        os.environ["MU_ROOT"] = tempfile.mkdtemp(prefix="mu-test-")
    if not os.environ.get("MU_SHARED_CACHE"):  # one per test session (workers and kernels inherit it), never ~/.cache
        os.environ["MU_SHARED_CACHE"] = os.path.join(os.environ["MU_ROOT"], "shared-cache")
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker and not os.environ.get("MU_TEST_WORKER_ROOT"):
        os.environ["MU_ROOT"] = os.path.join(os.environ["MU_ROOT"], worker)
        os.environ["MU_TEST_WORKER_ROOT"] = "1"
        os.makedirs(os.environ["MU_ROOT"], exist_ok=True)
    os.environ.setdefault("MPLBACKEND", "Agg")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    # nbmake kernels inherit this: tiny toy models train ~10x faster on one thread of a shared CPU
    os.environ.setdefault("OMP_NUM_THREADS", "1")


def _is_notebook(item) -> bool:
    return str(item.fspath).endswith(".ipynb")


def pytest_xdist_make_scheduler(config, log):
    # notebooks 01 -> 06 build on each other's results: one work unit, sent to one xdist worker and run in
    # order (collected first, testpaths, so this longest chain starts at once while the other worker runs the
    # unit tests); every other test is a unit of its own, as with --dist load. (An xdist_group mark does not
    # reach nbmake's items, whose node ids xdist cannot suffix.)
    from xdist.scheduler import LoadScopeScheduling

    class NotebooksTogether(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "notebooks" if nodeid.split("::")[0].endswith(".ipynb") else nodeid

    return NotebooksTogether(config, log)


def pytest_collection_modifyitems(config, items):
    # Longest first: xdist hands the next unit to whichever worker is free, so a long test collected late
    # (test_study sorts near the end) would finish the run alone on one worker while the other idles. The
    # notebooks' chain and the tests marked `slow` (each ≥ ~30 s) go first, everything else after them, each
    # group in collection order (a stable sort); both workers collect the same order, as xdist requires.
    items.sort(key=lambda item: not (_is_notebook(item) or item.get_closest_marker("slow")))


def pytest_runtest_setup(item):
    # the notebooks' chain gets a root of its own: unit tests on the same worker write records of the same
    # profile (and clean some up) in the worker's root; the kernels inherit MU_ROOT when they start
    if _is_notebook(item):
        item.mu_saved_root = os.environ["MU_ROOT"]
        os.environ["MU_ROOT"] = os.path.join(item.mu_saved_root, "notebooks")
        os.makedirs(os.environ["MU_ROOT"], exist_ok=True)


def pytest_runtest_teardown(item, nextitem):
    saved = getattr(item, "mu_saved_root", None)
    if saved is not None:
        os.environ["MU_ROOT"] = saved
