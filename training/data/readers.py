"""Readers: a file (or a dataset directory) -> the canonical event table.

- :func:`read_generic`: any CSV / TSV / JSONL / Parquet log (optionally gzip'ed), with a
  column mapping.
- :func:`read_context_trails`: Context Trails check-ins (``checkins.csv.gz``); the behavior is
  the venue category, its parent ``category_lvl1``; optional weather context from
  ``trails_weather.zip``.
- :func:`read_smartthings`: SmartSense/SmartGuard SmartThings windows (``windows.csv.gz``).

Each returns a :class:`LoadedLog`; the skip log counts every row left out, by reason.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from behaviorlm.errors import InputError
from training.data.chains import chain_windows
from training.data.events import ORDER, TARGET_OK, SkipLog, canonicalize, require_columns

FORMATS = ("generic", "context-trails", "smartthings")


@dataclass
class LoadedLog:
    """Canonical events plus what the reader knows about them."""

    events: pd.DataFrame
    skips: SkipLog
    source: str
    input_rows: int
    name: str
    info: dict[str, Any] = field(default_factory=dict)


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what}: {path} does not exist")
    return path


def _suffixes(path: Path) -> list[str]:
    return [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]


def read_table(path: Path, sep: str | None = None) -> tuple[pd.DataFrame, str, int]:
    """(all columns as read, the unit messages use, the line/row number of the first record).

    CSV/TSV/JSONL columns are read as text so ids keep their leading zeros and timestamps
    their offsets; line N of a message is the file's line N (header = line 1).
    """
    _existing(path, "--input")
    kind = (_suffixes(path) or [""])[-1]
    try:
        if kind in (".parquet", ".pq"):
            return pd.read_parquet(path), "row", 1
        if kind in (".jsonl", ".ndjson", ".json"):
            return _read_jsonl(path), "line", 1
        if kind in (".csv", ".tsv", ".txt", ""):
            delimiter = sep or ("\t" if kind == ".tsv" else ",")
            frame = pd.read_csv(
                path,
                sep=delimiter,
                dtype=str,
                keep_default_na=False,
                na_values=[""],
                engine="pyarrow" if len(delimiter) == 1 else "python",
            )
            return frame, "line", 2
    except InputError:
        raise
    except (OSError, ValueError, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read as {kind or 'csv'} ({exc})") from exc
    raise InputError(f"{path}: unknown file type {kind!r}; use .csv, .tsv, .jsonl or .parquet")


def _read_jsonl(path: Path) -> pd.DataFrame:
    try:
        frame = pd.read_json(path, lines=True, dtype=False, convert_dates=False)
    except ValueError as exc:
        raise InputError(_first_bad_json_line(path) or f"{path}: not JSON lines ({exc})") from exc
    return frame


def _first_bad_json_line(path: Path) -> str | None:
    import gzip

    opener: Any = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8") as fh:
        for i, line in enumerate(fh, start=1):
            if not line.strip():
                return f"{path} line {i}: empty line in JSON lines"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as exc:
                return f"{path} line {i}: invalid JSON ({exc.msg}): {line.strip()[:80]!r}"
            if not isinstance(obj, dict):
                return f"{path} line {i}: expected a JSON object, got {line.strip()[:80]!r}"
    return None


def read_generic(
    path: Path,
    *,
    user_col: str = "user_id",
    time_col: str | None = "timestamp",
    behavior_col: str = "behavior",
    context_cols: Sequence[str] = (),
    parent_col: str | None = None,
    split_col: str | None = None,
    time_format: str | None = None,
    sep: str | None = None,
    times_are_utc: bool = False,
    strict: bool = False,
) -> LoadedLog:
    """Any log file; ``split_col`` holds the log's own split (train/validation/test, or
    trn/vld/test, ...) for ``--split dataset``."""
    frame, unit, first = read_table(path, sep)
    skips = SkipLog(strict=strict)
    events = canonicalize(
        frame,
        source=str(path),
        user_col=user_col,
        behavior_col=behavior_col,
        time_col=time_col,
        context_cols=context_cols,
        parent_col=parent_col,
        split_col=split_col,
        lines=np.arange(first, first + len(frame)),
        unit=unit,
        time_format=time_format,
        times_are_utc=times_are_utc,
        skips=skips,
    )
    return LoadedLog(events, skips, str(path), len(frame), path.name.split(".")[0])


def _dataset_file(path: Path, filename: str, flag: str) -> Path:
    """A dataset directory or the file itself."""
    _existing(path, flag)
    if path.is_dir():
        found = path / filename
        if not found.is_file():
            listing = sorted(p.name for p in path.iterdir())[:20]
            raise InputError(f"{flag}: {path} has no {filename} (found {listing})")
        return found
    return path


def read_context_trails(
    path: Path,
    *,
    weather: Path | None = None,
    times_are_utc: bool = False,
    strict: bool = False,
) -> LoadedLog:
    """Check-ins: behavior = ``category``, parent = ``category_lvl1``; times keep their offset.

    With ``weather`` (``trails_weather.zip`` or its CSV), each check-in gets context
    ``weather`` (conditions) and ``temp`` (°C, rounded) matched on trail, user, venue and time;
    check-ins without a match simply have no weather context (counted in ``info``).

    ``times_are_utc``: the Petaling Jaya file's clock times look like UTC written with a +08:00
    offset (check-ins peak at 05h, breakfast spots at 02h, bars at 13-15h); this moves them
    to local time (+8 h). Off by default: the data is kept as published.
    """
    file = _dataset_file(path, "checkins.csv.gz", "--input")
    frame, _, _ = read_table(file)
    skips = SkipLog(strict=strict)
    context: list[str] = []
    info: dict[str, Any] = {"format": "context-trails", "times_are_utc": times_are_utc}
    if weather is not None:
        frame, matched = _join_weather(frame, file, weather)
        context = ["weather", "temp"]
        info["weather"] = {"file": str(weather), "checkins_matched": matched}
    events = canonicalize(
        frame,
        source=str(file),
        user_col="user_id",
        behavior_col="category",
        time_col="timestamp",
        parent_col="category_lvl1",
        context_cols=context,
        times_are_utc=times_are_utc,
        skips=skips,
    )
    name = file.parent.name if path.is_dir() else file.name.split(".")[0]
    return LoadedLog(events, skips, str(file), len(frame), name, info)


def _join_weather(frame: pd.DataFrame, file: Path, weather: Path) -> tuple[pd.DataFrame, int]:
    weather = _dataset_file(weather, "trails_weather.zip", "--weather")
    try:
        table = pd.read_csv(weather, sep=";", dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, ValueError) as exc:
        raise InputError(f"--weather: cannot read {weather} ({exc})") from exc
    key = ["trail_id", "user_id", "venue_id", "timestamp"]
    require_columns(
        table, {f"--weather ({k})": k for k in [*key, "temp", "conditions"]}, str(weather)
    )
    require_columns(frame, {f"weather join ({k})": k for k in key}, str(file))
    table = table.drop_duplicates(subset=key)
    temp = pd.to_numeric(table["temp"], errors="coerce").round()
    table = table.assign(
        weather=table["conditions"].where(table["conditions"].str.lower() != "nan"),
        temp=(temp.astype("Int64").astype("string") + "C").where(temp.notna()),
    )[[*key, "weather", "temp"]]
    joined = frame.merge(table, on=key, how="left", validate="many_to_one")
    matched = int(joined["weather"].notna().sum())
    return joined, matched


_AUTOMATIC_SUFFIX = ":refresh refresh"
_LOCATION = "None:location"
_WINDOW_LEN = 10


def read_smartthings(
    path: Path, *, keep_automatic: bool = False, chain: bool = True, strict: bool = False
) -> LoadedLog:
    """SmartThings windows of 10 consecutive actions -> per-user sequences.

    ``chain`` (the default): windows are chained back into the users' sequences
    (:mod:`training.data.chains`), so every action is a target once with its real history,
    and a chronological split per sequence applies; each action keeps the authors' split of
    the window whose last action it is (``--split dataset``). ``chain=False``: one sequence
    per window, only its last action a target (the authors' protocol). Context: ``weekday``
    and ``hours`` (the 3-hour bin); there are no timestamps. Automatic ``*:refresh refresh``
    polls and ``None:location`` events are removed unless ``keep_automatic`` (counted).
    """
    file = _dataset_file(path, "windows.csv.gz", "--input")
    frame, _, _ = read_table(file)
    cols = ["window_id", "split", "position", "day_of_week", "hour_bin", "action"]
    require_columns(frame, {c: c for c in cols}, str(file))
    skips = SkipLog(strict=strict)
    lines = np.arange(2, len(frame) + 2)
    raw_info: dict[str, Any] = {
        "windows_in_file": int(frame.groupby(["split", "window_id"]).ngroups),
        "action_types_in_file": int(frame["action"].nunique()),
    }
    position = pd.to_numeric(frame["position"], errors="coerce")
    bad_pos = position.isna() | (position < 0) | (position >= _WINDOW_LEN)
    if bad_pos.any():
        i = int(np.flatnonzero(bad_pos.to_numpy())[0])
        raise InputError(
            f"{file} line {lines[i]}: position {frame['position'].iloc[i]!r} "
            f"is not an integer in 0..{_WINDOW_LEN - 1}"
        )
    frame = frame.assign(position=position.astype("int64"), _line=lines)
    action = frame["action"].astype("string").str.strip()
    automatic = (
        action.str.endswith(_AUTOMATIC_SUFFIX).fillna(False).to_numpy()
        | (action == _LOCATION).fillna(False).to_numpy()
    )
    last = frame["position"].to_numpy() == _WINDOW_LEN - 1
    # What one target per window would give (the count before chaining).
    raw_info["targets_one_per_window"] = int((last & (keep_automatic | ~automatic)).sum())
    if chain:
        frame, report = chain_windows(frame.assign(_automatic=automatic))
        raw_info["chains"] = report.to_json()
        automatic = frame["_automatic"].to_numpy(dtype=bool)
        user_col, split_col = "_chain", "_split"
        target_ok = np.ones(len(frame), dtype=bool)
    else:
        frame = frame.assign(
            _window=frame["split"].astype(str) + ":" + frame["window_id"].astype(str),
            _automatic=automatic,
        )
        user_col, split_col = "_window", "split"
        target_ok = last
    if not keep_automatic:
        _count_automatic(frame, skips)
        if not chain:  # a window whose last action is filtered gives no target
            lost = set(frame.loc[automatic & target_ok, "_window"])
            orphan = frame["_window"].isin(lost).to_numpy() & ~automatic
            skips.add(
                "action of a window whose last action was filtered (no target)", int(orphan.sum())
            )
            automatic = automatic | orphan
        frame, target_ok = frame[~automatic], target_ok[~automatic]
    if not chain:
        order = np.lexsort((frame["position"].to_numpy(), frame["_window"].to_numpy()))
        frame, target_ok = frame.iloc[order], target_ok[order]
    frame = frame.assign(
        weekday=frame["day_of_week"].str.removeprefix("day:"),
        hours=_hour_bin(frame["hour_bin"]),
    )
    events = canonicalize(
        frame,
        source=str(file),
        user_col=user_col,
        behavior_col="action",
        parent_col="device" if "device" in frame else None,
        context_cols=["weekday", "hours"],
        split_col=split_col,
        lines=frame["_line"].to_numpy(),
        skips=skips,
    )
    events[TARGET_OK] = target_ok[events[ORDER].to_numpy()]
    name = file.parent.name if path.is_dir() else file.name.split(".")[0]
    info = {
        **raw_info,
        "format": "smartthings",
        "keep_automatic": keep_automatic,
        "chained": chain,
        "sequences": int(pd.Series(frame[user_col]).nunique()),
    }
    return LoadedLog(events, skips, str(file), len(lines), name, info)


def _count_automatic(frame: pd.DataFrame, skips: SkipLog) -> None:
    action = frame["action"].astype("string").str.strip()
    auto = action.str.endswith(_AUTOMATIC_SUFFIX).fillna(False).to_numpy()
    location = (action == _LOCATION).fillna(False).to_numpy()
    skips.add("automatic '*:refresh refresh' poll (filtered)", int(auto.sum()))
    skips.add("'None:location' event (filtered)", int(location.sum()))


def _hour_bin(raw: pd.Series) -> pd.Series:
    """``time:(6~9)`` -> ``06-09h``."""
    parts = raw.astype("string").str.extract(r"\((\d+)~(\d+)\)")
    text = parts[0].str.zfill(2) + "-" + parts[1].str.zfill(2) + "h"
    return text.fillna(raw.astype("string"))
