"""Experiment tracking through the HF ``Trainer``'s own integration callbacks (``report_to``).

``report_to`` is ``None`` / ``"none"`` (nothing, the default), one backend name or a
list of them: ``tensorboard`` (a dependency of ``mu``: works offline; event files
under the ``log_dir`` the caller chooses), ``wandb`` or ``mlflow`` (not dependencies:
``pip install wandb`` / ``mlflow`` first; they log where their own settings say,
e.g. ``WANDB_MODE=offline``, ``MLFLOW_TRACKING_URI``). An unknown name lists the
valid ones; a named backend that is not installed says what to install.

TensorBoard gets one ``SummaryWriter`` per ``fit`` with a step offset, so a source
trained over several ``fit`` calls (iterative training) draws one continuous curve.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback

BACKENDS = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}  # name -> module to import


def check(report_to: str | Sequence[str] | None) -> list[str]:
    """The backends named by ``report_to`` (``[]`` for None / "none" / []), each known and installed."""
    names = (
        []
        if report_to is None or report_to == "none"
        else [report_to]
        if isinstance(report_to, str)
        else list(report_to)
    )
    unknown = [n for n in names if n not in BACKENDS]
    if unknown:
        raise ValueError(f"unknown report_to backend(s) {unknown!r}; valid: 'none' or any of {sorted(BACKENDS)}")
    missing = [n for n in names if importlib.util.find_spec(BACKENDS[n]) is None]
    if missing:
        raise ImportError(
            f"report_to={names!r} needs {missing}, which is not installed: "
            f"pip install {' '.join(BACKENDS[n] for n in missing)} (not a dependency of mu)"
        )
    return sorted(set(names), key=names.index)


class _OffsetWriter:
    """A SummaryWriter whose scalars are logged ``offset`` steps later (continuous curves over fits)."""

    def __init__(self, writer: Any, offset: int):
        self.writer, self.offset = writer, offset

    def add_scalar(self, tag: str, value: float, global_step: int | None = None, *args: Any, **kwargs: Any) -> None:
        self.writer.add_scalar(tag, value, (global_step or 0) + self.offset, *args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.writer, name)


def trainer_setup(
    backends: Sequence[str], log_dir: str | os.PathLike | None, step_offset: int = 0
) -> tuple[list[str], list[TrainerCallback]]:
    """``(report_to for TrainingArguments, extra callbacks)`` for the checked ``backends``:
    TensorBoard as an explicit callback writing to ``log_dir``, the others by name."""
    callbacks: list[TrainerCallback] = []
    if "tensorboard" in backends:
        if log_dir is None:
            raise ValueError("report_to='tensorboard' needs a log_dir for its event files")
        from torch.utils.tensorboard import SummaryWriter
        from transformers.integrations import TensorBoardCallback

        writer = SummaryWriter(log_dir=str(log_dir))
        callbacks.append(TensorBoardCallback(tb_writer=_OffsetWriter(writer, step_offset) if step_offset else writer))
    return [b for b in backends if b != "tensorboard"], callbacks


def callbacks(
    backends: Sequence[str], log_dir: str | os.PathLike | None, step_offset: int = 0
) -> list[TrainerCallback]:
    """The ``TrainerCallback``s that track a fit for the checked ``backends`` (``mu.learn.loop`` calls them as
    the ``Trainer`` does): TensorBoard's from ``trainer_setup``, then the integration callback of each other."""
    names, found = trainer_setup(backends, log_dir, step_offset)
    if names:
        from transformers.integrations import get_reporting_integration_callbacks

        found += [cls() for cls in get_reporting_integration_callbacks(names)]
    return found
