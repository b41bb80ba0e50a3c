"""`make run`: the cloned notebooks stay as they are, and the summary at the end is read from the run's files."""

import json
import subprocess
import sys

import pandas as pd


def test_make_run_executes_the_notebooks_into_runs():
    plan = subprocess.run(["make", "-n", "run"], capture_output=True, text=True, check=True).stdout
    assert "--inplace" not in plan
    assert plan.count("--output-dir runs/notebooks") == 1 and "scripts/summary.py runs/default runs/notebooks" in plan


def test_summary_puts_the_model_beside_the_baselines(tmp_path):
    for file, f1 in {"test_metrics.json": 0.91, "out_of_style_test_metrics.json": 0.81}.items():
        scores = {task: {"accuracy": f1 + 0.01, "macro_f1": f1, "n": 100} for task in ("topic", "sentiment")}
        (tmp_path / file).write_text(json.dumps(scores))
    pd.DataFrame(
        [{"scored on": on, "baseline": name, "task": task, "accuracy": 0.5, "macro_f1": f1, "n": 100}
         for on in ("test", "out-of-style test")
         for name, f1 in (("majority", 0.1), ("tfidf_logreg", 0.7))
         for task in ("topic", "sentiment")]
    ).to_csv(tmp_path / "baselines.csv", index=False)

    result = subprocess.run([sys.executable, "scripts/summary.py", str(tmp_path), "runs/notebooks"],
                            capture_output=True, text=True, check=True)
    lines = [line.split() for line in result.stdout.splitlines()]
    assert ["shipped", "test", "topic", "0.1", "0.7", "0.91"] in lines  # majority, TF-IDF, fine-tuned
    assert ["out-of-style", "test", "sentiment", "0.1", "0.7", "0.81"] in lines
    assert ["out-of-style", "test", "topic", "0.82", "0.81", "100"] in lines  # accuracy, macro-F1, n
    assert any(line[:1] == [f"{tmp_path}/baselines.csv"] for line in lines)
