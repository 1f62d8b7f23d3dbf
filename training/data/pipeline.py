"""Canonical events in, a prepared dataset directory out.

Steps (all vectorised): drop duplicate rows, order each user's events in time, drop users too
short to give a target, mark targets (events with at least ``min_history`` earlier events),
split them per user in time order, derive the vocabulary from training targets, map targets to
labels (fallback or drop), and write the samples with their statistics and report.

The one-call entry point for code and tests is :func:`prepare_log`::

    from training.data.synthetic import make_synthetic_log
    from training.data.pipeline import prepare_log
    ds = prepare_log(make_synthetic_log(200, 20_000, 50, seed=0), tmp_path / "ds")
    ds.samples("train")[0]   # a behaviorlm.events.Sample
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from behaviorlm.errors import InputError
from behaviorlm.vocabulary import Vocabulary
from training.data.config import SPLITS, PrepareConfig
from training.data.dataset import PreparedDataset, write_prepared
from training.data.events import (
    BEHAVIOR,
    CTX_PREFIX,
    LINE,
    PARENT,
    SPLIT_HINT,
    TARGET_OK,
    TIME,
    USER,
    SkipLog,
    canonicalize,
    context_columns,
    drop_duplicates,
    sort_events,
)
from training.data.rules import KEPT, build_label_rules, parents_of
from training.data.split import assign_splits

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

    Column names default to those of :func:`training.data.synthetic.make_synthetic_log`; pass
    ``context_cols=("place",), parent_col="category"`` to use its context and parents.
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
    events: pd.DataFrame,
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
) -> PreparedDataset:
    """Canonical events (see :mod:`training.data.events`) -> prepared dataset at ``out_dir``."""
    step = progress or (lambda msg: log.info(msg))
    input_rows = input_rows if input_rows is not None else len(events) + sum(skips.counts.values())
    if not config.keep_duplicates:
        step("dropping duplicate rows")
        events = drop_duplicates(events, skips, source)
    step("ordering events per user")
    events = sort_events(events)

    log_stats = _log_stats(events)
    pos = events.groupby(USER, sort=False).cumcount().to_numpy()
    per_user = events.groupby(USER, sort=False)[USER].transform("size").to_numpy()
    short = per_user <= config.min_history
    short_users = int(events.loc[short, USER].nunique())
    if short.any():
        skips.add(
            f"user with at most {config.min_history} event(s) (no target after min-history)",
            int(short.sum()),
        )
    events = events[~short].reset_index(drop=True)
    pos = pos[~short]
    if events.empty:
        raise InputError(_empty_message(source, skips, "no user has enough events"))

    step("splitting targets per user in time order")
    is_target = pos >= config.min_history
    if TARGET_OK in events:
        is_target &= events[TARGET_OK].to_numpy(dtype=bool)
    placeholder = events[BEHAVIOR].isin(config.not_a_target).to_numpy()
    not_a_target = {
        name: int((placeholder & is_target & (events[BEHAVIOR] == name).to_numpy()).sum())
        for name in config.not_a_target
    }
    is_target &= ~placeholder
    cand = events[is_target]
    hints = cand.get(SPLIT_HINT, None)
    split = assign_splits(cand[USER], hints, config)
    no_split = pd.isna(split)
    if no_split.any():
        skips.add("target without a split in the dataset's split column", int(no_split.sum()))

    step("building the vocabulary from training targets")
    raw = cand[BEHAVIOR].to_numpy(dtype=object)
    train_counts = {
        str(k): int(v) for k, v in pd.Series(raw[split == "train"]).value_counts().items()
    }
    parents = parents_of(events[BEHAVIOR], events[PARENT]) if config.fallback == "parent" else {}
    all_behaviors = pd.unique(events[BEHAVIOR].to_numpy(dtype=object)).tolist()
    rules = build_label_rules(train_counts, all_behaviors, parents, config)
    events["label"] = events[BEHAVIOR].map(rules.label).astype("string")

    target_rows = np.flatnonzero(is_target)
    labels = events["label"].to_numpy(dtype=object)[target_rows]
    hit_rule = pd.Series(raw).map(rules.rule).to_numpy(dtype=object)
    dropped = pd.isna(labels)
    # A rare behavior folded into a placeholder parent (e.g. a category under UNKNOWN) is no
    # more useful a prediction than the placeholder itself.
    folded = pd.Series(labels).isin(config.not_a_target).to_numpy() & ~dropped
    for placeholder_name in config.not_a_target:  # not `name`: the dataset is called that
        n = int((folded & (labels == placeholder_name)).sum())
        if n:
            not_a_target[f"{placeholder_name} (a rare behavior's parent)"] = n
    keep = ~dropped & ~no_split & ~folded
    samples = pd.DataFrame(
        {
            "split": split[keep],
            "target_row": target_rows[keep],
            "history_start": target_rows[keep]
            - np.minimum(pos[target_rows[keep]], config.history_len),
            "target": labels[keep],
        }
    )
    if samples.empty:
        raise InputError(_empty_message(source, skips, "no target survived the vocabulary rules"))
    if not (samples["split"] == "train").any():
        per_split = ", ".join(f"{s} {int((samples['split'] == s).sum())}" for s in SPLITS)
        fix = (
            "use --split leave-one-out or --split ratio (each user's targets split in time order)"
            if config.split == "dataset"
            else "lower --min-history or give users more events"
        )
        raise InputError(
            f"{source}: no training samples ({per_split}): a dataset with no train split cannot "
            f"be trained on; {fix}"
        )
    train_targets = samples.loc[samples["split"] == "train", "target"]
    label_counts = {str(k): int(v) for k, v in train_targets.value_counts().items()}
    for lab in set(samples["target"]):
        label_counts.setdefault(lab, 0)
    vocabulary = Vocabulary.from_counts(label_counts, config.anchor_share)
    # A fallback label no sample ends up with (e.g. the parent of behaviors that only ever
    # appear in histories) is not a label: map such behaviors to None like dropped ones.
    label_map = {b: (lab if lab in vocabulary else None) for b, lab in rules.label.items()}
    events["label"] = events["label"].where(events["label"].isin(vocabulary.names))

    stats = _stats(
        events,
        samples,
        vocabulary,
        rules.rule,
        hit_rule,
        split,
        labels,
        config,
        skips,
        input_rows=input_rows,
        short_users=short_users,
        log_stats=log_stats,
        name=name,
    )
    stats["not_a_target"] = not_a_target
    for line in skips.summary_lines():
        log.debug(line)
    step("writing")
    info = {
        "name": name,
        "source": source,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "config": config.to_json(),
        **(extra_info or {}),
    }
    ds = write_prepared(
        out_dir,
        events.drop(columns=[LINE, TARGET_OK], errors="ignore"),
        samples,
        vocabulary,
        label_map,
        info,
        stats,
        overwrite=overwrite,
    )
    from training.data.report import write_report

    write_report(ds.root, stats, vocabulary)
    return ds


def _empty_message(source: str, skips: SkipLog, why: str) -> str:
    detail = "; ".join(skips.summary_lines()[:6]) or "nothing was skipped"
    return f"{source}: empty result, {why} ({detail})"


def _stats(
    events: pd.DataFrame,
    samples: pd.DataFrame,
    vocabulary: Vocabulary,
    rule_of: dict[str, str],
    hit_rule: np.ndarray,
    split: np.ndarray,
    labels: np.ndarray,
    config: PrepareConfig,
    skips: SkipLog,
    *,
    input_rows: int,
    short_users: int,
    log_stats: dict[str, Any],
    name: str,
) -> dict[str, Any]:
    per_user = events.groupby(USER, sort=False).size()
    n_split = {s: int((samples["split"] == s).sum()) for s in SPLITS}
    target_users = events[USER].to_numpy()[samples["target_row"].to_numpy()]
    sample_split = samples["split"].to_numpy()
    users_split = {s: int(pd.unique(target_users[sample_split == s]).size) for s in SPLITS}
    users = int(per_user.size)
    rules: dict[str, Any] = {}
    for rule in sorted(set(rule_of.values()) - {KEPT}):
        hit = hit_rule == rule
        rules[rule] = {
            "behaviors": sum(1 for r in rule_of.values() if r == rule),
            "targets": {s: int((hit & (split == s)).sum()) for s in SPLITS},
            "dropped": {s: int((hit & (split == s) & pd.isna(labels)).sum()) for s in SPLITS},
            "to": config.fallback,
        }
    train_share = np.array(vocabulary.counts, dtype=float) / max(vocabulary.total, 1)
    cum = np.cumsum(train_share)
    return {
        "name": name,
        "input_rows": int(input_rows),
        "events": len(events),
        "users": users,
        "users_too_short": short_users,
        "log": log_stats,
        "context_columns": [c[len(CTX_PREFIX) :] for c in context_columns(events)],
        "samples": n_split,
        "users_per_split": users_split,
        "users_without_train_samples": users - users_split["train"] if users else 0,
        "targets_dropped_by_vocabulary": {
            s: int((pd.isna(labels) & (split == s)).sum()) for s in SPLITS
        },
        "vocabulary": {
            "labels": len(vocabulary),
            "anchors": len(vocabulary.anchors),
            "tails": len(vocabulary.tails),
            "anchor_share": config.anchor_share,
            "anchor_train_share": round(
                float(
                    sum(
                        c
                        for n, c in zip(vocabulary.names, vocabulary.counts, strict=True)
                        if vocabulary.is_anchor(n)
                    )
                    / max(vocabulary.total, 1)
                ),
                4,
            ),
            "labels_cover_50pct": int(np.searchsorted(cum, 0.5) + 1) if vocabulary.total else 0,
            "labels_cover_80pct": int(np.searchsorted(cum, 0.8) + 1) if vocabulary.total else 0,
            "labels_without_train_samples": int(sum(1 for c in vocabulary.counts if c == 0)),
        },
        "vocabulary_rules": rules,
        "skipped_rows": dict(skips.counts),
        "skipped_examples": {k: list(v) for k, v in skips.examples.items()},
        "config": config.to_json(),
    }


def _log_stats(events: pd.DataFrame) -> dict[str, Any]:
    """The cleaned log before any user or target is left out (comparable to a data README)."""
    per_user = events.groupby(USER, sort=False).size()
    counts = events[BEHAVIOR].value_counts()
    share = counts.to_numpy() / max(int(counts.sum()), 1)
    cum = np.cumsum(share)
    times = events[TIME].dropna()
    return {
        "users": int(per_user.size),
        "events": len(events),
        "events_per_user": {
            "median": float(per_user.median()),
            "mean": round(float(per_user.mean()), 2),
            "max": int(per_user.max()),
            "users_with_10_or_more": int((per_user >= 10).sum()),
        },
        "wall_clock_range": [str(times.min()), str(times.max())] if len(times) else None,
        "behaviors": int(counts.size),
        "behaviors_cover_50pct": int(np.searchsorted(cum, 0.5) + 1),
        "behaviors_cover_80pct": int(np.searchsorted(cum, 0.8) + 1),
        "behaviors_under_1pct": int((share < 0.01).sum()),
        "top_behaviors": [
            {"name": str(n), "share": round(float(c) / max(int(counts.sum()), 1), 4)}
            for n, c in counts.head(10).items()
        ],
    }
