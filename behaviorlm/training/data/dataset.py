"""A prepared dataset on disk and its lazy reader (the contract with training and evaluation).

Directory layout (written by :func:`write_prepared`):

- ``events.parquet``: every kept event, per user in time order: ``user_id``, ``timestamp``
  (wall-clock, naive, may be null), ``utc_offset_min`` (null = naive time), ``behavior`` (raw
  name, shown in prompts), ``label`` (vocabulary label, null when the rules drop it) and
  ``ctx.<name>`` context columns.
- ``samples.parquet``: one row per sample: ``split``, ``target_row`` (row of the target event in
  events.parquet), ``history_start`` (row of the first history event; the history is the rows
  ``history_start .. target_row-1``, the same user's previous K events), ``target`` (label).
- ``vocabulary.json`` (labels, training counts, anchor flags), ``label_map.json`` (raw name ->
  label or null), ``prepare.json`` (dataset name, source, config), ``stats.json``, ``stats.md``,
  ``behavior_frequency.png``.

A :class:`~behaviorlm.events.Sample` is built only when indexed, so a million samples cost
a few arrays, not a million objects.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from functools import cached_property
from pathlib import Path
from typing import Any, overload

import numpy as np
import pandas as pd

from behaviorlm.errors import InputError
from behaviorlm.events import Event, Sample, normalize_behavior
from behaviorlm.repeats import RepeatInput, hours_weekdays
from behaviorlm.training.data.config import SPLITS
from behaviorlm.vocabulary import Vocabulary

EVENTS_FILE = "events.parquet"
SAMPLES_FILE = "samples.parquet"
VOCABULARY_FILE = "vocabulary.json"
LABEL_MAP_FILE = "label_map.json"
PREPARE_FILE = "prepare.json"
STATS_FILE = "stats.json"
FORMAT_VERSION = 1

EVENT_COLUMNS = ("user_id", "timestamp", "utc_offset_min", "behavior", "label")
SAMPLE_COLUMNS = ("split", "target_row", "history_start", "target")
_EPOCH = datetime(1970, 1, 1)


class EventTable:
    """Column arrays of events.parquet and the Event built from a row."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.users: np.ndarray = frame["user_id"].astype(str).to_numpy(dtype=object)
        self.behaviors: np.ndarray = frame["behavior"].astype(str).to_numpy(dtype=object)
        ts = frame["timestamp"].astype("datetime64[us]")
        self.has_time: np.ndarray = ts.notna().to_numpy()
        self.micros: np.ndarray = ts.to_numpy().astype("int64")
        offset = frame["utc_offset_min"].astype("Int32")
        self.has_offset: np.ndarray = offset.notna().to_numpy()
        self.offsets: np.ndarray = offset.fillna(0).to_numpy(dtype="int64")
        self.context_names = [c[len("ctx.") :] for c in frame.columns if c.startswith("ctx.")]
        self.context_values = [
            frame["ctx." + n].astype(object).where(frame["ctx." + n].notna(), None).to_numpy()
            for n in self.context_names
        ]
        self._zones: dict[int, timezone] = {}

    def time(self, row: int) -> datetime | None:
        if not self.has_time[row]:
            return None
        ts = _EPOCH + timedelta(microseconds=int(self.micros[row]))
        if not self.has_offset[row]:
            return ts
        minutes = int(self.offsets[row])
        zone = self._zones.get(minutes)
        if zone is None:
            zone = self._zones[minutes] = timezone(timedelta(minutes=minutes))
        return ts.replace(tzinfo=zone)

    def context(self, row: int) -> dict[str, str]:
        return {
            name: str(values[row])
            for name, values in zip(self.context_names, self.context_values, strict=True)
            if values[row] is not None
        }

    def event(self, row: int) -> Event:
        return Event(str(self.behaviors[row]), self.time(row), self.context(row))

    @cached_property
    def user_first(self) -> np.ndarray:
        """[rows] the row where each row's user begins (users' events are contiguous)."""
        users = self.users
        if len(users) == 0:
            return np.zeros(0, dtype=np.int64)
        change = np.flatnonzero(users[1:] != users[:-1]) + 1
        firsts = np.concatenate([[0], change]).astype(np.int64)
        return firsts[np.searchsorted(firsts, np.arange(len(users)), side="right") - 1]

    @cached_property
    def hours_weekdays(self) -> tuple[np.ndarray, np.ndarray]:
        """[rows] local hour and weekday of each event (``behaviorlm.repeats.UNKNOWN``: none)."""
        return hours_weekdays(self.micros, self.has_time)

    def past(self, row: int, window: int, shown: int) -> RepeatInput:
        """What the repeat features of a prediction at event ``row`` read: the same user's last
        ``window`` events before it, ``shown`` of them in the prompt."""
        lo = max(int(self.user_first[row]), row - window)
        hours, weekdays = self.hours_weekdays
        return RepeatInput(
            tuple(str(b) for b in self.behaviors[lo:row]),
            tuple(hours[lo:row].tolist()),
            tuple(weekdays[lo:row].tolist()),
            int(hours[row]),
            int(weekdays[row]),
            shown,
        )


class SampleView(Sequence[Sample]):
    """The samples of one split: indexable and sliceable, built on access."""

    def __init__(
        self, table: EventTable, target_rows: np.ndarray, starts: np.ndarray, targets: np.ndarray
    ) -> None:
        self._table = table
        self._rows = target_rows
        self._starts = starts
        self._targets = targets

    def __len__(self) -> int:
        return len(self._rows)

    @overload
    def __getitem__(self, index: int) -> Sample: ...

    @overload
    def __getitem__(self, index: slice) -> SampleView: ...

    def __getitem__(self, index: int | slice) -> Sample | SampleView:
        if isinstance(index, slice):
            return SampleView(
                self._table, self._rows[index], self._starts[index], self._targets[index]
            )
        row = int(self._rows[index])  # numpy raises IndexError out of range
        t = self._table
        history = tuple(t.event(r) for r in range(int(self._starts[index]), row))
        return Sample(
            user_id=str(t.users[row]),
            history=history,
            target=str(self._targets[index]),
            now=t.time(row),
            now_context=t.context(row),
        )

    def __iter__(self) -> Iterator[Sample]:
        for i in range(len(self)):
            yield self[i]

    def past(self, index: int, window: int, shown: int) -> RepeatInput:
        """The repeat features' input of sample ``index`` (``EventTable.past``)."""
        return self._table.past(int(self._rows[index]), window, shown)

    def take(self, indices: Sequence[int] | np.ndarray) -> SampleView:
        """A view of the given sample positions (e.g. a class-balanced subset)."""
        idx = np.asarray(indices, dtype=np.int64)
        return SampleView(self._table, self._rows[idx], self._starts[idx], self._targets[idx])


class PreparedDataset:
    """A prepared dataset directory, loaded lazily."""

    def __init__(
        self,
        root: Path,
        vocabulary: Vocabulary,
        info: dict[str, Any],
        label_map: Mapping[str, str | None],
        events: pd.DataFrame | None = None,
        samples: pd.DataFrame | None = None,
    ) -> None:
        """``events`` / ``samples`` None: read from ``root`` when first needed (a prepared
        10M-event log is ~1.5 GB in pandas; `data prepare` itself never needs it)."""
        self.root = root
        self.vocabulary = vocabulary
        self.info = info
        self._label_map = dict(label_map)
        if events is not None:
            self.__dict__["_events"] = events
        if samples is not None:
            self.__dict__["_samples"] = samples

    @classmethod
    def load(cls, root: Path | str) -> PreparedDataset:
        root = Path(root)
        needed = [EVENTS_FILE, SAMPLES_FILE, VOCABULARY_FILE, LABEL_MAP_FILE, PREPARE_FILE]
        missing = [f for f in needed if not (root / f).is_file()]
        if missing:
            raise InputError(
                f"{root}: not a prepared dataset (missing {', '.join(missing)}); "
                "create one with `behaviorlm data prepare`"
            )
        info = _read_json(root / PREPARE_FILE)
        if info.get("format_version") != FORMAT_VERSION:
            raise InputError(
                f"{root / PREPARE_FILE}: format_version {info.get('format_version')!r}, this "
                f"code reads {FORMAT_VERSION}; prepare the dataset again"
            )
        for name, cols in ((EVENTS_FILE, EVENT_COLUMNS), (SAMPLES_FILE, SAMPLE_COLUMNS)):
            lost = [c for c in cols if c not in _parquet_columns(root / name)]
            if lost:
                raise InputError(f"{root / name}: missing column(s) {lost}")
        return cls(
            root,
            Vocabulary.load(root / VOCABULARY_FILE),
            info,
            _read_json(root / LABEL_MAP_FILE),
        )

    @cached_property
    def _events(self) -> pd.DataFrame:
        return _read_parquet(self.root / EVENTS_FILE)

    @cached_property
    def _samples(self) -> pd.DataFrame:
        return _read_parquet(self.root / SAMPLES_FILE)

    @cached_property
    def _by_split(self) -> dict[str, pd.DataFrame]:
        samples = self._samples
        return {s: samples[samples["split"] == s] for s in SPLITS}

    @cached_property
    def _table(self) -> EventTable:
        return EventTable(self._events)

    @property
    def name(self) -> str:
        return str(self.info.get("name", self.root.name))

    @property
    def stats(self) -> dict[str, Any]:
        path = self.root / STATS_FILE
        return _read_json(path) if path.is_file() else {}

    def splits(self) -> tuple[str, ...]:
        return SPLITS

    def _split(self, split: str) -> pd.DataFrame:
        if split not in self._by_split:
            raise InputError(f"unknown split {split!r}; splits are {list(SPLITS)}")
        return self._by_split[split]

    def num_samples(self, split: str) -> int:
        return len(self._split(split))

    @property
    def table(self) -> EventTable:
        """The events (rows of events.parquet), for packed training rows."""
        return self._table

    def split_arrays(self, split: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(target event rows, history start rows, target labels) of a split's samples."""
        frame = self._split(split)
        return (
            frame["target_row"].to_numpy(dtype=np.int64),
            frame["history_start"].to_numpy(dtype=np.int64),
            frame["target"].astype(str).to_numpy(dtype=object),
        )

    @property
    def history_len(self) -> int:
        """K: the history events a sample shows (the prepare config's history_len)."""
        return int(self.info.get("config", {}).get("history_len", 10))

    def samples(self, split: str) -> SampleView:
        return SampleView(self._table, *self.split_arrays(split))

    def targets(self, split: str) -> list[str]:
        return [str(t) for t in self._split(split)["target"].tolist()]

    def user_ids(self, split: str) -> list[str]:
        rows = self._split(split)["target_row"].to_numpy(dtype=np.int64)
        return [str(u) for u in self._table.users[rows]]

    def label_of(self, raw_behavior: str) -> str | None:
        """The label the vocabulary rules give a raw behavior name (None: dropped).

        Names the log never showed are treated as rare: the ``other`` label when the rules
        have one, else None.
        """
        name = normalize_behavior(raw_behavior)
        if name in self._label_map:
            return self._label_map[name]
        if name in self.vocabulary:
            return name
        config = self.info.get("config", {})
        other = str(config.get("other_label", "other"))
        if config.get("fallback") in ("other", "parent") and other in self.vocabulary:
            return other
        return None


def _parquet_columns(path: Path) -> list[str]:
    import pyarrow.parquet as pq

    try:
        return list(pq.read_schema(path).names)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: cannot read the parquet file ({exc})") from exc


def _read_parquet(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except Exception as exc:  # pyarrow raises several types for a damaged file
        raise InputError(f"{path}: cannot read the parquet file ({exc})") from exc


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: expected a JSON object")
    return data


def write_prepared(
    out_dir: Path | str,
    events: pd.DataFrame,
    samples: pd.DataFrame,
    vocabulary: Vocabulary,
    label_map: Mapping[str, str | None],
    info: Mapping[str, Any],
    stats: Mapping[str, Any] | None = None,
    overwrite: bool = False,
) -> PreparedDataset:
    """Write a prepared dataset atomically (a half-written directory never looks prepared).

    ``events`` needs the columns of events.parquet (``ctx.*`` optional), ``samples`` those of
    samples.parquet; ``info`` is stored as prepare.json. The pipeline
    (:func:`behaviorlm.training.data.pipeline.prepare_log`) is the usual way in; this is the raw
    writer.
    """
    out = Path(out_dir)
    for name, frame, cols in (
        ("events", events, EVENT_COLUMNS),
        ("samples", samples, SAMPLE_COLUMNS),
    ):
        lost = [c for c in cols if c not in frame.columns]
        if lost:
            raise InputError(f"write_prepared: {name} table lacks column(s) {lost}")
    unknown = sorted(set(samples["target"].astype(str)) - set(vocabulary.names))
    if unknown:
        raise InputError(f"write_prepared: sample targets not in the vocabulary: {unknown[:5]}")
    tmp = begin_write(out, overwrite)
    ev_cols = [*EVENT_COLUMNS, *(c for c in events.columns if c.startswith("ctx."))]
    ev = events[ev_cols].reset_index(drop=True).copy()
    ev["timestamp"] = ev["timestamp"].astype("datetime64[us]")
    ev["utc_offset_min"] = ev["utc_offset_min"].astype("Int32")
    ev.to_parquet(tmp / EVENTS_FILE, index=False)
    samples[list(SAMPLE_COLUMNS)].reset_index(drop=True).astype(
        {"target_row": "int64", "history_start": "int64"}
    ).to_parquet(tmp / SAMPLES_FILE, index=False)
    write_metadata(tmp, vocabulary, label_map, info, stats)
    return commit_write(tmp, out)


def begin_write(out: Path, overwrite: bool) -> Path:
    """Checks ``out`` may be written and returns the empty ``<out>.partial`` to write into."""
    if out.exists() and any(out.iterdir()):
        if not overwrite:
            raise InputError(f"{out}: already exists and is not empty (pass --overwrite)")
        if not (out / PREPARE_FILE).is_file():
            raise InputError(f"{out}: not a prepared dataset; refusing to replace it")
    tmp = out.with_name(out.name + ".partial")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    return tmp


def write_metadata(
    tmp: Path,
    vocabulary: Vocabulary,
    label_map: Mapping[str, str | None],
    info: Mapping[str, Any],
    stats: Mapping[str, Any] | None,
) -> None:
    vocabulary.save(tmp / VOCABULARY_FILE)
    _write_json(tmp / LABEL_MAP_FILE, dict(sorted(label_map.items())))
    _write_json(tmp / PREPARE_FILE, {"format_version": FORMAT_VERSION, **info})
    if stats is not None:
        _write_json(tmp / STATS_FILE, dict(stats))


def commit_write(tmp: Path, out: Path) -> PreparedDataset:
    """Replaces ``out`` with the finished ``tmp`` (a half-written directory never looks
    prepared) and opens it."""
    if out.exists():
        shutil.rmtree(out)
    tmp.rename(out)
    return PreparedDataset.load(out)


def _write_json(path: Path, obj: Any) -> None:
    path.write_text(json.dumps(obj, indent=1, ensure_ascii=False, default=str) + "\n")
