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
    from behaviorlm.training.data.config import PrepareConfig, ReadOptions, SqlSettings

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
    r = p.add_argument_group("reading the input (ReadOptions fields)")
    add_options(r, ReadOptions)
    o = p.add_argument_group("preparation options (PrepareConfig fields; --config keys)")
    add_options(o, PrepareConfig)
    s = p.add_argument_group("SQL (SqlSettings fields: how the steps run, not what they make)")
    add_options(s, SqlSettings)
    p.set_defaults(func=_run_prepare)


def _config(args: argparse.Namespace, read: Any) -> Any:
    from behaviorlm.training.data.config import PrepareConfig, load_config_file

    values: dict[str, Any] = {}
    if read.format == "smartthings" and read.no_chain:
        values["split"] = "dataset"  # one target per window: only the authors' split applies
    if read.format == "context-trails":
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
    from behaviorlm.training.data.config import ReadOptions, SqlSettings
    from behaviorlm.training.data.pipeline import prepare_events

    read = collect(args, ReadOptions)
    read.check_format()
    config = _config(args, read)
    sql_settings = collect(args, SqlSettings)
    if read.format == "smartthings" and read.no_chain and config.split != "dataset":
        raise InputError(
            "--split: with --no-chain SmartThings windows are separate 10-action sequences "
            "with one target each, so only --split dataset (the authors' split) applies; drop "
            "--no-chain to chain the windows into per-user sequences"
        )
    if args.out.exists() and any(args.out.iterdir()) and not args.overwrite:
        raise InputError(f"--out: {args.out} already exists and is not empty (pass --overwrite)")
    started = time.perf_counter()
    with tqdm(total=_STEPS, desc="reading", unit="step", leave=False) as bar:
        loaded = _read(args.input, read, config.strict, sql_settings.chunk_rows)
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
            sql_settings=sql_settings,
            rows_read=lambda n: bar.set_postfix_str(f"{n:,} events", refresh=True),
        )
        bar.update(_STEPS - bar.n)
    _print_summary(ds.stats, ds.root, time.perf_counter() - started)
    return 0


def _read(path: Path, read: Any, strict: bool, chunk_rows: int) -> Any:
    """The input as a ``LoadedLog``, by the reader of ``read.format``."""
    from behaviorlm.training.data.readers import (
        read_context_trails,
        read_generic,
        read_smartthings,
    )

    if read.format == "context-trails":
        weather = None
        if read.weather == "auto":
            weather = (path if path.is_dir() else path.parent) / "trails_weather.zip"
        elif read.weather:
            weather = Path(read.weather)
        return read_context_trails(
            path, weather=weather, times_are_utc=read.times_are_utc, strict=strict
        )
    if read.format == "smartthings":
        return read_smartthings(
            path, keep_automatic=read.keep_automatic, chain=not read.no_chain, strict=strict
        )
    return read_generic(path, read, strict=strict, chunk_rows=chunk_rows)


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
