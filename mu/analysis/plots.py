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


# The per-target figure is a dot plot (one panel per target) while its panels fit one row at a
# readable width; past that, 23 systems x dozens of targets only read as a table of colours.
PER_TARGET_PANELS = 6


def _families(systems: Sequence[str]) -> dict[str, tuple]:
    """One colour per family (a system's first path part), in the order the families come."""
    names = list(dict.fromkeys(s.split("/")[0] for s in systems))
    return dict(zip(names, sns.color_palette("deep", len(names))))


def _family_lines(ax: plt.Axes, systems: Sequence[str], at: float, **line) -> None:
    """A horizontal line where one family ends and the next begins (row i drawn at ``i + at``)."""
    for i in range(1, len(systems)):
        if systems[i].split("/")[0] != systems[i - 1].split("/")[0]:
            ax.axhline(i + at - 0.5, **{"color": "grey", "linewidth": 0.6, **line})


def _system_labels(ax: plt.Axes, systems: Sequence[str], labels: Sequence[str], colours: dict, at: float) -> None:
    """System labels down the y axis (row i at ``i + at``), each in its family's colour."""
    ax.set_yticks([i + at for i in range(len(systems))], labels, fontsize=8)
    for tick, system in zip(ax.get_yticklabels(), systems):
        tick.set_color(colours[system.split("/")[0]])


def per_target_bars(
    rows: pd.DataFrame, path: str | os.PathLike, *, systems: Sequence[str] | None = None, title: str = ""
) -> plt.Figure:
    """Accuracy per target locale and system, systems down the side in ``systems``' order, coloured by family.

    ``rows`` is a long frame (target, system, accuracy[, ci_low, ci_high]), e.g. ``mu.analysis.aggregate``'s
    ``rows``. Up to ``PER_TARGET_PANELS`` targets: one dot-plot panel per target with each row's 95% interval
    (none where the test size is unknown) and native's accuracy as a dashed line. More targets: one heatmap of
    systems × targets, each cell annotated with its accuracy in percent. ``systems``: the order (default: order
    of first appearance); a listed system without a row keeps its label, marked ``(no result)``.
    """
    data = rows.reindex(columns=["target", "system", "accuracy", "ci_low", "ci_high"])
    data = data.dropna(subset=["accuracy"]).drop_duplicates(["target", "system"], keep="last")
    if data.empty:
        raise ValueError("per_target_bars: no row with an accuracy to draw")
    systems = list(dict.fromkeys(data["system"] if systems is None else systems))
    targets = sorted(data["target"].unique())
    colours = _families(systems)
    labels = [s if s in set(data["system"]) else f"{s} (no result)" for s in systems]
    if len(targets) > PER_TARGET_PANELS:
        table = data.pivot(index="system", columns="target", values="accuracy").reindex(index=systems, columns=targets)
        fig, ax = plt.subplots(figsize=(0.3 * len(targets) + 1.5, 0.22 * len(systems) + 1.2))
        sns.heatmap(
            table * 100,
            annot=True,
            fmt=".0f",
            cmap="viridis",
            ax=ax,
            annot_kws={"size": 6.5},
            cbar_kws={"label": "accuracy (%)", "pad": 0.01, "fraction": 0.03},
            linewidths=0.3,
            linecolor="white",
        )
        ax.set_facecolor("#e6e6e6")  # a missing (system, target) cell
        _system_labels(ax, systems, labels, colours, 0.5)
        _family_lines(ax, systems, 0.5, color="white", linewidth=2.5)
        ax.set_xticks([i + 0.5 for i in range(len(targets))], targets, fontsize=7, rotation=90)
        ax.set(xlabel="target (cells: accuracy in %; grey: no result)", ylabel="", title=title)
        save(fig, path)
        return fig
    known = data.dropna(subset=["ci_low", "ci_high"])
    lo = min(data["accuracy"].min(), known["ci_low"].min() if len(known) else 1.0)
    hi = max(data["accuracy"].max(), known["ci_high"].max() if len(known) else 0.0)
    pad = max(0.02, 0.05 * (hi - lo))
    width = 2.0 if len(targets) > 2 else 3.5
    fig, axes = plt.subplots(
        1, len(targets), figsize=(1.2 + width * len(targets), 0.2 * len(systems) + 1.3), sharey=True, squeeze=False
    )
    for ax, target in zip(axes[0], targets):
        mine = data[data["target"] == target].set_index("system")
        for y, system in enumerate(systems):
            if system not in mine.index:
                continue
            acc, low, high = mine.loc[system, ["accuracy", "ci_low", "ci_high"]]
            err = [[acc - low], [high - acc]] if pd.notna(low) and pd.notna(high) else None
            colour = colours[system.split("/")[0]]
            ax.errorbar(acc, y, xerr=err, fmt="o", color=colour, markersize=4, capsize=2, linewidth=0.9)
        if "native" in mine.index:
            ax.axvline(mine.loc["native", "accuracy"], color="grey", linestyle="--", linewidth=0.8)
        ax.set_xlim(max(0.0, lo - pad), min(1.0, hi + pad))
        ax.grid(axis="y", color="#eee", linewidth=0.6)
        _family_lines(ax, systems, 0.0)
        ax.set_axisbelow(True)
        ax.set_title(target, fontsize=9)
        ax.tick_params(axis="x", labelsize=7)
    _system_labels(axes[0, 0], systems, labels, colours, 0.0)
    axes[0, 0].set_ylim(len(systems) - 0.5, -0.5)
    fig.supxlabel("accuracy (95% interval where known; dashed: native)", fontsize=8)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
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
