"""Canonical events in, a prepared dataset directory out.

Reading yields the canonical events in chunks (:mod:`behaviorlm.training.data.readers`); they go
into a DuckDB scratch database (:mod:`behaviorlm.training.data.sql`), where the steps of
:mod:`behaviorlm.training.data.steps` run as SQL, out of core: drop duplicate rows, order each
user's events in time, drop users too short to give a target, mark targets, split them per user in
time order, derive the vocabulary from training targets, map targets to labels (fallback or
drop); then events.parquet and samples.parquet are written sorted, with statistics and report.

The one-call entry point for code and tests is :func:`prepare_log`::

    from behaviorlm.training.data.synthetic import make_synthetic_log
    from behaviorlm.training.data.pipeline import prepare_log
    ds = prepare_log(make_synthetic_log(200, 20_000, 50, seed=0), tmp_path / "ds")
    ds.samples("train")[0]   # a behaviorlm.events.Sample
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig, SqlSettings
from behaviorlm.training.data.dataset import (
    EVENTS_FILE,
    SAMPLES_FILE,
    PreparedDataset,
    begin_write,
    commit_write,
    write_metadata,
)
from behaviorlm.training.data.events import SkipLog, canonicalize
from behaviorlm.training.data.sql import DuckDBRunner, SqlRunner
from behaviorlm.training.data.steps import StepResult, Steps
from behaviorlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)
Progress = Callable[[str], None]


def prepare_log(
    df: pd.DataFrame,
    out_dir: Path | str,
    config: PrepareConfig | None = None,
    *,
    user_col: str = "user_id",
    time_col: str | None = "timestamp",
    behavior_col: str = "behavior",
    context_cols: Sequence[str] = (),
    parent_col: str | None = None,
    name: str = "log",
    overwrite: bool = False,
) -> PreparedDataset:
    """A log DataFrame (one row per event) -> a prepared dataset directory, in one call.

    Column names default to those of :func:`behaviorlm.training.data.synthetic.make_synthetic_log`;
    pass ``context_cols=("place",), parent_col="category"`` to use its context and parents.
    """
    config = config or PrepareConfig()
    skips = SkipLog(strict=config.strict)
    source = f"<{name}>"
    events = canonicalize(
        df,
        source=source,
        user_col=user_col,
        behavior_col=behavior_col,
        time_col=time_col,
        context_cols=context_cols,
        parent_col=parent_col,
        unit="row",
        lines=np.arange(1, len(df) + 1),
        skips=skips,
    )
    return prepare_events(
        events, out_dir, config, name=name, source=source, skips=skips, overwrite=overwrite
    )


def prepare_events(
    events: pd.DataFrame | Iterable[pd.DataFrame],
    out_dir: Path | str,
    config: PrepareConfig,
    *,
    name: str,
    source: str,
    skips: SkipLog,
    input_rows: int | None = None,
    extra_info: dict[str, Any] | None = None,
    overwrite: bool = False,
    progress: Progress | None = None,
    sql_settings: SqlSettings | None = None,
    rows_read: Callable[[int], None] | None = None,
    sql: SqlRunner | None = None,
) -> PreparedDataset:
    """Canonical events (one frame, or chunks in input order; see
    :mod:`behaviorlm.training.data.events`) -> prepared dataset at ``out_dir``.

    ``input_rows`` (for the statistics) defaults to the events plus the rows skipped while
    reading them. ``progress`` gets each step's name, ``rows_read`` the events loaded so far.
    ``sql``: run the steps on this runner (e.g.
    :class:`behaviorlm.training.data.spark.SparkRunner`; the caller closes it) instead of a
    DuckDB scratch database made from ``sql_settings``.
    """
    step = progress or (lambda msg: log.info(msg))
    settings = sql_settings or SqlSettings()
    out = Path(out_dir)
    own = (
        DuckDBRunner(settings.memory_limit, settings.threads, settings.temp_dir)
        if sql is None
        else None
    )
    db: SqlRunner = sql or own  # type: ignore[assignment]  # one of them is set
    try:
        step("reading and checking rows into the scratch database")
        chunks = [events] if isinstance(events, pd.DataFrame) else events
        rows = db.load(chunks, rows_read or (lambda n: None))
        if input_rows is None:
            input_rows = rows + sum(skips.counts.values())
        if rows == 0:
            raise InputError(_empty_message(source, skips, "no usable event"))
        step("dropping duplicates, ordering per user, splitting targets (SQL)")
        steps = Steps(db, config, skips, source)
        result = steps.run()
        stats = _stats(result, config, skips, input_rows=input_rows, name=name)
        for line in skips.summary_lines():
            log.debug(line)
        step("writing")
        info = {
            "name": name,
            "source": source,
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
            "config": config.to_json(),
            "sql": {"name": db.dialect.name, **settings.to_json()},
            **(extra_info or {}),
        }
        tmp = begin_write(out, overwrite)
        db.write_parquet(steps.events_select(result.vocabulary), tmp / EVENTS_FILE)
        db.write_parquet(steps.samples_select(), tmp / SAMPLES_FILE)
        write_metadata(tmp, result.vocabulary, result.label_map, info, stats)
    finally:
        if own is not None:
            own.close()
    ds = commit_write(tmp, out)
    from behaviorlm.training.data.report import write_report

    write_report(ds.root, stats, result.vocabulary)
    return ds


def _empty_message(source: str, skips: SkipLog, why: str) -> str:
    detail = "; ".join(skips.summary_lines()[:6]) or "nothing was skipped"
    return f"{source}: empty result, {why} ({detail})"


def _stats(
    r: StepResult, config: PrepareConfig, skips: SkipLog, *, input_rows: int, name: str
) -> dict[str, Any]:
    vocabulary: Vocabulary = r.vocabulary
    train_share = np.array(vocabulary.counts, dtype=float) / max(vocabulary.total, 1)
    cum = np.cumsum(train_share)
    anchor_count = sum(
        c
        for n, c in zip(vocabulary.names, vocabulary.counts, strict=True)
        if vocabulary.is_anchor(n)
    )
    return {
        "name": name,
        "input_rows": int(input_rows),
        "events": r.events,
        "users": r.users,
        "users_too_short": r.short_users,
        "log": r.log_stats,
        "context_columns": r.context_columns,
        "samples": r.samples,
        "users_per_split": r.users_per_split,
        "users_without_train_samples": r.users - r.users_per_split["train"] if r.users else 0,
        "targets_dropped_by_vocabulary": r.dropped_by_vocabulary,
        "vocabulary": {
            "labels": len(vocabulary),
            "anchors": len(vocabulary.anchors),
            "tails": len(vocabulary.tails),
            "anchor_share": config.anchor_share,
            "anchor_train_share": round(float(anchor_count / max(vocabulary.total, 1)), 4),
            "labels_cover_50pct": int(np.searchsorted(cum, 0.5) + 1) if vocabulary.total else 0,
            "labels_cover_80pct": int(np.searchsorted(cum, 0.8) + 1) if vocabulary.total else 0,
            "labels_without_train_samples": int(sum(1 for c in vocabulary.counts if c == 0)),
        },
        "vocabulary_rules": r.rules,
        "skipped_rows": dict(skips.counts),
        "skipped_examples": {k: list(v) for k, v in skips.examples.items()},
        "not_a_target": r.not_a_target,
        "config": config.to_json(),
    }
