"""Timing shared by the benchmark scripts (imported as a sibling module when a script runs)."""
from __future__ import annotations

import time

import torch


def best_time(fn, repeats: int, device: torch.device) -> float:
    """Best wall-clock seconds of ``repeats`` calls, waiting for the device before and after each."""
    def sync():
        if device.type != "cpu" and torch.accelerator.is_available():
            torch.accelerator.synchronize()

    best = float("inf")
    for _ in range(repeats):
        sync()
        start = time.perf_counter()
        fn()
        sync()
        best = min(best, time.perf_counter() - start)
    return best
