"""One precision setting for training, evaluation and ``encode``: which float type autocast computes in.

``TrainConfig.mixed_precision`` and ``SentenceEncoder.encode(precision=...)`` take the same values and
are resolved by :func:`resolve_precision` alone, so the embedding cache, validation and test run in
the precision the user chose.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` on ``device``.

    ``auto`` means bf16 on a GPU that supports it and fp32 elsewhere.

    Example:
        >>> resolve_precision("auto", "cpu")
        'fp32'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid. Valid precisions are: {PRECISIONS}.")
    if precision != "auto":
        return precision
    return "bf16" if torch.device(device).type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"


def make_accelerator(precision: str = "auto") -> Accelerator:
    """An Accelerator whose autocast follows ``precision`` (Accelerate calls fp32 ``no``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Accelerate will put the model
    resolved = resolve_precision(precision, device)
    return Accelerator(mixed_precision="no" if resolved == "fp32" else resolved)


def accelerator_precision(accelerator: Accelerator) -> str:
    """The precision an Accelerator runs in, as :func:`resolve_precision` names it: ``encode`` then matches it."""
    return "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
