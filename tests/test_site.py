"""Two runners on one MU_ROOT at once (each job executed once, never concurrently, results
as one run), executed notebooks rendered to HTML and reports/index.html whose every link resolves,
and no kernel transport warning. Tiny throwaway notebooks, no browser."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest
from test_runner import write_notebook

from mu import paths, report, site

REPO = Path(__file__).resolve().parent.parent
# a 1x1 PNG: stands in for a figure
PNG = base64.b64decode(
    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
)

LOG_BODY = (  # every job logs its start and end (with its pid), sleeping in between so that overlaps would show
    "import os, time\nimport mu\n"
    "log = mu.paths.root() / 'runs.log'\n"
    "def note(what):\n"
    "    with open(log, 'a') as f:\n"
    "        f.write(f'{what} {os.getpid()}\\n')\n"
)
STEP = LOG_BODY + (
    'note(f"start 03_step/{target_lang}")\n'
    'if (mu.paths.root() / f"fail-{target_lang}").exists():\n'
    '    raise RuntimeError(f"deliberate failure for {target_lang}")\n'
    "time.sleep(1.0)\n"
    'd = mu.paths.reports_dir("03_step", target_lang)\n'
    '(d / "fig.png").parent.mkdir(parents=True, exist_ok=True); (d / "fig.png").write_bytes(PNG)\n'
    'mu.report.save("03_step", target_lang, "step", params={"profile": profile},\n'
    '               rows=[{"system": "merge/linear/similarity", "family": "merge", "accuracy": len(target_lang) / 10}])\n'
    'note(f"end 03_step/{target_lang}")'
)
SUMMARY = LOG_BODY + (
    'note("start 06_agg/" + profile)\n'
    'd = mu.paths.reports_dir("06_aggregation", profile)\n'
    'mu.paths.write_text(d / "summary.md", "# Summary\\n\\n| system | accuracy |\\n|---|---|\\n| merge | 0.5 |\\n")\n'
    'mu.paths.write_text(d / "summary.csv", "system,accuracy\\nmerge,0.5\\n")\n'
    '(d / "means.png").write_bytes(PNG)\n'
    'mu.report.save("06_aggregation", profile, "summary", results={"n": 2}, params={"profile": profile})\n'
    'note("end 06_agg/" + profile)'
)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    nbs, prm = tmp_path / "notebooks", tmp_path / "params"
    nbs.mkdir()
    prm.mkdir()
    write_notebook(nbs / "03_step.ipynb", 'profile = "toy"\ntarget_lang = "af-ZA"', f"PNG = {PNG!r}\n" + STEP)
    write_notebook(nbs / "06_aggregation.ipynb", 'profile = "toy"', f"PNG = {PNG!r}\n" + SUMMARY)
    for stem in ("03_step", "06_aggregation"):
        (prm / f"{stem}.yaml").write_text("shared: {}\nprofiles: {toy: {}}\n")
    return tmp_path


def _cli(project: Path, *targets: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "mu",
        "run",
        "--profile",
        "toy",
        "--notebooks",
        "03",
        "06",
        "--notebooks-dir",
        str(project / "notebooks"),
        "--params-dir",
        str(project / "params"),
        "--targets",
        *targets,
    ]


def test_two_runners_at_once_run_each_job_once_and_agree_with_one_run(project):
    env = {**os.environ, "MU_ROOT": str(project), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    procs = [
        subprocess.Popen(
            _cli(project, "af-ZA", "fr-FR"),
            env=env,
            cwd=project,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(2)
    ]
    outs = [p.communicate(timeout=300) for p in procs]
    for p, (out, err) in zip(procs, outs):
        assert p.returncode == 0, f"a runner failed:\n{out}\n{err}"
        assert "Repo id" not in err and "without encryption" not in err, err
    # each job executed exactly once over both runners, never two at once: start/end pairs never interleave
    log = (project / "runs.log").read_text().split("\n")[:-1]
    jobs = ["03_step/af-ZA", "03_step/fr-FR", "06_agg/toy"]
    assert sorted(line.split()[1] for line in log if line.startswith("start")) == jobs
    for job in jobs:  # (different jobs may run side by side in the two runners)
        [start] = [i for i, x in enumerate(log) if x.startswith(f"start {job} ")]
        [end] = [i for i, x in enumerate(log) if x.startswith(f"end {job} ")]
        assert start < end and log[start].split()[2] == log[end].split()[2], log
    counts = [next(line for line in out.splitlines() if line.startswith("done ")) for out, _ in outs]
    done = [int(c.split(",")[0].split()[1]) for c in counts]
    assert sum(done) == 3, counts  # the other runner skipped what this one ran
    # the results are those of one run
    for t in ("af-ZA", "fr-FR"):
        rows = paths.read_json(report.record_path("03_step", t, "step"))["rows"]
        assert [r["accuracy"] for r in rows] == [len(t) / 10]
    assert paths.read_json(report.record_path("06_aggregation", "toy", "summary"))["results"] == {"n": 2}
    assert not list((project / "reports").rglob("*.tmp"))
    assert all("Open reports/index.html in a browser" in out for out, _ in outs)


class _Links(HTMLParser):
    def __init__(self):
        super().__init__()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        self.links += [v for k, v in attrs if k in ("href", "src") and v]


def test_index_links_every_rendered_notebook_summary_and_figure(project):
    from mu import runner

    (project / "fail-sw-KE").touch()
    summary = runner.run(
        ["03", "06"], ["af-ZA", "sw-KE"], notebooks_dir=project / "notebooks", params_dir=project / "params"
    )
    assert sorted(summary["status"]) == ["done", "done", "failed"]
    out = paths.reports_dir()
    index = out / site.INDEX
    parser = _Links()
    parser.feed(index.read_text(encoding="utf-8"))
    anchors = [x[1:] for x in parser.links if x.startswith("#")]
    assert anchors and all(f'id="{a}"' in index.read_text(encoding="utf-8") for a in anchors)
    links = {unquote(urlparse(x).path) for x in parser.links if not x.startswith("#")}
    assert links, "the index links nothing"
    missing = [x for x in links if not (out / x).is_file()]
    assert not missing, f"index links that resolve to no file: {missing}"
    expected = {
        "03_step/af-ZA.html",
        "03_step/sw-KE.failed.html",
        "06_aggregation/toy.html",
        "06_aggregation/toy/summary.html",
        "06_aggregation/toy/summary.csv",
        "03_step/af-ZA/fig.png",
        "06_aggregation/toy/means.png",
    }
    assert expected <= links, sorted(expected - links)
    # the rendered notebook is the executed one (its output), the summary page holds its table
    assert "deliberate failure for sw-KE" in (out / "03_step" / "sw-KE.failed.html").read_text(encoding="utf-8")
    assert "<table>" in (out / "06_aggregation" / "toy" / "summary.html").read_text(encoding="utf-8")
    # fixed and rerun: the failure's pages go, the index is regenerated without them
    (project / "fail-sw-KE").unlink()
    runner.run(["03"], ["af-ZA", "sw-KE"], notebooks_dir=project / "notebooks", params_dir=project / "params")
    text = index.read_text(encoding="utf-8")
    assert "03_step/sw-KE.html" in text and "failed.html" not in text
    assert not (out / "03_step" / "sw-KE.failed.html").exists()


SCALED = (  # fails when scale < 0: a rerun with other parameters that fails
    "import mu\n"
    "if scale < 0:\n"
    '    raise RuntimeError(f"deliberate failure with scale={scale}")\n'
    'mu.report.save("03_scaled", target_lang, "scaled", params={"profile": profile, "scale": scale},\n'
    '               rows=[{"system": "merge/linear/similarity", "family": "merge", "accuracy": 0.5}])'
)


def _index_links(out: Path) -> set[str]:
    parser = _Links()
    parser.feed((out / site.INDEX).read_text(encoding="utf-8"))
    return {unquote(urlparse(x).path) for x in parser.links if not x.startswith("#")}


def test_a_failure_newer_than_the_success_is_what_the_index_shows(project):
    from mu import runner

    write_notebook(
        project / "notebooks" / "03_scaled.ipynb", 'profile = "toy"\ntarget_lang = "af-ZA"\nscale = 1.0', SCALED
    )
    (project / "params" / "03_scaled.yaml").write_text("shared: {}\nprofiles: {toy: {}}\n")
    where = {"notebooks_dir": project / "notebooks", "params_dir": project / "params"}
    assert list(runner.run(["03_scaled"], ["af-ZA"], **where)["status"]) == ["done"]
    out = paths.reports_dir()
    assert "03_scaled/af-ZA.html" in _index_links(out)
    # rerun with other parameters, failing: the success stays on disk, but the index shows the failure
    assert list(runner.run(["03_scaled"], ["af-ZA"], extra_params={"scale": -1.0}, **where)["status"]) == ["failed"]
    assert (out / "03_scaled" / "af-ZA.ipynb").is_file()
    links = _index_links(out)
    assert "03_scaled/af-ZA.failed.html" in links and "03_scaled/af-ZA.html" not in links
    page = (out / "03_scaled" / "af-ZA.failed.html").read_text(encoding="utf-8")
    assert "deliberate failure with scale=-1.0" in page
    assert 'class="failed"><a href="03_scaled/af-ZA.failed.html">failed</a>' in (out / site.INDEX).read_text()
    # asked again with the first parameters: done before, skipped, and that success is the state again
    assert list(runner.run(["03_scaled"], ["af-ZA"], **where)["status"]) == ["skipped"]
    links = _index_links(out)
    assert "03_scaled/af-ZA.html" in links and "03_scaled/af-ZA.failed.html" not in links
    assert not (out / "03_scaled" / "af-ZA.failed.ipynb").exists()


def test_the_index_keeps_the_newest_of_a_success_and_a_failure(tmp_path):
    import nbformat

    for name, when in (
        ("af-ZA.ipynb", 100),
        ("af-ZA.failed.ipynb", 200),
        ("fr-FR.ipynb", 300),
        ("fr-FR.failed.ipynb", 200),
    ):
        nb = nbformat.v4.new_notebook()
        nb.metadata["papermill"] = {"parameters": {"profile": "toy", "target_lang": name[:5]}}
        path = tmp_path / "03_x" / name
        path.parent.mkdir(exist_ok=True)
        nbformat.write(nb, path)
        os.utime(path, ns=(when * 10**9, when * 10**9))
    got = {(e["target"], e["failed"], e["html"].name) for e in site.notebooks(tmp_path)}
    assert got == {("af-ZA", True, "af-ZA.failed.html"), ("fr-FR", False, "fr-FR.html")}


# The batch killed below runs under this harness, which adopts the runner's orphans (a subreaper) and reaps
# none of them until it exits: the killed worker stays a zombie while the rerun runs, as under a container's
# first process that does not reap. Prints the writer's pid, its state after the kill, the rerun's statuses
# and the temporaries left after it.
KILL_HARNESS = """
import ctypes, json, re, subprocess, sys, time
from pathlib import Path
import psutil
root, cli = Path(sys.argv[1]), sys.argv[2:]
ctypes.CDLL(None).prctl(36, 1, 0, 0, 0)  # PR_SET_CHILD_SUBREAPER
t_start = time.time()
batch = subprocess.Popen(cli, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
from mu.batch import runner  # the rerun runs here, the same batch: imported while the first one starts
deadline = time.time() + 60
while not (root / "started").exists():
    assert batch.poll() is None and time.time() < deadline, "the notebook never started"
    time.sleep(0.1)
[tmp] = (root / "reports").rglob(".*.ipynb.*.tmp")
writer = int(re.search(r"-(\\d+)-\\w+\\.tmp$", tmp.name)[1])
batch.kill()  # kill -9 of the runner, mid-notebook
batch.wait()
deadline, t_kill = time.time() + 10, time.time()
while psutil.Process(writer).status() != psutil.STATUS_ZOMBIE and time.time() < deadline:
    time.sleep(0.1)
got = {"writer": writer, "state": psutil.Process(writer).status()}
if got["state"] != psutil.STATUS_ZOMBIE:  # it outlived its runner: stop it, the test fails
    psutil.Process(writer).kill()
else:
    (root / "quick").touch()
    where = {"notebooks_dir": root / "notebooks", "params_dir": root / "params"}
    got["status"] = list(runner.run(["03"], ["af-ZA"], **where)["status"])
    got["left"] = sorted(str(p.relative_to(root)) for p in (root / "reports").rglob("*.tmp"))
got["seconds"] = [round(t_kill - t_start, 1), round(time.time() - t_kill, 1)]
print(json.dumps(got))
"""
SLEEPER = (
    "import time\nimport mu\n"
    "(mu.paths.root() / 'started').touch()\n"
    "if not (mu.paths.root() / 'quick').exists():\n"
    "    time.sleep(120)\n"
)


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="subreaper and parent-death signal are Linux's")
def test_a_batch_killed_mid_notebook_leaves_no_temporary_after_the_rerun(tmp_path, monkeypatch):
    import json

    import psutil

    from mu import runner

    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    where = {"notebooks_dir": tmp_path / "notebooks", "params_dir": tmp_path / "params"}
    for folder in where.values():
        folder.mkdir()
    write_notebook(where["notebooks_dir"] / "03_sleep.ipynb", 'profile = "toy"\ntarget_lang = "af-ZA"', SLEEPER)
    (where["params_dir"] / "03_sleep.yaml").write_text("shared: {}\nprofiles: {toy: {}}\n")
    cli = [sys.executable, "-m", "mu", "run", "--notebooks", "03", "--targets", "af-ZA"]
    cli += ["--notebooks-dir", str(where["notebooks_dir"]), "--params-dir", str(where["params_dir"])]
    env = {**os.environ, "MU_ROOT": str(tmp_path), "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1"}
    harness = subprocess.run(
        [sys.executable, "-c", KILL_HARNESS, str(tmp_path), *cli], env=env, capture_output=True, text=True, timeout=90
    )
    assert harness.returncode == 0, harness.stderr
    got = json.loads(harness.stdout.splitlines()[-1])
    # the worker died with its runner (no headless notebook holding the job's lock), and the rerun, which ran
    # while it was still an unreaped zombie, removed its temporary and ran the job
    assert got["state"] == psutil.STATUS_ZOMBIE, got
    assert got.get("status") == ["done"] and got["left"] == [], got
    out = paths.reports_dir("03_sleep")
    assert (out / "af-ZA.ipynb").is_file() and (out / "af-ZA.done.json").is_file()
    # a dead writer's temporary beside a job that is done goes in the next run, which skips the job
    left = out / f".af-ZA.html.{paths._OWNER}-{got['writer']}-killed.tmp"
    left.mkdir()
    assert list(runner.run(["03"], ["af-ZA"], **where)["status"]) == ["skipped"]
    assert not list(paths.reports_dir().rglob("*.tmp"))
