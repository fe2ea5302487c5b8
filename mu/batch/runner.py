"""Batch-execute notebooks × targets with papermill, in a local process pool or on Ray.

Each notebook runs in number order (01 before 02 ...). A notebook whose parameters
include ``target_lang`` runs once per target (in parallel across targets); any other
notebook runs once per profile, with the profile name standing in for the target.

Injected parameters = ``params/<stem>.yaml`` shared ∪ profiles[profile] ∪ extra
parameters ∪ {profile, target_lang} (the last two only where the notebook has them).
Every key must be a parameter of the notebook: a typo is a ``ValueError``.

Outputs, all written atomically under ``out_dir`` (default ``reports/``)::

    <stem>/<target>.ipynb         the executed notebook (only on success)
    <stem>/<target>.done.json     done-marker, written only on success
    <stem>/<target>.failed.ipynb  the executed notebook up to the failing cell
    <stem>/<target>[.failed].html the same rendered to HTML (``mu.publish.site``)
    index.html                    links every rendered notebook, summary and figure (rewritten by every run)

Two runners on one ``MU_ROOT`` never execute the same job at once: each job runs under a lock
file (``<stem>/.<target>.lock``) and re-checks its done-marker once it holds it, so the second
waits and then skips what the first finished (and a job only reads what earlier, finished
jobs wrote). Kernels talk to papermill over IPC, not TCP (``mu.batch.kernels.LocalKernelManager``).

A (notebook, target) is skipped when its done-marker holds the same key: a hash of the
injected parameters, the notebook's content and the done-markers of the batch's earlier
notebooks it depends on (same target, or any target for a per-profile notebook such as
06). So a notebook re-executes when its parameters or code change, or when an upstream
step of the batch finished anew (e.g. a target that failed before now succeeded). A
failure does not stop the batch; every failure is listed in the returned summary.

Kernel: papermill runs the ``python3`` kernelspec; jupyter_client starts it with this
interpreter (``sys.executable``), which ``kernel_name()`` checks. ``pip install -e .``
installs that kernelspec into the virtualenv (``ipykernel``); if another ``python3``
kernelspec shadows it, run ``python -m ipykernel install --sys-prefix``.
"""

from __future__ import annotations

import concurrent.futures as cf
import dataclasses
import datetime as _dt
import hashlib
import json
import multiprocessing
import os
import sys
import time
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import filelock
from tqdm.auto import tqdm

from mu.batch import checks
from mu.batch.params import INJECTED, KERNEL, check_keys, find_notebooks, load_params, notebook_parameters, params_file
from mu.core import paths, report, threads
from mu.publish import site

if TYPE_CHECKING:  # pandas and jupyter_client are imported where used: checking a batch needs neither
    import pandas as pd

EXECUTORS = ("local", "ray")
SUMMARY_COLUMNS = ("notebook", "target", "status", "seconds", "output", "error")


@dataclasses.dataclass(frozen=True)
class Job:
    """One papermill execution: a notebook for one target with its injected parameters.

    ``digest`` hashes the parameters and the notebook content; ``per_target`` is False
    for a notebook run once per profile (its ``target`` is then the profile name).
    """

    notebook: Path
    stem: str
    target: str
    parameters: dict[str, Any]
    output: Path
    marker: Path
    digest: str
    per_target: bool

    @property
    def failed_output(self) -> Path:
        return self.output.with_name(f"{self.target}.failed.ipynb")


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


def plan(
    notebooks: Sequence[str],
    targets: Sequence[str],
    *,
    profile: str = "toy",
    params_dir: str | os.PathLike = "params",
    notebooks_dir: str | os.PathLike = "notebooks",
    out_dir: str | os.PathLike | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> list[Job]:
    """The jobs ``run`` would execute, in order, with their injected parameters."""
    out = paths.resolve(out_dir) if out_dir is not None else paths.reports_dir()
    extra = dict(extra_params or {})
    if any(k in INJECTED for k in extra):
        raise ValueError(f"extra parameters: {list(INJECTED)} are injected by the runner; use profile/targets")
    targets = list(dict.fromkeys(targets))
    if targets:
        from mu.langs import locales

        for t in targets:
            locales.check_locale(t)
    jobs, used_extra = [], set()
    for nb in find_notebooks(notebooks, notebooks_dir):
        parameters = notebook_parameters(nb)
        params = load_params(nb.stem, profile, params_dir)
        check_keys(str(params_file(nb.stem, params_dir)), params, parameters)
        mine = {k: v for k, v in extra.items() if k in parameters}
        used_extra.update(mine)
        checks.check_batch(nb.stem, parameters, params, mine, f"{params_file(nb.stem, params_dir).name} [{profile}]")
        base = {**params, **mine}
        if "profile" in parameters:
            base["profile"] = profile
        if "target_lang" in parameters:
            if not targets:
                raise ValueError(f"notebook {nb.stem} takes target_lang: give at least one target")
            runs = [(t, {**base, "target_lang": t}) for t in targets]
        else:
            runs = [(profile, base)]
        nb_hash = report.sha256(nb)
        for target, injected in runs:
            digest = _hash({"parameters": injected, "notebook": nb_hash})
            jobs.append(
                Job(
                    nb,
                    nb.stem,
                    target,
                    injected,
                    out / nb.stem / f"{target}.ipynb",
                    out / nb.stem / f"{target}.done.json",
                    digest,
                    "target_lang" in parameters,
                )
            )
    unused = sorted(set(extra) - used_extra)
    if unused:
        raise ValueError(f"extra parameters {unused} are parameters of none of {list(notebooks)}")
    return jobs


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _marker(job: Job) -> dict[str, Any] | None:
    try:
        return paths.read_json(job.marker) if job.output.is_file() else None
    except (OSError, ValueError):
        return None


def upstream(job: Job, jobs: Sequence[Job]) -> list[Job]:
    """The batch's earlier-notebook jobs ``job`` depends on: same target or per-profile
    ones; every earlier job when ``job`` itself runs once per profile."""
    earlier = [u for u in jobs if u.stem < job.stem]
    if not job.per_target:
        return earlier
    return [u for u in earlier if not u.per_target or u.target == job.target]


def _markers_on_disk(job: Job) -> dict[tuple[str, str], Path]:
    """Done-markers of earlier notebooks already in the reports folder that ``job`` reads:
    same target or per-profile ones; all of them when ``job`` runs once per profile."""
    found = {}
    for marker in job.marker.parent.parent.glob("*/*.done.json"):
        stem, target = marker.parent.name, marker.name[: -len(".done.json")]
        if stem >= job.stem:
            continue
        if job.per_target and target not in (job.target, job.parameters.get("profile")):
            continue
        found[(stem, target)] = marker
    return found


def run_key(job: Job, jobs: Sequence[Job]) -> str:
    """The job's digest combined with the current done-markers of what it depends on: the
    batch's upstream jobs and earlier results already on disk (so notebook 06 run alone
    reruns after notebook 03 was rerun in another batch)."""
    deps = _markers_on_disk(job)
    deps.update({(u.stem, u.target): u.marker for u in upstream(job, jobs)})
    state = []
    for (stem, target), marker in sorted(deps.items()):
        try:
            m = paths.read_json(marker)
        except (OSError, ValueError):
            m = {}
        state.append([stem, target, m.get("key"), m.get("run")])
    return _hash({"digest": job.digest, "upstream": state})


def is_done(job: Job, key: str) -> bool:
    """True when the job's output exists and its done-marker holds ``key``."""
    return (_marker(job) or {}).get("key") == key


def job_lock(job: Job) -> filelock.FileLock:
    """The job's lock file ``<out>/<stem>/.<target>.lock``: held while the job executes and marks
    itself done, so two runners on one ``MU_ROOT`` never run the same job at once."""
    job.marker.parent.mkdir(parents=True, exist_ok=True)
    return filelock.FileLock(str(job.marker.parent / f".{job.target}.lock"))


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
        _mark_done(job, key, result)
        return result


# tqdm.auto in a kernel without ipywidgets warns on import that it falls back to text bars; in an
# executed (and rendered) notebook that is noise on every page, not information.
QUIET_WARNINGS = "ignore:IProgress not found"
# Progress belongs to the runner's bar: in a kernel, the bars of mu (tqdm), transformers ("Loading weights",
# "Writing model shards", through huggingface_hub) and datasets ("Map") are only red stderr blocks on every
# rendered page. Warnings still show.
QUIET_ENV = {"TQDM_DISABLE": "1", "HF_HUB_DISABLE_PROGRESS_BARS": "1", "HF_DATASETS_DISABLE_PROGRESS_BARS": "1"}


def _base_env() -> dict[str, str]:
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
    return {**_base_env(), threads.ENV: str(threads.count(workers))}


def clear_failure(job: Job) -> None:
    """Remove the job's failed notebook and its page: a success of the parameters asked for (just run, or
    done before and skipped) is the job's state now, whatever failed since with other parameters."""
    for stale in (job.failed_output, job.failed_output.with_suffix(".html")):
        stale.unlink(missing_ok=True)


def _mark_done(job: Job, key: str, result: Mapping[str, Any]) -> None:
    paths.write_json(
        job.marker,
        {
            "notebook": job.stem,
            "target": job.target,
            "key": key,
            "digest": job.digest,
            "run": uuid.uuid4().hex,
            "parameters": job.parameters,
            "inputs": {"notebook": report.describe_input(job.notebook)},
            "output": str(job.output),
            "seconds": round(result["seconds"], 2),
            "versions": report.versions(),
            "finished": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        },
    )


def _run_local(
    pool: cf.ProcessPoolExecutor, jobs: list[Job], keys: Mapping, kernel: str, workers: int, on_result
) -> None:
    env = kernel_env(min(workers, len(jobs)))  # a stage of one job (02, 06) gets every core
    futures = {pool.submit(execute, j, keys[j.stem, j.target], kernel, env): j for j in jobs}
    for fut in cf.as_completed(futures):
        try:
            result = fut.result()
        except Exception as exc:  # the worker process itself died
            result = {"status": "failed", "seconds": 0.0, "error": f"worker crashed: {exc!r}"}
        on_result(futures[fut], result)


def ray_init(num_cpus: int | None = None) -> None:
    """Connect to a running Ray cluster (RAY_ADDRESS or `ray start`), else start a local one."""
    import ray

    if ray.is_initialized():
        return
    try:
        ray.init(address="auto", log_to_driver=False)
    except ConnectionError:
        ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)


def _run_ray(jobs: list[Job], keys: Mapping, kernel: str, workers: int, num_gpus: float | None, on_result) -> None:
    import ray

    ray_init(num_cpus=workers)
    if num_gpus is None:
        num_gpus = 1 if ray.cluster_resources().get("GPU", 0) >= 1 else 0
    task = ray.remote(num_cpus=1, num_gpus=num_gpus, max_retries=0)(execute)
    env = _base_env()  # Ray sets each task's OMP_NUM_THREADS from its num_cpus
    pending = {task.remote(j, keys[j.stem, j.target], kernel, env): j for j in jobs}
    while pending:
        ready, _ = ray.wait(list(pending), num_returns=1)
        job = pending.pop(ready[0])
        try:
            result = ray.get(ready[0])
        except Exception as exc:  # the Ray task or its worker died
            result = {"status": "failed", "seconds": 0.0, "error": f"ray task failed: {exc!r}"}
        on_result(job, result)


def run(
    notebooks: Sequence[str],
    targets: Sequence[str],
    *,
    profile: str = "toy",
    executor: str = "local",
    workers: int = 1,
    num_gpus: float | None = None,
    params_dir: str | os.PathLike = "params",
    notebooks_dir: str | os.PathLike = "notebooks",
    out_dir: str | os.PathLike | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> pd.DataFrame:
    """Execute notebooks × targets; skip done ones, continue past failures.

    ``executor="local"`` uses a process pool of ``workers``; ``"ray"`` runs the same
    calls as Ray tasks with ``num_gpus`` each (None: 1 when the cluster has GPUs,
    else 0). Returns one row per job: notebook, target, status
    (done/skipped/failed), seconds, output, error.
    """
    if executor not in EXECUTORS:
        raise ValueError(f"unknown executor {executor!r}; valid: {list(EXECUTORS)}")
    if workers < 1:
        raise ValueError(f"workers must be >= 1, got {workers}")
    paths.check_root()
    jobs = plan(
        notebooks,
        targets,
        profile=profile,
        params_dir=params_dir,
        notebooks_dir=notebooks_dir,
        out_dir=out_dir,
        extra_params=extra_params,
    )
    kernel = kernel_name()
    rows: list[dict[str, Any]] = []
    keys: dict[tuple[str, str], str] = {}
    bar = tqdm(total=len(jobs), desc="notebooks", unit="run")

    def on_result(job: Job, result: Mapping[str, Any]) -> None:
        if result["status"] == "skipped":
            clear_failure(job)
        output = job.output if result["status"] != "failed" else job.failed_output
        rows.append(
            {
                "notebook": job.stem,
                "target": job.target,
                "status": result["status"],
                "seconds": round(result["seconds"], 2),
                "output": str(output),
                "error": result["error"],
            }
        )
        bar.set_postfix(failed=sum(r["status"] == "failed" for r in rows))
        bar.update()

    pool = None
    try:
        for stem in dict.fromkeys(j.stem for j in jobs):
            stage = [j for j in jobs if j.stem == stem]
            keys.update({(j.stem, j.target): run_key(j, jobs) for j in stage})
            todo = [j for j in stage if not is_done(j, keys[j.stem, j.target])]
            for j in stage:
                if j not in todo:
                    on_result(j, {"status": "skipped", "seconds": 0.0, "error": None})
            bar.set_description(stem)
            if not todo:
                continue
            if executor == "ray":
                _run_ray(todo, keys, kernel, workers, num_gpus, on_result)
                continue
            if pool is None:
                pool = cf.ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"))
            _run_local(pool, todo, keys, kernel, workers, on_result)
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown()
    import pandas as pd

    site.build_index(out_dir)
    order = {(j.stem, j.target): i for i, j in enumerate(jobs)}
    rows.sort(key=lambda r: order[(r["notebook"], r["target"])])
    return pd.DataFrame(rows, columns=list(SUMMARY_COLUMNS))


def format_summary(summary: pd.DataFrame) -> str:
    """A plain-text table of the runs plus a count line and each failure's error."""
    counts = summary["status"].value_counts()
    head = ", ".join(f"{s} {int(counts.get(s, 0))}" for s in ("done", "skipped", "failed"))
    table = summary[["notebook", "target", "status", "seconds"]].to_string(index=False)
    lines = [table, head]
    for r in summary[summary["status"] == "failed"].itertuples():
        lines.append(f"FAILED {r.notebook} [{r.target}]: {r.error}\n  see {r.output}")
    return "\n".join(lines)
