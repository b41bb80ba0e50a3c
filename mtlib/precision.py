"""One precision setting for training, evaluation and ``encode``: which float type autocast computes in.

``TrainConfig.mixed_precision`` and ``SentenceEncoder.encode(precision=...)`` take the same values and
are resolved by :func:`resolve_precision` alone, so the embedding cache, validation and test run in
the precision the user chose.

``auto`` is bf16 on a GPU with bf16. On a CPU, bf16 is only worth trying where the CPU computes it natively
(AVX512-BF16 or AMX-BF16 units; elsewhere oneDNN emulates it), and whether ``auto`` uses it there is the
single switch :data:`CPU_BF16`.
"""

from __future__ import annotations

import torch
from accelerate import Accelerator
from accelerate.state import AcceleratorState

from mtlib.config import PRECISIONS

AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}

# Whether ``auto`` means bf16 on a CPU with native bf16. Off: bf16 trains faster there with the same scores
# (README, Performance), but AMX and AVX512-BF16 round differently, so results, and the notebooks' stored
# outputs, would depend on which CPU ran them. ``mixed_precision="bf16"`` opts in.
CPU_BF16 = False


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic in hardware: AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX
    (Sapphire Rapids and later).

    Read through PyTorch's cpuinfo, the same flags Linux lists in ``/proc/cpuinfo`` as ``avx512_bf16``
    and ``amx_bf16``. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says bf16 is *supported* on any
    AVX-512 CPU, where it is emulated, so it is not the test. ARM CPUs with bf16 are not recognised.
    """
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_precision(precision: str, device: torch.device | str) -> str:
    """``fp32``, ``bf16`` or ``fp16`` for ``precision`` on ``device``.

    ``auto`` means bf16 on a GPU that supports it, bf16 on a native-bf16 CPU while :data:`CPU_BF16` is on,
    and fp32 elsewhere.

    Example:
        >>> resolve_precision("fp16", "cpu")
        'fp16'
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r} is not valid. Valid precisions are: {PRECISIONS}.")
    if precision != "auto":
        return precision
    if torch.device(device).type == "cuda":
        return "bf16" if torch.cuda.is_bf16_supported() else "fp32"
    return "bf16" if CPU_BF16 and cpu_has_native_bf16() else "fp32"


def make_accelerator(precision: str = "auto") -> Accelerator:
    """An Accelerator whose autocast follows ``precision`` (Accelerate calls fp32 ``no``)."""
    device = "cuda" if torch.cuda.is_available() else "cpu"  # where Accelerate will put the model
    resolved = resolve_precision(precision, device)
    mixed_precision = "no" if resolved == "fp32" else resolved
    state = AcceleratorState._shared_state  # one per process: a second precision in one session needs a reset
    if state.get("_mixed_precision", mixed_precision) != mixed_precision and state["num_processes"] == 1:
        AcceleratorState._reset_state()
    return Accelerator(mixed_precision=mixed_precision)


def accelerator_precision(accelerator: Accelerator) -> str:
    """The precision an Accelerator runs in, as :func:`resolve_precision` names it: ``encode`` then matches it."""
    return "fp32" if accelerator.mixed_precision == "no" else accelerator.mixed_precision
