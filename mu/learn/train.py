"""Fine-tune a classifier on one locale (the HF ``Trainer``'s recipe in a plain loop, ``mu.learn.loop``).

``fit`` is the bare loop (iterative training calls it repeatedly on the same
model); ``train_locale`` trains one source model from the profile's base and
saves it atomically with ``training_args.json``; ``train_locales`` does a list.
"""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm
from transformers import TrainerCallback

from mu.core import paths, report, threads
from mu.corpus import data as mu_data
from mu.learn import bases, loop, models, tracking

PROGRESS_STEPS = 1000  # longer fits show a per-step progress bar


def fit(
    model: Any,
    tokenizer: Any,
    train_ds: Dataset,
    *,
    epochs: float,
    batch_size: int,
    lr: float,
    max_seq_length: int,
    seed: int,
    output_dir: str | os.PathLike,
    eval_ds: Dataset | None = None,
    callbacks: Sequence[TrainerCallback] | None = None,
    report_to: str | Sequence[str] | None = None,
    log_dir: str | os.PathLike | None = None,
    step_offset: int = 0,
    run_name: str | None = None,
    lr_end: float = 0.0,
    warmup: float = 0.06,
) -> dict:
    """Train ``model`` in place on ``train_ds`` (columns ``text``, ``label``) for ``epochs``.

    The HF ``Trainer``'s recipe in a plain loop (``mu.learn.loop``): AdamW (weight decay 0.01 except
    on biases and LayerNorm weights), gradients clipped at norm 1, batches of similar length
    (``mu.learn.batching.bucketed_batches``) padded to their longest member. A fresh optimiser each call:
    no state survives between calls except the model's weights. Tiny models train on one CPU thread
    (``mu.learn.models.cpu_threads``). Nothing is checkpointed; ``output_dir`` is the
    ``TrainingArguments.output_dir`` callbacks see. Deterministic in ``seed``.
    Runs over ``PROGRESS_STEPS`` optimiser steps show a tqdm bar per step.
    The learning rate warms up over the ``warmup`` fraction of the steps, then decays linearly
    from ``lr`` to ``lr_end`` (0: the usual decay to zero; a piece of a longer schedule otherwise).
    ``eval_ds``: accuracy on it after each epoch (``eval_accuracy`` in the log).
    ``callbacks``: ``TrainerCallback``s, called as the Trainer calls them (train/epoch/step begin and end,
    log, evaluate). ``report_to`` (``mu.learn.tracking``): experiment tracking; TensorBoard writes to
    ``log_dir`` with steps shifted by ``step_offset``; ``run_name`` names the run in wandb / mlflow.
    Returns ``{"train_loss", "global_step", "log_history"}`` (the Trainer's keys: per epoch ``loss``,
    ``grad_norm``, ``learning_rate``, ``epoch``, ``step``, the ``eval_*`` metrics, and last ``train_runtime``
    and ``train_loss``); the model is left in eval mode.
    """
    backends = tracking.check(report_to)
    tracked = tracking.callbacks(backends, log_dir, step_offset)
    train = loop.Examples.of(train_ds, tokenizer, max_seq_length)
    dev = loop.Examples.of(eval_ds, tokenizer, max_seq_length) if eval_ds is not None else None
    settings = loop.Settings(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        seed=seed,
        lr_end=lr_end,
        warmup=warmup,
        output_dir=str(output_dir),
        run_name=run_name,
        report_to=[b for b in backends if b != "tensorboard"],
        progress=PROGRESS_STEPS,
    )
    if torch.cuda.is_available():
        model.to(torch.device("cuda"))
    with models.cpu_threads(model):
        out = loop.run(model, tokenizer, train, dev, settings, [*tracked, *(callbacks or [])])
    model.eval()
    return out


def train_locale(
    locale: str,
    *,
    base_model: str | os.PathLike,
    data: str | os.PathLike,
    models_dir: str | os.PathLike,
    epochs: float,
    batch_size: int,
    lr: float,
    max_seq_length: int,
    seed: int,
    report_to: str | Sequence[str] | None = None,
) -> Path:
    """Fine-tune ``base_model`` on ``locale``'s train split; save to ``mu.learn.models.source_path``.

    Skipped when the folder already holds a model whose ``training_args.json``
    has the same parameters (base and data hashes included); otherwise trained
    and written atomically (model, tokenizer, ``training_args.json`` with
    parameters, data hash, history and package versions).
    ``report_to`` (``mu.learn.tracking``, not a parameter of the model): track the training, with
    the dev accuracy after each epoch; TensorBoard event files go to ``tracking_dir``.
    A skipped model is not retrained, so it logs nothing.
    """
    backends = tracking.check(report_to)
    out = models.source_path(locale, models_dir)
    base = paths.resolve(base_model)
    models.check_model_dir(base)
    train_ds = mu_data.load_split(locale, "train", data)
    params = {
        "locale": locale,
        "base_model": str(base_model),
        "base_sha256": report.sha256(base / models.WEIGHTS_FILE),
        "data": str(data),
        "train_sha256": mu_data.fingerprint(train_ds),
        "n_train": len(train_ds),
        "epochs": epochs,
        "batch_size": batch_size,
        "lr": lr,
        "max_seq_length": max_seq_length,
        "seed": seed,
    }
    stamp = out / "training_args.json"
    if stamp.is_file() and paths.read_json(stamp).get("params") == params:
        models.check_model_dir(out)
        return out
    model, tokenizer = models.load_classifier(base)
    scratch = paths.cache_dir("train")
    scratch.mkdir(parents=True, exist_ok=True)
    log_dir = tracking_dir(locale, models_dir)
    if backends and log_dir.exists():
        shutil.rmtree(log_dir)  # the logs of an earlier training of this folder
    with tempfile.TemporaryDirectory(prefix=f"{locale}.", dir=scratch) as tmp:
        history = fit(
            model,
            tokenizer,
            train_ds,
            epochs=epochs,
            batch_size=batch_size,
            lr=lr,
            max_seq_length=max_seq_length,
            seed=seed,
            output_dir=tmp,
            eval_ds=mu_data.load_split(locale, "dev", data) if backends else None,
            report_to=backends,
            log_dir=log_dir,
            run_name=f"train/{locale}",
        )
    record = {
        "params": params,
        "classifier_head": bases.HEAD_NOTE,
        "train_loss": history["train_loss"],
        "global_step": history["global_step"],
        "log_history": history["log_history"],
        "report_to": backends,
        "versions": report.versions(),
    }
    return models.save_classifier(model, tokenizer, out, extra_files={"training_args.json": record})


def tracking_dir(locale: str, models_dir: str | os.PathLike) -> Path:
    """``<models_dir>/runs/<locale>``: TensorBoard event files of ``train_locale(..., report_to=...)``."""
    return paths.resolve(models_dir) / "runs" / locale


def train_locales(locales: Sequence[str], *, workers: int | None = None, **kwargs: Any) -> dict[str, Path]:
    """``train_locale`` for each locale (same keyword arguments), with a progress bar.

    ``workers`` > 1 trains that many locales at once, each in its own process on one torch thread (the
    models are the same as one after the other: a model under ``mu.learn.models.TINY_PARAMS`` trains on one
    thread either way, tested). ``None``: ``mu.learn.models.fit_workers`` (one per free core for a tiny base, else 1)."""
    locales = list(locales)
    workers = models.fit_workers(kwargs["base_model"]) if workers is None else workers
    with tqdm(total=len(locales), desc="train", unit="locale") as bar:
        paths_ = threads.map_processes(functools.partial(train_locale, **kwargs), locales, workers, done=bar.update)
    return dict(zip(locales, paths_))
