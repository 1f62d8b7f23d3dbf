"""Per-sample label sequences for the classical baselines, built once from a prepared dataset.

Classical systems see what an LLM prompt shows and more: the user's WHOLE past (every event of
the same user before the target, from ``events.parquet``), not only the K events in the prompt.
Labels are vocabulary indices; an event whose behavior is outside the vocabulary is -1 (it still
counts as a step in a sequence). Raw behavior names (what the prompt shows) are kept as ids into
``raw_names`` for the sequence model.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.vocabulary import name_index

OOV = -1


@dataclass(frozen=True)
class SequenceData:
    """One row per sample of a split.

    ``labels[i]`` / ``raw[i]``: the user's events before sample i's target, oldest first
    (vocabulary index or -1; raw-name id). ``hour[i]`` / ``weekday[i]``: of the target event
    ("now"), -1 when unknown. ``targets[i]``: vocabulary index of the target.
    """

    user_ids: Sequence[str]
    labels: Sequence[np.ndarray]
    raw: Sequence[np.ndarray]
    targets: np.ndarray
    hour: np.ndarray
    weekday: np.ndarray

    def __post_init__(self) -> None:
        n = len(self.targets)
        for name in ("user_ids", "labels", "raw", "hour", "weekday"):
            if len(getattr(self, name)) != n:
                raise ValueError(
                    f"SequenceData.{name} has {len(getattr(self, name))} rows, targets has {n}"
                )

    def __len__(self) -> int:
        return len(self.targets)

    def subset(self, index: np.ndarray) -> SequenceData:
        idx = [int(i) for i in index]
        return SequenceData(
            user_ids=[self.user_ids[i] for i in idx],
            labels=[self.labels[i] for i in idx],
            raw=[self.raw[i] for i in idx],
            targets=self.targets[idx],
            hour=self.hour[idx],
            weekday=self.weekday[idx],
        )

    def last_labels(self) -> np.ndarray:
        """The label of the event right before each target (-1: none or out of vocabulary)."""
        return np.array([int(h[-1]) if len(h) else OOV for h in self.labels], dtype=np.int64)


@dataclass(frozen=True)
class EventArrays:
    """events.parquet as arrays: per row the vocabulary index (-1 = none), raw-name id, the
    row where the user's events start, and the weekday/hour (-1 = unknown)."""

    labels: np.ndarray
    raw: np.ndarray
    user_start: np.ndarray
    users: np.ndarray
    weekday: np.ndarray
    hour: np.ndarray
    raw_names: tuple[str, ...]


def load_event_arrays(root: Any, label_names: Sequence[str]) -> EventArrays:
    """Read a prepared dataset's events.parquet (``behaviorlm/training/data/dataset.py`` has
    the layout)."""
    import pandas as pd

    events = pd.read_parquet(
        root / "events.parquet", columns=["user_id", "timestamp", "behavior", "label"]
    )
    index = name_index(label_names)
    labels = events["label"].map(index).fillna(OOV).to_numpy(dtype=np.int64)
    raw, raw_names = pd.factorize(events["behavior"].astype(str), sort=True)
    users = events["user_id"].astype(str).to_numpy(dtype=object)
    rows = np.arange(len(events), dtype=np.int64)
    user_start = rows - events.groupby("user_id", sort=False).cumcount().to_numpy(dtype=np.int64)
    ts = pd.to_datetime(events["timestamp"])
    known = ts.notna().to_numpy()
    weekday = np.where(known, ts.dt.weekday.fillna(0).to_numpy(dtype=np.int64), -1)
    hour = np.where(known, ts.dt.hour.fillna(0).to_numpy(dtype=np.int64), -1)
    return EventArrays(
        labels,
        raw.astype(np.int64),
        user_start,
        users,
        weekday,
        hour,
        tuple(str(n) for n in raw_names),
    )


def split_sequences(
    root: Any, split: str, events: EventArrays, label_names: Sequence[str]
) -> SequenceData:
    """The samples of ``split`` (in samples.parquet order, like ``PreparedDataset.samples``)."""
    import pandas as pd

    samples = pd.read_parquet(root / "samples.parquet", columns=["split", "target_row", "target"])
    samples = samples[samples["split"] == split]
    rows = samples["target_row"].to_numpy(dtype=np.int64)
    index = name_index(label_names)
    targets = np.array([index[str(t)] for t in samples["target"]], dtype=np.int64)
    starts = events.user_start[rows]
    return SequenceData(
        user_ids=[str(u) for u in events.users[rows]],
        labels=[events.labels[s:r] for s, r in zip(starts, rows, strict=True)],
        raw=[events.raw[s:r] for s, r in zip(starts, rows, strict=True)],
        targets=targets,
        hour=events.hour[rows],
        weekday=events.weekday[rows],
    )
