"""Overload benchmark of the prediction service: does it admit what can finish and refuse the
rest at once?

A real ``behaviorlm serve`` subprocess with the service's default limits (10 s deadline,
micro-batches of 8, admission margin 0.2), the demo adapter and real Context Trails histories
(``load_benchmark.py`` has the setup). Phases, all loopback and bounded:

1. capacity: closed loop, ``--capacity-clients`` clients, ``--capacity-requests`` requests;
2. burst: ``--burst`` requests sent at once from one async client (the issue's 48);
3. open loop: Poisson arrivals at 1x, 2x and 3x capacity for ``--seconds`` each.

Per phase it prints the count of each status, p50/p99 latency of the 200s, the slowest 429 and
whether every 429 carried Retry-After, and goodput (200s per second of the phase, arrivals to
last answer) as a share of capacity. Targets (issue 15): no 504 at 2x and 3x, every 429 within
50 ms and with Retry-After, goodput at 3x >= 90% of capacity, p99 of the 200s <= the deadline.

Run: ``.venv/bin/python benchmarks/overload_benchmark.py [--out DIR]`` (about 3 minutes on 2
cores with the defaults).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from load_benchmark import (
    DEFAULT_DATA,
    load_histories,
    prepare_adapter,
    start_server,
    stop_server,
)

DEADLINE_S = 10.0  # the service's default request_deadline_s


@dataclass
class Phase:
    name: str
    offered_per_s: float | None
    seconds: float
    statuses: dict[str, int]
    ok_p50_ms: float
    ok_p99_ms: float
    refused_max_ms: float
    refused_p99_ms: float
    refused_with_retry_after: int
    goodput_per_s: float
    goodput_share: float | None = None


@dataclass
class Report:
    adapter: str
    adapter_is_random: bool
    history_events: int
    capacity_per_s: float
    phases: list[Phase] = field(default_factory=list)
    server_peak_rss_mb: float | None = None


@dataclass
class Outcome:
    status: int
    seconds: float
    retry_after: bool


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Context Trails checkins.csv.gz")
    p.add_argument("--base-model", default="smollm2", help="resolve_base_model spec")
    p.add_argument("--adapter", type=Path, default=None, help="adapter dir (default: the demo)")
    p.add_argument("--behaviors", type=int, default=100, help="random adapter's vocabulary size")
    p.add_argument("--history", type=int, default=20, help="events per request history")
    p.add_argument("--capacity-clients", type=int, default=16, help="closed-loop clients")
    p.add_argument("--capacity-requests", type=int, default=96, help="closed-loop requests")
    p.add_argument("--burst", type=int, default=48, help="requests sent at once")
    p.add_argument("--seconds", type=float, default=30.0, help="arrival time per open-loop load")
    p.add_argument("--loads", default="1,2,3", help="open-loop loads, multiples of capacity")
    p.add_argument("--threads", type=int, default=None, help="server torch threads")
    p.add_argument("--out", type=Path, default=None, help="write JSON + PNG here")
    args = p.parse_args(argv)
    args.load_factors = [float(x) for x in args.loads.split(",") if x.strip()]
    if not args.load_factors or min(args.load_factors) <= 0:
        p.error("--loads: positive numbers, e.g. 1,2,3")
    if not args.data.exists():
        p.error(f"--data: {args.data} does not exist")
    # prepare_adapter / start_server read these
    args.merge = False
    args.batch_max_size = 8
    args.batch_max_wait_ms = 5.0
    return args


async def _send(client: Any, body: dict[str, Any]) -> Outcome:
    started = time.perf_counter()
    r = await client.post("/v1/predict", json=body)
    return Outcome(r.status_code, time.perf_counter() - started, "retry-after" in r.headers)


def _client(url: str) -> Any:
    import httpx

    return httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=1024))


async def capacity(url: str, bodies: list[dict[str, Any]], clients: int, n: int) -> float:
    queue = [bodies[i % len(bodies)] for i in range(n)]
    done = 0

    async def worker(c: Any) -> None:
        nonlocal done
        while queue:
            out = await _send(c, queue.pop())
            done += out.status == 200

    async with _client(url) as c:
        started = time.perf_counter()
        await asyncio.gather(*(worker(c) for _ in range(clients)))
        return done / (time.perf_counter() - started)


async def burst(url: str, bodies: list[dict[str, Any]], n: int) -> tuple[list[Outcome], float]:
    async with _client(url) as c:
        started = time.perf_counter()
        outs = await asyncio.gather(*(_send(c, bodies[i % len(bodies)]) for i in range(n)))
        return list(outs), time.perf_counter() - started


async def open_loop(
    url: str, bodies: list[dict[str, Any]], rate: float, seconds: float
) -> tuple[list[Outcome], float]:
    """Poisson arrivals at ``rate`` per second for ``seconds``, whatever the server answers."""
    rng = random.Random(0)
    async with _client(url) as c:
        started = time.perf_counter()
        tasks = []
        i = 0
        while time.perf_counter() - started < seconds:
            tasks.append(asyncio.create_task(_send(c, bodies[i % len(bodies)])))
            i += 1
            await asyncio.sleep(rng.expovariate(rate))
        outs = await asyncio.gather(*tasks)
        return list(outs), time.perf_counter() - started


def summarise(name: str, outs: list[Outcome], seconds: float, offered: float | None) -> Phase:
    import numpy as np

    ok = [o.seconds for o in outs if o.status == 200]
    refused = [o for o in outs if o.status == 429]

    def pct(values: list[float], q: float) -> float:
        return round(float(np.percentile(values, q)) * 1000, 1) if values else float("nan")

    return Phase(
        name=name,
        offered_per_s=None if offered is None else round(offered, 2),
        seconds=round(seconds, 2),
        statuses={str(k): v for k, v in sorted(Counter(o.status for o in outs).items())},
        ok_p50_ms=pct(ok, 50),
        ok_p99_ms=pct(ok, 99),
        refused_max_ms=round(max((o.seconds for o in refused), default=0.0) * 1000, 1),
        refused_p99_ms=pct([o.seconds for o in refused], 99),
        refused_with_retry_after=sum(o.retry_after for o in refused),
        goodput_per_s=round(len(ok) / seconds, 2),
    )


def peak_rss_mb(pid: int) -> float | None:
    """The server's peak resident memory (VmHWM; Linux), for sizing container requests."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def run(args: argparse.Namespace) -> Report:
    histories, names = load_histories(args.data, args.history, 64)
    tmp = Path(tempfile.mkdtemp(prefix="overload-bench-"))
    adapter, is_random = prepare_adapter(args, names, tmp)
    bodies = [{"history": h, "top_k": 5} for h in histories]
    # The service's own defaults: unset what start_server sets for the load benchmark.
    defaults = {
        "BEHAVIORLM_MAX_QUEUE": "",
        "BEHAVIORLM_REQUEST_DEADLINE_S": "",
        "BEHAVIORLM_BATCH_MAX_SIZE": "",
        "BEHAVIORLM_BATCH_MAX_WAIT_MS": "",
        "BEHAVIORLM_MERGE_ADAPTER": "",
    }
    proc, url = start_server(args, adapter, tmp / "server.log", defaults)
    try:
        asyncio.run(capacity(url, bodies, 4, 8))  # warm-up, not reported
        cap = asyncio.run(capacity(url, bodies, args.capacity_clients, args.capacity_requests))
        print(f"[overload] capacity {cap:.2f} predictions/s (closed loop)", flush=True)
        report = Report(str(adapter), is_random, args.history, round(cap, 2))
        outs, seconds = asyncio.run(burst(url, bodies, args.burst))
        report.phases.append(summarise(f"burst {args.burst}", outs, seconds, None))
        print(f"[overload] {report.phases[-1]}", flush=True)
        for factor in args.load_factors:
            time.sleep(DEADLINE_S / 2)  # let the previous phase's queue drain
            rate = cap * factor
            outs, seconds = asyncio.run(open_loop(url, bodies, rate, args.seconds))
            phase = summarise(f"open {factor:g}x", outs, seconds, rate)
            phase.goodput_share = round(phase.goodput_per_s / cap, 3)
            report.phases.append(phase)
            print(f"[overload] {phase}", flush=True)
        report.server_peak_rss_mb = peak_rss_mb(proc.pid)
    finally:
        stop_server(proc)
    return report


def print_report(r: Report) -> None:
    print()
    print(
        f"adapter: {r.adapter}{' (random weights)' if r.adapter_is_random else ''}; "
        f"{r.history_events}-event histories; capacity {r.capacity_per_s} predictions/s"
    )
    print(
        f"{'phase':<11}{'offered/s':>10}{'200':>6}{'429':>6}{'504':>6}{'other':>6}"
        f"{'200 p50':>9}{'200 p99':>9}{'429 max':>9}{'RA':>5}{'goodput':>9}{'share':>7}"
    )
    for ph in r.phases:
        st = ph.statuses
        other = sum(v for k, v in st.items() if k not in ("200", "429", "504"))
        offered = "-" if ph.offered_per_s is None else f"{ph.offered_per_s:.1f}"
        share = "-" if ph.goodput_share is None else f"{ph.goodput_share:.0%}"
        print(
            f"{ph.name:<11}{offered:>10}{st.get('200', 0):>6}{st.get('429', 0):>6}"
            f"{st.get('504', 0):>6}{other:>6}{ph.ok_p50_ms:>9.0f}{ph.ok_p99_ms:>9.0f}"
            f"{ph.refused_max_ms:>9.1f}{ph.refused_with_retry_after:>5}"
            f"{ph.goodput_per_s:>9.2f}{share:>7}"
        )
    print("(latencies in ms; RA: 429s that carried Retry-After)")
    print(f"server peak RSS: {r.server_peak_rss_mb} MB")


def write_outputs(r: Report, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "overload_benchmark.json").write_text(json.dumps(asdict(r), indent=1) + "\n")
    phases = [ph for ph in r.phases if ph.offered_per_s is not None]
    xs = [ph.offered_per_s / r.capacity_per_s for ph in phases]  # type: ignore[operator]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(xs, [ph.goodput_per_s for ph in phases], "o-", label="goodput (200/s)")
    a.axhline(r.capacity_per_s, color="grey", ls="--", label="capacity (closed loop)")
    a.set(xlabel="offered load (x capacity)", ylabel="predictions/s", title="goodput")
    a.legend()
    b.plot(xs, [ph.ok_p99_ms for ph in phases], "o-", label="p99 of 200s")
    b.plot(xs, [ph.refused_max_ms for ph in phases], "s-", label="slowest 429")
    b.axhline(DEADLINE_S * 1000, color="red", ls=":", label="deadline")
    b.set(xlabel="offered load (x capacity)", ylabel="ms", yscale="log", title="latency")
    b.legend()
    fig.suptitle("BehaviorLM service under overload (CPU, transformers engine)")
    fig.tight_layout()
    fig.savefig(out / "overload_benchmark.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    if args.out is not None:
        write_outputs(report, args.out)
        print(f"wrote {args.out / 'overload_benchmark.json'} and overload_benchmark.png")


if __name__ == "__main__":
    main()
