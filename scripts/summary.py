"""What `make run` prints at the end: the default model's test scores, the baselines beside it, and where
every result is. It reads the files the run wrote, so it can be printed again at any time:

    python scripts/summary.py runs/default runs/notebooks
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

TEST_SETS = {"test_metrics.json": "shipped test", "out_of_style_test_metrics.json": "out-of-style test"}


def model_scores(run_dir: Path) -> pd.DataFrame:
    """One row per test set and task: accuracy, macro-F1 and the number of labelled rows."""
    rows = [
        {"scored on": name, "task": task, **{k: m[k] for k in ("accuracy", "macro_f1", "n")}}
        for file, name in TEST_SETS.items()
        for task, m in json.loads((run_dir / file).read_text()).items()
    ]
    return pd.DataFrame(rows)


def against_baselines(scores: pd.DataFrame, baselines: pd.DataFrame) -> pd.DataFrame:
    """Macro-F1 of each baseline and of the fine-tuned model, one row per test set and task."""
    baselines = baselines.replace({"scored on": {"test": "shipped test"}})  # the CLI's name for the shipped split
    table = baselines.pivot_table(index=["scored on", "task"], columns="baseline", values="macro_f1", sort=False)
    table["fine-tuned"] = scores.set_index(["scored on", "task"])["macro_f1"]
    return table.reset_index()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir", type=Path, help="the training run, e.g. runs/default")
    parser.add_argument("notebooks_dir", type=Path, help="the executed notebooks, e.g. runs/notebooks")
    args = parser.parse_args()
    run, notebooks = args.run_dir, args.notebooks_dir

    scores = model_scores(run)
    baselines = pd.read_csv(run / "baselines.csv")
    print("\nThe default model on the two test sets:\n")
    print(scores.round(4).to_string(index=False))
    print("\nMacro-F1 against the baselines (fitted on the same training rows):\n")
    print(against_baselines(scores, baselines).round(4).to_string(index=False))
    where = {
        f"{run}/test_metrics.json": "shipped test split: per-class scores and confusion matrices",
        f"{run}/out_of_style_test_metrics.json": "the same on the out-of-style test half",
        f"{run}/baselines.csv": "the baselines, accuracy and macro-F1",
        f"{run}/metrics.csv": "loss, accuracy and macro-F1 per epoch",
        f"{run}/model/": f'the trained model: python -m mtlib predict --model {run}/model "a sentence"',
        f"{notebooks}/": "the notebooks as this run executed them (notebooks/ is left as it was)",
    }
    print("\nWhere the results are:\n")
    width = max(map(len, where))
    for path, what in where.items():
        print(f"  {path:<{width}}  {what}")


if __name__ == "__main__":
    main()
