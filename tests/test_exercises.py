"""The notebooks' exercises: a scaffold the learner fills, a checker that says whether the answer is right, and
a solution that makes its checker say so.

The solutions are run where the scaffolds stand, in a copy of each notebook, so a solution and its checker
cannot drift apart unnoticed.
"""

import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted(Path("notebooks").glob("*.ipynb"))
SOLUTION = re.compile(r"<summary>Solution</summary>.*?```python\n(.*?)```", re.S)


def exercises(notebook: nbformat.NotebookNode) -> list[tuple[int, int, str]]:
    """(scaffold cell, checker cell, solution code) of each exercise, in order."""
    cells, found = notebook.cells, []
    for i, cell in enumerate(cells):
        if "exercise-scaffold" in cell.metadata.get("tags", []):
            assert "exercise-check" in cells[i + 1].metadata.get("tags", []), f"cell {i + 1} should check cell {i}"
            solution = next(SOLUTION.search(c.source) for c in cells[i + 2:] if SOLUTION.search(c.source))
            found.append((i, i + 1, solution.group(1)))
    return found


def printed(cell: nbformat.NotebookNode) -> str:
    return "".join(output.get("text", "") for output in cell.outputs if output.output_type == "stream")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_every_exercise_is_left_to_the_learner(path):
    notebook = nbformat.read(path, as_version=4)
    found = exercises(notebook)
    assert 2 <= len(found) <= 3
    for scaffold, checker, solution in found:
        assert "# your answer" in notebook.cells[scaffold].source
        assert "# your answer" not in solution
        assert "nbval-skip" in notebook.cells[scaffold].metadata["tags"]
        assert printed(notebook.cells[checker]).startswith("Not yet:"), f"cell {checker} of {path.name}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_each_solution_passes_its_checker(path):
    notebook = nbformat.read(path, as_version=4)
    found = exercises(notebook)
    for scaffold, _, solution in found:
        notebook.cells[scaffold].source = solution
    NotebookClient(notebook, timeout=1800, resources={"metadata": {"path": str(path.parent)}}).execute()
    for _, checker, _ in found:
        verdict = printed(notebook.cells[checker])
        assert verdict.startswith("Correct:"), (path.name, checker, verdict)
