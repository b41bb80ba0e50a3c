"""What ``TrainConfig(mixed_precision="auto")`` trains in: bf16 autocast where it pays, fp32 elsewhere.

On a GPU with bf16 it is bf16. On a CPU, bf16 is only worth trying where the CPU computes it natively
(AVX512-BF16 or AMX-BF16 units); elsewhere oneDNN emulates it. Whether a
native-bf16 CPU trains in bf16 under ``auto`` is the single switch :data:`CPU_BF16_TRAINING`, set from
a measurement of seconds per epoch and validation macro-F1 over seeds (``benchmarks/bench_train.py``).
"""

from __future__ import annotations

import torch

# Whether ``auto`` picks bf16 autocast for training on a CPU with native bf16: True only once measured
# faster per epoch than fp32 with validation macro-F1 within fp32's seed-to-seed spread (3 seeds of the
# default recipe). Not measured so yet, so False. Flipping it changes what every training run on such a
# CPU computes, the notebooks' stored outputs included: re-execute them after.
CPU_BF16_TRAINING = False


def cpu_has_native_bf16() -> bool:
    """Whether the CPU has bf16 arithmetic in hardware: AVX512-BF16 (Cooper Lake, Zen 4 and later) or AMX
    (Sapphire Rapids and later).

    Read through PyTorch's cpuinfo, the same flags Linux lists in ``/proc/cpuinfo`` as ``avx512_bf16``
    and ``amx_bf16``. ``torch.ops.mkldnn._is_mkldnn_bf16_supported()`` says bf16 is *supported* on any AVX-512
    CPU, where it is emulated, so it is not the test. ARM CPUs with bf16 are not recognised (fp32 there).
    """
    return torch.cpu._is_avx512_bf16_supported() or torch.cpu._is_amx_tile_supported()


def resolve_mixed_precision(requested: str) -> str:
    """The ``Accelerator(mixed_precision=...)`` value for a ``TrainConfig.mixed_precision``: ``auto`` becomes
    ``bf16`` on a GPU with bf16, or on a native-bf16 CPU while :data:`CPU_BF16_TRAINING`; else ``no`` (fp32).
    Other values pass through."""
    if requested != "auto":
        return requested
    if torch.cuda.is_available():
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    return "bf16" if CPU_BF16_TRAINING and cpu_has_native_bf16() else "no"
