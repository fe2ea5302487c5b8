"""The Ray executor on a real cluster. A head and a second node started with `ray start` (on
this machine, 127.0.0.1, their own temp dir and ports), a batch run through `python -m mu run --executor
ray` with RAY_ADDRESS, the second node killed while it runs a job: the batch reports that job failed, a
rerun completes it, and the results equal those of a local run. Skipped where Ray is absent or cannot
start a cluster here (e.g. a machine so loaded that a raylet times out waiting for its agent).

Teardown stops exactly the processes these nodes started: `ray stop` would stop every Ray instance on
the machine, other users' too."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
from test_runner import write_notebook

from mu import paths, report

REPO = Path(__file__).resolve().parent.parent
TARGETS = ("af-ZA", "sw-KE")
# Waits for <MU_ROOT>/release (at most 5 minutes) after saying where it runs, so the test can kill the
# node of one job while both run; its result is a plain function of its parameters.
BLOCKING = (
    "import os, time\n"
    "import mu\n"
    "root = mu.paths.root()\n"
    "(root / f'started-{target_lang}').write_text(str(os.getppid()))  # the process that runs the job\n"
    "deadline = time.time() + 300\n"
    "while not (root / 'release').exists():\n"
    "    assert time.time() < deadline, 'never released'\n"
    "    time.sleep(0.2)\n"
    "code = mu.locales.uriel_code(target_lang)\n"
    "mu.report.save('03_block', target_lang, 'block', params={'profile': profile, 'scale': scale},\n"
    "               rows=[{'system': 'merge/linear/similarity', 'family': 'merge', 'uriel': code,\n"
    "                      'accuracy': scale * (sum(map(ord, target_lang)) % 100) / 100}])"
)
START_S = 240  # a node's start under load (its dashboard agent alone can take a minute on 2 busy cores)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loopback_alias() -> str:
    """A name of 127.0.0.1 that Ray keeps as it is: a joining node rewrites "127.0.0.1" and "localhost" to
    the machine's outward address, where the head (on loopback) does not listen."""
    from ray._common.network_utils import is_localhost

    name = socket.gethostname()
    try:
        if not is_localhost(name) and socket.gethostbyname(name) == "127.0.0.1":
            return name
    except OSError:
        pass
    pytest.skip(f"no name of 127.0.0.1 but localhost here (the host name {name!r} is not one)")


def _tree(pid: int) -> list:
    import psutil

    try:
        p = psutil.Process(pid)
        return [p, *p.children(recursive=True)]
    except psutil.NoSuchProcess:
        return []


def _kill(processes: list) -> None:
    """SIGKILL exactly these processes (snapshotted while their parents lived)."""
    import psutil

    for p in processes:
        try:
            p.kill()
        except psutil.NoSuchProcess:
            pass
    psutil.wait_procs(processes, timeout=30)


class Node:
    """One `ray start --block` (in its own session), its log, and everything it started."""

    def __init__(self, ray_exe: Path, args: list[str], log: Path, env: dict[str, str]):
        self.log = log
        ports = [
            "--node-manager-port",
            "--object-manager-port",
            "--dashboard-agent-listen-port",
            "--dashboard-agent-grpc-port",
            "--runtime-env-agent-port",
            "--metrics-export-port",
        ]
        fixed = [f"{p}={_free_port()}" for p in ports]
        self.proc = subprocess.Popen(
            [
                str(ray_exe),
                "start",
                "--block",
                "--num-cpus=1",
                "--disable-usage-stats",
                "--include-log-monitor=false",
                *fixed,
                *args,
            ],
            stdout=log.open("w"),
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def wait_started(self) -> None:
        deadline = time.time() + START_S
        while "Ray runtime started" not in self.log.read_text(errors="replace"):
            if self.proc.poll() is not None or time.time() > deadline:
                tail = self.log.read_text(errors="replace")[-1500:]
                self.stop()
                pytest.skip(f"Ray cannot start a cluster node here: {tail}")
            time.sleep(0.5)

    def processes(self) -> list:
        return _tree(self.proc.pid)

    def stop(self) -> None:
        everything = self.processes()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # ray start --block stops its node's processes
            try:
                self.proc.wait(60)
            except subprocess.TimeoutExpired:
                pass
        _kill(everything)


@pytest.fixture()
def ray_cluster(tmp_path):
    """(RAY_ADDRESS, head, second node, environment) of a two-node cluster on 127.0.0.1."""
    if os.environ.get("MU_SKIP_RAY"):
        pytest.skip("MU_SKIP_RAY is set")
    pytest.importorskip("ray")
    ray_exe = Path(sys.executable).with_name("ray")
    if not ray_exe.is_file():
        pytest.skip(f"no ray command beside {sys.executable}")
    temp = Path(tempfile.mkdtemp(prefix="ray", dir="/tmp"))  # short: Ray's unix sockets live in it
    alias = _loopback_alias()
    # token authentication off: nodes and driver agree whatever ~/.ray/auth_token holds (loopback only)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]),
        "RAY_USAGE_STATS_ENABLED": "0",
        "RAY_AUTH_MODE": "disabled",
        "OMP_NUM_THREADS": "1",
    }
    env.pop("RAY_ADDRESS", None)
    port = _free_port()
    nodes = []
    try:
        # the head listens on 127.0.0.1 (Ray takes the machine's outward address unless it believes it runs alone)
        nodes.append(
            Node(
                ray_exe,
                [
                    "--head",
                    f"--port={port}",
                    f"--temp-dir={temp}",
                    "--include-dashboard=false",
                    f"--ray-client-server-port={_free_port()}",
                ],
                tmp_path / "head.log",
                {**env, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0"},
            )
        )
        nodes[0].wait_started()
        address = f"{alias}:{port}"  # the second node reaches it, and takes its own address, over loopback
        nodes.append(Node(ray_exe, [f"--address={address}"], tmp_path / "worker.log", env))
        nodes[1].wait_started()
        yield address, nodes[0], nodes[1], env
    finally:
        for node in reversed(nodes):
            node.stop()
        subprocess.run(["rm", "-rf", str(temp)], check=False)


def _batch(root: Path, env: dict[str, str], executor: str, address: str | None = None) -> subprocess.Popen:
    args = [
        sys.executable,
        "-m",
        "mu",
        "run",
        "--notebooks",
        "03",
        "--targets",
        *TARGETS,
        "--executor",
        executor,
        "--workers",
        "2",
        "--notebooks-dir",
        str(root / "notebooks"),
        "--params-dir",
        str(root / "params"),
    ]
    extra = {"MU_ROOT": str(root), **({"RAY_ADDRESS": address} if address else {})}
    return subprocess.Popen(
        args, env={**env, **extra}, cwd=root, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )


def _project(root: Path) -> Path:
    (root / "notebooks").mkdir(parents=True)
    (root / "params").mkdir()
    write_notebook(
        root / "notebooks" / "03_block.ipynb", 'profile = "toy"\ntarget_lang = "af-ZA"\nscale = 1.0', BLOCKING
    )
    (root / "params" / "03_block.yaml").write_text("shared: {}\nprofiles: {toy: {scale: 0.5}}\n")
    return root


def _rows(root: Path, target: str) -> list[dict]:
    return paths.read_json(root / report.record_path("03_block", target, "block").relative_to(paths.root()))["rows"]


@pytest.mark.slow
def test_a_node_dying_mid_job_fails_that_job_and_a_rerun_completes_it(tmp_path, ray_cluster):
    address, head, worker, env = ray_cluster
    root = _project(tmp_path / "cluster")
    batch = _batch(root, env, "ray", address)
    deadline = time.time() + START_S
    while not all((root / f"started-{t}").exists() for t in TARGETS):  # one job on each node (1 CPU each)
        assert batch.poll() is None, batch.communicate()[0]
        assert time.time() < deadline, "the jobs did not both start"
        time.sleep(0.5)
    on_worker = {p.pid for p in worker.processes()}
    [killed] = [t for t in TARGETS if int((root / f"started-{t}").read_text()) in on_worker]
    _kill(worker.processes())  # the second node dies, as a machine would: every process of it at once
    (root / "release").touch()
    out, _ = batch.communicate(timeout=600)
    assert batch.returncode == 1, out
    assert "done 1, skipped 0, failed 1" in out, out
    assert f"FAILED 03_block [{killed}]: ray task failed" in out, out
    assert not (root / "reports" / "03_block" / f"{killed}.done.json").exists()

    rerun = _batch(root, env, "ray", address)  # the head alone is left
    out, _ = rerun.communicate(timeout=600)
    assert rerun.returncode == 0, out
    assert "done 1, skipped 1, failed 0" in out, out
    assert not list((root / "reports").rglob("*.tmp"))  # the dead job's temporaries were cleared

    local = _project(tmp_path / "local")
    (local / "release").touch()
    alone = _batch(local, {k: v for k, v in env.items() if k != "RAY_ADDRESS"}, "local")
    out, _ = alone.communicate(timeout=600)
    assert alone.returncode == 0, out
    for t in TARGETS:
        assert _rows(root, t) == _rows(local, t)
