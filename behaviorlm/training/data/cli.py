"""``behaviorlm data prepare`` and ``behaviorlm data stats``."""

from __future__ import annotations

import argparse
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from behaviorlm.errors import InputError
from behaviorlm.options import add_options, dest_of, options_of

FORMATS = ("generic", "context-trails", "smartthings")  # the readers in training.data.readers
_STEPS = 4  # open the input + the pipeline's steps, for the progress bar


def register(sub: Any) -> None:
    data = sub.add_parser(
        "data",
        help="prepare behavior logs into training/evaluation samples",
        description="Turn behavior logs into prepared datasets (samples per split, vocabulary, "
        "statistics).",
    )
    data_sub = data.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    _register_prepare(data_sub)
    stats = data_sub.add_parser(
        "stats",
        help="print the statistics of a prepared dataset",
        description="Print stats.md of a prepared dataset (after checking that it loads).",
    )
    stats.add_argument("dataset", type=Path, help="a directory written by `data prepare`")
    stats.set_defaults(func=_run_stats)


def _register_prepare(data_sub: Any) -> None:
    from behaviorlm.training.data.config import EngineConfig, PrepareConfig

    p = data_sub.add_parser(
        "prepare",
        help="event log -> prepared dataset directory",
        description=(
            "Read a behavior log, build per-user chronological samples (last K events -> next "
            "behavior), split them per user in time order, derive the vocabulary from training "
            "targets and write OUT: events.parquet, samples.parquet, vocabulary.json, "
            "stats.json, stats.md, behavior_frequency.png. Option precedence: defaults < "
            "format defaults < --config < flags. Rows that cannot be used are skipped, counted "
            "by reason and printed (or stop the run with --strict)."
        ),
    )
    io = p.add_argument_group("input and output")
    io.add_argument(
        "--format",
        choices=FORMATS,
        default="generic",
        help="generic: any CSV/TSV/JSONL/Parquet log with the column flags below; "
        "context-trails: a Context Trails city directory (checkins.csv.gz) or file; "
        "smartthings: a SmartThings directory (windows.csv.gz) or file [generic]",
    )
    io.add_argument("--input", type=Path, required=True, help="log file or dataset directory")
    io.add_argument("--out", type=Path, required=True, help="prepared dataset directory to write")
    io.add_argument("--name", help="dataset name in reports (default: from the input path)")
    io.add_argument("--overwrite", action="store_true", help="replace an existing prepared OUT")
    io.add_argument(
        "--config",
        type=Path,
        help="YAML file of preparation options (the option flags below, underscores for "
        "dashes) or a preset name (default, compact); flags given on the command line win",
    )
    g = p.add_argument_group("generic log columns")
    g.add_argument("--user-col", default="user_id", help="user id column [user_id]")
    g.add_argument(
        "--time-col",
        default="timestamp",
        help="timestamp column: ISO-8601 with or without UTC offset (each event keeps its own "
        "wall-clock), a datetime column, or Unix seconds; 'none' = no timestamps (file "
        "order) [timestamp]",
    )
    g.add_argument("--behavior-col", default="behavior", help="behavior (label) column [behavior]")
    g.add_argument(
        "--context-cols",
        default="",
        help="comma-separated context columns shown with each event (e.g. place,weather)",
    )
    g.add_argument(
        "--parent-col",
        help="parent category column, used by --fallback parent",
    )
    g.add_argument(
        "--split-col",
        help="column with the log's own split (train/validation/test or trn/vld/test), "
        "for --split dataset",
    )
    g.add_argument("--time-format", help="strftime format for non-ISO timestamps")
    g.add_argument(
        "--times-are-utc",
        action="store_true",
        help="generic and context-trails: the clock times are UTC although they carry an "
        "offset; move each to its offset's local time (Context Trails Petaling Jaya looks "
        "like this: check-ins peak at 05h as published)",
    )
    g.add_argument("--sep", help="CSV delimiter (default: ',' or tab for .tsv)")
    d = p.add_argument_group("dataset formats")
    d.add_argument(
        "--weather",
        nargs="?",
        const="auto",
        type=str,
        help="context-trails: add weather context (conditions, temperature) from "
        "trails_weather.zip; without a value, the one beside checkins.csv.gz",
    )
    d.add_argument(
        "--keep-automatic",
        action="store_true",
        help="smartthings: keep '*:refresh refresh' polls and 'None:location' events "
        "(filtered by default: no user acts there)",
    )
    d.add_argument(
        "--no-chain",
        action="store_true",
        help="smartthings: keep each window a separate sequence with only its last action a "
        "target (the authors' protocol, --split dataset); by default windows are chained back "
        "into per-user sequences, every action a target once",
    )
    o = p.add_argument_group("preparation options (PrepareConfig fields; --config keys)")
    add_options(o, PrepareConfig)
    e = p.add_argument_group("engine (EngineConfig fields: how the steps run, not what they make)")
    add_options(e, EngineConfig)
    p.set_defaults(func=_run_prepare)


def _config(args: argparse.Namespace) -> Any:
    from behaviorlm.training.data.config import PrepareConfig, load_config_file

    values: dict[str, Any] = {}
    if args.format == "smartthings" and args.no_chain:
        values["split"] = "dataset"  # one target per window: only the authors' split applies
    if args.format == "context-trails":
        # A venue without a category: the second most frequent label of Petaling Jaya, and a
        # prediction no caller can use.
        values["not_a_target"] = "UNKNOWN"
    if args.config is not None:
        values.update(load_config_file(args.config))
    for f in options_of(PrepareConfig):
        flag_value = getattr(args, dest_of(f), None)
        if flag_value is not None:
            values[f.name] = flag_value
    return PrepareConfig.from_mapping(values, where=str(args.config or "options"))


def _run_prepare(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from behaviorlm.options import collect
    from behaviorlm.training.data.config import EngineConfig
    from behaviorlm.training.data.pipeline import prepare_events
    from behaviorlm.training.data.readers import read_context_trails, read_generic, read_smartthings

    config = _config(args)
    engine = collect(args, EngineConfig)
    if args.format == "smartthings" and args.no_chain and config.split != "dataset":
        raise InputError(
            "--split: with --no-chain SmartThings windows are separate 10-action sequences "
            "with one target each, so only --split dataset (the authors' split) applies; drop "
            "--no-chain to chain the windows into per-user sequences"
        )
    if args.no_chain and args.format != "smartthings":
        raise InputError("--no-chain applies to --format smartthings only")
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise InputError(f"--out: {args.out} already exists and is not empty (pass --overwrite)")
    if args.times_are_utc and args.format == "smartthings":
        raise InputError("--times-are-utc: SmartThings windows have no timestamps")
    started = time.perf_counter()
    with tqdm(total=_STEPS, desc="reading", unit="step", leave=False) as bar:
        if args.format == "context-trails":
            weather = None
            if args.weather == "auto":
                base = args.input if args.input.is_dir() else args.input.parent
                weather = base / "trails_weather.zip"
            elif args.weather:
                weather = Path(args.weather)
            loaded = read_context_trails(
                args.input,
                weather=weather,
                times_are_utc=args.times_are_utc,
                strict=config.strict,
            )
        elif args.format == "smartthings":
            loaded = read_smartthings(
                args.input,
                keep_automatic=args.keep_automatic,
                chain=not args.no_chain,
                strict=config.strict,
            )
        else:
            if args.weather or args.keep_automatic:
                raise InputError("--weather / --keep-automatic apply to their formats only")
            loaded = read_generic(
                args.input,
                user_col=args.user_col,
                time_col=None if args.time_col.lower() == "none" else args.time_col,
                behavior_col=args.behavior_col,
                context_cols=[c.strip() for c in args.context_cols.split(",") if c.strip()],
                parent_col=args.parent_col,
                split_col=args.split_col,
                time_format=args.time_format,
                sep=args.sep,
                times_are_utc=args.times_are_utc,
                strict=config.strict,
                chunk_rows=engine.chunk_rows,
            )
        bar.update(1)

        def step(message: str) -> None:
            bar.set_description(message)
            bar.update(1)

        ds = prepare_events(
            loaded.chunks,
            args.out,
            config,
            name=args.name or loaded.name,
            source=loaded.source,
            skips=loaded.skips,
            input_rows=loaded.input_rows,
            # The exact command, so a prepared directory says how to make it again.
            extra_info={**loaded.info, "command": shlex.join(["behaviorlm", *sys.argv[1:]])},
            overwrite=args.overwrite,
            progress=step,
            engine=engine,
            rows_read=lambda n: bar.set_postfix_str(f"{n:,} events", refresh=True),
        )
        bar.update(_STEPS - bar.n)
    _print_summary(ds.stats, ds.root, time.perf_counter() - started)
    return 0


def _print_summary(stats: dict[str, Any], root: Path, seconds: float) -> None:
    n = stats["samples"]
    v = stats["vocabulary"]
    print(f"prepared {stats['name']} -> {root} in {seconds:.1f} s")
    print(
        f"  events {stats['events']:,} of {stats['users']:,} users "
        f"(input rows {stats['input_rows']:,})"
    )
    print(f"  samples: train {n['train']:,}, validation {n['validation']:,}, test {n['test']:,}")
    print(f"  vocabulary: {v['labels']} labels, {v['anchors']} anchors, {v['tails']} tails")
    for rule, r in stats["vocabulary_rules"].items():
        hits = sum(r["targets"].values())
        print(f"  rule {rule}: {r['behaviors']} behaviors, {hits:,} targets -> {r['to']}")
    for name, count in stats.get("not_a_target", {}).items():
        print(f"  not a target (kept in histories): {count:,} events of {name!r}")
    for reason, count in stats["skipped_rows"].items():
        print(f"  skipped {count:,}: {reason}")
        for ex in stats["skipped_examples"].get(reason, [])[:2]:
            print(f"      e.g. {ex}")
    print(f"  report: {root / 'stats.md'}")


def _run_stats(args: argparse.Namespace) -> int:
    from behaviorlm.training.data.dataset import PreparedDataset

    ds = PreparedDataset.load(args.dataset)
    report = ds.root / "stats.md"
    if report.is_file():
        print(report.read_text())
    for split in ds.splits():
        print(f"{split}: {ds.num_samples(split):,} samples")
    return 0
