"""Metrics per task: loss, accuracy, macro-F1, per-class precision/recall/F1 and confusion matrices.

One path scores validation, test and the ``evaluate`` command: :func:`evaluate_loader`, on Accelerate,
in the run's precision. Used by the training loop and ``notebooks/04_training_loop.ipynb``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
import torch
from accelerate import Accelerator
from sklearn.metrics import accuracy_score, classification_report, confusion_matrix, f1_score
from torch.utils.data import DataLoader

from mtlib.data import EVAL_BATCH_SIZE, IGNORE_INDEX, Collator, DataError, SentenceDataset
from mtlib.precision import make_accelerator


def batched_macro_f1(y_true: np.ndarray, y_pred: np.ndarray, n_labels: int) -> np.ndarray:
    """Macro-F1 of each row of ``(B, N)`` label arrays; equals scikit-learn's with ``zero_division=0``.

    Vectorised so a bootstrap of thousands of resamples takes milliseconds.
    """
    f1 = []
    for k in range(n_labels):
        tp = ((y_pred == k) & (y_true == k)).sum(-1)
        predicted, actual = (y_pred == k).sum(-1), (y_true == k).sum(-1)
        f1.append(np.where(predicted + actual > 0, 2 * tp / np.maximum(predicted + actual, 1), 0.0))
    return np.mean(f1, axis=0)


def paired_bootstrap(
    y_true: Sequence[int],
    predictions_a: Sequence[Sequence[int]],
    predictions_b: Sequence[Sequence[int]],
    n_labels: int,
    *,
    metric: str = "macro_f1",
    n: int = 2000,
    seed: int = 0,
) -> dict[str, float]:
    """Score of model A minus model B on the same sentences, with a 95% paired-bootstrap interval.

    Two models scored on one set share its easy and hard sentences, so their difference is far less
    uncertain than either score alone; resampling the sentences, not the scores, keeps that pairing.
    ``predictions_a`` and ``predictions_b`` hold one array of label ids per seed (seed i of A is paired with
    seed i of B); the difference is averaged over seeds and each resample is shared by every seed.

    Returns:
        ``difference``, ``low`` and ``high`` (the 2.5th and 97.5th percentiles) and ``seeds``.
    """
    if metric not in ("macro_f1", "accuracy"):
        raise ValueError(f"metric={metric!r}: use 'macro_f1' or 'accuracy'.")
    y = np.asarray(y_true)
    a, b = np.atleast_2d(predictions_a), np.atleast_2d(predictions_b)
    if a.shape != b.shape or a.shape[1] != len(y):
        raise ValueError(
            f"predictions_a {a.shape} and predictions_b {b.shape} must both be (seeds, {len(y)} sentences)."
        )

    def score(labels: np.ndarray, predicted: np.ndarray) -> np.ndarray:
        if metric == "accuracy":
            return (labels == predicted).mean(-1)
        return batched_macro_f1(labels, predicted, n_labels)

    rows = np.random.default_rng(seed).integers(0, len(y), size=(n, len(y)))
    draws = np.mean([score(y[rows], pa[rows]) - score(y[rows], pb[rows]) for pa, pb in zip(a, b, strict=True)], axis=0)
    difference = float(np.mean([score(y, pa) - score(y, pb) for pa, pb in zip(a, b, strict=True)]))
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"difference": difference, "low": float(low), "high": float(high), "seeds": len(a)}


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


@torch.no_grad()
def evaluate_loader(
    model, loader: DataLoader, tasks: dict[str, list[str]], accelerator: Accelerator, *, full: bool = False
) -> dict[str, dict]:
    """Loss and :func:`task_metrics` per task over a whole split, each row counted once across processes.

    ``model`` and ``loader`` come from ``accelerator.prepare``, so autocast follows the run's precision.
    """
    model.eval()
    outputs: dict[str, list[torch.Tensor]] = {task: [] for task in tasks}
    for batch in loader:
        logits = model(**batch)
        for task in tasks:
            labels = batch[f"labels_{task}"]
            row_loss = torch.nn.functional.cross_entropy(logits[task].float(), labels.clamp(min=0), reduction="none")
            # gather_for_metrics drops the rows duplicated to even out the last batch across processes.
            rows = torch.stack([labels, logits[task].argmax(-1), row_loss], dim=1)  # (B, 3)
            outputs[task].append(accelerator.gather_for_metrics(rows).cpu())
    results = {}
    for task, labels in tasks.items():
        y_true, y_pred, row_loss = torch.cat(outputs[task]).T
        has_label = y_true >= 0
        metrics = task_metrics(y_true.long().tolist(), y_pred.long().tolist(), labels, full=full)
        results[task] = {"loss": float(row_loss[has_label].mean()) if has_label.any() else float("nan"), **metrics}
    return results


def evaluate_frame(
    model, frame: pd.DataFrame, *, batch_size: int = EVAL_BATCH_SIZE, precision: str = "auto"
) -> dict[str, dict]:
    """Full metrics for each task of the model that has labelled rows in ``frame``.

    A PyTorch model goes through :func:`evaluate_loader`; any other model with ``predict_logits`` (an exported
    ONNX one) through :func:`evaluate_logits`. A task whose column is missing or empty is left out (a file
    may label only some tasks).

    Raises:
        DataError: no task of the model has a labelled row in ``frame``.
    """
    tasks = {task: labels for task, labels in model.tasks.items() if task in frame and frame[task].notna().any()}
    if not tasks:
        raise DataError(
            f"no labelled rows for the model's tasks {list(model.tasks)} among {len(frame)} rows: "
            "their columns are missing or empty; pass data labelled for at least one of them."
        )
    if not isinstance(model, torch.nn.Module):
        return evaluate_logits(model.predict_logits(frame["text"].tolist(), batch_size=batch_size), frame, tasks)
    accelerator = make_accelerator(precision)
    collate = Collator(model.encoder.tokenizer, model.encoder.max_length)
    loader = DataLoader(SentenceDataset(frame, tasks), batch_size=batch_size, collate_fn=collate)
    prepared, loader = accelerator.prepare(model, loader)
    return evaluate_loader(prepared, loader, tasks, accelerator, full=True)


def evaluate_logits(logits: dict[str, torch.Tensor], frame: pd.DataFrame, tasks: dict[str, list[str]]) -> dict:
    """The metrics of :func:`evaluate_loader` from logits computed elsewhere, one row of ``frame`` each."""
    results = {}
    for task, labels in tasks.items():
        y_true = torch.tensor([labels.index(v) if isinstance(v, str) else IGNORE_INDEX for v in frame[task]])
        has_label = y_true >= 0
        row_loss = torch.nn.functional.cross_entropy(logits[task][has_label].float(), y_true[has_label])
        metrics = task_metrics(y_true.tolist(), logits[task].argmax(-1).tolist(), labels, full=True)
        results[task] = {"loss": float(row_loss), **metrics}
    return results
