"""``behaviorlm train``: train LoRA adapters with a strategy on a prepared dataset."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from behaviorlm.training.config import STRATEGIES


def _wrapped(line: str, width: int = 100) -> str:
    import textwrap

    indent = " " * (len(line) - len(line.lstrip()) + 4)
    return "\n".join(textwrap.wrap(line, width, subsequent_indent=indent))


def epilog() -> str:
    from behaviorlm.training.config import config_sections

    return (
        "overrides (key=value, dotted keys, YAML values), e.g.:\n"
        "  stage1.steps=100 stage1.kl_weight=0 subset.per_class_max=50 lora.r=16 threads=1\n"
        "  lora.target_modules=[q_proj,k_proj,v_proj,o_proj]\n"
        "keys (behaviorlm/training/config.py and docs/training.md say what each does):\n"
        + "\n".join(_wrapped(f"  {line}") for line in config_sections())
        + "\n\nmulti-GPU / multi-node: torchrun --nproc_per_node=N -m behaviorlm.training.cli "
        "... (or accelerate launch);\nbatch_tokens is the global batch, its rows split across "
        "processes.\n"
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "train",
        help="train LoRA adapters (behaviorlm two-stage, sft or balanced)",
        description=(
            "Train a LoRA adapter on a prepared dataset. 'behaviorlm' runs stage 1 (anchor "
            "behaviors, KL knowledge preservation), scores difficulty with the stage-1 "
            "adapter, then stage 2 (class-balanced, difficulty-aware subset) continuing the "
            "same adapter; 'sft' trains on all samples; 'balanced' on the class-balanced "
            "subset at random. Each stage saves a peft adapter (tuning=full: the whole "
            "model) with manifest.json and config.yaml under --out."
        ),
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--strategy",
        choices=STRATEGIES,
        default="behaviorlm",
        help="training strategy (default: behaviorlm)",
    )
    parser.add_argument(
        "--data",
        required=True,
        type=Path,
        help="prepared dataset directory (from `behaviorlm data prepare`); its train split",
    )
    parser.add_argument(
        "--preset",
        default="cpu",
        help="config preset: tiny (tests), cpu (SmolLM2 on a small CPU), gpu, or a YAML "
        "file (default: cpu)",
    )
    parser.add_argument(
        "--base-model",
        default="smollm2",
        help="'smollm2' (embedded default), a local Hugging Face model directory or a hub id",
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=None,
        help="run directory (default: models/<dataset name>-<strategy>)",
    )
    parser.add_argument(
        "--name", default=None, help="run name recorded in the manifests (default: --out's name)"
    )
    parser.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out: skip finished stages, continue an unfinished one from "
        "its last checkpoint (config must be the same)",
    )
    parser.add_argument(
        "--stage1-from",
        type=Path,
        default=None,
        metavar="RUN",
        help="strategy behaviorlm: start from the finished stage 1 and difficulty scores of run "
        "directory RUN (same seed, dtype, lora, stage1, difficulty, chunk_events, length_pool), "
        "so stage 2 can be retried with other stage2.* / subset.* settings in a new --out",
    )
    parser.add_argument(
        "overrides",
        nargs="*",
        metavar="KEY=VALUE",
        help="config overrides, e.g. stage1.steps=100 (see below)",
    )


def run(args: argparse.Namespace) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    from behaviorlm.base_model import resolve_base_model
    from behaviorlm.errors import InputError
    from behaviorlm.training.config import load_config
    from behaviorlm.training.stages import TrainingData, reuse_stage1, train

    config = load_config(args.preset, args.overrides).with_dtype_resolved()
    data = TrainingData.from_prepared(args.data)
    out = args.out or Path("models") / f"{data.info.get('name', args.data.name)}-{args.strategy}"
    base = resolve_base_model(args.base_model)
    resume = args.resume
    if args.stage1_from is not None:
        if args.strategy != "behaviorlm" or args.resume:
            raise InputError("--stage1-from: only with --strategy behaviorlm and without --resume")
        reuse_stage1(args.stage1_from, out, config, data)
        resume = True  # stage 1 is finished in --out now; stage 2 starts fresh
    result = train(args.strategy, data, base, config, out, run_name=args.name, resume=resume)
    for stage, path in result.adapters.items():
        print(f"{stage}: {path}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """``python -m behaviorlm.training.cli`` (what torchrun launches): ``behaviorlm train``."""
    import logging
    import sys

    from behaviorlm.errors import BehaviorLMError

    parser = argparse.ArgumentParser(
        prog="behaviorlm train",
        epilog=epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return run(args)
    except BehaviorLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    raise SystemExit(main())
