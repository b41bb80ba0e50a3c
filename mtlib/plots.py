"""Figures used across the notebooks, drawn with seaborn on matplotlib. Each returns its Axes or Figure.

One colour means one thing in every notebook: :data:`PALETTES` maps each label of each task to its colour.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import matplotlib
import matplotlib.colors as mcolors
import matplotlib.patches
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
import torch
from matplotlib.figure import Figure

from mtlib.config import DEFAULT_TASKS

if TYPE_CHECKING:
    from mtlib.model import MultiTaskModel

# Seaborn's colour-blind palette, split so that no colour means two things: topics, sentiments, tasks apart.
_blind = sns.color_palette("colorblind")
PALETTES: dict[str, dict[str, tuple]] = {
    "topic": dict(zip(DEFAULT_TASKS["topic"], [_blind[0], _blind[1], _blind[4], _blind[9], _blind[5]], strict=True)),
    "sentiment": {"Negative": _blind[3], "Neutral": _blind[7], "Positive": _blind[2]},
    "task": {"topic": mcolors.to_rgb("#332288"), "sentiment": mcolors.to_rgb("#882255")},  # indigo, wine
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
    # Load the backend now: Jupyter's inline backend, loaded by the first figure, resets the figure formatters.
    plt.switch_backend(plt.get_backend())
    shell.display_formatter.formatters["text/plain"].for_type(Figure, lambda fig, p, cycle: p.text(figure_text(fig)))


def chance_line(ax, n_labels: int, *, axis: str = "y") -> None:
    """Mark the score of guessing uniformly among ``n_labels`` classes on a score axis."""
    line = ax.axhline if axis == "y" else ax.axvline
    line(1 / n_labels, color="0.4", linestyle=":", linewidth=1, label=f"chance (1/{n_labels})")


def similarity_heatmap(
    embeddings: np.ndarray, labels: Sequence[str], *, title: str = "cosine similarity of every pair", ax=None
):
    """Cosine similarity of every pair of sentences, each cell annotated with its value."""
    x = np.asarray(embeddings, dtype=float)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    ax = ax or plt.subplots(figsize=(0.6 * len(labels) + 3, 0.5 * len(labels) + 2))[1]
    sns.heatmap(x @ x.T, annot=True, fmt=".2f", cmap="viridis", vmin=-0.1, vmax=1, square=True,
                xticklabels=labels, yticklabels=labels, cbar_kws={"label": "cosine similarity"}, ax=ax)
    ax.tick_params(axis="x", rotation=90)
    ax.set_title(title)
    return ax


def projection_scatter(
    points: np.ndarray,
    frame: pd.DataFrame,
    columns: Sequence[str] = ("topic", "sentiment"),
    *,
    explained_variance: Sequence[float] | None = None,
):
    """A 2-D projection of sentence embeddings, one panel per label column, each in its palette.

    ``explained_variance`` (e.g. a fitted PCA's ``explained_variance_ratio_``) labels the axes with the share of
    variance each component keeps, so a reader knows how much of the space the picture shows.
    """
    fig, axes = plt.subplots(1, len(columns), figsize=(6 * len(columns), 5), squeeze=False)
    if explained_variance is None:
        axis_labels = ("first component", "second component")
    else:
        axis_labels = tuple(f"PC{i} ({v:.1%} of variance)" for i, v in enumerate(explained_variance[:2], start=1))
    for ax, column in zip(axes[0], columns, strict=True):
        palette = PALETTES.get(column)
        sns.scatterplot(x=points[:, 0], y=points[:, 1], hue=frame[column].to_numpy(), s=8, alpha=0.7, linewidth=0,
                        palette=palette, hue_order=list(palette) if palette else None, ax=ax)
        ax.set(title=f"coloured by {column}", xlabel=axis_labels[0], ylabel=axis_labels[1], xticks=[], yticks=[])
        ax.legend(markerscale=2, fontsize="small", title=column)
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


def compare_bars(
    table: pd.DataFrame,
    *,
    x: str,
    panels: dict[str, str],
    log: Sequence[str] = (),
    hue: str | None = None,
    palette: dict | None = None,
    chance: dict[str, int] | None = None,
):
    """One panel of horizontal bars per column of ``panels`` (column -> axis label): the mean over seeds, sd bars.

    The rows are the values of ``x`` (long plain names stay readable). Panels in ``log`` are costs (trainable
    parameters, seconds) on a log axis, where a zero cost has no bar; the others are scores on a 0-1 axis, with a
    dotted chance line where ``chance`` gives the panel's number of labels. Each bar is labelled with its mean.
    """
    order = list(dict.fromkeys(table[x]))
    n_bars = len(order) * (table[hue].nunique() if hue else 1)
    fig, axes = plt.subplots(1, len(panels), figsize=(3.3 * len(panels) + 2.2, 0.32 * n_bars + 1.6),
                             squeeze=False, sharey=True)
    for ax, (column, label) in zip(axes[0], panels.items(), strict=True):
        is_cost = column in log
        data = table[table[column] > 0] if is_cost else table
        sns.barplot(data=data, y=x, x=column, order=order, hue=None if is_cost else hue, palette=palette,
                    orient="h", errorbar="sd", capsize=0.2, err_kws={"linewidth": 1}, ax=ax)
        for bars in ax.containers:
            ax.bar_label(bars, fmt=_short if is_cost else "{:.3f}", fontsize=7, padding=3)
        ax.set(ylabel="", xlabel=label, xscale="log" if is_cost else "linear")
        if is_cost:
            ax.set_xlim(right=ax.get_xlim()[1] * 30)  # room for the value labels
        else:
            ax.set_xlim(0, 1.25)
            if chance and column in chance:
                chance_line(ax, chance[column], axis="x")
            if hue or (chance and column in chance):
                ax.legend(fontsize="small", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=2,
                          title=hue.replace("_", " ") if hue else None)
    fig.tight_layout()
    return fig


def _short(value: float) -> str:
    """22.6M, 3,080, 16.9 or 0.0176: a cost label a reader takes in at a glance."""
    if value >= 1e6:
        return f"{value / 1e6:.3g}M"
    return f"{value:,.0f}" if value >= 100 else f"{value:.3g}"


def learning_curve(table: pd.DataFrame, *, x: str = "rows", y: str = "macro_f1", hue: str = "arm", col: str = "task",
                   chance: dict[str, int] | None = None, ylabel: str = "validation macro-F1"):
    """Score against training rows (log axis), one panel per ``col`` value, one line per ``hue``, sd bands."""
    names = list(dict.fromkeys(table[col]))
    fig, axes = plt.subplots(1, len(names), figsize=(5.5 * len(names), 4.2), squeeze=False, sharey=True)
    for ax, name in zip(axes[0], names, strict=True):
        sns.lineplot(data=table[table[col] == name], x=x, y=y, hue=hue, errorbar="sd", marker="o", ax=ax)
        if chance and name in chance:
            chance_line(ax, chance[name])
        sizes = sorted(set(table[x]))
        ax.set(xscale="log", title=name, xlabel="training rows (log scale)", ylabel=ylabel)
        ax.set_xticks(sizes, [f"{n:,}" for n in sizes])
        ax.minorticks_off()
        ax.legend(fontsize="small", loc="lower right")
    fig.tight_layout()
    return fig


STATE_COLOURS = {  # outside PALETTES' colours: a part's state is not a label
    "trained": mcolors.to_rgb("#44aa99"), "frozen": (0.85, 0.85, 0.85), "LoRA adapters": mcolors.to_rgb("#ddcc77"),
    "no parameters": (1, 1, 1),
}


def training_map(states: pd.DataFrame):
    """A grid of strategies (rows) by model parts (columns), each cell coloured by what trains there.

    ``states`` holds one of :data:`STATE_COLOURS`' keys per cell, e.g. read from ``requires_grad`` after freezing.
    """
    codes = {state: i for i, state in enumerate(STATE_COLOURS)}
    fig, ax = plt.subplots(figsize=(1.0 * states.shape[1] + 2.5, 0.45 * states.shape[0] + 1.6))
    cmap = matplotlib.colors.ListedColormap(list(STATE_COLOURS.values()))
    ax.imshow(states.replace(codes).to_numpy(dtype=float), cmap=cmap, vmin=-0.5, vmax=len(codes) - 0.5, aspect="auto")
    words = {"trained": "trains", "LoRA adapters": "LoRA", "no parameters": "no weights"}
    for (i, j), state in np.ndenumerate(states.to_numpy()):
        ax.text(j, i, words.get(state, ""), ha="center", va="center", fontsize=7)
    ax.set_xticks(range(states.shape[1]), states.columns, rotation=35, ha="right", rotation_mode="anchor")
    ax.set_yticks(range(states.shape[0]), states.index)
    ax.set_xticks(np.arange(states.shape[1] + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(states.shape[0] + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=2)
    ax.tick_params(which="minor", length=0)
    ax.set(xlabel="part of the model (input at the left)", ylabel="strategy", title="What trains under each strategy")
    handles = [matplotlib.patches.Patch(facecolor=c, edgecolor="0.6", label=s) for s, c in STATE_COLOURS.items()]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1), title="parameters")
    fig.tight_layout()
    return fig


def cka_by_layer(table: pd.DataFrame, *, layer_names: Sequence[str]):
    """Linear CKA between the pretrained and a fine-tuned encoder at each layer, one line per ``arm`` (sd band)."""
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    sns.lineplot(data=table, x="layer", y="cka", hue="arm", style="arm", errorbar="sd", markers=True, ax=ax)
    ax.set_xticks(range(len(layer_names)), layer_names)
    ax.set(xlabel="output of (bottom to top)", ylabel="linear CKA with the pretrained encoder",
           title="Where training changed the encoder (1 = unchanged)")
    ax.legend(title="recipe", fontsize="small", loc="lower left")
    fig.tight_layout()
    return fig


def architecture_diagram(model: MultiTaskModel) -> Figure:
    """A :class:`~mtlib.model.MultiTaskModel` drawn as boxes, input at the bottom, one head per task on top.

    Every size and parameter count is read from the model's own modules (the embedding table, each transformer
    layer, the pooling, each head's linear layers), so the picture stays true when the backbone, pooling, heads
    or tasks change. A dashed grey box is frozen (no parameter in it trains).
    """
    from matplotlib.patches import FancyBboxPatch

    from mtlib.backbone import backbone_parts

    parts = backbone_parts(model.encoder.transformer)
    hidden = model.encoder.hidden_size
    table = next(m for m in parts.embeddings.modules() if isinstance(m, torch.nn.Embedding))
    stack = [(None, f"token ids (batch, tokens), vocabulary of {table.num_embeddings:,}")]
    stack.append((parts.embeddings, f"embeddings: {table.num_embeddings:,} x {table.embedding_dim} table"))
    for i, layer in enumerate(parts.layers, 1):
        widths = sorted({m.out_features for m in layer.modules() if isinstance(m, torch.nn.Linear)})
        stack.append((layer, f"transformer layer {i}: self-attention, feed-forward {hidden} → {widths[-1]} → {hidden}"))
    pooling = model.encoder.pooling
    stack.append((pooling, f"{pooling.mode} pooling: one sentence vector of {hidden} per sentence"))
    heads = list(model.heads.items())
    width = max(7.0, 3.2 * len(heads))
    fig, ax = plt.subplots(figsize=(width + 1, 0.62 * (len(stack) + 2) + 0.6))

    def box(x: float, y: float, w: float, text: str, module, color) -> None:
        params = [] if module is None else list(module.parameters())
        frozen = bool(params) and not any(p.requires_grad for p in params)
        if module is not None:
            text += f"\n{sum(p.numel() for p in params):,} parameters" + (" (frozen)" if frozen else "")
        ax.add_patch(FancyBboxPatch((x - w / 2, y - 0.32), w, 0.64, boxstyle="round,pad=0.03",
                                    facecolor="0.9" if frozen else color, edgecolor="0.3",
                                    linestyle="--" if frozen else "-"))
        ax.text(x, y, text, ha="center", va="center", fontsize=8)

    def arrow(x0: float, y0: float, x1: float, y1: float) -> None:
        ax.annotate("", xy=(x1, y1 - 0.34), xytext=(x0, y0 + 0.34), arrowprops={"arrowstyle": "->", "color": "0.3"})

    encoder_color = (0.86, 0.91, 0.97)
    for y, (module, text) in enumerate(stack):
        box(0, y, width * 0.8, text, module, "white" if module is None else encoder_color)
        if y:
            arrow(0, y - 1, 0, y)
    top = len(stack)
    xs = np.linspace(-width / 2 + width / (2 * len(heads)), width / 2 - width / (2 * len(heads)), len(heads))
    colors = sns.color_palette("colorblind", len(heads))
    for x, (task, head), color in zip(xs, heads, colors, strict=True):
        sizes = [m.in_features for m in head if isinstance(m, torch.nn.Linear)][:1]
        sizes += [m.out_features for m in head if isinstance(m, torch.nn.Linear)]
        tint = PALETTES["task"].get(task, color)
        box(x, top + 0.4, width / len(heads) * 0.85, f"{task} head: " + " → ".join(map(str, sizes)), head,
            (*tint[:3], 0.35))
        arrow(0, top - 1, x, top + 0.4)
    ax.text(-width / 2 - 0.1, (len(stack) - 1) / 2 + 0.5, "shared encoder: every task reads it", rotation=90,
            ha="right", va="center", fontsize=9)
    ax.set(xlim=(-width / 2 - 0.5, width / 2 + 0.2), ylim=(-0.6, top + 1.0))
    ax.axis("off")
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    ax.set_title(f"The model, read from its modules: {total:,} parameters, {trainable:,} of them trainable")
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
