"""Task 3: which parameters train. Freezing strategies, gradual unfreezing, layer-wise learning rates.

Introduced in ``notebooks/03_freezing_tradeoffs.ipynb``.
"""

from __future__ import annotations

import pandas as pd
from torch import nn

from mtlib.model import MultiTaskModel

FREEZE_STRATEGIES = ("none", "all", "backbone", "head:<task>", "layers:<k>")


def transformer_layers(model: MultiTaskModel) -> nn.ModuleList:
    """The stack of transformer blocks, bottom first, for BERT- and DistilBERT-family encoders."""
    transformer = model.encoder.transformer
    for path in ("encoder.layer", "transformer.layer", "layers", "encoder.layers"):
        module = transformer
        for attr in path.split("."):
            module = getattr(module, attr, None)
        if isinstance(module, nn.ModuleList):
            return module
    raise ValueError(
        f"Cannot find the transformer layers of {type(transformer).__name__}; "
        "layer freezing supports BERT- and DistilBERT-style encoders."
    )


def freeze(model: MultiTaskModel, strategy: str = "none") -> MultiTaskModel:
    """Set ``requires_grad`` in place for a strategy; earlier freezing is undone first.

    Args:
        model: The multi-task model.
        strategy: ``none`` (everything trains), ``all`` (nothing trains), ``backbone`` (encoder
            frozen, heads train), ``head:<task>`` (that head frozen), ``layers:<k>`` (embeddings
            and the bottom k transformer layers frozen).

    Example:
        >>> freeze(model, "backbone")  # doctest: +SKIP
        >>> any(p.requires_grad for p in model.encoder.parameters())  # doctest: +SKIP
        False
    """
    model.requires_grad_(True)
    kind, _, arg = strategy.partition(":")
    if strategy == "none":
        pass
    elif strategy == "all":
        model.requires_grad_(False)
    elif strategy == "backbone":
        model.encoder.requires_grad_(False)
    elif kind == "head" and arg in model.heads:
        model.heads[arg].requires_grad_(False)
    elif kind == "layers" and arg.isdigit() and int(arg) <= len(transformer_layers(model)):
        model.encoder.transformer.embeddings.requires_grad_(False)
        for layer in transformer_layers(model)[: int(arg)]:
            layer.requires_grad_(False)
    else:
        raise ValueError(
            f"freeze strategy {strategy!r} is not valid. Valid strategies are: {FREEZE_STRATEGIES}, with <task> "
            f"one of {list(model.heads)} and <k> from 0 to {len(transformer_layers(model))}."
        )
    return model


def encoder_is_frozen(model: MultiTaskModel) -> bool:
    return not any(p.requires_grad for p in model.encoder.parameters())


def gradual_unfreeze(model: MultiTaskModel, epoch: int, *, every: int = 1) -> int:
    """ULMFiT-style: at epoch 0 only the top layer (and the heads) train; one more layer every ``every`` epochs.

    Embeddings and pooling join once every layer trains. Returns the number of trainable layers.
    """
    layers = transformer_layers(model)
    n_trainable = min(len(layers), 1 + epoch // every)
    model.encoder.requires_grad_(n_trainable == len(layers))
    for layer in layers[len(layers) - n_trainable :]:
        layer.requires_grad_(True)
    model.heads.requires_grad_(True)
    return n_trainable


def layerwise_param_groups(
    model: MultiTaskModel, lr: float, *, decay: float = 1.0, weight_decay: float = 0.01
) -> list[dict]:
    """AdamW parameter groups whose learning rate shrinks by ``decay`` per layer going down.

    Heads and pooling get ``lr``, the top transformer layer ``lr * decay``, the embeddings
    ``lr * decay ** (num_layers + 1)``. ``decay=1`` is a plain single learning rate. Biases and
    LayerNorm weights get no weight decay. Frozen parameters are included so that a later
    unfreezing takes effect without rebuilding the optimizer.
    """
    layers = transformer_layers(model)
    depth_of = {id(p): len(layers) + 1 for p in model.encoder.transformer.embeddings.parameters()}
    for i, layer in enumerate(layers):
        depth_of |= {id(p): len(layers) - i for p in layer.parameters()}
    groups: dict[tuple[int, bool], list[nn.Parameter]] = {}
    for param in model.parameters():
        no_decay = param.ndim < 2  # biases and LayerNorm weights
        groups.setdefault((depth_of.get(id(param), 0), no_decay), []).append(param)
    return [
        {"params": params, "lr": lr * decay**depth, "weight_decay": 0.0 if no_decay else weight_decay}
        for (depth, no_decay), params in sorted(groups.items())
    ]


def parameter_report(model: nn.Module) -> pd.DataFrame:
    """Trainable and total parameters per part (embeddings, each layer, pooling, each head) and in all."""
    parts: list[tuple[str, nn.Module]] = [("embeddings", model.encoder.transformer.embeddings)]
    parts += [(f"layer {i}", layer) for i, layer in enumerate(transformer_layers(model))]
    parts += [("pooling", model.encoder.pooling)]
    parts += [(f"head:{task}", head) for task, head in model.heads.items()]
    parts += [("all", model)]
    rows = [(name, count_trainable(module), sum(p.numel() for p in module.parameters())) for name, module in parts]
    return pd.DataFrame(rows, columns=["part", "trainable", "total"])


def count_trainable(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
