"""Helpers shared by the benchmark scripts: timing, the device, and writing results."""

from __future__ import annotations

import json
import platform
import resource
import time
from pathlib import Path

import torch

RESULTS = Path(__file__).parent / "results"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU: {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


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


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def save(name: str, result: dict) -> Path:
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / f"{name}.json"
    path.write_text(json.dumps({"device": device_name(), "torch": torch.__version__, **result}, indent=2) + "\n")
    return path
