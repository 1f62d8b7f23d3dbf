"""``behaviorlm eval``: evaluate systems on a prepared dataset, or compare saved reports."""

from __future__ import annotations

import argparse
import shlex
import sys
from pathlib import Path
from typing import Any

from behaviorlm.errors import InputError
from behaviorlm.options import add_options, collect

# Flags of the few-shot experiment that are the eval command's own (given once).
_SHARED_WITH_EVAL = ("data", "out", "base_model", "engine", "dtype", "batch_size", "seed")


def register(sub: Any) -> None:
    from behaviorlm.training.evaluation.evaluate import EvalConfig
    from behaviorlm.training.evaluation.fewshot import FewShotConfig

    p = sub.add_parser(
        "eval",
        help="evaluate systems (classical, SASRec, zero-shot LLM, adapters) or compare reports",
        description=(
            "Run systems on the same test samples of a prepared dataset and write report.json, "
            "report.md and PNG plots (overall / anchor / tail metrics with 95% bootstrap "
            "intervals, per-behavior F1 against training frequency, reliability diagrams). With "
            "--compare, merge existing reports into one table instead."
        ),
    )
    # Every option below comes from EvalConfig / FewShotConfig fields (behaviorlm/options.py).
    add_options(p, EvalConfig)
    p.add_argument(
        "--compare",
        type=Path,
        nargs="+",
        metavar="REPORT",
        help="instead of evaluating: report dirs (or run dirs with eval/) to merge into one "
        "table (with intervals; runs named <run>-seed<k> also merged over seeds: mean, min, "
        "max; each report's paired differences against SASRec and the user's most frequent "
        "listed), printed and written to --out/compare.md, compare.json, anchor_vs_tail.png "
        "and differences.png if --out",
    )
    p.add_argument(
        "--compare-as",
        action="append",
        default=[],
        metavar="SYSTEM=NAME",
        help="with --compare: read the system SYSTEM (as its report names it, with its +T and "
        "hybrid rows) as NAME, so a run trained under another name joins its seeds, e.g. "
        "ct-pj-demo/stage2=behaviorlm-head-alllin-seed1/stage2; repeatable, and the table "
        "lists every renaming",
    )
    f = p.add_argument_group(
        "few-shot tail experiment (--fewshot): hold out tail behaviors, train adapters with k "
        "examples of each, report their recall/F1; uses --data, --out, --base-model, --engine, "
        "--dtype, --batch-size, --seed"
    )
    f.add_argument("--fewshot", action="store_true", help="run the few-shot experiment instead")
    add_options(f, FewShotConfig, skip=_SHARED_WITH_EVAL)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    if args.compare:
        return _compare(args)
    if args.fewshot:
        return _fewshot(args)
    from behaviorlm.training.evaluation.evaluate import EvalConfig, evaluate
    from behaviorlm.training.evaluation.report import main_table, write_report

    if args.data is None or args.out is None:
        raise InputError("eval: --data and --out are required (or use --compare)")
    cfg = collect(args, EvalConfig)
    body, probs = evaluate(cfg)
    command = "behaviorlm " + shlex.join(sys.argv[1:]) if sys.argv[1:] else "behaviorlm eval"
    report = write_report(cfg.out, body, probs, command)
    print("\n".join(main_table(report["systems"])))
    print(f"\nwrote {cfg.out}/report.md, report.json and plots")
    return 0


def _compare(args: argparse.Namespace) -> int:
    import json

    from behaviorlm.training.evaluation.paired import DIFFERENCES_PNG, plot_differences
    from behaviorlm.training.evaluation.report import compare, plot_anchor_vs_tail

    text, summary = compare(args.compare, parse_renames(args.compare_as))
    print(text)
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "compare.md").write_text(text)
        (args.out / "compare.json").write_text(json.dumps(summary, indent=1) + "\n")
        plot_anchor_vs_tail(summary["systems"], args.out / "anchor_vs_tail.png")
        if summary["differences"]:
            plot_differences(summary["differences"], args.out / DIFFERENCES_PNG)
        print(f"wrote {args.out}/compare.md")
    return 0


def parse_renames(pairs: list[str]) -> dict[str, str]:
    """``--compare-as SYSTEM=NAME`` values as {SYSTEM: NAME}."""
    renames: dict[str, str] = {}
    for pair in pairs:
        old, sep, new = pair.partition("=")
        if not sep or not old.strip() or not new.strip():
            raise InputError(f"--compare-as: expected SYSTEM=NAME, got {pair!r}")
        if old.strip() in renames:
            raise InputError(f"--compare-as: {old.strip()!r} is given twice")
        renames[old.strip()] = new.strip()
    return renames


def _fewshot(args: argparse.Namespace) -> int:
    from behaviorlm.training.evaluation.fewshot import FewShotConfig, run_fewshot

    if args.data is None or args.out is None:
        raise InputError("eval --fewshot: --data and --out are required")
    shared = {name: getattr(args, name) for name in _SHARED_WITH_EVAL}
    cfg = collect(args, FewShotConfig, **{k: v for k, v in shared.items() if v is not None})
    run_fewshot(cfg)
    print((cfg.out / "fewshot.md").read_text())
    return 0
