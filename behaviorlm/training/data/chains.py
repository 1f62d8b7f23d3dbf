"""Rebuilding SmartThings users' sequences from their sliding windows.

SmartThings windows are 10 consecutive actions of one (unnamed) user, sliding one action at a
time, and window ids are not in time order. Taken one window at a time only the last action is
a target (France: 513 targets out of 4,423 windows). But window B follows window A when B's
first 9 (action, weekday, hour bin) triples equal A's last 9, so the windows chain back into
per-user sequences, where every action is a target with its real history once.

Rule (deterministic): windows are visited in (authors' split: trn, vld, test; window id) order;
a window's successor is, among the unclaimed windows whose head equals its tail, one in the
same authors' split if there is one, else the first in visiting order. A window with several
candidates counts as ambiguous; a candidate already taken by an earlier window is skipped
(counted). Chains start at windows nobody claimed; windows left over sit on cycles (a repeated
pattern), which are cut at their first window in visiting order (counted). A chain of windows
W1..Wm becomes W1's 10 actions followed by the last action of each later window, so overlapping
windows never duplicate an action. Each action keeps the authors' split of the window whose
last action it is (none for W1's first 9).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

SPLIT_ORDER = {"trn": 0, "vld": 1, "test": 2}
TRIPLE = ("action", "day_of_week", "hour_bin")
WINDOW_LEN = 10


@dataclass
class ChainReport:
    windows: int = 0
    with_predecessor: int = 0
    sequences: int = 0
    ambiguous: int = 0
    taken: int = 0
    cycles_cut: int = 0
    incomplete_windows: int = 0
    lengths: dict[str, float] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "windows": self.windows,
            "windows_chained_to_a_predecessor": self.with_predecessor,
            "sequences": self.sequences,
            "ambiguous_successors": self.ambiguous,
            "successors_already_taken": self.taken,
            "cycles_cut": self.cycles_cut,
            "incomplete_windows": self.incomplete_windows,
            "sequence_length": self.lengths,
        }


def chain_windows(frame: pd.DataFrame) -> tuple[pd.DataFrame, ChainReport]:
    """Rows of the windows (columns: split, window_id, position, the TRIPLE columns, others) ->
    the rows of the chained sequences in order, with ``_chain`` (sequence id) and ``_split``
    (the authors' split of the window whose last action the row is, or None)."""
    report = ChainReport()
    frame = frame.assign(_rank=frame["split"].map(SPLIT_ORDER).fillna(3))
    frame = frame.sort_values(["_rank", "split", "window_id", "position"], kind="stable")
    keys: list[tuple[str, str]] = []
    rows: dict[tuple[str, str], np.ndarray] = {}
    triples: dict[tuple[str, str], list[tuple[str, ...]]] = {}
    values = frame[list(TRIPLE)].astype(str).to_numpy()
    index = np.arange(len(frame))
    groups: dict[Any, Any] = frame.groupby(["split", "window_id"], sort=False).indices
    for key, idx in groups.items():
        k = (str(key[0]), str(key[1]))
        keys.append(k)
        rows[k] = index[idx]
        triples[k] = [tuple(v) for v in values[idx]]
    report.windows = len(keys)
    complete = {k for k in keys if len(triples[k]) == WINDOW_LEN}
    report.incomplete_windows = len(keys) - len(complete)
    successor = _successors([k for k in keys if k in complete], triples, report)
    chains = _chains(keys, successor, report)
    out = _rows(frame, chains, rows)
    lengths = np.asarray([len(c) + WINDOW_LEN - 1 for c in chains], dtype=float)
    report.lengths = {
        "min": float(lengths.min()),
        "median": float(np.median(lengths)),
        "mean": round(float(lengths.mean()), 1),
        "max": float(lengths.max()),
    }
    return out, report


def _successors(
    keys: Sequence[tuple[str, str]],
    triples: dict[tuple[str, str], list[tuple[str, ...]]],
    report: ChainReport,
) -> dict[tuple[str, str], tuple[str, str]]:
    by_head: dict[tuple[tuple[str, ...], ...], list[tuple[str, str]]] = {}
    for k in keys:  # in visiting order
        by_head.setdefault(tuple(triples[k][:-1]), []).append(k)
    successor: dict[tuple[str, str], tuple[str, str]] = {}
    claimed: set[tuple[str, str]] = set()
    for a in keys:
        candidates = [b for b in by_head.get(tuple(triples[a][1:]), []) if b != a]
        if len(candidates) > 1:
            report.ambiguous += 1
        free = [b for b in candidates if b not in claimed]
        if len(free) < len(candidates):
            report.taken += 1
        if not free:
            continue
        same = [b for b in free if b[0] == a[0]]
        b = (same or free)[0]
        successor[a] = b
        claimed.add(b)
    report.with_predecessor = len(claimed)
    return successor


def _chains(
    keys: Sequence[tuple[str, str]],
    successor: dict[tuple[str, str], tuple[str, str]],
    report: ChainReport,
) -> list[list[tuple[str, str]]]:
    has_pred = set(successor.values())
    seen: set[tuple[str, str]] = set()
    chains: list[list[tuple[str, str]]] = []
    starts = [k for k in keys if k not in has_pred]
    leftovers = [k for k in keys if k in has_pred]
    for start in [*starts, *leftovers]:
        if start in seen:
            continue
        if start in has_pred:
            report.cycles_cut += 1  # every window of a cycle has a predecessor
        chain = []
        k: tuple[str, str] | None = start
        while k is not None and k not in seen:
            seen.add(k)
            chain.append(k)
            k = successor.get(k)
        chains.append(chain)
    report.sequences = len(chains)
    return chains


def _rows(
    frame: pd.DataFrame,
    chains: Sequence[Sequence[tuple[str, str]]],
    rows: dict[tuple[str, str], np.ndarray],
) -> pd.DataFrame:
    take: list[int] = []
    chain_id: list[int] = []
    split: list[str | None] = []
    for c, chain in enumerate(chains):
        first = rows[chain[0]]
        take.extend(first.tolist())
        split.extend([None] * (len(first) - 1) + [chain[0][0]])
        for k in chain[1:]:
            take.append(int(rows[k][-1]))
            split.append(k[0])
        chain_id.extend([c] * (len(first) + len(chain) - 1))
    out = frame.iloc[take].drop(columns=["_rank"]).reset_index(drop=True)
    out["_chain"] = [f"seq-{c:05d}" for c in chain_id]
    out["_split"] = pd.Series(split, dtype="object")
    return out
