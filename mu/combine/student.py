"""The distilled student's training: a classifier fitted to a teacher's distributions on unlabeled text.

``train_student`` minimises T²·KL(teacher ‖ softmax(z / T)) (Hinton et al., 2015) with AdamW, dropout
on, batches drawn with the seed. Stopping is label-free: every ``eval_every`` steps the student's
argmax agreement with the teacher on held-out texts (``agreement``) is measured, the best checkpoint
is kept (step 0, the starting model, included) and training stops after ``patience`` evaluations
without improvement. ``fit_student`` loads the starting model and trains it. Nothing here reads a
label or writes a file: the teacher, the saved run and its rows are ``mu.combine.distill``.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm


def agreement(
    model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], teacher_argmax: np.ndarray, *, max_seq_length: int
) -> float:
    """Share of ``texts`` on which the model's argmax is the teacher's (label-free)."""
    from mu.learn import evaluate

    was_training = model.training
    model.eval()  # no dropout (evaluate.forward only switches gradients off)
    pred = evaluate.forward(model, tokenizer, list(texts), batch_size=64, max_seq_length=max_seq_length).argmax(axis=1)
    model.train(was_training)
    return float(np.mean(pred == np.asarray(teacher_argmax)))


def train_student(
    model: torch.nn.Module,
    tokenizer: Any,
    texts: Sequence[str],
    teacher: np.ndarray,
    *,
    temperature: float,
    epochs: int,
    lr: float,
    batch_size: int,
    max_seq_length: int,
    seed: int,
    held_out: Sequence[str] = (),
    held_out_teacher: np.ndarray | None = None,
    eval_every: int | None = None,
    patience: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place on (text, teacher distribution) pairs, at most ``epochs`` epochs.

    Loss T²·KL(teacher ‖ softmax(z/T)), mean over the batch; AdamW, dropout on; batches drawn with
    ``seed``. With ``held_out`` texts (and their ``held_out_teacher`` distributions): the argmax
    agreement with the teacher on them is measured at step 0, every ``eval_every`` steps (None: each
    epoch's end) and at the last step; the best checkpoint (earliest on ties) is loaded at the end and
    training stops once ``patience`` evaluations in a row did not improve on it (None: never early).
    Returns ``{"loss_curve", "agreement_curve" ([{"step", "agreement"}]), "best_step",
    "best_agreement", "steps", "stopped" ("epochs" | "patience")}``. The model is left in eval mode.
    """
    texts, held = [str(t) for t in texts], [str(t) for t in held_out]
    if not texts or len(texts) != len(teacher):
        raise ValueError(
            f"distillation needs one teacher distribution per text, got {len(texts)} texts and "
            f"{len(teacher)} distributions"
        )
    if held and (held_out_teacher is None or len(held_out_teacher) != len(held)):
        raise ValueError("held-out texts need one teacher distribution each (held_out_teacher)")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    if (eval_every is not None and eval_every < 1) or (patience is not None and patience < 1):
        raise ValueError(f"eval_every and patience must be >= 1 or None, got {eval_every}, {patience}")
    device = next(model.parameters()).device
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    target = torch.as_tensor(teacher, dtype=torch.float32)
    held_argmax = None if not held else np.asarray(held_out_teacher).argmax(axis=1)
    per_epoch = -(-len(texts) // batch_size)
    every = eval_every or per_epoch
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)  # dropout
    gen = torch.Generator().manual_seed(seed)
    log: dict[str, Any] = {
        "loss_curve": [],
        "agreement_curve": [],
        "best_step": None,
        "best_agreement": None,
        "steps": 0,
        "stopped": "epochs",
    }
    best_state: dict[str, torch.Tensor] | None = None
    stale = 0

    def check() -> bool:
        """Measure agreement at this step; True when patience has run out."""
        nonlocal best_state, stale
        a = agreement(model, tokenizer, held, held_argmax, max_seq_length=max_seq_length)
        log["agreement_curve"].append({"step": log["steps"], "agreement": a})
        if log["best_agreement"] is None or a > log["best_agreement"]:
            log["best_step"], log["best_agreement"], stale = log["steps"], a, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
        return patience is not None and stale >= patience

    model.train()
    stop = bool(held) and check()
    # disable=None: off without a terminal (a kernel run by mu.batch.runner), as TQDM_DISABLE turns the others off
    for _ in tqdm(
        range(epochs), desc="distill", unit="epoch", leave=False, disable=True if (not progress or stop) else None
    ):
        for idx in torch.randperm(len(texts), generator=gen).split(batch_size):
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx.tolist()]}, return_tensors="pt").to(device)
            logp = torch.log_softmax(model(**dict(batch)).logits.float() / temperature, dim=-1)
            q = target[idx].to(device)
            loss = temperature**2 * (q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            log["loss_curve"].append(float(loss.detach()))
            log["steps"] += 1
            if held and log["steps"] % every == 0 and check():
                log["stopped"] = "patience"
                break
        if log["stopped"] == "patience":
            break
    if held and log["agreement_curve"][-1]["step"] != log["steps"]:
        check()
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    return log


def fit_student(
    student_init: str | os.PathLike,
    texts: Sequence[str],
    probs: np.ndarray,
    *,
    held_out: Sequence[str] = (),
    held_out_probs: np.ndarray | None = None,
    max_seq_length: int,
    seed: int,
    progress: bool = True,
    **knobs: Any,
) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """Load ``student_init`` and ``train_student`` it (``knobs``: temperature, epochs, lr, batch_size,
    eval_every, patience); returns (model on the CPU, tokenizer, its training log)."""
    from mu.learn import models

    model, tokenizer = models.load_classifier(student_init)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with models.cpu_threads(model):
        log = train_student(
            model,
            tokenizer,
            texts,
            probs,
            held_out=held_out,
            held_out_teacher=held_out_probs,
            max_seq_length=max_seq_length,
            seed=seed,
            progress=progress,
            **knobs,
        )
    return model.cpu(), tokenizer, log
