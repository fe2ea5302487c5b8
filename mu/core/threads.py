"""How many torch threads a process should use: the cores it may run on (``os.sched_getaffinity``),
less those other processes keep busy now, shared among the workers that run at once.

    n = mu.core.threads.count(workers=2)    # OMP_NUM_THREADS when set (the user's choice, per process)
    with mu.core.threads.limited(n): ...    # torch.set_num_threads(n), the previous count restored after

Why the load matters: torch's intra-op threads meet at a barrier after every operation. On a core
another process keeps busy, one of them waits for its time slice at each barrier, and the rest spin
until it arrives: on the 2-core VM, pretraining the mini encoder took 3.9 s a step with 2 threads and
one busy process beside it, against 0.38 s alone; one thread runs at full speed on the
core that is free. A core counts as free when other processes use at most ``IDLE_SLACK`` of a core in
all (summed over the allowed cores). The count is measured once, when a run starts (``count``):
pretraining (``mu.learn.pretrain``), training and inference of models that are not tiny
(``mu.learn.models.cpu_threads``) and the runner's kernels (``mu.batch.execution.kernel_env``) use it. Thread counts
change float summation order: for results equal bit for bit across runs, set ``OMP_NUM_THREADS``.
"""

from __future__ import annotations

import contextlib
import functools
import math
import os
import sys
import time
from collections.abc import Callable, Iterator
from typing import Any, TypeVar

ENV = "OMP_NUM_THREADS"
IDLE_SLACK = 0.25  # cores' worth of other processes' CPU use still taken for idle (noise, daemons)
SAMPLE_S = 0.2  # how long the CPU use is measured
REUSE_S = 10.0  # a measurement this recent is reused (model loops call count() per model)

_last: tuple[float, float] | None = None  # (when, busy cores)

F = TypeVar("F", bound=Callable[..., Any])


def allowed_cpus() -> list[int]:
    """The CPUs this process may run on (its affinity mask: ``taskset``, cgroups' cpusets, Slurm)."""
    try:
        return sorted(os.sched_getaffinity(0))
    except AttributeError:  # no affinity masks on this OS (macOS)
        return list(range(os.cpu_count() or 1))


def from_env() -> int | None:
    """``OMP_NUM_THREADS`` as a thread count (its first level, "4,2" -> 4), None when unset or empty;
    a ValueError naming it when it is not a positive integer."""
    raw = os.environ.get(ENV, "").strip()
    if not raw:
        return None
    try:
        n = int(raw.split(",")[0])
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(
            f"{ENV}={raw!r} is not a positive integer (the torch/OpenMP threads per process); "
            f"unset it to let mu choose from the free cores"
        )
    return n


def busy_cores(cpus: list[int] | None = None) -> float:
    """CPU use on ``cpus`` (default: the allowed ones) over ``SAMPLE_S`` seconds, in cores (0.0-len(cpus)):
    what other processes (and this one's other threads) keep busy now."""
    global _last
    import psutil

    cpus = allowed_cpus() if cpus is None else cpus
    now = time.monotonic()
    if _last is not None and now - _last[0] < REUSE_S:
        return _last[1]
    per_cpu = psutil.cpu_percent(interval=SAMPLE_S, percpu=True)
    busy = sum(per_cpu[i] for i in cpus if i < len(per_cpu)) / 100.0
    _last = (time.monotonic(), busy)
    return busy


def count(workers: int = 1, *, load: bool = True) -> int:
    """Torch threads for each of ``workers`` processes running at once: ``OMP_NUM_THREADS`` when set,
    else the allowed cores (less those busy now, with ``load``) divided among the workers, at least 1.
    So workers x threads never exceeds the allowed cores (while there are at least as many cores as
    workers)."""
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    given = from_env()
    if given is not None:
        return given
    cores = len(allowed_cpus())
    free = cores if not load else min(cores, math.floor(cores - busy_cores() + IDLE_SLACK))
    return max(1, free // workers)


@contextlib.contextmanager
def limited(n: int) -> Iterator[int]:
    """Run the block with ``n`` torch intra-op threads; the previous count is restored after."""
    import torch

    before = torch.get_num_threads()
    if n != before:  # set_num_threads reconfigures OpenMP and MKL each call: skipped when nothing changes
        torch.set_num_threads(n)
    try:
        yield n
    finally:
        if n != before:
            torch.set_num_threads(before)


def on_free_cores(fn: F) -> F:
    """Decorate a training function: it runs with ``count()`` torch threads (chosen when it is called)."""

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        with limited(count()):
            return fn(*args, **kwargs)

    return run  # type: ignore[return-value]


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def die_with(parent: int) -> None:
    """Pool initializer of a worker process: it is killed when ``parent`` (the process that started it) dies.

    A runner killed with ``kill -9`` would otherwise leave its worker finishing the notebook headless,
    holding the job's lock (a rerun waits for it) and its memory, then idling for good; a kernel's N×N or
    grid workers would go on computing rows nobody reads, on cores the rerun needs. Killed with its parent,
    the worker is a dead writer whose temporaries the rerun removes; a kernel follows its worker (ipykernel
    exits when its parent goes). Linux only (``prctl``); elsewhere a no-op.
    """
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # it died before the line above took effect
            os._exit(1)


def one_thread(parent: int | None = None) -> None:
    """A worker process's initializer: one torch / OpenMP thread (``OMP_NUM_THREADS=1`` for what it starts),
    and killed with ``parent`` when given (``die_with``)."""
    import torch

    if parent is not None:
        die_with(parent)
    os.environ[ENV] = "1"
    torch.set_num_threads(1)


def map_processes(
    fn: Callable[[Any], Any], items: list, workers: int, *, done: Callable[[], Any] | None = None
) -> list:
    """``[fn(x) for x in items]``, in order: here when ``workers`` <= 1 or there is one item, else on that many
    spawned processes of one thread each (``one_thread``; ``fn`` and the items must pickle). ``done`` is
    called as each item finishes (a progress bar's ``update``)."""
    if workers <= 1 or len(items) <= 1:
        out = []
        for x in items:
            out.append(fn(x))
            done and done()
        return out
    import concurrent.futures
    import multiprocessing

    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(items)),
        initializer=one_thread,
        initargs=(os.getpid(),),
        mp_context=multiprocessing.get_context("spawn"),
    ) as pool:
        futures = [pool.submit(fn, x) for x in items]
        for _ in concurrent.futures.as_completed(futures):
            done and done()
        return [f.result() for f in futures]
