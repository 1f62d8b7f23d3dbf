"""Load benchmark of the prediction service: predictions/s and p50/p95/p99 latency at several
concurrency levels, against the naive one-forward-per-candidate baseline in the same run.

Setup: SmolLM2-135M-Instruct (bf16) + an adapter, the transformers engine with the
micro-batcher, served by a real ``behaviorlm serve`` subprocess on 127.0.0.1; requests are
real Context Trails (Petaling Jaya) histories of ``--history`` consecutive check-ins sent by an
async httpx client (closed loop: ``c`` clients, each sending its next request when the previous
one returns). Then an open-loop run at half the peak throughput measures the latency a service
sized with 2x headroom would see. The adapter is the committed demo adapter when present
(``models/demo``, else ``models/ct-pj-demo/stage2``, else its ``stage1``); otherwise a random
LoRA over the most frequent real categories (speed does not depend on what an adapter learned)
and the output says so.

The naive baseline (``benchmarks/scoring_benchmark.py: naive_scores``) scores a request with one
full forward of prompt + answer per candidate, run before the server starts so both get the
whole machine.

Run: ``.venv/bin/python benchmarks/load_benchmark.py [--out DIR]`` (a few minutes on 2 cores).
Loopback only; every level is bounded by ``--requests``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_DATA = ROOT.parent / "shared" / "data" / "context_trails_pj" / "checkins.csv.gz"
DEMO_ADAPTERS = ("models/demo", "models/ct-pj-demo/stage2", "models/ct-pj-demo/stage1")


@dataclass
class Level:
    mode: str  # "closed c=N" or "open r=X/s"
    concurrency: int
    requests: int
    errors: int
    seconds: float
    pred_per_s: float
    p50_ms: float
    p95_ms: float
    p99_ms: float


@dataclass
class Report:
    machine: str  # CPU model, cores and kernel flags (common.machine)
    adapter: str
    adapter_is_random: bool
    behaviors: int
    history_events: int
    merge: bool
    batch_max_size: int
    batch_max_wait_ms: float
    naive_requests: int
    naive_pred_per_s: float
    threads: int | None
    load_average_before: tuple[float, float, float]
    served: str = ""  # engine / backend / dtype, as the server's GET /v1/models reports them
    levels: list[Level] = field(default_factory=list)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Context Trails checkins.csv.gz")
    p.add_argument("--base-model", default="smollm2", help="resolve_base_model spec")
    p.add_argument("--adapter", type=Path, default=None, help="adapter dir (default: demo/random)")
    p.add_argument("--behaviors", type=int, default=100, help="random adapter's vocabulary size")
    p.add_argument("--history", type=int, default=20, help="events per request history")
    p.add_argument(
        "--concurrency", default="1,4,16,32", help="closed-loop client counts, comma-separated"
    )
    p.add_argument("--requests", type=int, default=64, help="requests per level (bound)")
    p.add_argument(
        "--naive-requests",
        type=int,
        default=2,
        help="requests for the baseline (0: skip it; it runs in bf16, which a CPU without "
        "native bf16 emulates at minutes per request)",
    )
    p.add_argument("--batch-max-size", type=int, default=32, help="micro-batcher max size")
    p.add_argument("--batch-max-wait-ms", type=float, default=10.0, help="micro-batcher wait")
    p.add_argument(
        "--merge",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="merge the adapter into the weights (the CPU serving default for one adapter)",
    )
    p.add_argument(
        "--cpu-backend",
        choices=("auto", "torch", "openvino"),
        default="auto",
        help="the server's BEHAVIORLM_CPU_BACKEND (auto: openvino when merged, fp32 and "
        "installed, as the service chooses)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch threads for the baseline and the server (default: torch's choice). On a "
        "shared machine use 1: oversubscribed OpenMP threads spin and run ~10x slower",
    )
    p.add_argument("--out", type=Path, default=None, help="write JSON + PNG here")
    args = p.parse_args(argv)
    args.levels = [int(c) for c in args.concurrency.split(",") if c.strip()]
    if not args.levels or min(args.levels) < 1:
        p.error("--concurrency: positive integers, e.g. 1,4,16,32")
    for flag in ("behaviors", "history", "requests", "batch_max_size"):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if args.naive_requests < 0:
        p.error("--naive-requests must be >= 0")
    if not args.data.exists():
        p.error(f"--data: {args.data} does not exist")
    return args


def load_histories(
    path: Path, history: int, n: int
) -> tuple[list[list[dict[str, Any]]], list[str]]:
    """``n`` request histories of ``history`` consecutive real check-ins (one per user), and the
    categories by frequency."""
    import pandas as pd

    from behaviorlm.events import normalize_behavior

    df = pd.read_csv(path, usecols=["user_id", "timestamp", "category"])
    df = df[df["category"] != "UNKNOWN"]
    names = [normalize_behavior(c) for c in df["category"].value_counts().index]
    out: list[list[dict[str, Any]]] = []
    unordered = 0
    for _, user in df.groupby("user_id", sort=True):
        if len(user) < history:
            continue
        rows = user.iloc[:history]
        instants = [pd.Timestamp(t) for t in rows["timestamp"]]
        if any(b < a for a, b in itertools.pairwise(instants)):
            # The file orders some travellers' check-ins by local time across UTC offsets;
            # the service rightly refuses those (422), so they are no load test.
            unordered += 1
            continue
        out.append(
            [
                {"behavior": normalize_behavior(c), "timestamp": t}
                for c, t in zip(rows["category"], rows["timestamp"], strict=True)
            ]
        )
        if len(out) == n:
            break
    if unordered:
        print(f"[load-bench] skipped {unordered} histories not in time order", flush=True)
    if not out:
        raise SystemExit(f"error: no user with >= {history} check-ins in {path}")
    return out, names


def prepare_adapter(args: argparse.Namespace, names: list[str], tmp: Path) -> tuple[Path, bool]:
    from behaviorlm.manifest import MANIFEST_FILE

    if args.adapter is not None:
        return args.adapter, False
    for rel in DEMO_ADAPTERS:
        if (ROOT / rel / MANIFEST_FILE).exists():
            return ROOT / rel, False
    from common import make_random_adapter

    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.vocabulary import Vocabulary

    top = names[: args.behaviors]
    vocab = Vocabulary.from_counts({n: len(top) - i for i, n in enumerate(top)})
    out = tmp / "models" / "random"
    make_random_adapter(
        resolve_base_model(args.base_model), out, vocabulary=vocab, rank=8, name="random"
    )
    return out, True


def naive_baseline(args: argparse.Namespace, adapter: Path, histories: list[Any]) -> float:
    """Predictions/s of one full forward per candidate (unmerged adapter, bf16)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.events import Event
    from behaviorlm.manifest import AdapterManifest
    from behaviorlm.prompt import PieceEncoder, render_prompt

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from scoring_benchmark import naive_scores

    if args.threads is not None:
        torch.set_num_threads(args.threads)
    base = resolve_base_model(args.base_model)
    encoder = PieceEncoder(AutoTokenizer.from_pretrained(str(base.path)))
    plain = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.bfloat16)
    model = PeftModel.from_pretrained(plain, str(adapter)).eval()
    names = [e.name for e in AdapterManifest.load(adapter).vocabulary]
    from datetime import datetime

    prompts = []
    for h in histories[: args.naive_requests]:
        events = [Event(e["behavior"], datetime.fromisoformat(e["timestamp"])) for e in h]
        prompts.append(render_prompt(events, now=events[-1].timestamp))
    from tqdm import tqdm

    start = time.perf_counter()
    for prompt in tqdm(prompts, desc="naive baseline", unit="prediction"):
        naive_scores(model, encoder, prompt, names)
    return len(prompts) / (time.perf_counter() - start)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_server(
    args: argparse.Namespace, adapter: Path, log: Path, env_overrides: dict[str, str] | None = None
) -> tuple[Any, str]:
    """``behaviorlm serve`` on a free loopback port; ``env_overrides`` replace (or, set to "",
    remove) the BEHAVIORLM_* settings below."""
    port = _free_port()
    adapter = adapter.resolve()  # the service reads relative paths against its models dir
    env = {
        **os.environ,
        "BEHAVIORLM_ENGINE": "transformers",
        "BEHAVIORLM_BASE_MODEL": args.base_model,
        "BEHAVIORLM_MODELS_DIR": str(adapter.parent),
        "BEHAVIORLM_ADAPTERS": f"bench={adapter}",
        "BEHAVIORLM_HOST": "127.0.0.1",
        "BEHAVIORLM_PORT": str(port),
        "BEHAVIORLM_BATCH_MAX_SIZE": str(args.batch_max_size),
        "BEHAVIORLM_BATCH_MAX_WAIT_MS": str(args.batch_max_wait_ms),
        "BEHAVIORLM_MERGE_ADAPTER": "true" if args.merge else "false",
        "BEHAVIORLM_CPU_BACKEND": args.cpu_backend,
        "BEHAVIORLM_MAX_QUEUE": "1024",
        "BEHAVIORLM_REQUEST_DEADLINE_S": "120",
        "BEHAVIORLM_LOG_LEVEL": "warning",
    }
    for key, value in (env_overrides or {}).items():
        if value:
            env[key] = value
        else:
            env.pop(key, None)
    if args.threads is not None:
        env["OMP_NUM_THREADS"] = str(args.threads)
    proc = subprocess.Popen(
        [sys.executable, "-m", "behaviorlm.cli", "serve"],
        env=env,
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    import httpx

    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"error: server exited; log:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(url + "/health/ready", timeout=2).status_code == 200:
                return proc, url
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    proc.kill()
    raise SystemExit(f"error: server not ready after 300 s; log:\n{log.read_text()[-3000:]}")


def stop_server(proc: Any) -> None:
    """SIGTERM (a graceful drain), then kill if it has not exited within a minute."""
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        proc.kill()


def _percentile(values: list[float], q: float) -> float:
    import numpy as np

    return float(np.percentile(values, q)) * 1000 if values else float("nan")


async def closed_loop(url: str, bodies: list[dict[str, Any]], concurrency: int) -> Level:
    import httpx

    latencies: list[float] = []
    errors = 0
    queue = list(bodies)

    from tqdm import tqdm

    bar = tqdm(total=len(bodies), desc=f"closed c={concurrency}", unit="req", leave=False)

    async def client(c: httpx.AsyncClient) -> None:
        nonlocal errors
        while queue:
            body = queue.pop()
            t0 = time.perf_counter()
            r = await c.post("/v1/predict", json=body)
            latencies.append(time.perf_counter() - t0)
            errors += r.status_code != 200
            bar.update()

    limits = httpx.Limits(max_connections=concurrency + 4)
    async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as c:
        start = time.perf_counter()
        await asyncio.gather(*(client(c) for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    bar.close()
    return _level(f"closed c={concurrency}", concurrency, latencies, errors, seconds)


async def open_loop(url: str, bodies: list[dict[str, Any]], rate: float) -> Level:
    """Requests at a fixed rate whatever the server does (exponential gaps, seeded)."""
    import httpx

    rng = random.Random(0)
    latencies: list[float] = []
    errors = 0

    async def one(c: httpx.AsyncClient, body: dict[str, Any]) -> None:
        nonlocal errors
        t0 = time.perf_counter()
        r = await c.post("/v1/predict", json=body)
        latencies.append(time.perf_counter() - t0)
        errors += r.status_code != 200

    async with httpx.AsyncClient(
        base_url=url, timeout=300, limits=httpx.Limits(max_connections=256)
    ) as c:
        start = time.perf_counter()
        tasks = []
        for body in bodies:
            tasks.append(asyncio.create_task(one(c, body)))
            await asyncio.sleep(rng.expovariate(rate))
        await asyncio.gather(*tasks)
        seconds = time.perf_counter() - start
    return _level(f"open {rate:.1f}/s", 0, latencies, errors, seconds)


def _level(mode: str, c: int, lat: list[float], errors: int, seconds: float) -> Level:
    return Level(
        mode=mode,
        concurrency=c,
        requests=len(lat),
        errors=errors,
        seconds=round(seconds, 2),
        pred_per_s=round(len(lat) / seconds, 2),
        p50_ms=round(_percentile(lat, 50), 1),
        p95_ms=round(_percentile(lat, 95), 1),
        p99_ms=round(_percentile(lat, 99), 1),
    )


def run(args: argparse.Namespace) -> Report:
    load_before = os.getloadavg()
    histories, names = load_histories(args.data, args.history, max(args.requests, 64))
    tmp = Path(tempfile.mkdtemp(prefix="load-bench-"))
    adapter, is_random = prepare_adapter(args, names, tmp)
    from behaviorlm.manifest import AdapterManifest

    n_behaviors = len(AdapterManifest.load(adapter).vocabulary)
    print(
        f"[load-bench] adapter {adapter} ({'RANDOM weights' if is_random else 'trained'}), "
        f"{n_behaviors} behaviors, {args.history}-event histories",
        flush=True,
    )
    naive = 0.0
    if args.naive_requests:
        print(f"[load-bench] naive baseline on {args.naive_requests} requests ...", flush=True)
        naive = naive_baseline(args, adapter, histories)
    from common import machine

    report = Report(
        machine=machine(),
        adapter=str(adapter),
        adapter_is_random=is_random,
        behaviors=n_behaviors,
        history_events=args.history,
        merge=args.merge,
        batch_max_size=args.batch_max_size,
        batch_max_wait_ms=args.batch_max_wait_ms,
        naive_requests=args.naive_requests,
        naive_pred_per_s=round(naive, 6),
        threads=args.threads,
        load_average_before=load_before,
    )
    print(f"[load-bench] naive: {naive:.3f} predictions/s", flush=True)
    proc, url = start_server(args, adapter, tmp / "server.log")
    try:
        import httpx

        models = httpx.get(url + "/v1/models", timeout=30).json()
        report.served = f"{models['engine']} / {models['engine_backend']} / {models['dtype']}"
        print(f"[load-bench] served by {report.served}", flush=True)
        bodies = [{"history": h, "top_k": 5} for h in histories]
        asyncio.run(closed_loop(url, bodies[:8], 4))  # warm-up (not reported)
        for c in args.levels:
            work = [bodies[i % len(bodies)] for i in range(args.requests)]
            level = asyncio.run(closed_loop(url, work, c))
            report.levels.append(level)
            print(f"[load-bench] {level}", flush=True)
        peak = max(level.pred_per_s for level in report.levels)
        work = [bodies[i % len(bodies)] for i in range(args.requests)]
        level = asyncio.run(open_loop(url, work, peak / 2))
        report.levels.append(level)
        print(f"[load-bench] {level}", flush=True)
    finally:
        stop_server(proc)
    return report


def print_report(r: Report) -> None:
    print()
    print(f"machine: {r.machine}")
    print(
        f"adapter: {r.adapter}{' (random weights)' if r.adapter_is_random else ''}; "
        f"{r.behaviors} behaviors; {r.history_events}-event histories; merged={r.merge}; "
        f"served by {r.served}; "
        f"micro-batch <= {r.batch_max_size}, wait {r.batch_max_wait_ms} ms"
    )
    print(
        f"torch threads: {r.threads or 'default'}; machine load average before the run: "
        f"{r.load_average_before}"
    )
    print(f"naive baseline (one forward per candidate): {r.naive_pred_per_s:.4f} predictions/s")
    print(
        f"{'mode':<14}{'req':>6}{'err':>5}{'pred/s':>9}{'x naive':>9}"
        f"{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    )
    for lv in r.levels:
        speedup = lv.pred_per_s / r.naive_pred_per_s if r.naive_pred_per_s else float("nan")
        print(
            f"{lv.mode:<14}{lv.requests:>6}{lv.errors:>5}{lv.pred_per_s:>9.2f}{speedup:>9.1f}"
            f"{lv.p50_ms:>9.0f}{lv.p95_ms:>9.0f}{lv.p99_ms:>9.0f}"
        )


def write_outputs(r: Report, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "load_benchmark.json").write_text(json.dumps(asdict(r), indent=1) + "\n")
    closed = [lv for lv in r.levels if lv.concurrency > 0]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    xs = [lv.concurrency for lv in closed]
    a.plot(xs, [lv.pred_per_s for lv in closed], "o-", label="service")
    a.axhline(r.naive_pred_per_s, color="grey", ls="--", label="naive baseline")
    a.set(
        xscale="log",
        yscale="log",
        xlabel="concurrent clients",
        ylabel="predictions/s",
        title="throughput",
    )
    a.legend()
    for q in ("p50_ms", "p95_ms", "p99_ms"):
        b.plot(xs, [getattr(lv, q) for lv in closed], "o-", label=q.replace("_ms", ""))
    b.set(xscale="log", xlabel="concurrent clients", ylabel="latency (ms)", title="latency")
    b.legend()
    fig.suptitle(
        f"BehaviorLM service, SmolLM2 + {'random' if r.adapter_is_random else 'demo'} "
        f"adapter, {r.behaviors} behaviors"
    )
    fig.tight_layout()
    fig.savefig(out / "load_benchmark.png", dpi=120)


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    report = run(args)
    print_report(report)
    if args.out is not None:
        write_outputs(report, args.out)
        print(f"wrote {args.out / 'load_benchmark.json'} and load_benchmark.png")


if __name__ == "__main__":
    main()
