"""`make lab`: JupyterLab starts headless on notebooks/ with the project's kernel and answers over HTTP.

Starts the server the way the Makefile's `lab` target does (root dir notebooks/, this interpreter's
environment), waits for GET /api to answer 200, checks the kernel and the notebooks it serves, stops it.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import secrets
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str) -> tuple[int, dict]:
    with urllib.request.urlopen(url, timeout=5) as r:
        return r.status, json.loads(r.read().decode())


def test_makefile_lab_target_starts_jupyterlab_on_the_notebooks():
    recipe = re.search(r"^lab:.*\n\t(.*)$", (REPO / "Makefile").read_text(), re.M).group(1)
    assert "jupyter lab" in recipe and "--ServerApp.root_dir=notebooks" in recipe


def test_jupyterlab_answers_headless_with_the_projects_kernel(tmp_path):
    if importlib.util.find_spec("jupyterlab") is None:
        pytest.skip(
            "jupyterlab is not installed in this environment (the `test` / `lab` extra; `make lab` installs it)"
        )
    port, token = _free_port(), secrets.token_hex(16)
    cmd = [
        sys.executable,
        "-m",
        "jupyterlab",
        "--no-browser",
        "--ServerApp.ip=127.0.0.1",
        f"--port={port}",
        "--ServerApp.port_retries=0",
        f"--ServerApp.token={token}",
        "--ServerApp.root_dir=notebooks",
    ]
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")
    env = {
        **os.environ,
        "JUPYTER_RUNTIME_DIR": str(tmp_path / "runtime"),
        "JUPYTER_CONFIG_DIR": str(tmp_path / "config"),
    }
    log = (tmp_path / "lab.log").open("w")
    server = subprocess.Popen(cmd, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline, status = time.monotonic() + 120, None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                status, api = _get(f"{base}/api?token={token}")
                break
            except (urllib.error.URLError, ConnectionError, OSError):
                time.sleep(0.5)
        assert status == 200, (
            f"no answer from {base}/api (exit {server.poll()}): {(tmp_path / 'lab.log').read_text()[-2000:]}"
        )
        assert "version" in api
        _, specs = _get(f"{base}/api/kernelspecs?token={token}")
        kernel = specs["kernelspecs"][specs["default"]]["spec"]
        assert Path(kernel["argv"][0]).name.startswith("python")
        if Path(kernel["argv"][0]).is_absolute():  # `make venv` installs the kernelspec into .venv (--sys-prefix)
            assert Path(kernel["argv"][0]).resolve() == Path(sys.executable).resolve(), kernel
        _, listing = _get(f"{base}/api/contents?token={token}")
        assert "03_merging.ipynb" in {item["name"] for item in listing["content"]}
    finally:
        server.terminate()
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
        log.close()
