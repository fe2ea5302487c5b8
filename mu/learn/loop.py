"""The fine-tuning loop of ``mu.learn.train.fit``: the HF ``Trainer``'s recipe without its per-step work.

For a model of a few million parameters on one CPU thread a step takes tens of milliseconds, and what the
``Trainer`` does around it besides the maths (accelerate's wrapping of the model, dataloader and
optimiser, a FLOP and a token counter per step, a collator building every batch from Python lists,
callbacks that do nothing here) is a sizeable share of that. What is kept, as the ``Trainer``
(transformers 5) did it:

* the optimiser: ``torch.optim.AdamW`` (fused, the ``Trainer``'s default on torch >= 2.8; betas
  0.9/0.999, eps 1e-8), weight decay 0.01 on every parameter but biases and LayerNorm weights
  (``decay_parameter_names``);
* the schedule: ``transformers.get_scheduler`` (``linear``, or ``polynomial`` of power 1 down to
  ``lr_end``) with ``ceil(warmup × steps)`` warmup steps; one step per batch, gradients clipped at norm 1;
* ``ceil(epochs × batches per epoch)`` steps, the model's own loss (cross-entropy, mean over the batch),
  dropout drawn from torch's generator seeded by ``transformers.set_seed(seed)``;
* the log (``log_history``): per epoch ``loss`` (mean since the last log), ``grad_norm``,
  ``learning_rate``, ``epoch``, ``step``, then the ``eval_*`` metrics, and last ``train_runtime``,
  ``train_samples_per_second``, ``train_steps_per_second``, ``total_flos``, ``train_loss``;
* ``TrainerCallback``s through the ``Trainer``'s own ``CallbackHandler`` (with a ``TrainingArguments`` and
  a ``TrainerState``), so TensorBoard, wandb and mlflow log as before.

What changes: batches are of similar length (``mu.learn.batching.bucketed_batches``), drawn from a
generator seeded by ``seed`` alone (evaluation draws nothing, so it cannot change the training), and the
evaluation after each epoch runs on length-sorted batches.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from mu.corpus import data as mu_data
from mu.learn import batching

WEIGHT_DECAY = 0.01
MAX_GRAD_NORM = 1.0


@dataclasses.dataclass(frozen=True)
class Examples:
    """Tokenised examples: ``ids [n, longest]`` padded, ``lengths [n]``, ``labels [n]``."""

    ids: np.ndarray
    lengths: np.ndarray
    labels: torch.Tensor

    @classmethod
    def of(cls, ds: Any, tokenizer: Any, max_seq_length: int) -> Examples:
        """A dataset's ``text`` and ``label`` columns, tokenised once."""
        cols = mu_data.columns(ds)
        ids, lengths = batching.encode(tokenizer, cols["text"], max_seq_length)
        return cls(ids, lengths, torch.as_tensor(np.asarray(cols["label"], dtype=np.int64)))

    def __len__(self) -> int:
        return len(self.lengths)

    def batch(self, idx: np.ndarray, device: torch.device) -> dict[str, torch.Tensor]:
        ids, mask = batching.collate(self.ids, self.lengths, idx)
        return {
            "input_ids": ids.to(device),
            "attention_mask": mask.to(device),
            "labels": self.labels[torch.from_numpy(idx)].to(device),
        }


@dataclasses.dataclass(frozen=True)
class Settings:
    epochs: float
    batch_size: int
    lr: float
    seed: int
    lr_end: float = 0.0
    warmup: float = 0.06
    output_dir: str = "."
    run_name: str | None = None
    report_to: Sequence[str] = ()
    progress: int = 1000  # more steps than this: a tqdm bar

    def steps(self, n: int) -> tuple[int, int]:
        """(batches per epoch, optimiser steps in all) for ``n`` examples."""
        per_epoch = -(-n // self.batch_size)
        return per_epoch, math.ceil(self.epochs * per_epoch)


def decay_parameter_names(model: torch.nn.Module) -> set[str]:
    """Parameters with weight decay: not in a LayerNorm, no bias or norm in the name (the Trainer's rule)."""
    from transformers.trainer_pt_utils import get_parameter_names

    forbidden = [r"bias", r"layernorm", r"rmsnorm", r"(?:^|\.)norm(?:$|\.)", r"_norm(?:$|\.)"]
    return set(get_parameter_names(model, [torch.nn.LayerNorm], forbidden))


def optimizer(model: torch.nn.Module, lr: float) -> torch.optim.AdamW:
    decay = decay_parameter_names(model)
    params = [(n, p) for n, p in model.named_parameters() if p.requires_grad]
    groups = [
        {"params": [p for n, p in params if n in decay], "weight_decay": WEIGHT_DECAY},
        {"params": [p for n, p in params if n not in decay], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=(0.9, 0.999), eps=1e-8, fused=True)


def scheduler(opt: torch.optim.Optimizer, steps: int, s: Settings) -> torch.optim.lr_scheduler.LambdaLR:
    """The Trainer's: ``linear`` (to 0), or ``polynomial`` of power 1 to ``lr_end``, after
    ``ceil(warmup × steps)`` warmup steps (``warmup`` >= 1: that many steps)."""
    from transformers import get_scheduler

    warmup = int(s.warmup) if s.warmup >= 1 else math.ceil(steps * s.warmup)
    kind, extra = ("polynomial", {"lr_end": s.lr_end, "power": 1.0}) if s.lr_end else ("linear", {})
    return get_scheduler(
        kind, opt, num_warmup_steps=warmup, num_training_steps=steps, scheduler_specific_kwargs=extra or None
    )


def clip_grad_norm(params: Sequence[torch.Tensor], max_norm: float = MAX_GRAD_NORM) -> torch.Tensor:
    """``torch.nn.utils.clip_grad_norm_``, without its multiplication of every gradient by 1 when the norm is
    under ``max_norm`` (one pass less over the 4M-entry embedding gradient per step); the same factor, so
    the same gradients, when it clips."""
    norm = torch.nn.utils.get_total_norm([p.grad for p in params if p.grad is not None])
    if max_norm / (norm + 1e-6) < 1.0:
        torch.nn.utils.clip_grads_with_norm_(params, max_norm, norm)
    return norm


class _Hooks:
    """The callbacks' view of the run (``TrainingArguments``, ``TrainerState``, ``TrainerControl``); built
    only when there are callbacks, so a plain fit pays nothing for them."""

    def __init__(self, callbacks: Sequence[Any], model: Any, tokenizer: Any, opt: Any, sched: Any, s: Settings, total):
        from transformers import TrainingArguments
        from transformers.trainer_callback import CallbackHandler, DefaultFlowCallback, TrainerControl, TrainerState

        self.args = TrainingArguments(
            output_dir=s.output_dir,
            num_train_epochs=s.epochs,
            per_device_train_batch_size=s.batch_size,
            per_device_eval_batch_size=s.batch_size,
            learning_rate=s.lr,
            warmup_steps=s.warmup,
            weight_decay=WEIGHT_DECAY,
            seed=s.seed,
            data_seed=s.seed,
            save_strategy="no",
            logging_strategy="epoch",
            report_to=list(s.report_to),
            run_name=s.run_name,
            disable_tqdm=True,
        )
        self.handler = CallbackHandler([DefaultFlowCallback, *callbacks], model, tokenizer, opt, sched)
        self.state = TrainerState(
            max_steps=total, num_train_epochs=math.ceil(s.epochs), train_batch_size=s.batch_size, log_history=[]
        )
        self.control = TrainerControl()

    def __call__(self, event: str, **kwargs: Any) -> bool:
        """Run ``on_<event>``; True when a callback asked training to stop."""
        self.control = getattr(self.handler, f"on_{event}")(self.args, self.state, self.control, **kwargs)
        return self.control.should_training_stop


def evaluate(model: Any, dev: Examples, batch_size: int, device: torch.device) -> dict[str, float]:
    """``eval_loss`` (mean cross-entropy) and ``eval_accuracy`` on length-sorted batches; no random draw."""
    started = time.perf_counter()
    loss, correct = 0.0, 0
    batches = batching.sorted_batches(dev.lengths, batch_size)
    model.eval()
    with torch.no_grad():
        for idx in batches:
            batch = dev.batch(idx, device)
            labels = batch.pop("labels")
            logits = model(**batch).logits
            loss += float(torch.nn.functional.cross_entropy(logits.float(), labels, reduction="sum"))
            correct += int((logits.argmax(-1) == labels).sum())
    model.train()
    runtime = time.perf_counter() - started
    return {
        "eval_loss": loss / len(dev),
        "eval_accuracy": correct / len(dev),
        "eval_runtime": round(runtime, 4),
        "eval_samples_per_second": round(len(dev) / runtime, 3),
        "eval_steps_per_second": round(len(batches) / runtime, 3),
    }


def run(
    model: Any, tokenizer: Any, train: Examples, dev: Examples | None, s: Settings, callbacks: Sequence[Any] = ()
) -> dict:
    """Train ``model`` in place (module docstring); ``{"train_loss", "global_step", "log_history"}``."""
    from transformers import set_seed

    started = time.time()
    device = next(model.parameters()).device
    per_epoch, total = s.steps(len(train))
    set_seed(s.seed)  # dropout's generator, as the Trainer seeds it
    order = torch.Generator().manual_seed(s.seed)  # the batches' own generator: nothing else draws from it
    opt = optimizer(model, s.lr)
    params = [p for p in model.parameters() if p.requires_grad]
    sched = scheduler(opt, total, s)
    hooks = _Hooks(callbacks, model, tokenizer, opt, sched, s, total) if callbacks else None
    history: list[dict] = hooks.state.log_history if hooks else []
    step, since_log, total_loss, stop = 0, torch.zeros((), device=device), 0.0, False
    grad_norm = lr_used = None
    padded_tokens = 0

    def log(entry: dict) -> None:
        nonlocal stop
        entry["epoch"] = step / per_epoch
        history.append({**entry, "step": step})
        if hooks:
            stop |= hooks("log", logs=entry)

    if hooks:
        hooks.state.epoch = 0.0
        stop = hooks("train_begin")
    model.train()
    model.zero_grad()
    bar = tqdm(total=total, desc="fit", unit="step", disable=total <= s.progress, leave=False)
    for _ in range(math.ceil(s.epochs)):
        if stop or step >= total:
            break
        if hooks:
            stop |= hooks("epoch_begin")
        first = step
        for idx in batching.bucketed_batches(train.lengths, s.batch_size, order):
            if step >= total or stop:
                break
            if hooks:
                stop |= hooks("step_begin")
            batch = train.batch(idx, device)
            padded_tokens += batch["input_ids"].numel()
            loss = model(**batch).loss
            loss.backward()
            since_log += loss.detach()
            grad_norm = clip_grad_norm(params)
            opt.step()
            lr_used = sched.get_last_lr()[0]
            sched.step()
            model.zero_grad()
            step += 1
            bar.update()
            if hooks:
                hooks.state.global_step, hooks.state.epoch = step, step / per_epoch
                stop |= hooks("step_end")
        if hooks:
            stop |= hooks("epoch_end")
        if step > first:
            value = float(since_log)
            total_loss += value
            since_log.zero_()
            log({"loss": value / (step - first), "grad_norm": float(grad_norm), "learning_rate": lr_used})
        if dev is not None:
            metrics = evaluate(model, dev, s.batch_size, device)
            log(dict(metrics))
            if hooks:
                stop |= hooks("evaluate", metrics=metrics)
    bar.close()
    runtime = time.time() - started
    train_loss = total_loss / max(step, 0.001)
    log(
        {
            "train_runtime": round(runtime, 4),
            "train_samples_per_second": round(len(train) * s.epochs * step / max(total, 1) / runtime, 3),
            "train_steps_per_second": round(step / runtime, 3),
            "total_flos": float(6 * model.num_parameters(exclude_embeddings=True) * padded_tokens),
            "train_loss": train_loss,
        }
    )
    if hooks:
        hooks("train_end")
    return {"train_loss": train_loss, "global_step": step, "log_history": history}
