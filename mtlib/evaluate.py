"""Metrics per task: accuracy, macro-F1, per-class precision/recall/F1 and confusion matrices.

Used by the training loop, the ``evaluate`` command and ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score

from mtlib.data import IGNORE_INDEX, DataError


def task_metrics(y_true: Sequence[int], y_pred: Sequence[int], labels: Sequence[str], *, full: bool = False) -> dict:
    """Scores for one task over the rows that carry a label (``IGNORE_INDEX`` rows are skipped).

    Args:
        y_true: Label ids, ``IGNORE_INDEX`` where the row has no label for this task.
        y_pred: Predicted label ids.
        labels: Label names in id order.
        full: Add per-class precision, recall, F1, support and the confusion matrix.
    """
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    keep = y_true != IGNORE_INDEX
    y_true, y_pred = y_true[keep], y_pred[keep]
    ids = list(range(len(labels)))
    metrics = {
        "accuracy": float(accuracy_score(y_true, y_pred)) if len(y_true) else float("nan"),
        "macro_f1": float(f1_score(y_true, y_pred, labels=ids, average="macro", zero_division=0)),
        "n": int(len(y_true)),
    }
    if full:
        report = classification_report(
            y_true, y_pred, labels=ids, target_names=list(labels), output_dict=True, zero_division=0
        )
        metrics["per_class"] = {
            label: {k: (int(v) if k == "support" else round(float(v), 4)) for k, v in report[label].items()}
            for label in labels
        }
        metrics["confusion_matrix"] = confusion_matrix(y_true, y_pred, labels=ids).tolist()
    return metrics


def evaluate_frame(model, frame: pd.DataFrame, *, batch_size: int = 64) -> dict[str, dict]:
    """Full metrics for each task of the model that has labelled rows in ``frame``.

    A task whose column is missing or empty is left out (a file may label only some tasks).

    Raises:
        DataError: no task of the model has a labelled row in ``frame``.
    """
    tasks = {task: labels for task, labels in model.tasks.items() if task in frame and frame[task].notna().any()}
    if not tasks:
        raise DataError(
            f"no labelled rows for the model's tasks {list(model.tasks)} among {len(frame)} rows: "
            "their columns are missing or empty; pass data labelled for at least one of them."
        )
    logits = model.predict_logits(frame["text"].tolist(), batch_size=batch_size)
    results = {}
    for task, labels in tasks.items():
        y_true = [labels.index(v) if isinstance(v, str) else IGNORE_INDEX for v in frame[task]]
        results[task] = task_metrics(y_true, logits[task].argmax(-1).tolist(), labels, full=True)
    return results
