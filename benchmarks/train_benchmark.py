"""Training speed: our trainer against a plain transformers ``Trainer`` + peft LoRA baseline.

Same run, same machine, same samples, same model (SmolLM2-135M-Instruct, bf16 base, LoRA r=8 on
q_proj/v_proj, fp32 LoRA weights), same batch size, same objective (cross-entropy on the answer
tokens only; the KL term is off so both do the same work):

- ours: ``training.trainer.run_stage``: prompt and answer tokenised apart, batches grouped by
  length (left padding, near zero pad), the output head applied only at the answer positions
  (``logits_to_keep``).
- baseline: ``transformers.Trainer`` with a peft LoRA model, prompt+answer tokenised as one
  sequence with the prompt's labels set to -100 (the usual completion-only recipe), right
  padding by ``DataCollatorForSeq2Seq``, random batches, logits for every position.

Both train once over the same pool of ``--pool-batches x --batch-size`` samples (ours in
length-grouped batches, as in training with ``length_pool`` = the pool; the baseline in its
sampler's random order). Samples/s is measured over the steps after the first (warm-up) step;
the baseline runs first, then ours, and the load average is printed with each.

Achieved FLOP/s: the FLOPs of our training steps counted by ``torch.utils.flop_counter``
(forward + backward), divided by their measured time, as a fraction of this machine's bf16
matmul peak measured by a ``torch.matmul`` loop with the same thread count.

Run: ``.venv/bin/python benchmarks/train_benchmark.py [--data runs/data/ct-pj] [--out DIR]``
(5-8 minutes on 2 busy CPU cores; bounded by ``--pool-batches``). Without ``--data`` it prepares a
small synthetic log. Prints the figures; with ``--out`` also writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


@dataclass
class Figures:
    machine: str
    load_average: tuple[float, float, float]
    threads: int
    data: str
    batch_size: int
    timed_steps: int
    load_before_baseline: float
    load_before_ours: float
    mean_prompt_tokens: float
    ours_samples_per_s: float
    baseline_samples_per_s: float
    speedup: float
    ours_padding_fraction: float
    baseline_padding_fraction: float
    ours_tflop_per_step: float
    ours_achieved_tflops: float
    matmul_peak_tflops: float
    fraction_of_peak: float


def matmul_peak(seconds: float = 2.0, n: int = 1024) -> float:
    """bf16 matmul FLOP/s of this machine (best of a few timed loops)."""
    import torch

    a = torch.randn(n, n, dtype=torch.bfloat16)
    b = torch.randn(n, n, dtype=torch.bfloat16)
    torch.matmul(a, b)
    best = 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        t0 = time.perf_counter()
        for _ in range(4):
            torch.matmul(a, b)
        best = max(best, 4 * 2 * n**3 / (time.perf_counter() - t0))
    return best


def load_samples(data: str | None, n: int, seed: int) -> tuple[Any, list[Any], str]:
    import numpy as np

    from training.data.dataset import PreparedDataset

    if data is None:
        from training.data.pipeline import prepare_log
        from training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

        out = Path(tempfile.mkdtemp(prefix="train-bench-")) / "synth"
        ds = prepare_log(
            make_synthetic_log(300, 20_000, 60, seed=0), out, name="synthetic", **SYNTHETIC_COLUMNS
        )
        label = "synthetic (300 users, 60 behaviors)"
    else:
        ds = PreparedDataset.load(data)
        label = str(data)
    view = ds.samples("train")
    idx = np.random.default_rng(seed).choice(len(view), size=min(n, len(view)), replace=False)
    return ds.vocabulary, list(view.take(sorted(idx.tolist()))), label


def run_ours(
    base_path: Path, samples: list[Any], vocab: Any, batch: int, steps: int
) -> dict[str, Any]:
    import numpy as np
    import torch
    from torch.utils.flop_counter import FlopCounterMode
    from transformers import AutoTokenizer

    from behaviorlm.trie import encode_answer
    from training.batching import collate, encode_examples, length_grouped_batches
    from training.config import LoraSettings, StageSettings, TrainConfig
    from training.trainer import DistInfo, StageRun, build_lora_model, run_stage

    tok = AutoTokenizer.from_pretrained(str(base_path))
    codes = {n: encode_answer(tok, n) for n in vocab.names}
    examples = dict(enumerate(encode_examples(tok, samples, codes, vocab.index)))
    order = np.arange(len(examples))
    rng = np.random.default_rng(0)
    batches = length_grouped_batches(
        order, {i: e.length for i, e in examples.items()}, batch, len(order) // batch, rng
    )
    model = build_lora_model(
        base_path, LoraSettings(dropout=0.0), "bfloat16", 0, torch.device("cpu")
    )
    config = TrainConfig(log_every=1000, checkpoint_every=0)
    settings = StageSettings(steps=len(batches), batch_size=batch, kl_weight=0.0)
    root = torch.tensor(sorted({e.answer_ids[0] for e in examples.values()}))
    history = run_stage(
        model,
        StageRun("ours", settings, batches, examples, Path(tempfile.mkdtemp()) / "x.pt", 0),
        config,
        root,
        tok.pad_token_id or 0,
        DistInfo(),
        torch.device("cpu"),
        resume=False,
    )
    timed = history[1:]  # the first step warms up allocators and kernels
    seconds = sum(h["seconds"] for h in timed)
    # FLOPs of one representative step (forward + backward), counted, not estimated
    from training.losses import answer_nll, forward_answer_logits

    model.train()
    flops = []
    for b in batches[1:3]:
        bt = collate([examples[i] for i in b], tok.pad_token_id or 0)
        with FlopCounterMode(display=False) as counter:
            answer_nll(forward_answer_logits(model, bt), bt).backward()
        model.zero_grad(set_to_none=True)
        flops.append(counter.get_total_flops() / len(b))
    flop_per_sample = float(np.mean(flops))
    n = sum(h["samples"] for h in timed)
    return {
        "samples_per_s": n / seconds,
        "padding_fraction": sum(h["padding"] for h in timed)
        / max(1, sum(h["tokens"] + h["padding"] for h in timed)),
        "flop_per_step": flop_per_sample * batch,
        "achieved_flops": flop_per_sample * n / seconds,
        "prompt_tokens": float(np.mean([len(e.prompt_ids) for e in examples.values()])),
        "steps": len(timed),
    }


def run_baseline(base_path: Path, samples: list[Any], batch: int, steps: int) -> dict[str, Any]:
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import (
        AutoModelForCausalLM,
        AutoTokenizer,
        DataCollatorForSeq2Seq,
        Trainer,
        TrainerCallback,
        TrainingArguments,
    )

    from behaviorlm.prompt import render_sample

    tok = AutoTokenizer.from_pretrained(str(base_path))
    if tok.pad_token_id is None:
        tok.pad_token = tok.eos_token
    rows = []
    for s in samples:
        prompt, answer = render_sample(s)
        assert answer is not None
        ids = tok(prompt + answer)["input_ids"]
        n_prompt = len(tok(prompt)["input_ids"])
        rows.append(
            {
                "input_ids": ids,
                "attention_mask": [1] * len(ids),
                "labels": [-100] * n_prompt + ids[n_prompt:],
            }
        )
    base = AutoModelForCausalLM.from_pretrained(str(base_path), dtype=torch.bfloat16)
    torch.manual_seed(0)
    model = get_peft_model(
        base,
        LoraConfig(
            r=8,
            lora_alpha=16,
            lora_dropout=0.0,
            target_modules=["q_proj", "v_proj"],
            task_type="CAUSAL_LM",
        ),
    )
    times: list[float] = []
    pads: list[tuple[int, int]] = []

    class Timer(TrainerCallback):
        t0 = 0.0

        def on_step_begin(self, *args: Any, **kwargs: Any) -> None:
            Timer.t0 = time.perf_counter()

        def on_step_end(self, *args: Any, **kwargs: Any) -> None:
            times.append(time.perf_counter() - Timer.t0)

    collator = DataCollatorForSeq2Seq(tok, padding=True, label_pad_token_id=-100)

    def collate(features: list[dict[str, Any]]) -> dict[str, Any]:
        out = collator(features)
        mask = out["attention_mask"]
        pads.append((int((mask == 0).sum()), int(mask.numel())))
        return out

    args = TrainingArguments(
        output_dir=tempfile.mkdtemp(prefix="hf-trainer-"),
        per_device_train_batch_size=batch,
        max_steps=len(rows) // batch,
        learning_rate=1e-3,
        logging_steps=1000,
        save_strategy="no",
        report_to=[],
        use_cpu=True,
        dataloader_num_workers=0,
        seed=0,
        disable_tqdm=True,
    )
    Trainer(
        model=model, args=args, train_dataset=rows, data_collator=collate, callbacks=[Timer()]
    ).train()
    timed = times[1:]
    return {
        "samples_per_s": batch * len(timed) / sum(timed),
        "padding_fraction": sum(p for p, _ in pads) / max(1, sum(t for _, t in pads)),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="prepared dataset (default: synthetic)")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument(
        "--pool-batches",
        type=int,
        default=12,
        help="batches in the shared sample pool (each trainer runs them all)",
    )
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0 = default)")
    parser.add_argument("--out", type=Path, default=None, help="write JSON + PNG here")
    parser.add_argument("--base-model", default="smollm2", help="smollm2 or a model directory")
    args = parser.parse_args()

    import platform

    import torch

    from behaviorlm.base_model import resolve_base_model

    if args.threads:
        torch.set_num_threads(args.threads)
    base = resolve_base_model(args.base_model)
    vocab, samples, label = load_samples(args.data, args.batch_size * args.pool_batches, 0)
    print(
        f"[bench] {len(samples)} samples from {label}; threads {torch.get_num_threads()}",
        flush=True,
    )
    peak = matmul_peak()
    steps = args.pool_batches
    load_baseline = os.getloadavg()[0]
    baseline = run_baseline(base.path, samples, args.batch_size, steps)
    print(
        f"[bench] transformers Trainer: {baseline['samples_per_s']:.2f} samples/s "
        f"(load {load_baseline:.1f})",
        flush=True,
    )
    load_ours = os.getloadavg()[0]
    ours = run_ours(base.path, samples, vocab, args.batch_size, steps)
    print(f"[bench] ours: {ours['samples_per_s']:.2f} samples/s (load {load_ours:.1f})", flush=True)
    peak_after = matmul_peak()
    peak = max(peak, peak_after)
    fig = Figures(
        machine=f"{platform.machine()} {os.cpu_count()} cores",
        load_average=os.getloadavg(),
        threads=torch.get_num_threads(),
        data=label,
        batch_size=args.batch_size,
        timed_steps=steps - 1,
        load_before_baseline=round(load_baseline, 2),
        load_before_ours=round(load_ours, 2),
        mean_prompt_tokens=round(ours["prompt_tokens"], 1),
        ours_samples_per_s=round(ours["samples_per_s"], 3),
        baseline_samples_per_s=round(baseline["samples_per_s"], 3),
        speedup=round(ours["samples_per_s"] / baseline["samples_per_s"], 2),
        ours_padding_fraction=round(ours["padding_fraction"], 4),
        baseline_padding_fraction=round(baseline["padding_fraction"], 4),
        ours_tflop_per_step=round(ours["flop_per_step"] / 1e12, 3),
        ours_achieved_tflops=round(ours["achieved_flops"] / 1e12, 4),
        matmul_peak_tflops=round(peak / 1e12, 4),
        fraction_of_peak=round(ours["achieved_flops"] / peak, 3),
    )
    print(json.dumps(asdict(fig), indent=1))
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_benchmark.json").write_text(json.dumps(asdict(fig), indent=1) + "\n")
        _plot(fig, args.out / "train_benchmark.png")


def _plot(fig: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    f, ax = plt.subplots(figsize=(5, 3.2))
    bars = ax.bar(
        ["ours", "transformers Trainer\n+ peft"],
        [fig.ours_samples_per_s, fig.baseline_samples_per_s],
        color=["C0", "C7"],
    )
    ax.bar_label(bars, fmt="%.2f")
    ax.set_ylabel("training samples / s")
    ax.set_title(f"SmolLM2 LoRA, batch {fig.batch_size}, {fig.threads} threads (x{fig.speedup})")
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)


if __name__ == "__main__":
    main()
