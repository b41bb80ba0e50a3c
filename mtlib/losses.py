"""Combining per-task losses: equal weights, fixed weights, or learned uncertainty weighting.

Introduced in ``notebooks/02_multi_task_heads.ipynb``; compared in ``04_training_loop.ipynb``.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlib.config import LOSS_WEIGHTINGS
from mtlib.data import IGNORE_INDEX


def masked_cross_entropy(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor | None:
    """Mean cross-entropy over rows that carry a label; ``None`` when no row in the batch does.

    A row without this task's label adds nothing to this loss, and so no gradient to this head.
    """
    if not (labels != IGNORE_INDEX).any():
        return None
    return nn.functional.cross_entropy(logits.float(), labels, ignore_index=IGNORE_INDEX)


class MultiTaskLoss(nn.Module):
    """Weighted sum of per-task losses.

    ``equal``: every task weight 1. ``fixed``: user weights. ``uncertainty`` (Kendall, Gal and
    Cipolla, 2018): a learned log-variance ``s`` per task, loss ``exp(-s) * L + s``, so noisier
    tasks get smaller weights without hand tuning.
    """

    def __init__(self, tasks: list[str], *, weighting: str = "equal", weights: dict[str, float] | None = None) -> None:
        super().__init__()
        if weighting not in LOSS_WEIGHTINGS:
            raise ValueError(f"loss weighting {weighting!r} is not valid. Valid weightings are: {LOSS_WEIGHTINGS}.")
        if weighting == "fixed" and (weights is None or set(weights) != set(tasks)):
            raise ValueError(f"loss weighting 'fixed' needs one weight per task {tasks}, got {weights}.")
        self.tasks, self.weighting = list(tasks), weighting
        self.weights = {task: 1.0 for task in tasks} if weighting != "fixed" else dict(weights)
        self.log_vars = nn.Parameter(torch.zeros(len(tasks))) if weighting == "uncertainty" else None

    def forward(self, task_losses: dict[str, torch.Tensor]) -> torch.Tensor:
        total = 0.0
        for i, task in enumerate(self.tasks):
            if task not in task_losses:
                continue
            if self.log_vars is None:
                total = total + self.weights[task] * task_losses[task]
            else:
                total = total + torch.exp(-self.log_vars[i]) * task_losses[task] + self.log_vars[i]
        return total

    def task_weights(self) -> dict[str, float]:
        """The effective weight of each task's loss, for logging."""
        if self.log_vars is None:
            return dict(self.weights)
        return {task: float(torch.exp(-s)) for task, s in zip(self.tasks, self.log_vars.detach(), strict=True)}


def compute_losses(logits: dict[str, torch.Tensor], batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per-task masked loss for the tasks that have at least one label in this batch."""
    losses = {}
    for task, task_logits in logits.items():
        if f"labels_{task}" in batch:
            loss = masked_cross_entropy(task_logits, batch[f"labels_{task}"])
            if loss is not None:
                losses[task] = loss
    return losses
