"""mu.runner / python -m mu: papermill batches on throwaway notebooks built in a temp dir."""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest

from mu import execution, params, paths, report, runner, threads
from mu import jobs as mu_jobs
from mu.__main__ import main


def write_notebook(path: Path, parameters: str, body: str) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [
        nbformat.v4.new_markdown_cell("# throwaway"),
        nbformat.v4.new_code_cell(parameters, metadata={"tags": ["parameters"]}),
        nbformat.v4.new_code_cell(body),
    ]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


SETUP_BODY = (
    'import mu\nmu.report.save("01_setup", profile, "setup", results={"ok": True}, params={"profile": profile})'
)
# fails while the file <MU_ROOT>/fail-<target> exists: a failure that a rerun can fix
FAKE_PARAMS = 'profile = "toy"\ntarget_lang = "af-ZA"\nscale = 1.0'
FAKE_BODY = (
    "import mu\n"
    'if (mu.paths.root() / f"fail-{target_lang}").exists():\n'
    '    raise RuntimeError(f"deliberate failure for {target_lang}")\n'
    'mu.report.save("03_fake", target_lang, "fake", params={"profile": profile, "scale": scale},\n'
    '               rows=[{"system": "merge/linear/similarity", "family": "merge", "accuracy": 0.5 * scale}])'
)
COLLECT_BODY = (
    "import mu\n"
    'targets = sorted(p.parent.name for p in mu.paths.reports_dir("03_fake").glob("*/fake.json"))\n'
    'mu.report.save("05_collect", profile, "collect", results={"targets": targets}, params={"profile": profile})'
)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A private MU_ROOT with three notebooks (per profile, per target, per profile again)
    and their params; sw-KE is set to fail."""
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    nbs, params = tmp_path / "notebooks", tmp_path / "params"
    nbs.mkdir()
    params.mkdir()
    write_notebook(nbs / "01_setup.ipynb", 'profile = "toy"', SETUP_BODY)
    write_notebook(nbs / "03_fake.ipynb", FAKE_PARAMS, FAKE_BODY)
    write_notebook(nbs / "05_collect.ipynb", 'profile = "toy"', COLLECT_BODY)
    for stem in ("01_setup", "05_collect"):
        (params / f"{stem}.yaml").write_text("shared: {}\nprofiles: {toy: {}, massive: {}}\n")
    (params / "03_fake.yaml").write_text("shared: {}\nprofiles:\n  toy: {scale: 1.0}\n  massive: {scale: 0.5}\n")
    (tmp_path / "fail-sw-KE").touch()
    return tmp_path


def dirs(project: Path) -> dict[str, Path]:
    return {"notebooks_dir": project / "notebooks", "params_dir": project / "params"}


def statuses(summary) -> dict[tuple[str, str], str]:
    return {(r.notebook, r.target): r.status for r in summary.itertuples()}


TARGETS = ["af-ZA", "sw-KE", "fr-FR"]


@pytest.mark.slow
def test_failing_target_does_not_stop_the_others_and_rerun_skips(project):
    ended = []
    summary = runner.run(["01", "03_fake", "05"], TARGETS, workers=2, on_job=ended.append, **dirs(project))
    assert sorted((r["notebook"], r["target"], r["status"]) for r in ended) == sorted(
        (r.notebook, r.target, r.status) for r in summary.itertuples()
    )  # each job's row, handed over as it ended
    assert statuses(summary) == {
        ("01_setup", "toy"): "done",
        ("03_fake", "af-ZA"): "done",
        ("03_fake", "sw-KE"): "failed",
        ("03_fake", "fr-FR"): "done",
        ("05_collect", "toy"): "done",
    }
    failed = summary[summary["status"] == "failed"].iloc[0]
    assert "RuntimeError: deliberate failure for sw-KE" in failed["error"]
    out = paths.reports_dir()
    assert Path(failed["output"]) == out / "03_fake" / "sw-KE.failed.ipynb"
    assert Path(failed["output"]).is_file() and not (out / "03_fake" / "sw-KE.ipynb").exists()
    assert not (out / "03_fake" / "sw-KE.done.json").exists()
    # the others finished: executed notebooks, markers and the records they wrote
    for t in ("af-ZA", "fr-FR"):
        assert (out / "03_fake" / f"{t}.ipynb").is_file()
        assert paths.read_json(report.record_path("03_fake", t, "fake"))["rows"][0]["accuracy"] == 0.5
    collected = report.record_path("05_collect", "toy", "collect")
    assert paths.read_json(collected)["results"]["targets"] == ["af-ZA", "fr-FR"]
    executed = nbformat.read(out / "03_fake" / "fr-FR.ipynb", as_version=4)
    assert executed.metadata.papermill.parameters == {"scale": 1.0, "profile": "toy", "target_lang": "fr-FR"}
    marker = paths.read_json(out / "01_setup" / "toy.done.json")
    assert marker["parameters"] == {"profile": "toy"}
    assert marker["inputs"]["notebook"]["sha256"] == report.sha256(project / "notebooks" / "01_setup.ipynb")
    assert not list(out.rglob("*.tmp")), "temporary files left behind"
    assert "failed 1" in runner.format_summary(summary)

    # rerun: only the failed one is tried again
    again = runner.run(["01", "03", "05"], TARGETS, **dirs(project))
    assert statuses(again) == {
        **statuses(summary),
        ("01_setup", "toy"): "skipped",
        ("03_fake", "af-ZA"): "skipped",
        ("03_fake", "fr-FR"): "skipped",
        ("05_collect", "toy"): "skipped",
    }

    # the cause is fixed: sw-KE now finishes, so the per-profile 05 downstream re-executes
    (project / "fail-sw-KE").unlink()
    fixed = runner.run(["01", "03", "05"], TARGETS, **dirs(project))
    assert statuses(fixed) == {
        ("01_setup", "toy"): "skipped",
        ("03_fake", "af-ZA"): "skipped",
        ("03_fake", "sw-KE"): "done",
        ("03_fake", "fr-FR"): "skipped",
        ("05_collect", "toy"): "done",
    }
    assert not (out / "03_fake" / "sw-KE.failed.ipynb").exists()
    assert paths.read_json(collected)["results"]["targets"] == sorted(TARGETS)
    assert set(runner.run(["01", "03", "05"], TARGETS, **dirs(project))["status"]) == {"skipped"}

    # new parameters or a changed notebook re-execute; the rest stays skipped
    scaled = runner.run(["03"], ["af-ZA"], extra_params={"scale": 2.0}, **dirs(project))
    assert statuses(scaled) == {("03_fake", "af-ZA"): "done"}
    assert paths.read_json(report.record_path("03_fake", "af-ZA", "fake"))["rows"][0]["accuracy"] == 1.0
    write_notebook(project / "notebooks" / "01_setup.ipynb", 'profile = "toy"', SETUP_BODY + "\nprint('v2')")
    changed = runner.run(["01"], [], **dirs(project))
    assert statuses(changed) == {("01_setup", "toy"): "done"}


def test_cli_run_and_demo(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    where = ["--notebooks-dir", str(project / "notebooks"), "--params-dir", str(project / "params")]
    args = ["run", "--profile", "toy", "--targets", "af-ZA", "sw-KE", "--notebooks", "03", *where]
    assert main(args) == 1
    out = capsys.readouterr().out
    assert "FAILED 03_fake [sw-KE]: RuntimeError: deliberate failure for sw-KE" in out
    assert "done 1, skipped 0, failed 1" in out
    assert main(args + ["--set", "scael=2"]) == 2  # nothing runs
    assert "['scael'] are parameters of none" in capsys.readouterr().err

    # demo: every notebook of the folder on the toy profile, then where the summary is
    (project / "fail-sw-KE").unlink()
    assert main(["demo", "--targets", "af-ZA", "sw-KE", *where]) == 0
    out = capsys.readouterr().out
    # 03/af-ZA was done, but 01 (per profile, upstream of every target) now ran first
    assert "done 4, skipped 0, failed 0" in out
    assert "no aggregated report at reports/06_aggregation/toy/summary.md" in out


def test_plan_runs_target_free_notebooks_once_per_profile(project):
    jobs = runner.plan(["05", "01", "03"], ["af-ZA", "fr-FR"], profile="massive", **dirs(project))
    assert [(j.stem, j.target) for j in jobs] == [
        ("01_setup", "massive"),
        ("03_fake", "af-ZA"),
        ("03_fake", "fr-FR"),
        ("05_collect", "massive"),
    ]
    assert jobs[0].parameters == {"profile": "massive"}
    assert jobs[1].parameters == {"scale": 0.5, "profile": "massive", "target_lang": "af-ZA"}
    assert jobs[1].output == paths.reports_dir("03_fake", "af-ZA.ipynb")
    assert len({j.digest for j in jobs}) == 4
    # what each job waits on: same target or per-profile jobs; a per-profile job waits on all
    assert mu_jobs.upstream(jobs[2], jobs) == [jobs[0]]
    assert mu_jobs.upstream(jobs[3], jobs) == jobs[:3]


def test_a_typo_in_params_is_an_error(project):
    (project / "params" / "03_fake.yaml").write_text("shared: {scael: 1.0}\nprofiles: {toy: {}}\n")
    with pytest.raises(
        ValueError, match=r"\['scael'\] are not parameters.*valid: \['profile', 'scale', 'target_lang'\]"
    ):
        runner.plan(["03"], ["af-ZA"], **dirs(project))


@pytest.mark.parametrize(
    "call, message",
    [
        (
            dict(notebooks=["04"], targets=["af-ZA"]),
            r"notebook '04' matches \[\].*valid: \['01_setup', '03_fake', '05_collect'\]",
        ),
        (dict(notebooks=["03"], targets=["xx-XX"]), r"unknown locale 'xx-XX'"),
        (
            dict(notebooks=["03"], targets=["af-ZA"], profile="big"),
            r"unknown profile 'big'; valid: \['massive', 'toy'\]",
        ),
        (dict(notebooks=["03"], targets=[]), r"03_fake takes target_lang"),
        (dict(notebooks=["01"], targets=[], extra_params={"scale": 2.0}), r"\['scale'\] are parameters of none"),
        (dict(notebooks=["03"], targets=["af-ZA"], extra_params={"target_lang": "de-DE"}), r"injected by the runner"),
        (dict(notebooks=[], targets=["af-ZA"]), r"no notebooks given; valid: \['01_setup', '03_fake', '05_collect'\]"),
    ],
)
def test_plan_refuses_what_it_cannot_run(project, call, message):
    with pytest.raises(ValueError, match=message):
        runner.plan(**call, **dirs(project))


def test_run_refuses_unknown_executor(project):
    with pytest.raises(ValueError, match=r"unknown executor 'slurm'; valid: \['local', 'ray'\]"):
        runner.run(["03"], ["af-ZA"], executor="slurm", **dirs(project))


def test_missing_params_file_is_an_error(project):
    (project / "params" / "01_setup.yaml").unlink()
    with pytest.raises(FileNotFoundError, match="01_setup.yaml"):
        runner.plan(["01"], [], **dirs(project))


def test_kernel_is_this_interpreter():
    assert execution.kernel_name() == "python3"


@pytest.fixture()
def ray_local():
    """A quick local Ray instance; the test is skipped if Ray cannot start here."""
    if os.environ.get("MU_SKIP_RAY"):
        pytest.skip("MU_SKIP_RAY is set")
    ray = pytest.importorskip("ray")
    try:
        ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False)
    except Exception as exc:  # pragma: no cover - depends on the machine
        pytest.skip(f"Ray cannot start here: {exc}")
    yield ray
    ray.shutdown()


def test_ray_executor_runs_the_same_notebooks(project, ray_local):
    summary = runner.run(["03"], ["af-ZA", "sw-KE", "fr-FR"], executor="ray", **dirs(project))
    assert statuses(summary) == {
        ("03_fake", "af-ZA"): "done",
        ("03_fake", "sw-KE"): "failed",
        ("03_fake", "fr-FR"): "done",
    }
    assert "deliberate failure for sw-KE" in summary.set_index("target").at["sw-KE", "error"]
    assert paths.read_json(report.record_path("03_fake", "fr-FR", "fake"))["params"]["profile"] == "toy"
    again = runner.run(["03"], ["af-ZA", "fr-FR"], executor="ray", **dirs(project))
    assert set(again["status"]) == {"skipped"}


def test_notebooks_and_params_resolve_against_the_checkout_not_mu_root(project):
    repo = Path(runner.__file__).resolve().parents[2]
    assert paths.root() == project.resolve()
    assert paths.source_dir("notebooks") == repo / "notebooks"
    assert params.params_file("06_aggregation") == repo / "params" / "06_aggregation.yaml"
    with pytest.raises(ValueError, match="no numbered notebooks"):
        params.all_notebooks(project / "params")


def test_kernel_env_shares_the_cores_among_workers(project, monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    monkeypatch.setattr(threads, "busy_cores", lambda: 0.0)  # an idle machine (tests/test_threads.py: busy)
    env = execution.kernel_env(workers=2)
    cores = len(os.sched_getaffinity(0))
    assert env == {
        "MU_ROOT": str(project.resolve()),
        "OMP_NUM_THREADS": str(max(1, cores // 2)),
        "PYTHONWARNINGS": execution.QUIET_WARNINGS,
        **execution.QUIET_ENV,
    }
    monkeypatch.setenv("OMP_NUM_THREADS", "3")
    assert execution.kernel_env(workers=2)["OMP_NUM_THREADS"] == "3"  # the user's setting is kept


def test_current_params_reads_names_from_the_parameters_cell():
    import mu.batch.runner

    ns = {
        "profile": "toy",
        "n_boot": 7,
        "seed": 1,
        "min_pairs": 5,
        "average_system": "x",
        "feature_sets": ["fam"],
        "top_k": 20,
        "sinkhorn_iters": 20,
        "num_languages": 5,
        "tuning_targets": [],
        "seeds": [],
        "seed_targets": [],
        "preregistration": "params/preregistration.yaml",
        "confirmatory": False,
        "other": 3,
    }
    got = mu.params.current_params("06_aggregation", ns)
    assert got == {k: ns[k] for k in mu.params.notebook_parameters(mu.params.find_notebooks(["06"])[0])}
    assert "other" not in got and got["n_boot"] == 7
    del ns["seed"]
    with pytest.raises(ValueError, match=r"\['seed'\]"):
        mu.params.current_params("06_aggregation", ns)


def test_collector_run_alone_reruns_after_its_inputs_changed_in_another_batch(project):
    (project / "fail-sw-KE").unlink()
    runner.run(["03_fake"], ["af-ZA"], **dirs(project))
    assert statuses(runner.run(["05"], [], **dirs(project))) == {("05_collect", "toy"): "done"}
    assert statuses(runner.run(["05"], [], **dirs(project))) == {("05_collect", "toy"): "skipped"}
    runner.run(["03_fake"], ["fr-FR"], **dirs(project))  # a new upstream result, in another batch
    assert statuses(runner.run(["05"], [], **dirs(project))) == {("05_collect", "toy"): "done"}
    collected = paths.read_json(report.record_path("05_collect", "toy", "collect"))["results"]["targets"]
    assert collected == ["af-ZA", "fr-FR"]


def test_a_stage_of_one_job_gets_every_core_counted_before_the_pool_starts(project, monkeypatch):
    """Free cores are counted before the runner starts its pool: the pool's start (its resource tracker, its
    workers) is load of the runner's own making, and counted after it a one-job stage (02) got one thread."""
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)
    monkeypatch.setattr(threads, "allowed_cpus", lambda: [0, 1, 2, 3])
    state = {"starting": False}
    monkeypatch.setattr(threads, "busy_cores", lambda: 1.0 if state["starting"] else 0.0)
    seen = []

    class Pool:  # records the environment each job would run with
        def __init__(self, *args, **kwargs):
            state["starting"] = True  # until its first job is handed over

        def submit(self, fn, job, key, kernel, env):
            state["starting"] = False
            seen.append((job.stem, env["OMP_NUM_THREADS"]))
            fut = runner.cf.Future()
            fut.set_result({"status": "done", "seconds": 0.0, "error": None})
            return fut

        def shutdown(self):
            pass

    monkeypatch.setattr(runner.cf, "ProcessPoolExecutor", Pool)
    runner.run(["01", "03"], ["af-ZA", "fr-FR"], workers=2, **dirs(project))
    assert seen == [("01_setup", "4"), ("03_fake", "2"), ("03_fake", "2")]
