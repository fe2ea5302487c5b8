"""Torch threads from the cores a process may use (affinity mask, OMP_NUM_THREADS), less those
busy now, shared among workers; pretraining and the runner's kernels never oversubscribe."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from mu import execution, models, threads

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CPUS = sorted(os.sched_getaffinity(0))


def _choose_in_subprocess(cpus: list[int], omp: str | None) -> dict:
    """What ``mu.threads`` chooses in a fresh process pinned to ``cpus`` (``os.sched_setaffinity``, as
    ``taskset`` / a cpuset would) with ``OMP_NUM_THREADS`` = ``omp`` (None: unset)."""
    code = (
        f"import json, os; os.sched_setaffinity(0, {set(cpus)!r}); from mu import threads; "
        "print(json.dumps({'cpus': threads.allowed_cpus(), 'one': threads.count(load=False), "
        "'two': threads.count(2, load=False), 'loaded': threads.count()}))"
    )
    env = {k: v for k, v in os.environ.items() if k != threads.ENV}
    env["PYTHONPATH"] = REPO + os.pathsep + env.get("PYTHONPATH", "")
    if omp is not None:
        env[threads.ENV] = omp
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return json.loads(proc.stdout)


@pytest.mark.parametrize("pinned", [CPUS[:1], CPUS])
def test_threads_follow_the_affinity_mask_and_omp_num_threads(pinned):
    got = _choose_in_subprocess(pinned, None)
    assert got["cpus"] == pinned
    assert got["one"] == len(pinned) and got["two"] == max(1, len(pinned) // 2)
    assert 1 <= got["loaded"] <= len(pinned)  # the load only takes cores away
    got = _choose_in_subprocess(pinned, "3")  # the user's choice, per process, whatever the cores
    assert got["one"] == got["two"] == got["loaded"] == 3


def test_busy_cores_are_left_to_their_processes(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 2, 3])
    for busy, one, two in [(0.0, 4, 2), (0.2, 4, 2), (1.0, 3, 1), (1.5, 2, 1), (3.9, 1, 1), (4.0, 1, 1)]:
        monkeypatch.setattr(threads, "busy_cores", lambda busy=busy: busy)
        assert (threads.count(), threads.count(2)) == (one, two), busy
    with pytest.raises(ValueError, match="workers must be >= 1"):
        threads.count(0)
    monkeypatch.setenv(threads.ENV, "many")
    with pytest.raises(ValueError, match=r"OMP_NUM_THREADS='many' is not a positive integer"):
        threads.count()


def test_busy_cores_measures_this_process_spinning():
    """The measurement is real: a busy loop in this process shows up as (about) one busy core."""
    import threading

    threads._last = None
    stop = threading.Event()
    spinner = threading.Thread(target=lambda: [None for _ in iter(stop.is_set, True)])
    spinner.start()
    try:
        busy = threads.busy_cores()
    finally:
        stop.set()
        spinner.join()
        threads._last = None
    assert 0.5 <= busy <= len(CPUS) + 0.01, busy


def _kernel_threads(monkeypatch, cores: int, busy: float, workers: int) -> int:
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: list(range(cores)))
    monkeypatch.setattr(threads, "busy_cores", lambda: busy)
    return int(execution.kernel_env(workers)[threads.ENV])


@pytest.mark.parametrize("cores", [1, 2, 3, 4, 8, 16])
def test_runner_kernels_never_oversubscribe_the_cores(monkeypatch, cores):
    for workers in range(1, cores + 1):
        for busy in (0.0, 0.5, 1.0, cores / 2, float(cores)):
            n = _kernel_threads(monkeypatch, cores, busy, workers)
            assert n >= 1 and workers * n <= cores, (cores, busy, workers, n)
            if busy == 0.0:
                assert n == cores // workers  # idle: every core is used
    monkeypatch.setenv(threads.ENV, "2")
    assert execution.kernel_env(4)[threads.ENV] == "2"  # the user's setting is kept


def test_training_threads_are_one_for_tiny_models_else_the_free_cores(monkeypatch):
    monkeypatch.delenv(threads.ENV, raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 2, 3])
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    before = torch.get_num_threads()
    with models.cpu_threads(torch.nn.Linear(10, 10)):
        assert torch.get_num_threads() == 1
    with models.cpu_threads(torch.nn.Embedding(models.TINY_PARAMS, 1)):
        assert torch.get_num_threads() == 3
    assert torch.get_num_threads() == before


def test_map_processes_workers_die_with_the_process_that_started_them():
    """A kernel killed mid N×N must not leave its workers computing rows nobody reads (they held both cores
    for minutes after a stopped study, under the next run)."""
    import signal
    import subprocess
    import sys
    import time

    import psutil

    code = "import time; from mu.core import threads; threads.map_processes(time.sleep, [300, 300], 2)"
    parent = subprocess.Popen([sys.executable, "-c", code])
    try:
        deadline = time.time() + 120
        workers: list = []
        while len(workers) < 2:
            assert time.time() < deadline and parent.poll() is None, "the two workers did not start"
            time.sleep(0.2)
            kids = psutil.Process(parent.pid).children()
            workers = [p for p in kids if "spawn_main" in " ".join(p.cmdline())]
        time.sleep(5)  # past their initializer (it imports torch), as a kernel's workers would be
        parent.send_signal(signal.SIGKILL)
        parent.wait()
        _, alive = psutil.wait_procs(workers, timeout=30)
        assert not alive, f"workers outlived their parent: {alive}"
    finally:
        parent.kill()
