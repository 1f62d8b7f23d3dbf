"""Helpers shared by the benchmark scripts (run as scripts: ``benchmarks/`` is on sys.path)."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def make_random_adapter(*args: Any, **kwargs: Any) -> Any:
    """``tests/random_adapter.py``'s real peft adapter with random weights (a test helper, not
    part of the library; benchmarks run from a checkout, where ``tests`` is importable)."""
    if str(ROOT) not in sys.path:
        sys.path.insert(0, str(ROOT))
    from tests.random_adapter import make_random_adapter as make

    return make(*args, **kwargs)


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


# The CPU features that decide which kernels run (native bf16 or not: ``dtype: auto``).
FLAGS_OF_INTEREST = ("avx2", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8")


def cpuinfo_field(name: str) -> str | None:
    """The first ``name : value`` line of /proc/cpuinfo (None where it is missing)."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        return None
    line = next((x for x in lines if x.split(":", 1)[0].strip() == name), None)
    return line.split(":", 1)[1].strip() if line is not None else None


def cpu_model() -> str:
    return cpuinfo_field("model name") or "unknown CPU"


def cpu_flags() -> list[str]:
    """Which of ``FLAGS_OF_INTEREST`` this CPU has (empty where /proc/cpuinfo is missing)."""
    have = set((cpuinfo_field("flags") or "").split())
    return [f for f in FLAGS_OF_INTEREST if f in have]


def machine() -> str:
    """The machine kind named beside every figure: CPU model, core count and kernel flags."""
    flags = " ".join(cpu_flags()) or "flags unknown"
    return f"{cpu_model()} ({os.uname().machine}, {os.cpu_count()} CPUs; {flags})"


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()


def base_model(spec: str) -> Any:
    from behaviorlm.base_model import resolve_base_model

    return resolve_base_model(spec)
