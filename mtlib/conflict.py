"""Gradient conflict between tasks: do their losses pull the shared encoder the same way?

The cosine between two tasks' gradients on the same shared weights says whether a step for one task helps
(cosine > 0) or undoes (cosine < 0) the other. PCGrad (Yu et al., 2020, "Gradient Surgery for Multi-Task
Learning") removes the conflicting part. Introduced in ``notebooks/02_multi_task_heads.ipynb``; measured over
training by ``experiments/gradient_conflict.py``.
"""

from __future__ import annotations

import torch
from torch import nn

from mtlib.backbone import backbone_parts
from mtlib.model import MultiTaskModel


def encoder_groups(model: MultiTaskModel) -> dict[str, list[nn.Parameter]]:
    """The shared encoder's trainable parameters by layer group, bottom first.

    Groups: ``embeddings``, ``layer 1`` .. ``layer N`` (bottom to top), and ``pooling`` when the pooling has weights
    (attention pooling). The heads are not shared, so they are left out.
    """
    parts = backbone_parts(model.encoder.transformer)
    modules = {"embeddings": parts.embeddings} | {f"layer {i}": layer for i, layer in enumerate(parts.layers, 1)}
    modules["pooling"] = model.encoder.pooling
    groups = {name: [p for p in module.parameters() if p.requires_grad] for name, module in modules.items()}
    return {name: params for name, params in groups.items() if params}


def task_gradients(
    task_losses: dict[str, torch.Tensor], groups: dict[str, list[nn.Parameter]]
) -> dict[str, dict[str, torch.Tensor]]:
    """Each task's gradient on each group, flattened: ``{task: {group: (n_params,)}}``.

    One backward pass per task through the same graph, so the forward pass (and its dropout) is shared.
    """
    params = [p for group in groups.values() for p in group]
    sizes = [sum(p.numel() for p in group) for group in groups.values()]
    gradients = {}
    for task, loss in task_losses.items():
        flat = torch.cat([
            (g if g is not None else torch.zeros_like(p)).flatten()
            for g, p in zip(torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True), params,
                            strict=True)
        ])
        gradients[task] = dict(zip(groups, flat.split(sizes), strict=True))
    return gradients


def gradient_cosines(first: dict[str, torch.Tensor], second: dict[str, torch.Tensor]) -> dict[str, float]:
    """Cosine between two tasks' gradients in each group, and over the whole encoder (``all``)."""
    cosines = {name: float(nn.functional.cosine_similarity(first[name], second[name], dim=0)) for name in first}
    whole = [torch.cat([g[name] for name in first]) for g in (first, second)]
    return cosines | {"all": float(nn.functional.cosine_similarity(*whole, dim=0))}


def pcgrad(first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """PCGrad for two tasks: where the gradients conflict, drop from each its component along the other.

    Each gradient is projected onto the normal plane of the *original* other gradient,
    ``g1 - (g1 . g2 / |g2|^2) g2``, so neither keeps a part that undoes the other's step; gradients that do not
    conflict (dot product >= 0) pass unchanged. The update is the sum of the two results.

    Example:
        >>> a, b = pcgrad(torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0]))
        >>> a.tolist(), b.tolist()
        ([0.5, 0.5], [0.0, 1.0])
    """
    dot = torch.dot(first, second)
    if dot >= 0:
        return first, second
    return first - dot / second.dot(second) * second, second - dot / first.dot(first) * first
