"""Figures used across the notebooks, drawn with seaborn on matplotlib. Each returns its Axes or Figure.

One colour means one thing in every notebook: :data:`PALETTES` maps each label of each task to its colour.
"""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure

from mtlib.config import DEFAULT_TASKS

_colorblind = sns.color_palette("colorblind")
PALETTES: dict[str, dict[str, tuple]] = {
    "topic": dict(zip(DEFAULT_TASKS["topic"], _colorblind[:5], strict=True)),
    "sentiment": {"Negative": _colorblind[3], "Neutral": (0.55, 0.55, 0.55), "Positive": _colorblind[2]},
    "task": {"topic": _colorblind[0], "sentiment": _colorblind[4]},
}


def figure_text(fig: Figure) -> str:
    """Every word a figure shows a reader: its title, and each panel's title, axis labels and legend."""
    lines = [f"Figure: {fig.get_suptitle()}" if fig.get_suptitle() else "Figure"]
    legends = [*fig.legends, *(ax.get_legend() for ax in fig.axes)]
    for i, ax in enumerate(fig.axes, start=1):
        parts = [f"{name} {text!r}" for name, text in
                 (("title", ax.get_title()), ("x", ax.get_xlabel()), ("y", ax.get_ylabel())) if text]
        if parts:
            lines.append(f"panel {i}: " + ", ".join(parts))
    for legend in filter(None, legends):
        entries = [t.get_text() for t in legend.get_texts()]
        lines.append(f"legend {legend.get_title().get_text()!r}: " + ", ".join(map(repr, entries)))
    return "\n".join(lines)


def store_figure_text() -> None:
    """Store each figure's words as its plain-text output, beside the image.

    A reader without the image, a diff of the notebook, nbval and ``tests/test_figures.py`` (no identifiers
    in figures) then see what the figure says.
    """
    from IPython import get_ipython

    shell = get_ipython()
    if shell is None:
        raise RuntimeError("store_figure_text() works in IPython or Jupyter only; call figure_text(fig) elsewhere.")
    shell.display_formatter.formatters["text/plain"].for_type(Figure, lambda fig, p, cycle: p.text(figure_text(fig)))


def chance_line(ax, n_labels: int, *, axis: str = "y") -> None:
    """Mark the score of guessing uniformly among ``n_labels`` classes on a score axis."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(1 / n_labels, color="0.4", linestyle=":", linewidth=1, label=f"chance (1/{n_labels})")


def similarity_heatmap(embeddings: np.ndarray, labels: Sequence[str], *, ax=None):
    """Cosine similarity of every pair of sentences."""
    x = np.asarray(embeddings, dtype=float)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ax = ax or plt.subplots(figsize=(0.6 * len(labels) + 3, 0.5 * len(labels) + 2))[1]
    sns.heatmap(x @ x.T, annot=True, fmt=".2f", cmap="viridis", vmin=-0.1, vmax=1, square=True,
                xticklabels=labels, yticklabels=labels, cbar_kws={"label": "cosine similarity"}, ax=ax)
    ax.tick_params(axis="x", rotation=90)
    return ax


def projection_scatter(points: np.ndarray, frame: pd.DataFrame, columns: Sequence[str] = ("topic", "sentiment")):
    """A 2-D projection of sentence embeddings, one panel per label column."""
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 5), squeeze=False)
    for ax, column in zip(axes[0], columns, strict=True):
        sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=frame[column].to_numpy(), s=8, alpha=0.7,
                        linewidth=0, ax=ax)
        ax.set(title=f"coloured by {column}", xticks=[], yticks=[])
        ax.legend(markerscale=2, fontsize="small")
    fig.tight_layout()
    return fig


def training_curves(metrics: pd.DataFrame, tasks: dict[str, Sequence[str]] | None = None):
    """Loss per split and validation macro-F1 per task, by epoch, from ``metrics.csv``.

    With ``tasks`` (task -> labels) the score panel marks each task's chance level.
    """
    fig, (loss_ax, f1_ax) = plt.subplots(1, 2, figsize=(11, 4))
    sns.lineplot(data=metrics, x="epoch", y="loss", hue="task", style="split", marker="o", ax=loss_ax,
                 palette=PALETTES["task"])
    loss_ax.set(title="loss by epoch", ylabel="mean cross-entropy loss")
    validation = metrics[metrics["split"] == "validation"]
    sns.lineplot(data=validation, x="epoch", y="macro_f1", hue="task", marker="o", ax=f1_ax, palette=PALETTES["task"])
    for task, labels in (tasks or {}).items():
        f1_ax.axhline(1 / len(labels), color=PALETTES["task"].get(task, "0.4"), linestyle=":", linewidth=1,
                      label=f"chance, {task} (1/{len(labels)})")
    f1_ax.set(title="validation macro-F1 by epoch", ylabel="macro-F1", ylim=(0, 1))
    f1_ax.legend(title="task", fontsize="small")
    for ax in (loss_ax, f1_ax):
        ax.set_xlabel("epoch (0 is the first)")
        ax.xaxis.get_major_locator().set_params(integer=True)
    fig.tight_layout()
    return fig


def confusion_matrices(results: dict[str, dict], tasks: dict[str, Sequence[str]]):
    """One confusion-matrix heatmap per task from ``test_metrics.json``-style results."""
    fig, axes = plt.subplots(1, len(results), figsize=(5.5 * len(results), 4.5), squeeze=False)
    for ax, (task, metrics) in zip(axes[0], results.items(), strict=True):
        sns.heatmap(np.array(metrics["confusion_matrix"]), annot=True, fmt="d", cmap="Blues", cbar=False,
                    xticklabels=tasks[task], yticklabels=tasks[task], ax=ax)
        ax.set(title=f"{task}: macro-F1 {metrics['macro_f1']:.3f}", xlabel="predicted label (sentences)",
               ylabel="true label")
    fig.tight_layout()
    return fig


def compare_bars(table: pd.DataFrame, *, x: str, metrics: Sequence[str], hue: str | None = None):
    """One bar panel per metric column, e.g. trainable parameters, seconds per epoch and macro-F1."""
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        sns.barplot(data=table, x=x, y=metric, hue=hue, ax=ax)
        ax.set(title=metric, xlabel="")
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    return fig


def learning_curve(table: pd.DataFrame, *, x: str = "train_fraction", y: str = "macro_f1", hue: str = "strategy",
                   style: str | None = "task"):
    """Score against training-set size, one line per strategy (log-scaled x)."""
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sns.lineplot(data=table, x=x, y=y, hue=hue, style=style, marker="o", ax=ax)
    ax.set(xscale="log", title=f"{y} by {x}")
    fig.tight_layout()
    return fig


def flow_diagram(steps: Sequence[dict], *, title: str):
    """Boxes for the steps of a function, top to bottom, each listing the calls it makes; a loop arrow spans the
    steps marked ``in_loop``.

    Each step is ``{"text": ..., "calls": [...], "in_loop": bool}``, e.g. read from a function's numbered comments,
    so the diagram follows the code.
    """
    import textwrap

    fig, ax = plt.subplots(figsize=(9, 1.15 * len(steps) + 0.6))
    height, colour = 0.8, {False: "0.93", True: (*PALETTES["task"]["topic"], 0.18)}
    for i, step in enumerate(steps):
        y = -1.15 * i
        box = plt.Rectangle((0, y - height / 2), 6, height, facecolor=colour[step["in_loop"]], edgecolor="0.3")
        ax.add_patch(box)
        ax.text(0.1, y + 0.12, textwrap.fill(f"{i + 1}) {step['text']}", 80), va="center", fontsize=8.5)
        ax.text(0.1, y - 0.25, ", ".join(step["calls"]) or "-", va="center", fontsize=7.5, family="monospace",
                color="0.25")
        if i:
            ax.annotate("", xy=(3, y + height / 2), xytext=(3, y + 1.15 - height / 2),
                        arrowprops={"arrowstyle": "->", "color": "0.3"})
    looped = [i for i, step in enumerate(steps) if step["in_loop"]]
    if looped:
        top, bottom = -1.15 * looped[0], -1.15 * looped[-1]
        ax.annotate("", xy=(6, top), xytext=(6, bottom), arrowprops={
            "arrowstyle": "->", "connectionstyle": "arc,angleA=0,angleB=0,armA=30,armB=30,rad=8", "color": "0.3"})
        ax.text(6.45, (top + bottom) / 2, "next epoch", rotation=90, va="center", fontsize=8.5)
    ax.set(xlim=(-0.1, 7), ylim=(-1.15 * (len(steps) - 1) - 0.6, 0.6), title=title)
    ax.axis("off")
    fig.tight_layout()
    return fig
