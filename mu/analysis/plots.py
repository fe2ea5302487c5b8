"""Seaborn figures, each saved (atomically) as PNG under ``reports/`` and returned."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use(os.environ.get("MPLBACKEND", "Agg"))
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
import seaborn as sns  # noqa: E402

from mu.core import paths  # noqa: E402


def save(fig: plt.Figure, path: str | os.PathLike) -> Path:
    """Write a figure atomically as PNG."""
    path = Path(path)
    with paths.atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight")
    return path


def heatmap(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str = "",
    fmt: str = ".2f",
    cmap: str = "viridis",
    annot: bool | None = None,
    vmin: float | None = None,
    vmax: float | None = None,
) -> plt.Figure:
    """A square matrix (similarity, N×N transfer) as an annotated heatmap."""
    n = max(frame.shape)
    annot = n <= 20 if annot is None else annot
    size = max(4.0, 0.45 * n + 2)
    fig, ax = plt.subplots(figsize=(size, size * 0.85))
    sns.heatmap(
        frame,
        annot=annot,
        fmt=fmt,
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        square=True,
        ax=ax,
        cbar_kws={"shrink": 0.7},
        annot_kws={"size": 7},
    )
    ax.set_title(title)
    save(fig, path)
    return fig


def per_target_bars(
    rows: pd.DataFrame, path: str | os.PathLike, *, systems: Sequence[str] | None = None, title: str = ""
) -> plt.Figure:
    """Accuracy per target locale, one bar per system, with each row's 95% interval.

    ``rows`` is a long frame (target, system, accuracy, ci_low, ci_high), e.g. ``mu.analysis.aggregate``'s
    ``rows``; bars without a known test size have no interval. ``systems``: the bar order
    (default: order of first appearance).
    """
    systems = list(dict.fromkeys(rows["system"])) if systems is None else list(systems)
    targets = sorted(rows["target"].unique())
    fig, ax = plt.subplots(figsize=(max(6.0, 0.25 * len(targets) * len(systems) + 2), 4.5))
    sns.barplot(
        data=rows,
        x="target",
        y="accuracy",
        hue="system",
        order=targets,
        hue_order=systems,
        palette="tab20" if len(systems) > 10 else None,
        errorbar=None,
        ax=ax,
    )
    # one container per system; a missing (target, system) has no bar, so place by x
    for system, bars in zip(systems, ax.containers):
        mine = rows[rows["system"] == system].set_index("target")
        for bar in bars:
            target = targets[round(bar.get_x() + bar.get_width() / 2)]
            if target not in mine.index:
                continue
            acc, lo, hi = mine.loc[target, ["accuracy", "ci_low", "ci_high"]]
            if not pd.notna(lo):
                continue
            ax.errorbar(
                bar.get_x() + bar.get_width() / 2,
                acc,
                yerr=[[acc - lo], [hi - acc]],
                color="black",
                capsize=2,
                linewidth=0.8,
            )
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, path)
    return fig


def method_means(means: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Mean accuracy over targets per system with its bootstrap interval (``mu.analysis.aggregate.means``)."""
    data = means.dropna(subset=["mean"]).sort_values("mean")
    fig, ax = plt.subplots(figsize=(6.5, 0.35 * len(data) + 1.5))
    sns.barplot(data=data, x="mean", y="system", errorbar=None, color="tab:blue", ax=ax)
    for i, r in enumerate(data.itertuples()):
        if pd.notna(r.ci_low):
            ax.errorbar(
                r.mean, i, xerr=[[r.mean - r.ci_low], [r.ci_high - r.mean]], color="black", capsize=3, linewidth=0.9
            )
        ax.text(0.01, i, f"n={r.n}", va="center", fontsize=7, color="white")
    ax.set_xlim(0, 1)
    ax.set_xlabel("mean accuracy over targets (95% bootstrap interval)")
    ax.set_title(title)
    save(fig, path)
    return fig


def weights_bar(weights: dict[str, float], path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Source weights ``{locale: weight}`` as a horizontal bar chart, largest first."""
    frame = pd.DataFrame({"source": list(weights), "weight": list(weights.values())})
    frame = frame.sort_values("weight", ascending=False)
    fig, ax = plt.subplots(figsize=(5, 0.4 * len(frame) + 1.2))
    sns.barplot(frame, x="weight", y="source", hue="source", legend=False, ax=ax, palette="crest")
    ax.set_title(title)
    ax.set_xlim(0, max(1e-9, frame["weight"].max()) * 1.1)
    save(fig, path)
    return fig


def sts_bars(frame: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """STS Spearman per model (columns ``model``, ``role``, ``spearman``: ``mu.learn.evaluate.sts_table``)."""
    fig, ax = plt.subplots(figsize=(6, 0.4 * len(frame) + 1.2))
    sns.barplot(frame, x="spearman", y="model", hue="role", dodge=False, ax=ax, palette="deep")
    ax.axvline(0, color="grey", linewidth=0.8)
    ax.set(
        xlim=(min(0.0, frame["spearman"].min() - 0.05), 1),
        xlabel="Spearman (cosine of mean-pooled embeddings vs gold)",
        title=title,
    )
    save(fig, path)
    return fig


def iterative_curves(frame: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Iterative training per cycle (the long frame of ``mu.combine.iterative_results.log_frame``): sources' train
    loss, and accuracy of each source on its own dev split next to the merged model's on the target
    (dev and test)."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    loss = frame[frame["metric"] == "train_loss"]
    sns.lineplot(loss, x="epoch", y="value", hue="series", marker="o", ax=left)
    left.set(ylabel="train loss (last epoch of the cycle)", xlabel="epoch (end of cycle)", title="sources: train loss")
    acc = frame[frame["metric"] == "accuracy"]
    merged = acc["series"].str.startswith("merged")
    sns.lineplot(acc[~merged], x="epoch", y="value", hue="series", marker="o", linestyle="--", alpha=0.6, ax=right)
    sns.lineplot(
        acc[merged],
        x="epoch",
        y="value",
        hue="series",
        marker="s",
        linestyle="-",
        linewidth=2.5,
        palette={"merged (target dev)": "black", "merged (target test)": "tab:red"},
        ax=right,
    )
    right.set(ylim=(0, 1), ylabel="accuracy", xlabel="epoch (end of cycle)", title="accuracy after each cycle")
    for ax in (left, right):
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)
    return fig


def accuracy_vs_k(frame: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Accuracy against the number of sources K (``mu.combine.ensemble_eval.accuracy_vs_k``), one line per system."""
    fig, ax = plt.subplots(figsize=(7, 4))
    sns.lineplot(frame, x="k", y="accuracy", hue="system", style="family", markers=True, ax=ax)
    ax.set(
        ylim=(0, 1), xticks=sorted(frame["k"].unique()), xlabel="number of sources K", ylabel="accuracy", title=title
    )
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, path)
    return fig


def adaptation(
    curve: pd.DataFrame,
    path: str | os.PathLike,
    *,
    coefficients: pd.DataFrame | None = None,
    title: str = "",
    curve_label: str = "entropy on unlabeled target texts",
) -> plt.Figure:
    """Label-free adaptation: the objective per step (``curve``: ``step``, ``value``, ``weighting``;
    right) and, when given, fitted merge coefficients per tensor (``coefficients``: ``tensor``,
    ``coefficient``, ``source``, ``weighting``; left), e.g. ``mu.merge.adamerging.frames``."""
    panels = 2 if coefficients is not None and len(coefficients) else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4), squeeze=False)
    if panels == 2:
        sns.lineplot(coefficients, x="tensor", y="coefficient", hue="source", style="weighting", ax=axes[0, 0])
        axes[0, 0].set(xlabel="tensor (state-dict order)", ylabel="coefficient λ", title="fitted coefficients")
        axes[0, 0].legend(fontsize=7)
    sns.lineplot(curve, x="step", y="value", hue="weighting", ax=axes[0, -1])
    axes[0, -1].set(xlabel="optimiser step", ylabel=curve_label, title="objective")
    fig.suptitle(title)
    save(fig, path)
    return fig


def metric_curves(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    x: str = "step",
    hue: str = "granularity",
    style: str | None = "target",
    title: str = "",
) -> plt.Figure:
    """One panel per ``metric`` of a long frame (``metric``, ``value``, ``x``, ``hue``[, ``style``]), e.g.
    ``mu.combine.selection_adamerging.adamerging_curves``: dev accuracy and entropies over AdaMerging steps per granularity."""
    metrics = list(dict.fromkeys(frame["metric"]))
    fig, axes = plt.subplots(1, max(1, len(metrics)), figsize=(5 * max(1, len(metrics)), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        sns.lineplot(frame[frame["metric"] == metric], x=x, y="value", hue=hue, style=style, marker="o", ax=ax)
        ax.set(xlabel=x, ylabel=metric, title=metric)
        ax.legend(fontsize=7)
    fig.suptitle(title)
    save(fig, path)
    return fig


def clustered_heatmap(
    frame: pd.DataFrame,
    path: str | os.PathLike,
    *,
    title: str = "",
    cmap: str = "viridis",
    vmin: float | None = None,
    vmax: float | None = None,
) -> plt.Figure:
    """A square matrix (the N×N transfer matrix) with rows and columns ordered by hierarchical
    clustering (average linkage on the rows / columns as vectors), dendrograms on the sides;
    colours span the data's range unless ``vmin``/``vmax`` are given."""
    size = max(6.0, 0.22 * max(frame.shape) + 3)
    grid = sns.clustermap(
        frame.astype(float),
        method="average",
        cmap=cmap,
        vmin=vmin,
        vmax=vmax,
        figsize=(size, size),
        xticklabels=True,
        yticklabels=True,
        cbar_pos=(0.02, 0.82, 0.03, 0.15),
    )
    grid.ax_heatmap.tick_params(labelsize=6)
    grid.ax_heatmap.set(xlabel=frame.columns.name or "", ylabel=frame.index.name or "")
    grid.fig.suptitle(title, y=1.01)
    save(grid.fig, path)
    return grid.fig


def similarity_vs_transfer(pairs: pd.DataFrame, path: str | os.PathLike, *, title: str = "") -> plt.Figure:
    """Zero-shot transfer against URIEL cosine, one panel per feature set (``pairs``: ``cosine``,
    ``transfer``, ``feature_set``, e.g. ``mu.analysis.typology.correlations(...)["pairs"]``)."""
    sets = list(dict.fromkeys(pairs["feature_set"]))
    fig, axes = plt.subplots(1, len(sets), figsize=(3.6 * len(sets), 3.4), squeeze=False, sharey=True)
    for ax, fs in zip(axes[0], sets):
        sns.scatterplot(
            pairs[pairs["feature_set"] == fs], x="cosine", y="transfer", s=8, alpha=0.35, linewidth=0, ax=ax
        )
        ax.set(title=fs, xlabel="URIEL cosine", ylabel="zero-shot accuracy")
        ax.title.set_size(8)
    fig.suptitle(title)
    save(fig, path)
    return fig


def method_dots(
    frame: pd.DataFrame, path: str | os.PathLike, *, references: dict[str, float] | None = None, title: str = ""
) -> plt.Figure:
    """Mean accuracy per merge method (rows) and weighting (colours) with its interval (``frame``: ``method``,
    ``weighting``, ``mean``, ``ci_low``, ``ci_high``, e.g. ``mu.analysis.methods_table.table``); ``references``
    ({label: mean}) are drawn as vertical lines."""
    data = frame.dropna(subset=["mean"])
    methods = list(dict.fromkeys(data["method"]))
    weightings = list(dict.fromkeys(data["weighting"]))
    fig, ax = plt.subplots(figsize=(7, 0.45 * len(methods) + 1.6))
    colours = dict(zip(weightings, sns.color_palette("deep", len(weightings))))
    for j, w in enumerate(weightings):
        part = data[data["weighting"] == w]
        y = [methods.index(m) + (j - (len(weightings) - 1) / 2) * 0.22 for m in part["method"]]
        ax.errorbar(
            part["mean"],
            y,
            xerr=[
                part["mean"] - part["ci_low"].fillna(part["mean"]),
                part["ci_high"].fillna(part["mean"]) - part["mean"],
            ],
            fmt="o",
            color=colours[w],
            label=w,
            capsize=2,
            markersize=4,
            linewidth=0.9,
        )
    for (label, value), style in zip((references or {}).items(), ("--", ":", "-.")):
        ax.axvline(value, color="grey", linestyle=style, linewidth=1, label=f"{label} ({value:.3f})")
    ax.set_yticks(range(len(methods)), methods)
    ax.invert_yaxis()
    ax.set(xlabel="mean accuracy over targets (95% bootstrap interval)", title=title)
    ax.legend(fontsize=7, bbox_to_anchor=(1.01, 1), loc="upper left")
    save(fig, path)
    return fig
