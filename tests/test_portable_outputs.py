"""The notebooks' stored outputs hold on any x86 CPU.

Another CPU sums floats in another order; one thread instead of several is the cheap stand-in that a
developer's own machine can run. Notebooks 01, 02 and 03 and the part of 04 before its long training run are
executed under ``OMP_NUM_THREADS=1`` by nbval, with the sanitising ``make test`` uses, against the stored outputs.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WHOLE = ("01_sentence_transformer.ipynb", "02_multi_task_heads.ipynb", "03_freezing_tradeoffs.ipynb")
PART = ("04_training_loop.ipynb", "largest difference")  # up to the cell printing this: the open loop and its check


def notebook_prefix(path: Path, last_output: str) -> dict:
    """The notebook cut after the first code cell whose source contains ``last_output``."""
    notebook = json.loads(path.read_text(encoding="utf-8"))
    cells = notebook["cells"]
    last = next(i for i, cell in enumerate(cells)
                if cell["cell_type"] == "code" and last_output in "".join(cell["source"]))
    return notebook | {"cells": cells[: last + 1]}


def test_stored_outputs_hold_with_one_thread(tmp_path):
    notebooks = tmp_path / "notebooks"  # the notebooks read ../data and ../experiments, and write to ../runs
    notebooks.mkdir()
    for name in ("data", "experiments"):
        (tmp_path / name).symlink_to(ROOT / name)
    for name in (*WHOLE, "sanitize.cfg"):
        (notebooks / name).write_bytes((ROOT / "notebooks" / name).read_bytes())
    (notebooks / "exercises").symlink_to(ROOT / "notebooks" / "exercises")  # the exercises' checkers
    name, last_output = PART
    (notebooks / name).write_text(json.dumps(notebook_prefix(ROOT / "notebooks" / name, last_output)))

    env = os.environ | {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval", "--nbval-current-env",
               "--nbval-sanitize-with", "notebooks/sanitize.cfg", *(f"notebooks/{n}" for n in (*WHOLE, name))]
    result = subprocess.run(command, cwd=tmp_path, env=env, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]
