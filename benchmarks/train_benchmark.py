"""Training speed: packed rows (every event a target) against one prompt per sample.

Same machine, model (SmolLM2-135M-Instruct, bf16 base, the ``cpu`` preset's LoRA), data, token
budget per step and objective (label-word cross-entropy, KL off so both do the same work),
through the real trainer (``behaviorlm.training.trainer.run_stage``):

- packed: the rows training uses (``behaviorlm/training/packing.py``: up to ``--chunk``
  consecutive events of a user, every target of the row read in the same forward);
- one prompt per sample: a row per target holding its K history events and its own head (what
  the answer-tree trainer fed the model, with the label-word head instead of answer tokens).

Targets/s is measured over the steps after the first (warm-up) one. The answer-tree trainer that
packing replaced was measured on the same data (Context Trails PJ, local times, no weather) and
machine before it was removed, with the benchmark of its own commit (34c7a83):
``benchmarks/baselines/answer-tree-train.json``, 3.74 samples/s at 2 threads, 8 samples of 122
prompt tokens per step (``answer-tree-train-weather.json``: 2.01 on the weather variant, 238
tokens); the ratio to it is printed too.

Run: ``.venv/bin/python benchmarks/train_benchmark.py --data runs/data/ct-pj-localtime``
(about 5 minutes on 2 CPU cores). Prints the figures; ``--out DIR`` also writes JSON and a PNG.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from behaviorlm.dtypes import DTYPE_CHOICES

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import base_model, load_average, machine

BASELINE = Path(__file__).resolve().parent / "baselines" / "answer-tree-train.json"


@dataclass
class Figures:
    machine: str
    load_average: tuple[float, float, float]
    threads: int
    dtype: str
    data: str
    batch_tokens: int
    chunk_events: int
    steps_timed: int
    packed_targets_per_s: float
    packed_tokens_per_s: float
    packed_tokens_per_target: float
    single_targets_per_s: float
    single_tokens_per_s: float
    single_tokens_per_target: float
    speedup_vs_single: float
    answer_tree_samples_per_s: float | None
    speedup_vs_answer_tree: float | None


def load_data(path: str | None) -> Any:
    from behaviorlm.training.stages import TrainingData

    if path is not None:
        return TrainingData.from_prepared(path)
    from behaviorlm.training.data.config import PrepareConfig
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log

    out = Path(tempfile.mkdtemp()) / "synthetic"
    prepare_log(
        make_synthetic_log(2000, 60_000, 200, seed=0),
        out,
        PrepareConfig(history_len=10),
        name="synthetic",
        **SYNTHETIC_COLUMNS,
    )
    return TrainingData.from_prepared(out)


def one_per_row(data: Any, n: int, seed: int) -> list[Any]:
    """Plans of one target each (its own K-event history), for ``n`` random targets."""
    import numpy as np

    from behaviorlm.training.packing import RowPlan

    rng = np.random.default_rng(seed)
    picks = rng.choice(len(data.readouts), size=min(n, len(data.readouts)), replace=False)
    return [RowPlan(int(data.readouts.starts[i]), np.asarray([i])) for i in np.sort(picks)]


def measure(
    model: Any, head: Any, rows: Any, data: Any, args: argparse.Namespace, tag: str, out: Path
) -> dict[str, float]:
    import numpy as np

    from behaviorlm.errors import InputError
    from behaviorlm.training.batching import plan_batches
    from behaviorlm.training.config import StageSettings, load_config
    from behaviorlm.training.trainer import DistInfo, StageRun, run_stage

    overrides = [f"threads={args.threads}", "checkpoint_every=0", f"dtype={args.dtype}"]
    config = load_config("cpu", overrides)
    settings = StageSettings(steps=args.steps, batch_tokens=args.batch_tokens, warmup_steps=1)
    rng = np.random.default_rng(0)
    batches = plan_batches(
        rows.lengths, np.arange(len(rows)), args.batch_tokens, 16, args.steps, rng
    )
    if not batches:
        raise InputError("no batches")
    tokenizer = head["encoder"].tokenizer
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
    history = run_stage(
        model,
        StageRun(
            name=tag,
            settings=settings,
            batches=batches,
            rows=rows,
            labels=data.readouts.labels,
            weights=np.ones(len(data.readouts)),
            head=head["tensors"],
            checkpoint=out / f"{tag}.pt",
            seed=0,
            pad_id=int(pad),
        ),
        config,
        DistInfo(),
        model.device,
        resume=False,
    )
    timed = history[1:]
    seconds = sum(h["seconds"] for h in timed)
    targets = sum(h["readouts"] for h in timed)
    tokens = sum(h["tokens"] for h in timed)
    print(f"[bench] {tag}: {targets / seconds:.2f} targets/s, {tokens / seconds:.0f} tokens/s")
    return {
        "targets_per_s": targets / seconds,
        "tokens_per_s": tokens / seconds,
        "tokens_per_target": tokens / max(targets, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", default=None, help="prepared dataset (default: synthetic)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads")
    parser.add_argument(
        "--dtype",
        default="auto",
        choices=DTYPE_CHOICES,
        help="base model dtype (auto: bf16 where this CPU computes it natively, else fp32)",
    )
    parser.add_argument("--batch-tokens", type=int, default=4096, help="padded tokens per step")
    parser.add_argument("--chunk", type=int, default=32, help="events per packed row")
    parser.add_argument("--steps", type=int, default=12, help="steps per mode (first: warm-up)")
    parser.add_argument("--base-model", default="smollm2", help="smollm2 or a model directory")
    parser.add_argument("--out", type=Path, default=None, help="write JSON + PNG here")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import torch
    from transformers import AutoTokenizer

    from behaviorlm.labels import LabelHead
    from behaviorlm.prompt import PieceEncoder
    from behaviorlm.training.config import load_config
    from behaviorlm.training.losses import HeadTensors
    from behaviorlm.training.packing import encode_rows, pack
    from behaviorlm.training.tuning import build_lora_model

    torch.set_num_threads(args.threads)
    data = load_data(args.data)
    base = base_model(args.base_model)
    encoder = PieceEncoder(AutoTokenizer.from_pretrained(str(base.path)))
    lora = load_config("cpu").lora
    from behaviorlm.dtypes import resolve_dtype_here

    args.dtype = resolve_dtype_here(args.dtype, where="--dtype")
    model = build_lora_model(base.path, lora, args.dtype, 0, torch.device("cpu"))
    label_head = LabelHead.from_encoder(encoder, data.vocabulary.names)
    tensors = HeadTensors.of(model, label_head, model.device, data.vocabulary.counts)
    head = {"encoder": encoder, "tensors": tensors}
    packed = pack(encoder, data.table, data.readouts, args.chunk)
    single = encode_rows(encoder, data.table, data.readouts, one_per_row(data, 4000, 0))
    tmp = Path(tempfile.mkdtemp())
    print(
        f"[bench] {args.data or 'synthetic'}; threads {args.threads}; {args.dtype}; "
        f"load {load_average()}"
    )
    a = measure(model, head, single, data, args, "one-prompt-per-sample", tmp)
    b = measure(model, head, packed, data, args, "packed", tmp)
    old = json.loads(BASELINE.read_text()) if BASELINE.exists() else None
    tree = float(old["ours_samples_per_s"]) if old else None
    fig = Figures(
        machine=machine(),
        load_average=load_average(),
        threads=args.threads,
        dtype=args.dtype,
        data=str(args.data or "synthetic"),
        batch_tokens=args.batch_tokens,
        chunk_events=args.chunk,
        steps_timed=args.steps - 1,
        packed_targets_per_s=round(b["targets_per_s"], 2),
        packed_tokens_per_s=round(b["tokens_per_s"], 1),
        packed_tokens_per_target=round(b["tokens_per_target"], 1),
        single_targets_per_s=round(a["targets_per_s"], 2),
        single_tokens_per_s=round(a["tokens_per_s"], 1),
        single_tokens_per_target=round(a["tokens_per_target"], 1),
        speedup_vs_single=round(b["targets_per_s"] / a["targets_per_s"], 2),
        answer_tree_samples_per_s=tree,
        speedup_vs_answer_tree=round(b["targets_per_s"] / tree, 2) if tree else None,
    )
    print(json.dumps(asdict(fig), indent=1))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "train_benchmark.json").write_text(json.dumps(asdict(fig), indent=1) + "\n")
        _plot(fig, args.out / "train_benchmark.png")


def _plot(fig: Figures, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = ["answer tree\n(old trainer)", "one prompt\nper sample", "packed rows"]
    values = [fig.answer_tree_samples_per_s or 0.0, fig.single_targets_per_s]
    values.append(fig.packed_targets_per_s)
    f, ax = plt.subplots(figsize=(5, 3.5))
    ax.bar(labels, values, color=["#999", "#69c", "#2a7"])
    ax.set_ylabel("training targets / s")
    ax.set_title(f"{fig.threads} threads, {fig.batch_tokens} tokens per step")
    for i, v in enumerate(values):
        ax.text(i, v, f"{v:.1f}", ha="center", va="bottom")
    f.tight_layout()
    f.savefig(path, dpi=100)
    plt.close(f)


if __name__ == "__main__":
    main()
