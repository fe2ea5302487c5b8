"""Executing one job: its notebook run with papermill in a Jupyter kernel (in a worker process or a
Ray task), under the job's lock, with the kernel's environment; rendered to HTML and marked done only
on success.

Kernel: papermill runs the ``python3`` kernelspec; jupyter_client starts it with this
interpreter (``sys.executable``), which ``kernel_name()`` checks. ``pip install -e .``
installs that kernelspec into the virtualenv (``ipykernel``); if another ``python3``
kernelspec shadows it, run ``python -m ipykernel install --sys-prefix``. Kernels talk to papermill
over IPC, not TCP (``mu.batch.kernels.LocalKernelManager``).
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

from mu.batch.jobs import Job, clear_failure, is_done, job_lock, mark_done, sweep
from mu.batch.params import KERNEL
from mu.core import paths, threads
from mu.publish import site


def kernel_name() -> str:
    """The kernelspec papermill uses; raise unless it starts this interpreter."""
    from jupyter_client.kernelspec import KernelSpecManager, NoSuchKernel

    try:
        spec = KernelSpecManager().get_kernel_spec(KERNEL)
    except NoSuchKernel as exc:
        raise ValueError(
            f"no {KERNEL!r} kernelspec; install one for {sys.executable} with "
            f"`{sys.executable} -m ipykernel install --sys-prefix`"
        ) from exc
    exe = spec.argv[0] if spec.argv else ""
    ok = {
        "python",
        f"python{sys.version_info[0]}",
        f"python{sys.version_info[0]}.{sys.version_info[1]}",
        sys.executable,
    }
    if exe not in ok and Path(exe).resolve() != Path(sys.executable).resolve():
        raise ValueError(
            f"kernelspec {KERNEL!r} at {spec.resource_dir} starts {exe!r}, not this interpreter "
            f"{sys.executable}; run `{sys.executable} -m ipykernel install --sys-prefix` "
            f"and remove the shadowing kernelspec"
        )
    return KERNEL


def execute(job: Job, key: str, kernel: str, env: dict[str, str]) -> dict[str, Any]:
    """Run one job with papermill (in a worker process or Ray task); never raises.

    Under the job's lock (``job_lock``): a job another runner finished meanwhile (done-marker
    holding ``key``) is skipped; else the notebook runs with ``env`` set for the kernel
    (``MU_ROOT``, thread count), is renamed onto its output and rendered to HTML only on
    success, and its done-marker is written; on failure the partial notebook goes to
    ``failed_output``.
    """
    import papermill

    from mu.batch.kernels import LocalKernelManager

    os.environ.update(env)
    start = time.perf_counter()
    with job_lock(job):
        sweep(job)  # the lock's last holder may have been killed while this one waited
        if is_done(job, key):
            return {"status": "skipped", "seconds": 0.0, "error": None}
        try:
            with paths.atomic_path(job.output, suffix=".ipynb") as tmp:
                try:
                    papermill.execute_notebook(
                        str(job.notebook),
                        str(tmp),
                        parameters=job.parameters,
                        kernel_name=kernel,
                        cwd=str(job.notebook.parent),
                        progress_bar=False,
                        log_output=False,
                        kernel_manager_class=LocalKernelManager,
                    )
                except BaseException:
                    if tmp.exists():  # site.build_index renders it at the end of the batch
                        paths.write_text(job.failed_output, tmp.read_text(encoding="utf-8"))
                    raise
        except Exception as exc:  # reported, never swallowed: the summary lists it
            ename = getattr(exc, "ename", type(exc).__name__)
            evalue = getattr(exc, "evalue", str(exc))
            return {"status": "failed", "seconds": time.perf_counter() - start, "error": f"{ename}: {evalue}".strip()}
        clear_failure(job)
        result = {"status": "done", "seconds": time.perf_counter() - start, "error": None}
        try:
            site.render_notebook(job.output)
        except Exception as exc:  # the run itself succeeded: its HTML page is missing, and the summary says so
            result["error"] = f"rendering {job.output.name} to HTML failed: {type(exc).__name__}: {exc}"
        mark_done(job, key, result)
        return result


# tqdm.auto in a kernel without ipywidgets warns on import that it falls back to text bars; in an
# executed (and rendered) notebook that is noise on every page, not information.
QUIET_WARNINGS = "ignore:IProgress not found"
# Progress belongs to the runner's bar: in a kernel, the bars of mu (tqdm), transformers ("Loading weights",
# "Writing model shards", through huggingface_hub) and datasets ("Map") are only red stderr blocks on every
# rendered page. Warnings still show.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def base_env() -> dict[str, str]:
    """What every kernel gets: this ``MU_ROOT``, and the warnings and progress bars turned off."""
    warn = os.environ.get("PYTHONWARNINGS")
    return {
        "MU_ROOT": str(paths.root()),
        "PYTHONWARNINGS": f"{warn},{QUIET_WARNINGS}" if warn else QUIET_WARNINGS,
        **QUIET_ENV,
    }


def kernel_env(workers: int) -> dict[str, str]:
    """Environment for the kernels: this ``MU_ROOT``, and unless set, the free cores this process may
    use shared out among ``workers`` parallel kernels as torch/OpenMP threads (``mu.core.threads.count``:
    workers x threads <= cores, no oversubscription)."""
    return {**base_env(), threads.ENV: str(threads.count(workers))}
