"""Benchmark: `data prepare` on generated logs of 1M and 10M events; seconds, peak memory and
the per-event cost ratio (1.0 = linear).

Target (the data issue): 10,000,000 events, 100,000 users, 2,000 behaviors in under 60 s and
under 3 GB peak RSS on the 2-core development machine. Users scale with the events (1M: 10,000
users). Each log is generated and written as CSV (ISO-8601 text with a UTC offset, the slower
path) first, not timed; the preparation runs as ``behaviorlm data prepare`` in a child process,
so its peak RSS (``ru_maxrss`` of the child: DuckDB's and pyarrow's allocations count, unlike
tracemalloc) is the pipeline's alone.

    .venv/bin/python benchmarks/prepare_benchmark.py [--events 1000000,10000000]
        [--memory-limit 1GB] [--workdir DIR]
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_EVENTS = 10_000_000
TARGET_SECONDS = 60.0
TARGET_MB = 3 * 1024


def _generate(path: Path, events: int, users: int, behaviors: int) -> None:
    from behaviorlm.training.data.synthetic import make_synthetic_log

    t0 = time.perf_counter()
    log = make_synthetic_log(users, events, behaviors, seed=0, tz_offset="+02:00")
    log.to_csv(path, index=False)
    print(f"generated {events:,} events in {time.perf_counter() - t0:.1f} s -> {path}")


def _prepare(path: Path, out: Path, memory_limit: str) -> tuple[float, float, float]:
    """(wall seconds, CPU seconds, peak RSS MB) of one `data prepare` child."""
    cmd = [
        sys.executable,
        "-m",
        "behaviorlm.cli",
        "data",
        "prepare",
        "--input",
        str(path),
        "--out",
        str(out),
        "--overwrite",
        "--context-cols",
        "place",
        "--parent-col",
        "category",
        "--memory-limit",
        memory_limit,
    ]
    # ru_maxrss of RUSAGE_CHILDREN is the largest child so far (sizes run smallest first).
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t1 = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    seconds = time.perf_counter() - t1
    if proc.returncode != 0:
        print(proc.stdout, proc.stderr, sep="\n")
        raise SystemExit(proc.returncode)
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = usage.ru_utime + usage.ru_stime - before.ru_utime - before.ru_stime
    print(proc.stdout.strip())
    return seconds, cpu, usage.ru_maxrss / 1024  # KiB on Linux; the max over children so far


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--events",
        default="1000000,10000000",
        help="comma-separated log sizes, smallest first (peak RSS is the max so far, so the "
        "figure of each size is its own only when sizes grow)",
    )
    parser.add_argument(
        "--users-per-event", type=float, default=0.01, help="users per event (0.01: 100 each)"
    )
    parser.add_argument("--behaviors", type=int, default=2000, help="distinct behaviors")
    parser.add_argument("--memory-limit", default="1GB", help="data prepare --memory-limit")
    parser.add_argument("--workdir", type=Path, help="keep the logs and outputs here")
    args = parser.parse_args()
    sizes = [int(s) for s in args.events.split(",") if s.strip()]

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        rows: list[tuple[int, float, float, float]] = []
        for n in sizes:
            path = work / f"log-{n}.csv"
            if not path.is_file():
                _generate(path, n, max(1, int(n * args.users_per_event)), args.behaviors)
            seconds, cpu, peak = _prepare(path, work / f"prepared-{n}", args.memory_limit)
            rows.append((n, seconds, cpu, peak))
            print(
                f"{n:>12,} events: {seconds:6.1f} s wall, {cpu:6.1f} s CPU, peak RSS "
                f"{peak:,.0f} MB, {seconds / n * 1e6:.2f} us/event"
            )
        _summary(rows)
    return 0


def _summary(rows: list[tuple[int, float, float, float]]) -> None:
    if len(rows) >= 2:
        (n0, s0, _, _), (n1, s1, _, _) = rows[0], rows[-1]
        ratio = (s1 / n1) / (s0 / n0)
        print(
            f"per-event cost {n1:,} vs {n0:,}: x{ratio:.2f} "
            f"({'linear or better' if ratio <= 1.15 else 'worse than linear'})"
        )
    for n, seconds, _, peak in rows:
        if n == TARGET_EVENTS:
            ok = seconds < TARGET_SECONDS and peak < TARGET_MB
            print(
                f"target {TARGET_EVENTS:,} events < {TARGET_SECONDS:.0f} s and < {TARGET_MB} MB: "
                f"{'met' if ok else 'NOT met'} ({seconds:.1f} s, {peak:,.0f} MB; load average "
                f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs: wall time grows with other "
                "work on the machine)"
            )


if __name__ == "__main__":
    sys.exit(main())
