"""Packed training rows: one user's consecutive events, every target a readout.

A row is the prompt header and up to ``chunk`` consecutive events of one user, rendered by the
shared renderer (``behaviorlm.prompt``), pieces tokenised alone exactly as ``PieceEncoder``
encodes a served prompt. Each target of the row is read at the last token of its line's head,
so one forward trains on every target in the row, and the ids up to a readout are the ids of
the prompt the service would send for that event with the same history.

Rows are planned from the targets (``Readouts``): a row starts at its first target's history
start (the dataset's last-K window), takes every later target of the same user while the row
stays within ``chunk`` events, and a target past that starts the next row at ITS history start.
Every target is therefore read exactly once and always sees at least the K history events the
dataset gives it (more when it sits later in a row). Events that are not targets (other
splits, placeholder labels, the first events of a user) are plain history. A row ends at its
last readout's head: the name after it would train nothing.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np

from behaviorlm.prompt import PieceEncoder, event_head, name_piece
from behaviorlm.training.data.dataset import EventTable


@dataclass(frozen=True)
class Readouts:
    """The targets of a split: event row, history start row and vocabulary index of each."""

    rows: np.ndarray
    starts: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.rows)

    def take(self, indices: Sequence[int] | np.ndarray) -> Readouts:
        idx = np.asarray(indices, dtype=np.int64)
        return Readouts(self.rows[idx], self.starts[idx], self.labels[idx])


@dataclass(frozen=True)
class RowPlan:
    """A row before tokenisation: its first event row and its readouts (indices into
    ``Readouts``, ascending event order)."""

    start: int
    readouts: np.ndarray


@dataclass(frozen=True)
class PackedRows:
    """Tokenised rows: ids, and per readout its position in the row and its target index."""

    ids: list[np.ndarray]
    positions: list[np.ndarray]
    readouts: list[np.ndarray]

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def lengths(self) -> np.ndarray:
        return np.asarray([len(r) for r in self.ids], dtype=np.int64)

    @property
    def tokens(self) -> int:
        return int(sum(len(r) for r in self.ids))


def plan_rows(users: np.ndarray, readouts: Readouts, chunk: int) -> list[RowPlan]:
    """Rows of at most ``chunk`` events covering every readout once (see the module doc)."""
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    order = np.argsort(readouts.rows, kind="stable")  # event order; users are contiguous
    plans: list[RowPlan] = []
    current: list[int] = []
    start = -1
    for i in order.tolist():
        row, first = int(readouts.rows[i]), int(readouts.starts[i])
        same_user = current and users[row] == users[start]
        if current and same_user and row - start < chunk and first >= start:
            current.append(i)
            continue
        if current:
            plans.append(RowPlan(start, np.asarray(current, dtype=np.int64)))
        current, start = [i], first
    if current:
        plans.append(RowPlan(start, np.asarray(current, dtype=np.int64)))
    return plans


def encode_rows(
    encoder: PieceEncoder, table: EventTable, readouts: Readouts, plans: Sequence[RowPlan]
) -> PackedRows:
    """Token ids and readout positions of planned rows (distinct pieces tokenised in bulk)."""
    rendered = [_render(table, readouts, plan) for plan in plans]
    distinct = list(dict.fromkeys(p for heads, names in rendered for p in (*heads, *names)))
    piece_ids = dict(zip(distinct, encoder.encode_batch(distinct), strict=True))
    ids_out: list[np.ndarray] = []
    pos_out: list[np.ndarray] = []
    for plan, (heads, names) in zip(plans, rendered, strict=True):
        first = plan.start
        wanted = {int(readouts.rows[i]) - first for i in plan.readouts}
        ids = list(encoder.header_ids)
        where: dict[int, int] = {}
        for k, head in enumerate(heads):
            ids.extend(piece_ids[head])
            if k in wanted:
                where[k] = len(ids) - 1
            if k < len(names):
                ids.extend(piece_ids[names[k]])
        ids_out.append(np.asarray(ids, dtype=np.int32))
        pos_out.append(
            np.asarray([where[int(readouts.rows[i]) - first] for i in plan.readouts], np.int64)
        )
    return PackedRows(ids_out, pos_out, [p.readouts for p in plans])


def _render(table: EventTable, readouts: Readouts, plan: RowPlan) -> tuple[list[str], list[str]]:
    """Head pieces of the row's events and name pieces of all but the last (the readout)."""
    last = int(readouts.rows[plan.readouts[-1]])
    heads: list[str] = []
    prev: datetime | None = None
    for event in range(plan.start, last + 1):
        ts = table.time(event)
        heads.append(event_head(ts, table.context(event), prev))
        prev = ts if ts is not None else prev
    names = [name_piece(str(table.behaviors[e])) for e in range(plan.start, last)]
    return heads, names


def pack(encoder: PieceEncoder, table: EventTable, readouts: Readouts, chunk: int) -> PackedRows:
    return encode_rows(encoder, table, readouts, plan_rows(table.users, readouts, chunk))


def describe(rows: PackedRows) -> dict[str, Any]:
    """Sizes reported with a run: rows, readouts, tokens, tokens per readout."""
    lengths = rows.lengths
    n = int(sum(len(r) for r in rows.readouts))
    return {
        "rows": len(rows),
        "readouts": n,
        "tokens": int(lengths.sum()),
        "tokens_per_readout": round(float(lengths.sum()) / max(n, 1), 1),
        "longest_row": int(lengths.max()) if len(lengths) else 0,
        "mean_row": round(float(lengths.mean()), 1) if len(lengths) else 0.0,
    }
