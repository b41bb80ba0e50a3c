"""Figures speak to readers: no code identifiers in a stored figure's title, axis labels or legend.

Each notebook calls ``store_figure_text()``, so every stored figure carries its words as plain text beside the
image; this test reads those words from the committed notebooks.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from mtlib.plots import figure_text  # noqa: E402

NOTEBOOKS = sorted(Path("notebooks").glob("*.ipynb"))
IDENTIFIER = re.compile(r"\b[A-Za-z][A-Za-z0-9]*_[A-Za-z0-9_]*\b")  # train_fraction, macro_f1, head_lr


def stored_figures(path: Path) -> list[tuple[int, str | None]]:
    """(cell number, the figure's stored text or None) for every image a notebook stores."""
    cells = json.loads(path.read_text())["cells"]
    return [
        (number, "".join(output["data"].get("text/plain", "")) or None)
        for number, cell in enumerate(cells, start=1) if cell["cell_type"] == "code"
        for output in cell.get("outputs", []) if "image/png" in output.get("data", {})
    ]


def test_figure_text_names_titles_axes_and_legend_entries():
    fig, ax = plt.subplots()
    ax.plot([0, 1], label="train_fraction")
    ax.set(title="macro-F1 by rows", xlabel="training rows", ylabel="macro-F1")
    ax.legend(title="strategy")
    text = figure_text(fig)
    plt.close(fig)
    assert "'training rows'" in text and "'macro-F1'" in text and "'strategy'" in text
    assert IDENTIFIER.findall(text) == ["train_fraction"]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_stored_figures_use_plain_words(path):
    figures = stored_figures(path)
    missing = [number for number, text in figures if not (text or "").startswith("Figure")]
    assert not missing, f"{path.name}: cells {missing} store a figure without its text; call store_figure_text() first"
    found = {number: IDENTIFIER.findall(text) for number, text in figures if IDENTIFIER.search(text)}
    assert not found, f"{path.name}: identifiers in figure titles, axis labels or legends (cell: words): {found}"
