"""Helpers shared by the benchmark scripts: timing, the device, and writing results."""

from __future__ import annotations

import json
import platform
import resource
import time
from collections.abc import Callable
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU: {cpu_model()}, {torch.get_num_threads()} threads"


def cpu_model() -> str:
    """The CPU's model name where Linux tells it (which CPU ran a benchmark matters: bf16 and int8 units differ)."""
    cpuinfo = Path("/proc/cpuinfo")
    names = [line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines()
             if line.startswith("model name")] if cpuinfo.is_file() else []
    return names[0] if names else platform.processor() or platform.machine()


def best_of(fn, repeats: int) -> float:
    """Fastest of ``repeats`` timed calls, in seconds: the least disturbed by other work on the machine."""
    times = []
    for _ in range(repeats):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        started = time.perf_counter()
        fn()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        times.append(time.perf_counter() - started)
    return min(times)


def race(contenders: dict[str, Callable[[], object]], repeats: int) -> dict[str, float]:
    """Each contender's fastest of ``repeats`` runs, in seconds, after a warm-up. They take turns, so every
    contender sees the same load on the machine."""
    for run in contenders.values():
        run()
    seconds = {name: [] for name in contenders}
    for _ in range(repeats):
        for name, run in contenders.items():
            seconds[name].append(best_of(run, 1))
    return {name: min(times) for name, times in seconds.items()}


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"device": device_name(), "torch": torch.__version__, **result}, indent=2) + "\n")
    return path
