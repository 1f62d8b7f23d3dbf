"""Benchmark: prepare a generated 1M-event log; print seconds and peak memory.

Target (issue 3): 1,000,000 events, 10,000 users, 200 long-tail behaviors in under 30 s and
under 2 GB peak RSS. The log is generated and written first (not timed); the preparation runs
as ``behaviorlm data prepare`` in a child process, so its peak RSS (``ru_maxrss`` of the
child, which pandas/pyarrow allocations count towards, unlike tracemalloc) is the pipeline's
alone.

    .venv/bin/python benchmarks/prepare_benchmark.py [--events 1000000] [--file-format csv]
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events in the log")
    parser.add_argument("--users", type=int, default=10_000, help="users in the log")
    parser.add_argument("--behaviors", type=int, default=200, help="distinct behaviors")
    parser.add_argument(
        "--file-format",
        choices=("csv", "parquet"),
        default="csv",
        help="how the log is stored (csv: ISO-8601 text with a UTC offset, the slower path)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the log and output here")
    args = parser.parse_args()

    from training.data.synthetic import make_synthetic_log

    with tempfile.TemporaryDirectory() as tmp:
        work = args.workdir or Path(tmp)
        work.mkdir(parents=True, exist_ok=True)
        t0 = time.perf_counter()
        log = make_synthetic_log(
            args.users, args.events, args.behaviors, seed=0, tz_offset="+02:00"
        )
        path = work / f"log.{args.file_format}"
        if args.file_format == "csv":
            log.to_csv(path, index=False)
        else:
            log.to_parquet(path, index=False)
        del log
        print(f"generated {args.events:,} events in {time.perf_counter() - t0:.1f} s -> {path}")

        cmd = [
            sys.executable,
            "-m",
            "behaviorlm.cli",
            "data",
            "prepare",
            "--input",
            str(path),
            "--out",
            str(work / "prepared"),
            "--overwrite",
            "--context-cols",
            "place",
            "--parent-col",
            "category",
        ]
        t1 = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True, text=True)
        seconds = time.perf_counter() - t1
        if proc.returncode != 0:
            print(proc.stdout, proc.stderr, sep="\n")
            return proc.returncode
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        peak_mb = usage.ru_maxrss / 1024  # KiB on Linux
        cpu = usage.ru_utime + usage.ru_stime
        print(proc.stdout.strip())
        ok = seconds < 30 and peak_mb < 2048
        print(
            f"prepare: {seconds:.1f} s wall (incl. ~1 s interpreter start), {cpu:.1f} s CPU, "
            f"peak RSS {peak_mb:,.0f} MB; target < 30 s and < 2048 MB: "
            f"{'met' if ok else 'NOT met'} (load average {os.getloadavg()[0]:.1f} on "
            f"{os.cpu_count()} CPUs: wall time grows with other work on the machine)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
