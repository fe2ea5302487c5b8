"""Ensemble distillation on the target's unlabeled text: one model to serve, trained to match
the ensemble (notebook 04).

Teacher: the ``soft`` ensemble of the sources (``mu.ensemble``), i.e. the weighted mean of their
tempered probabilities softmax(z_i / T), computed on the target's unlabeled utterances. Student:
initialised from the linear merge of the *same* sources and weights (``mu.merge.merge_models``,
the plain merge of notebook 03), trained with AdamW to minimise T²·KL(teacher ‖ softmax(z / T))
(Hinton et al., 2015). Only texts reach this module (``mu.data.unlabeled``); the student is
evaluated on the target's test split like every other system. Rows form the ``adapted`` family
(``adapted/distilled-soft/<mode>``): they see the target's unlabeled text, never its labels.

Kept apart from ``mu.ensemble`` (which it uses for the sources' logits) so that ``mu.ensemble``
stays the cached output-space combiner and the two do not import each other.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from tqdm.auto import tqdm

from mu import ensemble, paths, report
from mu.similarity import check_weights

DETAILS_JSON = "distill_details.json"
DEFAULTS = {"temperature": 2.0, "epochs": 3, "lr": 2e-5, "batch_size": 16}


def soft_targets(logits: Mapping[str, np.ndarray], weights: Mapping[str, float], temperature: float) -> np.ndarray:
    """The teacher: Σ_i w_i softmax(z_i / T) over ``{source: logits [n, C]}`` (weights normalised)."""
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    arrays = ensemble.check_logits(logits)
    w = check_weights(weights, list(arrays))
    return ensemble.weighted_sum({loc: ensemble.softmax(np.asarray(z, dtype=np.float64) / temperature)
                                  for loc, z in arrays.items()}, w)


def train_student(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], teacher: np.ndarray, *,
                  temperature: float, epochs: int, lr: float, batch_size: int, max_seq_length: int, seed: int,
                  progress: bool = True) -> list[float]:
    """Train ``model`` in place on (text, teacher distribution) pairs; returns each step's loss.

    Loss T²·KL(teacher ‖ softmax(z/T)), mean over the batch; AdamW, dropout on; batches drawn
    with ``seed``. The model is left in eval mode.
    """
    texts = [str(t) for t in texts]
    if not texts or len(texts) != len(teacher):
        raise ValueError(f"distillation needs one teacher distribution per text, got {len(texts)} texts and "
                         f"{len(teacher)} distributions")
    if epochs < 1 or batch_size < 1 or not lr > 0:
        raise ValueError(f"need epochs >= 1, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    device = next(model.parameters()).device
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]
    target = torch.as_tensor(teacher, dtype=torch.float32)
    opt = torch.optim.AdamW(model.parameters(), lr=lr)
    torch.manual_seed(seed)  # dropout
    gen = torch.Generator().manual_seed(seed)
    curve = []
    model.train()
    # disable=None: off without a terminal (a kernel run by mu.runner), as TQDM_DISABLE turns the others off
    for _ in tqdm(range(epochs), desc="distill", unit="epoch", leave=False, disable=None if progress else True):
        for idx in torch.randperm(len(texts), generator=gen).split(batch_size):
            batch = tokenizer.pad({"input_ids": [enc[i] for i in idx.tolist()]}, return_tensors="pt").to(device)
            logp = torch.log_softmax(model(**dict(batch)).logits.float() / temperature, dim=-1)
            q = target[idx].to(device)
            loss = temperature ** 2 * (q * (torch.log(q.clamp_min(1e-12)) - logp)).sum(-1).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            curve.append(float(loss.detach()))
    model.eval()
    return curve



def distill(student_init: str | os.PathLike, sources: Mapping[str, str | os.PathLike], weights: Mapping[str, float],
            texts: Sequence[str], out_dir: str | os.PathLike, *, temperature: float = DEFAULTS["temperature"],
            epochs: int = DEFAULTS["epochs"], lr: float = DEFAULTS["lr"], batch_size: int = DEFAULTS["batch_size"],
            max_seq_length: int = 128, seed: int = 42, adapt_from: Mapping[str, Any] | None = None) -> Path:
    """Distil the soft ensemble of ``sources`` ({locale: model folder}) with ``weights`` on unlabeled
    ``texts`` into a student initialised from ``student_init``; saved (atomically) to ``out_dir``
    with ``distill_details.json`` (teacher, knobs, texts sha256, loss curve, seconds, versions).
    Rerunning with the same inputs and knobs does nothing. ``adapt_from`` is recorded only.
    """
    from mu import evaluate, models

    w = check_weights(weights, list(sources))
    texts = [str(t) for t in texts]
    knobs = {"temperature": temperature, "epochs": epochs, "lr": lr, "batch_size": batch_size,
             "max_seq_length": max_seq_length, "seed": seed}
    inputs = {"student_init": evaluate.model_fingerprint(student_init),
              **{f"model/{loc}": evaluate.model_fingerprint(sources[loc]) for loc in w}}
    fingerprint = report.digest({"teacher": "soft", "weights": w, "inputs": inputs, "texts": report.digest(texts), "knobs": knobs})
    out = paths.resolve(out_dir)
    if (out / DETAILS_JSON).is_file() and (out / models.WEIGHTS_FILE).is_file():
        if paths.read_json(out / DETAILS_JSON).get("fingerprint") == fingerprint:
            return out
    started = time.perf_counter()
    teacher = soft_targets(ensemble.live_logits(texts, {loc: sources[loc] for loc in w},
                                                max_seq_length=max_seq_length), w, temperature)
    teacher_seconds = time.perf_counter() - started
    model, tokenizer = models.load_classifier(student_init)
    model.to(torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    with models.cpu_threads(model):
        curve = train_student(model, tokenizer, texts, teacher, temperature=temperature, epochs=epochs, lr=lr,
                              batch_size=batch_size, max_seq_length=max_seq_length, seed=seed)
        # label-free diagnostic: how often the student's argmax matches the teacher's on the adaptation texts
        agreement = float(np.mean(evaluate.forward(model, tokenizer, texts, batch_size=64, max_seq_length=max_seq_length)
                                  .argmax(axis=1) == teacher.argmax(axis=1)))
    details = {"teacher": "soft", "weights": w, "sources": {loc: str(sources[loc]) for loc in w},
               "student_init": str(student_init), "knobs": knobs, "inputs": inputs,
               "texts": {"sha256": report.digest(texts), "num_texts": len(texts), **dict(adapt_from or {})},
               "loss_curve": curve, "teacher_agreement": agreement, "teacher_seconds": teacher_seconds,
               "seconds": time.perf_counter() - started, "fingerprint": fingerprint, "versions": report.versions()}
    return models.save_classifier(model.cpu(), tokenizer, out, extra_files={DETAILS_JSON: details})


def name(adapt_split: str = "train", **knobs: Any) -> str:
    """``distilled-soft``, plus the teacher's temperature when not the default and ``-adapt<split>`` off
    the train split. The training budget (epochs, lr, batch size) is recorded, not part of the name."""
    unknown = sorted(set(knobs) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"distillation does not take {unknown}; its knobs: {sorted(DEFAULTS)}")
    temperature = knobs.get("temperature", DEFAULTS["temperature"])
    out = "distilled-soft" + ("" if temperature == DEFAULTS["temperature"] else f"-temperature{temperature}")
    return out + ("" if adapt_split == "train" else f"-adapt{adapt_split}")


def evaluate_distilled(target: str, weightings: Mapping[str, Mapping[str, float]], *,
                       models_dir: str | os.PathLike, data: str | os.PathLike, base_model: str | os.PathLike,
                       adapt_split: str = "train", adapt_num_examples: int | None = 256,
                       eval_batch_size: int = 64, max_seq_length: int = 128, seed: int = 42,
                       **knobs: Any) -> list[dict[str, Any]]:
    """One ``mu.report`` row per weighting ({mode: {locale: weight}}): distil, then evaluate on
    ``target``'s *test* split.

    The student starts from the linear merge in ``mu.merge.merged_dir(models_dir, target, "linear",
    mode)`` (notebook 03's plain merge, reused when unchanged) and goes to
    ``<models_dir>/distilled/<target>/<name>-<mode>``. It learns from ``adapt_num_examples`` of
    the target's ``adapt_split`` utterances, without labels (``mu.data.unlabeled``; ``test`` is
    transductive and recorded). ``knobs``: ``temperature``, ``epochs``, ``lr``, ``batch_size``.
    """
    from mu import data as mu_data
    from mu import evaluate, merge, models

    label = name(adapt_split, **knobs)
    texts = mu_data.unlabeled(target, adapt_split, data, num_examples=adapt_num_examples, seed=seed)
    origin = merge.adapt_from(target, adapt_split, data, len(texts), seed)
    rows = []
    for mode, weights in weightings.items():
        if target in weights:
            raise ValueError(f"weighting {mode!r} has the target {target} among its sources {sorted(weights)}")
        sources = {loc: models.resolve(loc, models_dir) for loc in weights}
        init = merge.merge_models("linear", sources, weights, merge.merged_dir(models_dir, target, "linear", mode),
                                  base_model=base_model, data=data, mode=mode, max_seq_length=max_seq_length)
        student = distill(init, sources, weights, texts,
                          paths.resolve(models_dir) / "distilled" / target / f"{label}-{mode}",
                          max_seq_length=max_seq_length, seed=seed, adapt_from=origin, **knobs)
        scores = evaluate.evaluate(student, target, "test", data=data, batch_size=eval_batch_size,
                                   max_seq_length=max_seq_length)
        rows.append({"system": f"adapted/{label}/{mode}", "family": "adapted", "target": target, **scores,
                     "sources": dict(weights), "model": str(student)})
    return rows


def curves(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """Distillation loss per step of ``evaluate_distilled`` rows (``weighting`` = the row's system,
    ``step``, ``value``), read from each student's ``distill_details.json``, for ``mu.plots.adaptation``."""
    out = []
    for row in rows:
        curve = paths.read_json(Path(row["model"]) / DETAILS_JSON)["loss_curve"]
        out += [{"weighting": row["system"], "step": i + 1, "value": v} for i, v in enumerate(curve)]
    return pd.DataFrame(out, columns=["weighting", "step", "value"])
