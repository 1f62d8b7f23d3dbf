"""CPU engine candidates side by side (issue 34): one prediction's latency and where it goes,
batch-32 throughput, and agreement with the reference engine, on the same adapter and prompts.

Candidates (each runs in its own subprocess, so ISA caps and memory do not leak between them):

- ``torch-fp32``: the transformers engine in fp32 with the adapter unmerged: what ``make serve``
  runs today on a CPU without native bf16 (``dtype: auto``). The reference for agreement.
- ``torch-fp32-merged``: the same with the adapter merged into the weights.
- ``torch-bf16-merged``: bf16, merged (what a CPU with native bf16 serves); skipped where the
  CPU has no bf16 kernels.
- ``torch-int8``: merged, then ``torch.ao.quantization.quantize_dynamic`` on every decoder
  linear layer (int8 weights per channel, int8 activations per tensor, fbgemm).
- ``openvino-fp32`` / ``openvino-int8``: the merged decoder converted with
  ``openvino.convert_model`` (only the decoder: the readout stays the engine's), fp32; int8 =
  ``nncf.compress_weights`` INT8_ASYM plus the CPU plugin's dynamic activation quantisation
  (groups of 32). Only when ``openvino`` and ``nncf`` are installed (``pip install openvino
  nncf``: not a project dependency; rows are skipped otherwise and the output says so).

Per candidate: p50 / p90 of one prediction (``score_batch`` of one request, the service's c=1
work without HTTP), split into tokenisation, the decoder forward and the rest (readout, softmax
over the vocabulary, result); predictions/s at batch 32; and over ``--agreement-prompts`` real
histories: top-1 agreement, top-5 agreement (mean share of the reference's top 5 that the
candidate's top 5 holds) and the largest absolute probability difference against
``torch-fp32``.

``--emulate-avx2`` caps torch's kernels at AVX2 (``ATEN_CPU_CAPABILITY=avx2``,
``ONEDNN_MAX_CPU_ISA=AVX2``, ``MKL_ENABLE_INSTRUCTIONS=AVX2``, ``FBGEMM_ENABLE_INSTRUCTIONS=AVX2``)
to approximate a CPU without AVX-512 or native bf16 on one that has them. It is an emulation:
the clock, cores and caches stay this machine's. OpenVINO's oneDNN follows the cap (its int8
layers then fail to build: a finding for AVX2-only CPUs), though its own JIT kernels may still
read the CPU's flags. The output names the machine's flags beside each figure.

Run: ``.venv/bin/python benchmarks/cpu_engine_benchmark.py [--emulate-avx2] [--out DIR]``
(about 10 minutes on 2 cores with the defaults).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common import base_model, cpu_flags, cpu_model
from scoring_benchmark import DEFAULT_DATA, load_workload

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_ADAPTER = ROOT / "models" / "ct-pj-demo" / "stage2"
CANDIDATES = (
    "torch-fp32",
    "torch-fp32-merged",
    "torch-bf16-merged",
    "torch-int8",
    "openvino-fp32",
    "openvino-int8",
)
REFERENCE = "torch-fp32"
AVX2_CAPS = {
    "ATEN_CPU_CAPABILITY": "avx2",
    "ONEDNN_MAX_CPU_ISA": "AVX2",
    "MKL_ENABLE_INSTRUCTIONS": "AVX2",
    "FBGEMM_ENABLE_INSTRUCTIONS": "AVX2",
}


@dataclass
class Row:
    candidate: str
    skipped: str | None = None  # why it did not run
    p50_ms: float = 0.0
    p90_ms: float = 0.0
    tokenise_ms: float = 0.0  # p50 of each part of one prediction
    forward_ms: float = 0.0
    rest_ms: float = 0.0
    batch32_pred_per_s: float = 0.0
    top1_agreement: float | None = None
    top5_agreement: float | None = None
    max_prob_diff: float | None = None
    prompt_tokens: float = 0.0  # mean over the timed prompts
    forward_gflop: float = 0.0  # the decoder's linear layers for one mean prompt


PEAK = "_matmul-peak"  # internal child: this CPU's fp32 matmul rate, for the floor


def matmul_peak(threads: int, tokens: int) -> dict[str, float]:
    """fp32 GFLOP/s of torch matmuls here: at the decoder's shapes for one prompt (tokens x
    576 by 576 x 1536, SmolLM2's MLP) and at 2048 x 2048 (near the CPU's peak)."""
    import torch

    torch.set_num_threads(threads)
    rates: dict[str, float] = {}
    for key, (m, k, n) in {
        "decoder_shape": (tokens, 576, 1536),
        "square_2048": (2048,) * 3,
    }.items():
        a, b = torch.randn(m, k), torch.randn(k, n)
        for _ in range(3):
            a @ b
        count, start = 0, time.perf_counter()
        while time.perf_counter() - start < 3.0:
            a @ b
            count += 1
        rates[key] = 2 * m * k * n * count / (time.perf_counter() - start) / 1e9
    return rates


def decoder_linear_params(model: Any) -> int:
    """Weights of the decoder's linear layers (what a forward multiplies per token; the
    embeddings are a lookup and the readout reads a few rows)."""
    import torch

    layers = model.model.layers
    return sum(m.weight.numel() for m in layers.modules() if isinstance(m, torch.nn.Linear))


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--adapter", type=Path, default=DEFAULT_ADAPTER, help="adapter directory")
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="Context Trails checkins.csv.gz")
    p.add_argument(
        "--candidates",
        default=",".join(CANDIDATES),
        help=f"comma-separated subset of {', '.join(CANDIDATES)} ({REFERENCE} always runs)",
    )
    p.add_argument("--latency-requests", type=int, default=40, help="timed single predictions")
    p.add_argument(
        "--agreement-prompts", type=int, default=320, help="prompts scored for agreement"
    )
    p.add_argument("--threads", type=int, default=2, help="torch / OpenVINO threads")
    p.add_argument(
        "--emulate-avx2", action="store_true", help="cap torch's kernels at AVX2 (see above)"
    )
    p.add_argument("--out", type=Path, default=None, help="write cpu_engine_benchmark.json here")
    p.add_argument("--child", default=None, help=argparse.SUPPRESS)  # internal: one candidate
    p.add_argument("--child-out", type=Path, default=None, help=argparse.SUPPRESS)
    p.add_argument("--tokens", type=int, default=154, help=argparse.SUPPRESS)  # for the peak child
    return p.parse_args(argv)


# ---- one candidate (child process) --------------------------------------------------------


def openvino_forward(model: Any, threads: int, int8: bool) -> Any:
    """A ``hidden_states`` replacement: the service's OpenVINO decoder, fp32 or (``int8``)
    with NNCF's INT8_ASYM weights and the CPU plugin's dynamic activation quantisation."""
    from behaviorlm.scoring.openvino_decoder import OpenVINODecoder

    if not int8:
        return OpenVINODecoder(model, threads)
    import nncf

    return OpenVINODecoder(
        model,
        threads,
        transform=lambda g: nncf.compress_weights(g, mode=nncf.CompressWeightsMode.INT8_ASYM),
        config={"DYNAMIC_QUANTIZATION_GROUP_SIZE": 32},
    )


def write_row(out: Path, row: Row) -> None:
    """A child's answer to the parent: ``<out>.json`` (its probabilities go to ``<out>.npy``)."""
    out.with_suffix(".json").write_text(json.dumps(asdict(row)))


def run_child(args: argparse.Namespace) -> None:
    import numpy as np
    import torch

    from behaviorlm.manifest import AdapterManifest
    from behaviorlm.scoring import readout
    from behaviorlm.scoring.base import AdapterSpec, ScoreRequest
    from behaviorlm.scoring.transformers_engine import TransformersEngine

    name = args.child
    torch.set_num_threads(args.threads)
    out: Path = args.child_out
    if name == PEAK:
        out.with_suffix(".json").write_text(json.dumps(matmul_peak(args.threads, args.tokens)))
        return
    if name == "torch-bf16-merged" and not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        write_row(out, Row(name, "no bf16 kernels"))
        return
    if name.startswith("openvino") and not (
        importlib.util.find_spec("openvino") and importlib.util.find_spec("nncf")
    ):
        write_row(out, Row(name, "openvino / nncf not installed"))
        return
    manifest = AdapterManifest.load(args.adapter)
    names = tuple(e.name for e in manifest.vocabulary)
    engine = TransformersEngine(
        base_model("smollm2"),
        dtype="bfloat16" if "bf16" in name else "float32",
        merge=name != "torch-fp32",
        batch_size=32,
    )
    engine.load_adapter(AdapterSpec("bench", args.adapter, manifest))
    if name == "torch-int8":
        from torch.ao.quantization import per_channel_dynamic_qconfig, quantize_dynamic

        engine._model.model = quantize_dynamic(
            engine._model.model, {torch.nn.Linear: per_channel_dynamic_qconfig}, torch.qint8
        )
    forward = readout.hidden_states
    if name.startswith("openvino"):
        forward = openvino_forward(engine._model, args.threads, int8=name == "openvino-int8")
        readout.hidden_states = forward  # the engine's readout, an OpenVINO decoder below it

    n = max(args.agreement_prompts, args.latency_requests + 4)
    _, prompts = load_workload(args.data, len(names), manifest.history_events, n)
    requests = [ScoreRequest(p, names, "bench") for p in prompts]
    for r in requests[:4]:  # warm-up: first calls allocate and pick kernels
        engine.score_batch([r])
    total, tokenise, fwd, lengths = [], [], [], []
    pad = engine._pad_id
    for r in requests[4 : 4 + args.latency_requests]:
        t0 = time.perf_counter()
        engine.score_batch([r])
        t1 = time.perf_counter()
        ids = engine.encoder.encode(r.prompt)
        t2 = time.perf_counter()
        lengths.append(len(ids))
        with torch.no_grad():
            forward(engine._model, readout.pad_batch([ids], pad, "cpu"))
        t3 = time.perf_counter()
        total.append(t1 - t0)
        tokenise.append(t2 - t1)
        fwd.append(t3 - t2)
    start = time.perf_counter()
    results = engine.score_batch(requests[: args.agreement_prompts])
    seconds = time.perf_counter() - start
    np.save(out.with_suffix(".npy"), np.stack([res.probs for res in results]))
    total.sort()
    row = Row(
        name,
        p50_ms=1000 * statistics.median(total),
        p90_ms=1000 * total[int(0.9 * (len(total) - 1))],
        tokenise_ms=1000 * statistics.median(tokenise),
        forward_ms=1000 * statistics.median(fwd),
        batch32_pred_per_s=len(results) / seconds,
        prompt_tokens=statistics.mean(lengths),
        forward_gflop=2 * decoder_linear_params(engine._model) * statistics.mean(lengths) / 1e9,
    )
    row.rest_ms = max(0.0, row.p50_ms - row.tokenise_ms - row.forward_ms)
    write_row(out, row)


# ---- the parent: candidates one after the other, then agreement ----------------------------


def agreement(reference: Any, probs: Any) -> tuple[float, float, float]:
    import numpy as np

    ref5 = np.argsort(-reference, axis=1)[:, :5]
    got5 = np.argsort(-probs, axis=1)[:, :5]
    top1 = float(np.mean(ref5[:, 0] == got5[:, 0]))
    top5 = float(np.mean([len(set(a) & set(b)) / 5 for a, b in zip(ref5, got5, strict=True)]))
    return top1, top5, float(np.max(np.abs(reference - probs)))


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    import numpy as np

    wanted = [c.strip() for c in args.candidates.split(",") if c.strip()]
    unknown = [c for c in wanted if c not in CANDIDATES]
    if unknown:
        raise SystemExit(f"error: --candidates: unknown {unknown}; choose from {CANDIDATES}")
    order = [REFERENCE] + [c for c in wanted if c != REFERENCE]
    env = dict(os.environ, **(AVX2_CAPS if args.emulate_avx2 else {}))
    rows: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in order:
            target = Path(tmp) / name
            print(f"[cpu-bench] {name} ...", file=sys.stderr, flush=True)
            cmd = [sys.executable, __file__, *sys.argv[1:], "--child", name, "--child-out"]
            run = subprocess.run([*cmd, str(target)], env=env, stderr=subprocess.PIPE, text=True)
            if run.returncode != 0:
                if name == REFERENCE:
                    raise SystemExit(f"error: the reference {name} failed:\n{run.stderr[-3000:]}")
                # A candidate that cannot run on this CPU is a finding, not a crash.
                lines = [x for x in run.stderr.splitlines() if x.strip()]
                why = next((x for x in reversed(lines) if "Exception" in x or "Error" in x), "")
                rows.append(Row(name, f"failed: {why.strip()[:200]}"))
                continue
            rows.append(Row(**json.loads(target.with_suffix(".json").read_text())))
        tokens = round(rows[0].prompt_tokens)
        print("[cpu-bench] fp32 matmul rate ...", file=sys.stderr, flush=True)
        peak_out = Path(tmp) / "peak"
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", PEAK, "--tokens", str(tokens)]
        subprocess.run([*cmd, "--child-out", str(peak_out)], env=env, check=True)
        peak = json.loads(peak_out.with_suffix(".json").read_text())
        reference = np.load(Path(tmp) / f"{REFERENCE}.npy")
        for row in rows:
            probs_file = Path(tmp) / f"{row.candidate}.npy"
            if row.skipped is None and probs_file.exists():
                row.top1_agreement, row.top5_agreement, row.max_prob_diff = agreement(
                    reference, np.load(probs_file)
                )
    return {
        "cpu": cpu_model(),
        "flags": cpu_flags(),
        "emulated_avx2": args.emulate_avx2,
        "threads": args.threads,
        "adapter": str(args.adapter),
        "agreement_prompts": args.agreement_prompts,
        "latency_requests": args.latency_requests,
        "date": time.strftime("%Y-%m-%d"),
        "matmul_gflops": peak,
        "rows": [asdict(r) for r in rows],
    }


def print_report(report: dict[str, Any]) -> None:
    caps = " (torch capped at AVX2: emulated)" if report["emulated_avx2"] else ""
    print(f"{report['cpu']}, flags {' '.join(report['flags'])}{caps}, {report['threads']} threads")
    print(
        "| candidate | p50 ms | p90 ms | tokenise / forward / rest ms | batch-32 pred/s | "
        f"top-1 / top-5 agreement, max |dp| ({report['agreement_prompts']} prompts) |"
    )
    print("|---|---|---|---|---|---|")
    for r in report["rows"]:
        if r["skipped"]:
            print(f"| {r['candidate']} | skipped: {r['skipped']} | | | | |")
            continue
        print(
            f"| {r['candidate']} | {r['p50_ms']:.0f} | {r['p90_ms']:.0f} | "
            f"{r['tokenise_ms']:.1f} / {r['forward_ms']:.0f} / {r['rest_ms']:.1f} | "
            f"{r['batch32_pred_per_s']:.2f} | {r['top1_agreement']:.3f} / "
            f"{r['top5_agreement']:.3f}, {r['max_prob_diff']:.4f} |"
        )
    ref = report["rows"][0]
    peak = report["matmul_gflops"]
    gflop = ref["forward_gflop"]
    print(
        f"fp32 matmul here: {peak['decoder_shape']:.0f} GFLOP/s at the decoder's shape, "
        f"{peak['square_2048']:.0f} at 2048^2. One prompt ({ref['prompt_tokens']:.0f} tokens) "
        f"is {gflop:.1f} GFLOP of decoder matmuls: an exact fp32 forward takes at least "
        f"{1000 * gflop / peak['square_2048']:.0f} ms at the 2048^2 rate, "
        f"{1000 * gflop / peak['decoder_shape']:.0f} ms at the decoder-shape rate; the "
        f"reference's forward runs at {gflop / ref['forward_ms'] * 1000:.0f} GFLOP/s."
    )


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    if args.child:
        sys.path.insert(0, str(ROOT))
        run_child(args)
        return
    if not args.adapter.joinpath("manifest.json").exists():
        raise SystemExit(f"error: --adapter {args.adapter}: no manifest.json there")
    if not args.data.exists():
        raise SystemExit(f"error: --data {args.data}: no such file")
    report = run_all(args)
    print_report(report)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "cpu_engine_benchmark.json").write_text(json.dumps(report, indent=1))


if __name__ == "__main__":
    main()
