"""Task 3: which parameters train. Freezing strategies, gradual unfreezing, layer-wise learning rates.

Where a backbone keeps its embeddings and layers comes from :func:`mtlib.backbone.backbone_parts`.
Introduced in ``notebooks/03_freezing_tradeoffs.ipynb``.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from mtlib.backbone import backbone_parts
from mtlib.config import FREEZE_STRATEGIES
from mtlib.model import MultiTaskModel


def transformer_layers(model: MultiTaskModel) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first."""
    return backbone_parts(model.encoder.transformer).layers


def freeze(model: MultiTaskModel, strategy: str = "none") -> MultiTaskModel:
    """Set ``requires_grad`` in place for a strategy; earlier freezing is undone first.

    Pooling is not part of the backbone: attention pooling's scorer trains unless ``all`` is frozen.

    Args:
        model: The multi-task model.
        strategy: ``none`` (everything trains), ``all`` (nothing trains), ``backbone`` (the pretrained
            transformer frozen; pooling and heads train), ``head:<task>`` (that head frozen),
            ``layers:<k>`` (embeddings and the bottom k transformer layers frozen).

    Example:
        >>> freeze(model, "backbone")  # doctest: +SKIP
        >>> any(p.requires_grad for p in model.encoder.transformer.parameters())  # doctest: +SKIP
        False
    """
    model.requires_grad_(True)
    kind, _, arg = strategy.partition(":")
    parts = backbone_parts(model.encoder.transformer)
    if strategy == "none":
        pass
    elif strategy == "all":
        model.requires_grad_(False)
    elif strategy == "backbone":
        model.encoder.transformer.requires_grad_(False)
    elif kind == "head" and arg in model.heads:
        model.heads[arg].requires_grad_(False)
    elif kind == "layers" and arg.isdigit() and int(arg) <= len(parts.layers):
        parts.embeddings.requires_grad_(False)
        for layer in parts.layers[: int(arg)]:
            layer.requires_grad_(False)
    else:
        raise ValueError(
            f"freeze strategy {strategy!r} is not valid. Valid strategies are: {FREEZE_STRATEGIES}, with <task> "
            f"one of {list(model.heads)} and <k> from 0 to {len(parts.layers)}."
        )
    return model


def encoder_is_frozen(model: MultiTaskModel) -> bool:
    """Whether the encoder (transformer and pooling) gives every sentence the same vector all run long."""
    return not any(p.requires_grad for p in model.encoder.parameters())


def gradual_unfreeze(model: MultiTaskModel, epoch: int, *, every: int = 1) -> int:
    """ULMFiT-style: at epoch 0 only the top layer (with pooling and heads) trains; one more layer every ``every``.

    The embeddings join once every layer trains. Returns the number of trainable layers.
    """
    parts = backbone_parts(model.encoder.transformer)
    n_trainable = min(len(parts.layers), 1 + epoch // every)
    model.requires_grad_(True)
    parts.embeddings.requires_grad_(n_trainable == len(parts.layers))
    for layer in parts.layers[: len(parts.layers) - n_trainable]:
        layer.requires_grad_(False)
    return n_trainable


def layerwise_param_groups(
    model: MultiTaskModel,
    lr: float,
    *,
    decay: float = 1.0,
    weight_decay: float = 0.01,
    head_lr: float | None = None,
) -> list[dict]:
    """AdamW parameter groups whose learning rate shrinks by ``decay`` per layer going down.

    The heads get ``head_lr`` (default ``lr``) in groups of their own; pooling gets ``lr``, the top
    transformer layer ``lr * decay``, the embeddings ``lr * decay ** (num_layers + 1)``. ``decay=1`` is
    a plain single learning rate. Biases and LayerNorm weights get no weight decay. Frozen parameters
    are included so that a later unfreezing takes effect without rebuilding the optimizer.
    """
    parts = backbone_parts(model.encoder.transformer)
    depth_of = {id(p): len(parts.layers) + 1 for p in parts.embeddings.parameters()}
    for i, layer in enumerate(parts.layers):
        depth_of |= {id(p): len(parts.layers) - i for p in layer.parameters()}
    head_params = {id(p) for p in model.heads.parameters()}
    groups: dict[tuple[bool, int, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        no_decay = param.ndim < 2  # biases and LayerNorm weights
        groups.setdefault((id(param) in head_params, depth_of.get(id(param), 0), no_decay), []).append(param)
    return [
        {
            "params": params,
            "lr": (head_lr or lr) if is_head else lr * decay**depth,
            "weight_decay": 0.0 if no_decay else weight_decay,
        }
        for (is_head, depth, no_decay), params in sorted(groups.items())
    ]


def parameter_report(model: nn.Module) -> pd.DataFrame:
    """Trainable and total parameters per part (embeddings, each layer, pooling, each head) and in all."""
    backbone = backbone_parts(model.encoder.transformer)
    parts: list[tuple[str, nn.Module]] = [("embeddings", backbone.embeddings)]
    parts += [(f"layer {i}", layer) for i, layer in enumerate(backbone.layers, 1)]
    parts += [("pooling", model.encoder.pooling)]
    parts += [(f"head:{task}", head) for task, head in model.heads.items()]
    parts += [("all", model)]
    rows = [(name, count_trainable(module), sum(p.numel() for p in module.parameters())) for name, module in parts]
    return pd.DataFrame(rows, columns=["part", "trainable", "total"])


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
