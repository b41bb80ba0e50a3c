"""LoRA: train small low-rank updates of the attention weights while the pretrained encoder stays frozen.

Hu et al. (2021): an adapted projection ``W x`` becomes ``W x + (alpha / r) B A x`` with ``A`` of shape
``(r, in)`` and ``B`` of shape ``(out, r)``. ``B`` starts at zero, so training starts exactly from the
pretrained model. The adapters come from Hugging Face ``peft``. Compared with freezing in
``notebooks/03_freezing_tradeoffs.ipynb``.
"""

from __future__ import annotations

from peft import LoraConfig, inject_adapter_in_model

from mtlib.freezing import freeze
from mtlib.model import MultiTaskModel

# the attention projections adapted per backbone family (the query and value ones, as in the LoRA paper)
LORA_TARGETS = {"bert": ("query", "value"), "distilbert": ("q_lin", "v_lin")}


def add_lora(model: MultiTaskModel, *, r: int = 8, alpha: int = 16, dropout: float = 0.1) -> MultiTaskModel:
    """Freeze the transformer and add trainable LoRA adapters to its query and value projections, in place.

    Pooling and the heads keep training. Call it after :func:`mtlib.freezing.freeze`, which would
    otherwise unfreeze the pretrained weights again.

    Args:
        model: A model without adapters.
        r: Rank of each update; ``r * (in + out)`` parameters per adapted projection.
        alpha: Scale of the update is ``alpha / r``.
        dropout: Dropout on the adapters' input.

    Example:
        >>> add_lora(model, r=8)  # doctest: +SKIP
        >>> count_trainable(model)  # 6 layers x 2 projections x 8 x (384 + 384), and the heads  # doctest: +SKIP
        76808
    """
    kind = model.encoder.transformer.config.model_type
    if kind not in LORA_TARGETS:
        raise ValueError(f"LoRA targets are known for {list(LORA_TARGETS)} backbones, not {kind!r}; "
                         "add its attention projection names to LORA_TARGETS.")
    if has_lora(model):
        raise ValueError("the model already has LoRA adapters; build a fresh model to add new ones.")
    if r < 1:
        raise ValueError(f"r={r} should be a positive integer, e.g. 8.")
    freeze(model, "backbone")
    config = LoraConfig(r=r, lora_alpha=alpha, lora_dropout=dropout, target_modules=list(LORA_TARGETS[kind]))
    inject_adapter_in_model(config, model.encoder.transformer)
    return model


def has_lora(model: MultiTaskModel) -> bool:
    return any(is_lora_parameter(name) for name, _ in model.named_parameters())


def is_lora_parameter(name: str) -> bool:
    """Whether a parameter name belongs to a LoRA adapter (``...lora_A...`` or ``...lora_B...``)."""
    return ".lora_A." in name or ".lora_B." in name
