"""What a rendered report shows and what the runner's terminal shows. A notebook executed by the
runner has no progress bars or library loading noise in its outputs (mu's tqdm bars, transformers'
"Loading weights" / "Writing model shards", datasets' "Map"), its real warnings stay, and its kernel is
shut down without the SIGINT that printed `[IPKernelApp] ERROR | KeyboardInterrupt caught in kernel.`"""

from __future__ import annotations

import asyncio
import json

import pytest
from jupyter_client.manager import AsyncKernelManager
from test_runner import write_notebook

from mu import execution, kernels, runner

NOISY = (  # every kind of bar the notebooks showed, and one real warning
    "import warnings\n"
    "import datasets\n"
    "from tqdm.auto import tqdm\n"
    "import mu\n"
    "for _ in tqdm(range(3), desc='a mu bar'):\n"
    "    pass\n"
    "model, tokenizer = mu.models.load_classifier(base)\n"
    "mu.models.save_classifier(model, tokenizer, mu.paths.models_dir('quiet', 'copy'))\n"
    "datasets.Dataset.from_dict({'x': list(range(5))}).map(lambda r: r)\n"
    "sd = model.state_dict()\n"
    "merged = mu.merge.merge('linear', {'de-DE': sd, 'nl-NL': sd}, {'de-DE': 0.5, 'nl-NL': 0.5}, progress=True)\n"
    "warnings.warn('a real warning stays')\n"
    "print('merged', len(merged))"
)
NOISE = ("%|", "Loading weights", "Writing model shards", "Map", "merge linear", "a mu bar")


def _stderr(ipynb) -> str:
    cells = json.loads(ipynb.read_text(encoding="utf-8"))["cells"]
    return "".join(
        "".join(o["text"])
        for c in cells
        for o in c.get("outputs", [])
        if o.get("output_type") == "stream" and o.get("name") == "stderr"
    )


@pytest.fixture()
def interrupts(monkeypatch):
    """Every interrupt a kernel manager sends (True: while shutting the kernel down)."""
    sent, original = [], AsyncKernelManager._async_interrupt_kernel

    async def recording(self):
        sent.append(self.shutting_down)
        await original(self)

    monkeypatch.setattr(AsyncKernelManager, "_async_interrupt_kernel", recording)
    return sent


@pytest.mark.slow
def test_a_runner_notebook_has_no_progress_noise_and_its_kernel_stops_cleanly(
    tmp_path, monkeypatch, toy_base, interrupts, capfd
):
    monkeypatch.setenv("MU_ROOT", str(tmp_path))
    (tmp_path / "notebooks").mkdir()
    (tmp_path / "params").mkdir()
    write_notebook(tmp_path / "notebooks" / "03_quiet.ipynb", f'profile = "toy"\nbase = {str(toy_base)!r}', NOISY)
    (tmp_path / "params" / "03_quiet.yaml").write_text("shared: {}\nprofiles: {toy: {}}\n")
    [job] = runner.plan(["03_quiet"], [], notebooks_dir=tmp_path / "notebooks", params_dir=tmp_path / "params")
    env = execution.kernel_env(workers=1)
    for k, v in env.items():  # execute() sets them in this process: restored after the test
        monkeypatch.setenv(k, v)
    result = execution.execute(job, "key", execution.kernel_name(), env)  # in this process, as a worker runs it
    assert result["status"] == "done", result
    stderr = _stderr(job.output)
    assert "a real warning stays" in stderr
    assert not [n for n in NOISE if n in stderr], stderr
    page = job.output.with_suffix(".html").read_text(encoding="utf-8")
    assert "a real warning stays" in page and "Loading weights" not in page and "it/s]" not in page
    assert "merged" in page  # the cell ran to its end
    assert interrupts == []  # papermill shut the finished kernel down without a SIGINT
    terminal = capfd.readouterr()
    assert "KeyboardInterrupt caught in kernel" not in terminal.out + terminal.err


def test_an_interrupt_asked_for_while_running_is_still_sent(interrupts):
    km = kernels.LocalKernelManager()
    with pytest.raises(RuntimeError, match="No kernel is running"):  # sent on: no kernel here to take it
        asyncio.run(km._async_interrupt_kernel())
    km.shutting_down = True
    asyncio.run(km._async_interrupt_kernel())  # shutting down: not sent
    assert interrupts == [False]


def test_the_kernel_environment_turns_the_bars_off():
    env = execution.kernel_env(workers=1)
    assert {k: env[k] for k in execution.QUIET_ENV} == {
        "TQDM_DISABLE": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_DATASETS_DISABLE_PROGRESS_BARS": "1",
    }
