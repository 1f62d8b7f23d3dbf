"""``behaviorlm eval``: evaluate systems on a prepared dataset, or compare saved reports."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from behaviorlm.errors import InputError


def _taus(text: str) -> tuple[float, ...]:
    if not text.strip():
        return ()
    try:
        return tuple(float(t) for t in text.split(","))
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected numbers like 0.5,1, got {text!r}") from exc


def _systems(text: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in text.split(",") if s.strip())


def register(sub: Any) -> None:
    from training.evaluation import GROUPS, KNOWN

    p = sub.add_parser(
        "eval",
        help="evaluate systems (classical, SASRec, zero-shot LLM, adapters) or compare reports",
        description=(
            "Run systems on the same test samples of a prepared dataset and write report.json, "
            "report.md and PNG plots (overall / anchor / tail metrics, per-behavior F1 against "
            "training frequency, reliability diagrams). With --compare, merge existing reports "
            "into one table instead."
        ),
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--data", type=Path, help="prepared dataset directory (behaviorlm data prepare)")
    p.add_argument("--out", type=Path, help="report directory to write (created; resumable)")
    p.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=[],
        help="training run directories models/<run>; every <run>/<stage>/manifest.json "
        "is evaluated as a system (needs 'adapters' in --systems)",
    )
    p.add_argument(
        "--systems",
        type=_systems,
        default="classical,sasrec,adapters",
        help=f"comma-separated systems: {', '.join(KNOWN)}, or the group "
        f"{', '.join(GROUPS)} ({', '.join(GROUPS['classical'])})",
    )
    p.add_argument("--split", default="test", help="split to evaluate")
    p.add_argument(
        "--max-test-samples",
        type=int,
        default=None,
        help="evaluate a seeded uniform random subset of this many samples "
        "(default: all); every system sees the same ones",
    )
    p.add_argument(
        "--selection",
        default="uniform",
        choices=("uniform", "anchor-tail"),
        help="with --max-test-samples: a uniform random subset (natural mix), or half "
        "anchor-target and half tail-target samples (stratified)",
    )
    p.add_argument(
        "--max-validation-samples",
        type=int,
        default=1000,
        help="validation samples used to fit LLM temperatures",
    )
    p.add_argument("--seed", type=int, default=0, help="sample subset and SASRec seed")
    p.add_argument(
        "--last-k",
        type=int,
        default=None,
        help="window of user-frequency-lastk (default: the dataset's history length)",
    )
    p.add_argument(
        "--logit-adjust",
        type=_taus,
        default="1.0",
        help="comma-separated taus: adds a '+LA<tau>' variant of every system "
        "(scores minus tau*log training prior); '' for none",
    )
    p.add_argument(
        "--no-calibrate",
        dest="calibrate",
        action="store_false",
        help="do not fit a temperature per LLM system on validation NLL",
    )
    p.add_argument(
        "--store-calibration",
        action="store_true",
        help="write each adapter's fitted temperature into its manifest.json",
    )
    p.add_argument(
        "--engine",
        default="auto",
        choices=("auto", "transformers", "vllm"),
        help="scoring engine for LLM systems",
    )
    p.add_argument(
        "--base-model",
        default="smollm2",
        help="base model: 'smollm2', a model directory or a hub id",
    )
    p.add_argument(
        "--dtype", default="bfloat16", choices=("bfloat16", "float32"), help="LLM weights dtype"
    )
    p.add_argument("--batch-size", type=int, default=32, help="prompts per engine forward")
    p.add_argument(
        "--sasrec-max-seconds",
        type=float,
        default=240.0,
        help="stop SASRec training after this many seconds",
    )
    p.add_argument("--sasrec-epochs", type=int, default=8, help="at most this many SASRec epochs")
    p.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="instead of evaluating: report dirs (or run dirs with eval/) to merge "
        "into one table, printed and written to --out/compare.md if --out",
    )
    f = p.add_argument_group(
        "few-shot tail experiment (--fewshot): hold out tail behaviors, train adapters with k "
        "examples of each, report their recall/F1; uses --data, --out, --base-model, --engine, "
        "--dtype, --batch-size, --seed"
    )
    f.add_argument("--fewshot", action="store_true", help="run the few-shot experiment instead")
    f.add_argument(
        "--fewshot-ks",
        type=lambda t: tuple(int(x) for x in t.split(",")),
        default="0,5,20",
        help="examples per held-out behavior",
    )
    f.add_argument(
        "--fewshot-holdout",
        type=int,
        default=3,
        help="how many tail behaviors to hold out (most test samples first)",
    )
    f.add_argument(
        "--fewshot-behaviors",
        type=_systems,
        default="",
        help="comma-separated behaviors to hold out instead",
    )
    f.add_argument(
        "--fewshot-strategy",
        default="balanced",
        choices=("sft", "balanced", "behaviorlm"),
        help="training strategy of the few-shot adapters (balanced: the k examples "
        "are drawn as often as any class's, sft: in proportion to k)",
    )
    f.add_argument(
        "--fewshot-preset", default="cpu", help="training preset (tiny, cpu, gpu or a YAML file)"
    )
    f.add_argument(
        "--fewshot-set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="training config override (repeatable), e.g. baseline.steps=100",
    )
    f.add_argument(
        "--fewshot-stage1-from",
        type=Path,
        metavar="RUN",
        help="with --fewshot-strategy behaviorlm: reuse this finished run's stage 1 and "
        "difficulty scores for every k (stage 1 sees anchors only, so the held-out tail "
        "behaviors never reach it); only stage 2 is trained",
    )
    f.add_argument(
        "--fewshot-other-samples",
        type=int,
        default=200,
        help="test samples of other behaviors added to the evaluation set",
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    if args.fewshot:
        return _fewshot(args)
    from training.evaluation.evaluate import EvalConfig, evaluate
    from training.evaluation.report import write_report

    if args.data is None or args.out is None:
        raise InputError("eval: --data and --out are required (or use --compare)")
    cfg = EvalConfig(
        data=args.data,
        out=args.out,
        runs=tuple(args.runs),
        systems=args.systems,
        split=args.split,
        max_test_samples=args.max_test_samples,
        selection=args.selection,
        max_validation_samples=args.max_validation_samples,
        seed=args.seed,
        last_k=args.last_k,
        logit_adjust=args.logit_adjust,
        calibrate=args.calibrate,
        store_calibration=args.store_calibration,
        engine=args.engine,
        base_model=args.base_model,
        dtype=args.dtype,
        batch_size=args.batch_size,
        sasrec_max_seconds=args.sasrec_max_seconds,
        sasrec_epochs=args.sasrec_epochs,
    )
    body, probs = evaluate(cfg)
    command = "behaviorlm " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "behaviorlm eval"
    report = write_report(cfg.out, body, probs, command)
    from training.evaluation.report import main_table

    print("\n".join(main_table(report["systems"])))
    print(f"\nwrote {cfg.out}/report.md, report.json and plots")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from training.evaluation.report import compare

    text, summary = compare(args.compare)
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(text)
        (args.out / "compare.json").write_text(json.dumps(summary, indent=1) + "\n")
        print(f"wrote {args.out}/compare.md")
    return 0


def _fewshot(args: argparse.Namespace) -> int:
    from training.evaluation.fewshot import FewShotConfig, run_fewshot

    if args.data is None or args.out is None:
        raise InputError("eval --fewshot: --data and --out are required")
    cfg = FewShotConfig(
        data=args.data,
        out=args.out,
        ks=args.fewshot_ks,
        holdout=args.fewshot_holdout,
        behaviors=args.fewshot_behaviors,
        strategy=args.fewshot_strategy,
        preset=args.fewshot_preset,
        overrides=tuple(args.fewshot_set),
        stage1_from=args.fewshot_stage1_from,
        other_test_samples=args.fewshot_other_samples,
        base_model=args.base_model,
        engine=args.engine,
        dtype=args.dtype,
        batch_size=args.batch_size,
        seed=args.seed,
    )
    run_fewshot(cfg)
    print((cfg.out / "fewshot.md").read_text())
    return 0
