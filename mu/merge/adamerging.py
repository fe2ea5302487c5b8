"""AdaMerging (Yang et al., ICLR 2024) for XLM-R classifiers: merge coefficients fitted, without
labels, on the target's unlabeled utterances.

The merged model is θ(λ) = θ_base + Σ_i λ_{i,g} τ_i with task vectors τ_i = θ_i − θ_base over
the shared base. ``granularity="task"``: one coefficient per source (g is the whole model);
``"layer"``: one per source and per state-dict tensor (the paper's layer-wise AdaMerging).
λ starts from the weighting's weights (λ_{i,g} = w_i: the starting point is the weighted linear
merge) and Adam minimises the mean Shannon entropy of θ(λ)'s predicted intent distribution on
the target's unlabeled texts (dropout off). ``torch.func.functional_call`` runs the one base
module with θ(λ) as its parameters: no copy of the model per step; memory holds the base, the
N task vectors and one merged set of parameters with its gradient.

``constraint``: ``"simplex"`` (default; λ_{·,g} = softmax over sources of free logits
initialised at log w, so every group stays a convex combination of the sources, and one source
gives exactly that source), ``"clamp"`` (λ clipped to [0, 1] after every step, as in the paper),
``"none"``.

``fit`` needs texts only: ``mu.merge.merge_models`` receives ``adapt_texts`` (e.g.
``mu.corpus.data.unlabeled``), never a dataset with labels. ``adamerging`` is the registry function
that applies fitted coefficients tensor by tensor (``mu.merge.merge``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch.func import functional_call
from tqdm.auto import tqdm

StateDict = dict[str, torch.Tensor]
GRANULARITIES = ("layer", "task")
CONSTRAINTS = ("simplex", "clamp", "none")


def check_knobs(granularity: str, constraint: str, steps: int, lr: float) -> None:
    if granularity not in GRANULARITIES:
        raise ValueError(f"adamerging granularity {granularity!r}; valid: {list(GRANULARITIES)}")
    if constraint not in CONSTRAINTS:
        raise ValueError(f"adamerging constraint {constraint!r}; valid: {list(CONSTRAINTS)}")
    if steps < 0 or not lr > 0:
        raise ValueError(f"adamerging needs steps >= 0 and lr > 0, got steps={steps}, lr={lr}")


def setup(names: list[str], w: list[float], base: Any, *, statistics: Any = None, **_: Any) -> dict[str, Any]:
    """AdaMerging needs the fitted coefficients and the base.

    ``granularity``, ``constraint``, ``steps`` and ``lr`` are the fit's knobs: they are knobs of the
    method (in its name and its merge's fingerprint); the weights were the fit's starting point."""
    if statistics is None:
        raise ValueError(
            "adamerging needs coefficients={locale: {tensor: lambda}} fitted on the target's unlabeled "
            "texts (mu.merge.adamerging.fit; merge_models fits them from adapt_texts)"
        )
    if base is None:
        raise ValueError("adamerging needs the base (pretrained) state dict")
    return {"names": names}


def apply(
    xs: torch.Tensor, b: torch.Tensor, w: list[float], *, at: Any, stats: list[Any], names: list[str], **_: Any
) -> torch.Tensor:
    """θ = θ_base + Σ_i λ_{i,key} (θ_i − θ_base) of one whole tensor, with the fitted coefficients ``stats``
    ({locale: {tensor name: λ}} from :func:`fit`, this tensor's; ``merge_models`` fits them from ``adapt_texts``)."""
    acc = b.to(torch.float64, copy=True)
    for i, x in enumerate(xs):
        if stats[i] is None:
            raise ValueError(f"adamerging: no coefficient of {names[i]} for tensor {at.key}")
        acc.add_(x.to(torch.float64) - b.to(torch.float64), alpha=float(stats[i]))
    return acc


def _lambdas(raw: torch.Tensor, constraint: str) -> torch.Tensor:
    return torch.softmax(raw, dim=0) if constraint == "simplex" else raw


def _entropy(logits: torch.Tensor) -> torch.Tensor:
    logp = torch.log_softmax(logits.float(), dim=-1)
    return -(logp.exp() * logp).sum(-1).mean()


def mean_entropy(logits: np.ndarray) -> float:
    """Mean Shannon entropy (nats) of the predicted distributions of ``logits`` [n, C]."""
    return float(_entropy(torch.as_tensor(np.asarray(logits))))


# ``probe(step, predict)`` -> {metric: value}: called at each checkpoint with ``predict(texts) -> logits [n, C]``
# of the current merge θ(λ) (no gradient). The fit passes texts only; what the probe scores them with is the caller's.
Probe = Callable[[int, Callable[[Sequence[str]], np.ndarray]], Mapping[str, Any]]


def fit(
    model: torch.nn.Module,
    tokenizer: Any,
    base: Mapping[str, torch.Tensor],
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    weights: Mapping[str, float],
    texts: Sequence[str],
    *,
    granularity: str = "layer",
    constraint: str = "simplex",
    steps: int = 100,
    lr: float = 0.05,
    batch_size: int = 16,
    max_seq_length: int = 128,
    seed: int = 42,
    progress: bool = True,
    checkpoints: Sequence[int] = (),
    probe: Probe | None = None,
) -> dict[str, Any]:
    """Fit AdaMerging coefficients on unlabeled ``texts`` (a list of strings: nothing else reaches here).

    ``model``: a module of the sources' architecture (its own parameters are replaced by θ(λ)
    in every call); ``base`` / ``state_dicts``: tensors by name; ``weights``: {locale: w}
    (normalised), the starting coefficients. Batches of ``batch_size`` texts are drawn with
    ``seed`` (reshuffled every pass). Returns ``{"coefficients": {locale: {tensor: λ}},
    "entropy_curve": [mean entropy of each step's batch], "entropy_before" / "entropy_after":
    mean entropy over all texts at the start / end, "seconds"}``.

    ``checkpoints`` (steps in [0, ``steps``]; 0 is the starting merge) with ``probe``: after each
    of those steps ``probe(step, predict)`` scores the current merge, e.g. the entropy of held-out
    unlabeled texts (``entropy_probe``) or, for a declared tuning target, its dev accuracy; the
    results go to ``"checkpoints"`` (``[{"step": s, **probe(...)}]``).
    """
    check_knobs(granularity, constraint, steps, lr)
    bad = sorted(s for s in checkpoints if not 0 <= s <= steps)
    if bad or (checkpoints and probe is None):
        raise ValueError(
            f"adamerging checkpoints must lie in [0, steps={steps}] and need a probe; got {bad or list(checkpoints)}"
        )
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("adamerging needs at least one unlabeled text of the target")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    started = time.perf_counter()
    sources = list(weights)
    device = next(model.parameters()).device
    keys = [k for k in base if base[k].is_floating_point()]
    base_t = {k: base[k].to(device, torch.float32) for k in keys}
    taus = {k: torch.stack([state_dicts[s][k].to(device, torch.float32) - base_t[k] for s in sources]) for k in keys}
    group = {k: (0 if granularity == "task" else i) for i, k in enumerate(keys)}
    w = torch.tensor([float(weights[s]) for s in sources], dtype=torch.float32, device=device)
    init = torch.log(w.clamp_min(1e-12)) if constraint == "simplex" else w
    raw = init[:, None].repeat(1, 1 if granularity == "task" else len(keys)).clone().requires_grad_(True)
    opt = torch.optim.Adam([raw], lr=lr)
    enc = tokenizer(texts, truncation=True, max_length=max_seq_length)["input_ids"]

    def batch(idx: Sequence[int]) -> dict[str, torch.Tensor]:
        return tokenizer.pad({"input_ids": [enc[i] for i in idx]}, return_tensors="pt").to(device)

    def params(lam: torch.Tensor) -> dict[str, torch.Tensor]:
        return {k: base_t[k] + torch.tensordot(lam[:, group[k]], taus[k], dims=1) for k in keys}

    @torch.no_grad()
    def predict(some: Sequence[str]) -> np.ndarray:
        p = params(_lambdas(raw, constraint))
        ids = tokenizer([str(t) for t in some], truncation=True, max_length=max_seq_length)["input_ids"]
        out = [
            functional_call(
                model, p, kwargs=tokenizer.pad({"input_ids": ids[i : i + 64]}, return_tensors="pt").to(device)
            )
            .logits.float()
            .cpu()
            for i in range(0, len(ids), 64)
        ]
        return torch.cat(out).numpy() if out else np.zeros((0, 0), dtype=np.float32)

    model.eval()
    before = mean_entropy(predict(texts))
    marks = sorted(set(checkpoints))
    probed = [{"step": 0, **probe(0, predict)}] if marks[:1] == [0] else []
    gen = torch.Generator().manual_seed(seed)
    order: list[int] = []
    curve = []
    # disable=None: off without a terminal (a kernel run by mu.batch.runner), as TQDM_DISABLE turns the others off
    for step in tqdm(
        range(1, steps + 1), desc=f"adamerging ({granularity})", leave=False, disable=None if progress else True
    ):
        if len(order) < min(batch_size, len(texts)):
            order += torch.randperm(len(texts), generator=gen).tolist()
        idx, order = order[:batch_size], order[batch_size:]
        loss = _entropy(functional_call(model, params(_lambdas(raw, constraint)), kwargs=batch(idx)).logits)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if constraint == "clamp":
            with torch.no_grad():
                raw.clamp_(0.0, 1.0)
        curve.append(float(loss.detach()))
        if step in marks:
            probed.append({"step": step, **probe(step, predict)})
    lam = _lambdas(raw, constraint).detach().cpu()
    if not torch.isfinite(lam).all():
        raise ValueError("adamerging: the fitted coefficients are not finite (lower lr)")
    return {
        "coefficients": {s: {k: float(lam[i, group[k]]) for k in keys} for i, s in enumerate(sources)},
        "entropy_curve": curve,
        "entropy_before": before,
        "entropy_after": mean_entropy(predict(texts)),
        "checkpoints": probed,
        "seconds": time.perf_counter() - started,
    }


def entropy_probe(texts: Sequence[str], name: str = "held_out_entropy") -> Probe:
    """A label-free probe: the mean entropy of the merge's predictions on ``texts`` (e.g. held-out unlabeled text)."""
    texts = [str(t) for t in texts]
    if not texts:
        raise ValueError("entropy_probe needs at least one text")
    return lambda step, predict: {name: mean_entropy(predict(texts))}


def fit_models(
    base_dir: str | Path,
    state_dicts: Mapping[str, Mapping[str, torch.Tensor]],
    base: Mapping[str, torch.Tensor],
    weights: Mapping[str, float],
    texts: Sequence[str],
    *,
    device: str | None = None,
    **fit_kw: Any,
) -> dict[str, Any]:
    """:func:`fit` with the base model folder's module and tokenizer (on ``device``, default CUDA if present)."""
    from mu.learn import models

    model, tokenizer = models.load_classifier(base_dir)
    model.to(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    for p in model.parameters():
        p.requires_grad_(False)
    with models.cpu_threads(model):
        return fit(model, tokenizer, base, state_dicts, weights, texts, **fit_kw)


def frames(rows: Sequence[Mapping[str, Any]]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(coefficients, entropy curve) of AdaMerging rows (``mu.merge.evaluate_merges``) as long frames
    for ``mu.analysis.plots.adaptation``, read from each merged model's ``merge_details.json``.

    Coefficients: ``weighting`` (the row's system), ``source``, ``tensor`` (index in state-dict
    order), ``name``, ``coefficient``; curve: ``weighting``, ``step``, ``value`` (batch entropy).
    """
    from mu.core import paths

    coef, curve = [], []
    for row in rows:
        fitted = paths.read_json(Path(row["model"]) / "merge_details.json")["adaptation"]
        name = row["system"]
        for source, per in fitted["coefficients"].items():
            coef += [
                {"weighting": name, "source": source, "tensor": i, "name": k, "coefficient": v}
                for i, (k, v) in enumerate(per.items())
            ]
        curve += [{"weighting": name, "step": i + 1, "value": v} for i, v in enumerate(fitted["entropy_curve"])]
    return pd.DataFrame(coef), pd.DataFrame(curve)
