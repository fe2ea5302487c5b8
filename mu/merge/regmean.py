"""RegMean (Jin et al., 2023), written in ``mu`` (mergekit has none).

For every ``nn.Linear`` (torch ``weight`` is [out, in], y = x Wᵀ) the merged
weight solves the weighted least-squares problem
min_W Σ_i w_i ‖X_i Wᵀ − X_i W_iᵀ‖², i.e.

    Wᵀ = (Σ_i w_i G̃_i)⁻¹ Σ_i w_i G̃_i W_iᵀ,   G̃_i = α G_i + (1 − α) diag(G_i),

where G_i = X_iᵀX_i / n_i is the Gram matrix of the layer's inputs on source
i's own data (mean over its non-padding tokens, so the weights, not the sample
sizes, set each source's influence) and ``alpha`` shrinks the off-diagonal
(α = 1: plain least squares; α = 0: diagonal, a per-input-feature weighted mean).
Every other tensor (biases, embeddings, LayerNorm) is the weighted mean Σ w_i θ_i.
Grams come from :func:`regmean_grams` and are passed as
``grams={locale: {"<linear>.weight": G}}``; ``apply`` merges one whole tensor (``mu.merge.stream``).
"""

from __future__ import annotations

from typing import Any

import torch
from datasets import Dataset
from tqdm.auto import tqdm

from mu.merge import batches as _batches

StateDict = dict[str, torch.Tensor]


def _shrink(gram: torch.Tensor, alpha: float) -> torch.Tensor:
    return gram * alpha + torch.diag_embed(torch.diagonal(gram)) * (1.0 - alpha)


def setup(
    names: list[str], w: list[float], base: Any, *, statistics: Any = None, alpha: float = 0.9, **_: Any
) -> dict[str, Any]:
    """RegMean needs every source's Grams."""
    if statistics is None:
        raise ValueError(
            "regmean needs grams={locale: {linear weight name: Gram matrix}}; "
            "compute them with mu.merge.regmean_grams (merge_models does it from `data`)"
        )
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"regmean alpha must be in [0, 1], got {alpha}")
    missing = sorted(set(names) - set(statistics))
    if missing:
        raise ValueError(f"regmean: no Grams for sources {missing}; Grams given for {sorted(statistics)}")
    return {"names": names}


def apply(
    xs: torch.Tensor,
    b: torch.Tensor | None,
    w: list[float],
    *,
    at: Any,
    stats: list[torch.Tensor | None],
    names: list[str],
    alpha: float = 0.9,
    **_: Any,
) -> torch.Tensor:
    """RegMean on one whole tensor: the least-squares solution where it has Grams (a Linear weight), the
    weighted mean elsewhere (the base is not used)."""
    key, shape = at.key, tuple(xs.shape[1:])
    has = [names[i] for i, g in enumerate(stats) if g is not None]
    if has and len(has) != len(names):
        raise ValueError(f"regmean: tensor {key} has Grams for {has} but not for {sorted(set(names) - set(has))}")
    if not has:
        acc = torch.zeros(shape, dtype=torch.float64, device=xs.device)
        for i, x in enumerate(xs):
            acc.add_(x.to(torch.float64), alpha=w[i])
        return acc
    if len(shape) != 2:
        raise ValueError(f"regmean: Grams given for {key} of shape {shape}; only Linear weights [out, in] have Grams")
    lhs = torch.zeros(shape[1], shape[1], dtype=torch.float64, device=xs.device)
    rhs = torch.zeros(shape[1], shape[0], dtype=torch.float64, device=xs.device)
    for i, x in enumerate(xs):
        gram = stats[i]
        if gram.shape != (shape[1], shape[1]):
            raise ValueError(
                f"regmean: Gram of {names[i]} for {key} is {tuple(gram.shape)}; expected {(shape[1], shape[1])}"
            )
        g = _shrink(gram.to(torch.float64), alpha).mul_(w[i])
        lhs.add_(g)
        rhs.add_(g @ x.to(torch.float64).T)
    try:
        return torch.linalg.solve(lhs, rhs).T.contiguous()
    except torch.linalg.LinAlgError as e:
        raise ValueError(
            f"regmean: the weighted Gram matrix for {key} is singular (some input feature "
            f"never varies in the data); use more examples or alpha < 1 ({e})"
        ) from None


def regmean_grams(
    model: torch.nn.Module,
    tokenizer: Any,
    dataset: Dataset,
    *,
    num_examples: int = 256,
    batch_size: int = 8,
    max_seq_length: int = 128,
    seed: int = 42,
    device: str | None = None,
) -> StateDict:
    """Gram matrices XᵀX / n of the inputs of every ``nn.Linear``, keyed ``"<module>.weight"``.

    Forward hooks collect each Linear's input on ``num_examples`` examples drawn
    with ``seed``; token-level inputs skip padding positions. float32, on CPU.
    """
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model.to(device).eval()
    grams: StateDict = {}
    counts: dict[str, int] = {}
    mask: dict[str, torch.Tensor] = {}

    def hook(name: str):
        def collect(module: torch.nn.Module, inputs: tuple[torch.Tensor, ...]) -> None:
            x = inputs[0].detach()
            if x.dim() == 3 and x.shape[:2] == mask["m"].shape:
                x = x[mask["m"]]
            x = x.reshape(-1, x.shape[-1]).to(torch.float32)
            if name not in grams:
                grams[name] = torch.zeros(x.shape[-1], x.shape[-1], dtype=torch.float32, device=x.device)
                counts[name] = 0
            grams[name].addmm_(x.T, x)
            counts[name] += x.shape[0]

        return collect

    handles = [
        m.register_forward_pre_hook(hook(f"{n}.weight"))
        for n, m in model.named_modules()
        if isinstance(m, torch.nn.Linear)
    ]
    subset = _batches.sample(dataset, num_examples, seed)
    try:
        with torch.no_grad():
            for batch in tqdm(
                _batches.batches(
                    subset, tokenizer, batch_size=batch_size, max_seq_length=max_seq_length, device=device
                ),
                total=-(-len(subset) // batch_size),
                desc="regmean grams",
                leave=False,
            ):
                mask["m"] = batch["attention_mask"].bool()
                model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    finally:
        for h in handles:
            h.remove()
    return {name: (g / counts[name]).cpu() for name, g in grams.items()}
