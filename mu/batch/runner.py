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

A job whose done-marker holds its current key is skipped, and two runners on one ``MU_ROOT`` never
execute the same job at once (``mu.batch.jobs``); a job runs in its own kernel
(``mu.batch.execution``). A failure does not stop the batch; every failure is listed in the
returned summary.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from mu.batch import checks
from mu.batch.execution import base_env, execute, kernel_env, kernel_name
from mu.batch.jobs import Job, clear_failure, hash_json, is_done, run_key, sweep
from mu.batch.params import INJECTED, check_keys, find_notebooks, load_params, notebook_parameters, params_file
from mu.core import paths, report, threads
from mu.publish import site

if TYPE_CHECKING:  # pandas and jupyter_client are imported where used: checking a batch needs neither
    import pandas as pd

EXECUTORS = ("local", "ray")
SUMMARY_COLUMNS = ("notebook", "target", "status", "seconds", "output", "error")


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
            digest = hash_json({"parameters": injected, "notebook": nb_hash})
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


def _run_local(
    pool: cf.ProcessPoolExecutor, jobs: list[Job], keys: Mapping, kernel: str, env: Mapping[str, str], on_result
) -> None:
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
    env = base_env()  # Ray sets each task's OMP_NUM_THREADS from its num_cpus
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
    on_job: Callable[[Mapping[str, Any]], None] | None = None,
) -> pd.DataFrame:
    """Execute notebooks × targets; skip done ones, continue past failures.

    ``executor="local"`` uses a process pool of ``workers``; ``"ray"`` runs the same
    calls as Ray tasks with ``num_gpus`` each (None: 1 when the cluster has GPUs,
    else 0). Returns one row per job: notebook, target, status
    (done/skipped/failed), seconds, output, error. ``on_job`` is called with each row as its job
    ends (the study's timings record a stage's progress with it, so a stopped run keeps what it measured).
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
        if on_job is not None:
            on_job(rows[-1])

    pool = None
    try:
        for stem in dict.fromkeys(j.stem for j in jobs):
            stage = [j for j in jobs if j.stem == stem]
            for j in stage:
                sweep(j)
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
            # the free cores are counted before the pool exists: starting it (its resource tracker, then its
            # workers) is half a core of load for a moment, and a stage of one job (02, 06) got one thread
            env = kernel_env(min(workers, len(todo)))  # a stage of one job gets every free core
            if pool is None:
                spawn = multiprocessing.get_context("spawn")
                pool = cf.ProcessPoolExecutor(
                    workers, mp_context=spawn, initializer=threads.die_with, initargs=(os.getpid(),)
                )
            _run_local(pool, todo, keys, kernel, env, on_result)
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
