"""Helpers shared by the benchmark scripts (run as scripts: ``benchmarks/`` is on sys.path)."""

from __future__ import annotations

import os
import time
from typing import Any


def matmul_peak(seconds: float = 2.0, n: int = 1024) -> tuple[float, float]:
    """bf16 matmul FLOP/s of this machine at the current thread count (best of timed loops),
    and FLOP per CPU second of this process."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best = best_cpu = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(4):
            torch.matmul(a, b)
        flops = 4 * 2 * n**3
        best = max(best, flops / (time.perf_counter() - t0))
        best_cpu = max(best_cpu, flops / max(time.process_time() - c0, 1e-9))
    return best, best_cpu


def machine() -> str:
    return f"{os.uname().machine}, {os.cpu_count()} CPUs"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def base_model(spec: str) -> Any:
    from behaviorlm.base_model import resolve_base_model

    return resolve_base_model(spec)
