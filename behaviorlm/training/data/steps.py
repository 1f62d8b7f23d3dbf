"""The steps of `data prepare` after reading, as SQL over the canonical table ``raw``.

``raw`` holds the canonical events (:mod:`behaviorlm.training.data.events`) in input order. Each
step materialises one table, so a 10^8-event log never has to fit in memory (the engine spills):

1. ``ordered``: identical rows (user, time, offset, behavior, context) marked, the first
   kept; each user's other events in time order (UTC instant; naive times as given; input
   order on ties) with their position and the user's event count;
2. ``kept``: users with more than ``min_history`` events, each event with its row in
   events.parquet (users in id order, then position);
3. ``targets``: events with at least ``min_history`` earlier ones (and not placeholders or
   history-only), with their split (per user in time order, or the log's own);
4. the vocabulary rules on the training counts (:mod:`behaviorlm.training.data.rules`, in Python: a
   few thousand behaviors), then ``samples``: targets whose behavior maps to a label.

Everything the statistics need comes back as small aggregates. The same SQL runs on Spark
(:mod:`behaviorlm.training.data.spark`); :class:`.sql.Dialect` holds the differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import SPLITS, PrepareConfig
from behaviorlm.training.data.events import MAX_EXAMPLES, SkipLog
from behaviorlm.training.data.rules import KEPT, LabelRules, build_label_rules
from behaviorlm.training.data.split import SPLIT_ALIASES
from behaviorlm.vocabulary import Vocabulary


@dataclass
class StepResult:
    """What the steps found, for the statistics and the writer."""

    vocabulary: Vocabulary
    label_map: dict[str, str | None]
    events: int = 0
    users: int = 0
    short_users: int = 0
    log_stats: dict[str, Any] = field(default_factory=dict)
    samples: dict[str, int] = field(default_factory=dict)
    users_per_split: dict[str, int] = field(default_factory=dict)
    dropped_by_vocabulary: dict[str, int] = field(default_factory=dict)
    rules: dict[str, Any] = field(default_factory=dict)
    not_a_target: dict[str, int] = field(default_factory=dict)
    context_columns: list[str] = field(default_factory=list)


class Steps:
    """The steps on one SQL runner; :meth:`run` is the whole sequence."""

    def __init__(self, sql: Any, config: PrepareConfig, skips: SkipLog, source: str) -> None:
        self.sql = sql
        self.dialect = sql.dialect
        self.config = config
        self.skips = skips
        self.source = source
        self.columns = sql.columns("raw")
        self.ctx = [c for c in self.columns if c.startswith("ctx.")]

    def run(self) -> StepResult:
        self.order_per_user()
        log_stats = self.log_stats()
        short_users = self.drop_short_users()
        not_a_target = self.mark_targets()
        rules = self.label_rules()
        result = self.select_samples(rules, not_a_target)
        result.log_stats = log_stats
        result.short_users = short_users
        result.context_columns = [c[len("ctx.") :] for c in self.ctx]
        return result

    # -- 1 -------------------------------------------------------------------------------
    def order_per_user(self) -> None:
        """Duplicates marked and each user's events numbered in time order, in one pass
        (the other rows' positions do not count the duplicates)."""
        q, t = self.dialect.quote, self.dialect.quote("timestamp")
        has_times = self.sql.rows(f"SELECT count({t}) FROM raw")[0][0] > 0
        if self.config.keep_duplicates or not has_times:
            # Logs without timestamps can repeat an action legitimately: left alone.
            marked = "SELECT *, FALSE AS _dup FROM raw"
        else:
            key = ", ".join(q(c) for c in ("user_id", "timestamp", "utc_offset_min", "behavior"))
            key += "".join(f", {q(c)}" for c in self.ctx)
            marked = (
                f"SELECT *, ({t} IS NOT NULL AND row_number() OVER (PARTITION BY {key} "
                f"ORDER BY {q('_order')}) > 1) AS _dup FROM raw"
            )
        offset_us = f"coalesce({q('utc_offset_min')}, 0) * CAST(60000000 AS BIGINT)"
        instant = f"{self.dialect.epoch_us(t)} - {offset_us}"
        user = f"PARTITION BY {q('user_id')}, _dup"
        self.sql.create(
            "ordered",
            f"SELECT *, row_number() OVER ({user} ORDER BY {instant} ASC NULLS FIRST, "
            f"{q('_order')}) - 1 AS _pos, count(*) OVER ({user}) AS _n FROM ({marked}) m",
        )
        self.sql.drop("raw")
        n = self.count("ordered", "_dup")
        examples = (
            self.sql.rows(
                f"SELECT {q('_line')}, {q('behavior')} FROM ordered WHERE _dup "
                f"ORDER BY {q('_order')} LIMIT {MAX_EXAMPLES}"
            )
            if n
            else []
        )
        self.skips.add(
            "duplicate row", n, [f"{self.source} line {ln}: {b!r}" for ln, b in examples]
        )

    def log_stats(self) -> dict[str, Any]:
        """The cleaned log before any user or target is left out (comparable to a README)."""
        q = self.dialect.quote
        per_user = f"SELECT min(_n) AS n FROM ordered GROUP BY {q('user_id')}"  # one row per user
        users, events, median, mean, most, ten = self.sql.rows(
            f"SELECT count(*), sum(n), {self.dialect.median('n')}, avg(n), max(n), "
            f"sum(CASE WHEN n >= 10 THEN 1 ELSE 0 END) FROM ({per_user}) u"
        )[0]
        counts = self.sql.rows(
            f"SELECT {q('behavior')}, count(*) AS n FROM ordered WHERE NOT _dup "
            f"GROUP BY {q('behavior')} "
            f"ORDER BY n DESC, {q('behavior')}"
        )
        first, last = self.sql.rows(
            f"SELECT min({q('timestamp')}), max({q('timestamp')}) FROM ordered WHERE NOT _dup"
        )[0]
        total = max(int(events or 0), 1)
        share = np.array([c for _, c in counts], dtype=float) / total
        cum = np.cumsum(share)
        return {
            "users": int(users),
            "events": int(events or 0),
            "events_per_user": {
                "median": float(median or 0),
                "mean": round(float(mean or 0), 2),
                "max": int(most or 0),
                "users_with_10_or_more": int(ten or 0),
            },
            "wall_clock_range": [str(first), str(last)] if first is not None else None,
            "behaviors": len(counts),
            "behaviors_cover_50pct": int(np.searchsorted(cum, 0.5) + 1),
            "behaviors_cover_80pct": int(np.searchsorted(cum, 0.8) + 1),
            "behaviors_under_1pct": int((share < 0.01).sum()),
            "top_behaviors": [
                {"name": str(n), "share": round(float(c) / total, 4)} for n, c in counts[:10]
            ],
        }

    # -- 2 --------------------------------------------------------------------------------
    def drop_short_users(self) -> int:
        q, k = self.dialect.quote, int(self.config.min_history)
        rows, users = self.sql.rows(
            f"SELECT count(*), count(DISTINCT {q('user_id')}) FROM ordered "
            f"WHERE NOT _dup AND _n <= {k}"
        )[0]
        self.skips.add(f"user with at most {k} event(s) (no target after min-history)", int(rows))
        # Rows in events.parquet: users in id order, each user's events in time order. The
        # offsets come from the users table (one row per user), not a window over all events.
        self.sql.create(
            "user_rows",
            f"SELECT {q('user_id')}, n, CAST(sum(n) OVER (ORDER BY {q('user_id')} ROWS BETWEEN "
            f"UNBOUNDED PRECEDING AND CURRENT ROW) - n AS BIGINT) AS first_row FROM (SELECT "
            f"{q('user_id')}, min(_n) AS n FROM ordered WHERE NOT _dup AND _n > {k} "
            f"GROUP BY {q('user_id')}) u",
        )
        self.sql.create(
            "kept",
            f"SELECT o.*, r.first_row + o._pos AS _row FROM ordered o JOIN user_rows r "
            f"ON o.{q('user_id')} = r.{q('user_id')} WHERE NOT o._dup",
        )
        self.sql.drop("ordered")
        n = self.count("kept")
        if n == 0:
            raise InputError(self.empty_message("no user has enough events"))
        return int(users)

    # -- 3 --------------------------------------------------------------------------------
    def mark_targets(self) -> dict[str, int]:
        q, c = self.dialect.quote, self.config
        condition = f"_pos >= {int(c.min_history)}"
        if "_target_ok" in self.columns:
            condition += f" AND {q('_target_ok')}"
        not_a_target: dict[str, int] = {}
        if c.not_a_target:
            names = ", ".join(self.dialect.text(n) for n in c.not_a_target)
            found = dict(
                self.sql.rows(
                    f"SELECT {q('behavior')}, count(*) FROM kept WHERE {condition} AND "
                    f"{q('behavior')} IN ({names}) GROUP BY {q('behavior')}"
                )
            )
            not_a_target = {n: int(found.get(n, 0)) for n in c.not_a_target}
            condition += f" AND {q('behavior')} NOT IN ({names})"
        split = self.split_expression()
        self.sql.create(
            "targets",
            f"SELECT {q('user_id')}, _row, _pos, {q('behavior')}, {split} AS _split FROM "
            f"(SELECT * FROM kept WHERE {condition}) t",
        )
        missing = self.count("targets", "_split IS NULL")
        self.skips.add("target without a split in the dataset's split column", missing)
        return not_a_target

    def split_expression(self) -> str:
        """Each target's split; leave-one-out fills from the end of each user's targets
        (test, then validation, then train), so every train target is earlier."""
        q, c = self.dialect.quote, self.config
        user = f"PARTITION BY {q('user_id')}"
        if c.split == "dataset":
            return self.dataset_split()
        if c.split == "leave-one-out":
            from_end = f"row_number() OVER ({user} ORDER BY _pos DESC)"
            return (
                f"CASE WHEN {from_end} = 1 THEN 'test' WHEN {from_end} = 2 THEN 'validation' "
                "ELSE 'train' END"
            )
        # ratio: the k-th of n targets (1-based) falls in the split whose cumulative share
        # covers k/n (the same float arithmetic as numpy's).
        share = f"CAST(row_number() OVER ({user} ORDER BY _pos) AS DOUBLE) / count(*) OVER ({user})"
        train_end = c.ratios[0] + 1e-9
        val_end = c.ratios[0] + c.ratios[1] + 1e-9
        return (
            f"CASE WHEN {share} <= {train_end!r} THEN 'train' WHEN {share} <= {val_end!r} "
            "THEN 'validation' ELSE 'test' END"
        )

    def dataset_split(self) -> str:
        q = self.dialect.quote
        if "split_hint" not in self.columns:
            raise InputError(
                "--split dataset: this input has no split column; use leave-one-out or ratio"
            )
        hint = f"lower({q('split_hint')})"
        cases = " ".join(
            f"WHEN {hint} = {self.dialect.text(a)} THEN {self.dialect.text(s)}"
            for a, s in SPLIT_ALIASES.items()
        )
        names = ", ".join(self.dialect.text(a) for a in SPLIT_ALIASES)
        unknown = self.sql.rows(
            f"SELECT DISTINCT {q('split_hint')} FROM kept WHERE {q('split_hint')} IS NOT NULL "
            f"AND {hint} NOT IN ({names}) ORDER BY 1 LIMIT 5"
        )
        if unknown:
            raise InputError(
                f"--split dataset: unknown split names {[str(u[0]) for u in unknown]}; "
                f"expected one of {sorted(SPLIT_ALIASES)}"
            )
        return f"CASE {cases} END"

    # -- 4 --------------------------------------------------------------------------------
    def label_rules(self) -> LabelRules:
        q, c = self.dialect.quote, self.config
        train_counts = {
            str(b): int(n)
            for b, n in self.sql.rows(
                f"SELECT {q('behavior')}, count(*) FROM targets WHERE _split = 'train' "
                f"GROUP BY {q('behavior')}"
            )
        }
        all_behaviors = [
            str(b)
            for (b,) in self.sql.rows(
                f"SELECT {q('behavior')} FROM kept GROUP BY {q('behavior')} ORDER BY min(_row)"
            )
        ]
        parents: dict[str, str | None] = {}
        if c.fallback == "parent":
            # Each behavior's most frequent parent (the data may be inconsistent).
            for b, p, _ in self.sql.rows(
                f"SELECT {q('behavior')}, {q('parent')}, count(*) AS n FROM kept WHERE "
                f"{q('parent')} IS NOT NULL GROUP BY {q('behavior')}, {q('parent')} "
                f"ORDER BY {q('behavior')}, n DESC, {q('parent')}"
            ):
                parents.setdefault(str(b), str(p))
        rules = build_label_rules(train_counts, all_behaviors, parents, c)
        self.sql.put(
            "rules",
            pa.table(
                {
                    "behavior": pa.array(list(rules.label), pa.string()),
                    "_label": pa.array(list(rules.label.values()), pa.string()),
                    "_rule": pa.array([rules.rule[b] for b in rules.label], pa.string()),
                }
            ),
        )
        return rules

    def select_samples(self, rules: LabelRules, not_a_target: dict[str, int]) -> StepResult:
        q, c = self.dialect.quote, self.config
        self.sql.create(
            "labelled",
            f"SELECT t.*, r._label, r._rule FROM targets t JOIN rules r "
            f"ON t.{q('behavior')} = r.{q('behavior')}",
        )
        # A rare behavior folded into a placeholder parent (e.g. a category under UNKNOWN) is
        # no more useful a prediction than the placeholder itself.
        folded = "FALSE"
        if c.not_a_target:
            names = ", ".join(self.dialect.text(n) for n in c.not_a_target)
            folded = f"_label IN ({names})"
            for label, n in self.sql.rows(
                f"SELECT _label, count(*) FROM labelled WHERE {folded} GROUP BY _label"
            ):
                not_a_target[f"{label} (a rare behavior's parent)"] = int(n)
        self.sql.create(
            "samples",
            f"SELECT _split, _row, _pos, _label, {q('user_id')} FROM labelled WHERE _split IS "
            f"NOT NULL AND _label IS NOT NULL AND NOT ({folded})",
        )
        per_split = self.per_split(
            "SELECT _split, count(*), count(DISTINCT " + q("user_id") + ") FROM samples "
            "GROUP BY _split"
        )
        n_split = {s: per_split.get(s, (0, 0))[0] for s in SPLITS}
        if sum(n_split.values()) == 0:
            raise InputError(self.empty_message("no target survived the vocabulary rules"))
        if n_split["train"] == 0:
            listing = ", ".join(f"{s} {n_split[s]}" for s in SPLITS)
            fix = (
                "use --split leave-one-out or --split ratio (each user's targets split in time "
                "order)"
                if c.split == "dataset"
                else "lower --min-history or give users more events"
            )
            raise InputError(
                f"{self.source}: no training samples ({listing}): a dataset with no train split "
                f"cannot be trained on; {fix}"
            )
        vocabulary = self.vocabulary()
        label_map = {b: (lab if lab in vocabulary else None) for b, lab in rules.label.items()}
        users, events = self.sql.rows("SELECT count(*), sum(n) FROM user_rows")[0]
        return StepResult(
            vocabulary=vocabulary,
            label_map=label_map,
            events=int(events),
            users=int(users),
            samples=n_split,
            users_per_split={s: per_split.get(s, (0, 0))[1] for s in SPLITS},
            dropped_by_vocabulary=self.per_split_count(
                "SELECT _split, count(*) FROM labelled WHERE _label IS NULL GROUP BY _split"
            ),
            rules=self.rule_stats(rules),
            not_a_target=not_a_target,
        )

    def vocabulary(self) -> Vocabulary:
        counts = {
            str(label): int(n)
            for label, n in self.sql.rows(
                "SELECT _label, sum(CASE WHEN _split = 'train' THEN 1 ELSE 0 END) FROM samples "
                "GROUP BY _label"
            )
        }
        return Vocabulary.from_counts(counts, self.config.anchor_share)

    def rule_stats(self, rules: LabelRules) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for rule in sorted(set(rules.rule.values()) - {KEPT}):
            lit = self.dialect.text(rule)
            out[rule] = {
                "behaviors": sum(1 for r in rules.rule.values() if r == rule),
                "targets": self.per_split_count(
                    f"SELECT _split, count(*) FROM labelled WHERE _rule = {lit} GROUP BY _split"
                ),
                "dropped": self.per_split_count(
                    f"SELECT _split, count(*) FROM labelled WHERE _rule = {lit} AND _label IS "
                    "NULL GROUP BY _split"
                ),
                "to": self.config.fallback,
            }
        return out

    def per_split(self, select: str) -> dict[str, tuple[int, ...]]:
        return {str(r[0]): tuple(int(v) for v in r[1:]) for r in self.sql.rows(select) if r[0]}

    def per_split_count(self, select: str) -> dict[str, int]:
        found = self.per_split(select)
        return {s: found.get(s, (0,))[0] for s in SPLITS}

    def count(self, table: str, where: str = "TRUE") -> int:
        return int(self.sql.rows(f"SELECT count(*) FROM {table} WHERE {where}")[0][0])

    def empty_message(self, why: str) -> str:
        detail = "; ".join(self.skips.summary_lines()[:6]) or "nothing was skipped"
        return f"{self.source}: empty result, {why} ({detail})"

    # -- writing --------------------------------------------------------------------------
    def events_select(self, vocabulary: Vocabulary) -> str:
        """events.parquet in row order; labels outside the vocabulary are null."""
        q = self.dialect.quote
        self.sql.put("vocab", pa.table({"_label": pa.array(list(vocabulary.names), pa.string())}))
        base = [f"k.{q(c)}" for c in ("user_id", "timestamp", "utc_offset_min", "behavior")]
        cols = ", ".join([*base, f"v._label AS {q('label')}", *(f"k.{q(c)}" for c in self.ctx)])
        return (
            f"SELECT {cols} "
            f"FROM kept k LEFT JOIN rules r ON k.{q('behavior')} = r.{q('behavior')} "
            f"LEFT JOIN vocab v ON r._label = v._label ORDER BY k._row"
        )

    def samples_select(self) -> str:
        k = int(self.config.history_len)
        return (
            f"SELECT _split AS {self.dialect.quote('split')}, CAST(_row AS BIGINT) AS target_row, "
            f"CAST(_row - least(_pos, {k}) AS BIGINT) AS history_start, "
            f"_label AS {self.dialect.quote('target')} FROM samples ORDER BY _row"
        )
