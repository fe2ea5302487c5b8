"""What ``mu`` writes follows the umask (a shared MU_ROOT), and a write that fails for want of
room (file-size limit, disk full) names its output."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import pytest

from mu import models, paths

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _mode(p) -> int:
    return stat.S_IMODE(os.stat(p).st_mode)


def _run(code: str) -> subprocess.CompletedProcess:
    """``code`` in a fresh interpreter (this worktree's ``mu`` first)."""
    env = {**os.environ, "PYTHONPATH": REPO + os.pathsep + os.environ.get("PYTHONPATH", "")}
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)


@pytest.fixture
def umask():
    """Set the process umask for one test (restored after)."""
    old = os.umask(0o022)
    yield os.umask
    os.umask(old)


@pytest.mark.parametrize(
    "mask, file_mode, dir_mode", [(0o022, 0o644, 0o755), (0o027, 0o640, 0o750), (0o002, 0o664, 0o775)]
)
def test_models_records_and_folders_follow_the_umask(toy_base, tmp_path, umask, mask, file_mode, dir_mode):
    """A model saved by mu (``save_classifier``: safetensors alone writes 0600), a JSON record and a
    folder written through ``atomic_path`` (tempfile alone makes 0700) get the umask's modes."""
    umask(mask)
    assert paths.umask() == mask
    model, tok = models.load_classifier(toy_base)
    models.save_classifier(model, tok, tmp_path / "model", extra_files={"details.json": {"a": 1}})
    paths.write_json(tmp_path / "record.json", {"accuracy": 0.5})
    with paths.atomic_path(tmp_path / "folder") as tmp:
        tmp.mkdir()
        (tmp / "sub").mkdir()
        (tmp / "sub" / "x.txt").write_text("x")
    for file in (
        "model/model.safetensors",
        "model/config.json",
        "model/details.json",
        "record.json",
        "folder/sub/x.txt",
    ):
        assert _mode(tmp_path / file) == file_mode, file
    for folder in ("model", "folder", "folder/sub"):
        assert _mode(tmp_path / folder) == dir_mode, folder


def test_follow_umask_keeps_executables_and_leaves_links(tmp_path):
    (tmp_path / "d").mkdir(mode=0o700)
    script, data = tmp_path / "d" / "run.sh", tmp_path / "d" / "data.bin"
    script.write_text("#!/bin/sh\n")
    data.write_text("x")
    script.chmod(0o700)
    data.chmod(0o600)
    (tmp_path / "d" / "link").symlink_to(data)
    paths.follow_umask(tmp_path / "d")
    mask = paths.umask()
    assert (_mode(tmp_path / "d"), _mode(script), _mode(data)) == (0o777 & ~mask, 0o777 & ~mask, 0o666 & ~mask)


# --- a failed save names its output ------------------------------------------------------------------


def test_a_save_over_the_file_size_limit_names_its_output(toy_base, tmp_path):
    """Under RLIMIT_FSIZE (a full disk behaves alike: ENOSPC) safetensors raises ``SafetensorError ... File
    too large``, tokenizers a bare ``Exception``, Python an OSError: each is a WriteError naming the output
    (a model, a merge, a JSON record, a tokenizer), and nothing is left at the output or beside it."""
    saves = {
        "model": "models.save_classifier(model, tok, OUT)",
        "merge": "run.merge_models('linear', {'de-DE': BASE, 'fr-FR': BASE}, {'de-DE': 0.5, 'fr-FR': 0.5}, OUT)",
        "json": "paths.write_json(OUT, {'x': 'y' * 100_000})",
        "tokenizer": "with paths.atomic_path(OUT) as tmp: tok.save_pretrained(tmp)",
    }
    lines = [
        "import resource, signal, sys",
        "from mu import models, paths",
        "from mu.merge import run",
        f"BASE = {str(toy_base)!r}",
        "model, tok = models.load_classifier(BASE)",
        "signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # else the kernel kills the process at the limit",
        "resource.setrlimit(resource.RLIMIT_FSIZE, (20_000, 20_000))",
        f"paths.write_text({str(tmp_path / 'small.txt')!r}, 'fits')",
    ]
    for what, call in saves.items():
        lines += [
            f"OUT = {str(tmp_path / what)!r}",
            "try:",
            f"    {call}",
            "    print('NO ERROR', OUT)",
            "except paths.WriteError as e:",
            "    print('WRITE-ERROR', e.errno, e)",
        ]
    proc = _run("\n".join(lines))
    assert proc.returncode == 0, proc.stderr[-3000:]
    for what in saves:
        out = tmp_path / what
        assert f"WRITE-ERROR 27 [Errno 27] cannot write {out}: File too large" in proc.stdout, proc.stdout
        assert not out.exists() and not list(tmp_path.glob(f".{what}*")), what
    assert (tmp_path / "small.txt").read_text() == "fits"  # below the limit a write still works


def test_other_errors_inside_a_write_are_not_taken_for_a_failed_write(tmp_path):
    with pytest.raises(ValueError, match="not a write"):
        with paths.atomic_path(tmp_path / "x.json"):
            raise ValueError("not a write")
    with pytest.raises(OSError) as info:  # an OSError of another kind (a missing input) stays what it is
        with paths.atomic_path(tmp_path / "x.json"):
            open(tmp_path / "absent")
    assert not isinstance(info.value, paths.WriteError) and info.value.errno == 2
    with pytest.raises(
        paths.WriteError,
        match=r"cannot write .*x\.json: No space left on device \(Exception: "
        r"No space left on device \(os error 28\)\)",
    ):
        with paths.atomic_path(tmp_path / "x.json"):
            raise Exception("No space left on device (os error 28)")  # what tokenizers raises
    assert not list(tmp_path.iterdir())
