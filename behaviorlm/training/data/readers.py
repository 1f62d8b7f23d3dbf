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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from behaviorlm.errors import InputError
from behaviorlm.training.data.chains import chain_windows
from behaviorlm.training.data.config import ReadOptions
from behaviorlm.training.data.events import ORDER, TARGET_OK, SkipLog, canonicalize, require_columns

CHUNK_ROWS = 1_000_000
# pandas' own text dtype (missing = NaN, as pd.read_csv gives), Arrow-backed.
_TEXT = pd.StringDtype("pyarrow", na_value=np.nan)


@dataclass
class LoadedLog:
    """Canonical events (in chunks, input order) plus what the reader knows about them.

    ``chunks`` can be consumed once (:func:`read_generic` reads the file as they are taken);
    ``events`` gathers them into one frame (small logs, tests). ``input_rows`` is None until
    a streamed file has been read to its end.
    """

    chunks: Iterator[pd.DataFrame]
    skips: SkipLog
    source: str
    input_rows: int | None
    name: str
    info: dict[str, Any] = field(default_factory=dict)
    _events: pd.DataFrame | None = None

    @classmethod
    def of(
        cls,
        events: pd.DataFrame,
        skips: SkipLog,
        source: str,
        input_rows: int,
        name: str,
        info: dict[str, Any] | None = None,
    ) -> LoadedLog:
        return cls(iter([events]), skips, source, input_rows, name, info or {}, events)

    @property
    def events(self) -> pd.DataFrame:
        if self._events is None:
            frames = list(self.chunks)
            self._events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()
            self.chunks = iter([self._events])
        return self._events


def _existing(path: Path, what: str) -> Path:
    if not path.exists():
        raise InputError(f"{what}: {path} does not exist")
    return path


def _suffixes(path: Path) -> list[str]:
    return [s.lower() for s in path.suffixes if s.lower() not in (".gz", ".bz2", ".zst", ".xz")]


def iter_table(
    path: Path, sep: str | None = None, chunk_rows: int = CHUNK_ROWS
) -> tuple[Iterator[pd.DataFrame], str, int]:
    """(chunks of all columns as read, the unit messages use, the line/row number of the first
    record). Chunks come from streaming readers, so a file larger than memory can be read.

    CSV/TSV/JSONL columns are read as text so ids keep their leading zeros and timestamps
    their offsets; line N of a message is the file's line N (header = line 1).
    """
    _existing(path, "--input")
    kind = (_suffixes(path) or [""])[-1]
    if kind in (".parquet", ".pq"):
        return _guarded(path, "parquet", _parquet_chunks(path, chunk_rows)), "row", 1
    if kind in (".jsonl", ".ndjson", ".json"):
        return _jsonl_chunks(path, chunk_rows), "line", 1
    if kind in (".csv", ".tsv", ".txt", ""):
        delimiter = sep or ("\t" if kind == ".tsv" else ",")
        # DuckDB reads plain and gzip'ed files with a delimiter of up to 4 bytes.
        duck = len(delimiter.encode()) <= 4 and path.suffix.lower() not in (".bz2", ".xz")
        chunks = (
            _csv_chunks(path, delimiter, chunk_rows)
            if duck
            else _pandas_csv_chunks(path, delimiter, chunk_rows)
        )
        return _guarded(path, kind or "csv", chunks), "line", 2
    raise InputError(f"{path}: unknown file type {kind!r}; use .csv, .tsv, .jsonl or .parquet")


def read_table(path: Path, sep: str | None = None) -> tuple[pd.DataFrame, str, int]:
    """The whole file as one frame (the dataset formats' files are small); see iter_table."""
    chunks, unit, first = iter_table(path, sep)
    frames = list(chunks)
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(), unit, first


def _guarded(path: Path, kind: str, chunks: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
    try:
        yield from chunks
    except InputError:
        raise
    except (OSError, ValueError, pa.ArrowException, pd.errors.ParserError) as exc:
        raise InputError(f"{path}: cannot read as {kind.lstrip('.')} ({exc})") from exc


def _as_pandas(batch: pa.RecordBatch | pa.Table) -> pd.DataFrame:
    # Arrow-backed strings: the checks in behaviorlm.training.data.events read them without a copy.
    return batch.to_pandas(types_mapper=lambda t: _TEXT if pa.types.is_string(t) else None)


def _csv_chunks(path: Path, delimiter: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    """DuckDB's CSV reader, streamed: multi-threaded and in file order (10M rows, 512 MB:
    2.6 s here, against 14 s for Arrow's streaming reader, which is single-threaded)."""
    import duckdb

    con = duckdb.connect()
    con.execute("SET memory_limit = '512MB'")
    con.execute("SET preserve_insertion_order = true")  # rows in file order: line numbers
    try:
        try:
            reader = con.sql(
                "SELECT * FROM read_csv(?, header = true, all_varchar = true, delim = ?, "
                "quote = '\"', escape = '\"')",
                params=[str(path), delimiter],
            ).to_arrow_reader(chunk_rows)
        except duckdb.Error:
            # DuckDB's strict parser refuses some files Arrow reads (SmartThings' windows mix
            # LF and CRLF line ends): those take Arrow's streaming reader.
            yield from _arrow_csv_chunks(path, delimiter, chunk_rows)
            return
        pending: list[pa.RecordBatch] = []
        rows = 0
        for batch in reader:
            pending.append(batch)
            rows += batch.num_rows
            if rows >= chunk_rows:
                yield _as_pandas(pa.Table.from_batches(pending))
                pending, rows = [], 0
        if rows:
            yield _as_pandas(pa.Table.from_batches(pending))
    except duckdb.Error as exc:
        raise InputError(f"{path}: cannot read as csv ({str(exc).splitlines()[0]})") from exc
    finally:
        con.close()


def _arrow_csv_chunks(path: Path, delimiter: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.csv as pacsv

    parse = pacsv.ParseOptions(delimiter=delimiter)
    # The header first (a small block), so every column can be read as text.
    with pacsv.open_csv(
        path, read_options=pacsv.ReadOptions(block_size=1 << 20), parse_options=parse
    ) as head:
        names = head.schema.names
    convert = pacsv.ConvertOptions(
        column_types={n: pa.string() for n in names}, null_values=[""], strings_can_be_null=True
    )
    # Arrow reads by bytes: ~64 bytes per row of a typical log (the benchmark's: 51).
    read = pacsv.ReadOptions(block_size=max(chunk_rows * 64, 1 << 16))
    with pacsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert) as r:
        for batch in r:
            if batch.num_rows:
                yield _as_pandas(batch)


def _pandas_csv_chunks(path: Path, delimiter: str, chunk_rows: int) -> Iterator[pd.DataFrame]:
    yield from pd.read_csv(
        path,
        sep=delimiter,
        dtype=str,
        keep_default_na=False,
        na_values=[""],
        engine="python",
        chunksize=chunk_rows,
    )


def _parquet_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    import pyarrow.parquet as pq

    file = pq.ParquetFile(path)
    for batch in file.iter_batches(batch_size=chunk_rows):
        yield batch.to_pandas()


def _jsonl_chunks(path: Path, chunk_rows: int) -> Iterator[pd.DataFrame]:
    try:
        with pd.read_json(
            path, lines=True, dtype=False, convert_dates=False, chunksize=chunk_rows
        ) as reader:
            yield from reader
    except ValueError as exc:
        raise InputError(_first_bad_json_line(path) or f"{path}: not JSON lines ({exc})") from exc


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
    options: ReadOptions | None = None,
    *,
    strict: bool = False,
    chunk_rows: int = CHUNK_ROWS,
) -> LoadedLog:
    """Any log file, read in chunks as the events are taken, with the columns ``options``
    names (``ReadOptions``: its generic fields; ``split_col`` holds the log's own split,
    train/validation/test or trn/vld/test, for ``--split dataset``)."""
    o = options or ReadOptions()
    frames, unit, first = iter_table(path, o.sep, chunk_rows)
    skips = SkipLog(strict=strict)
    loaded = LoadedLog(iter(()), skips, str(path), None, path.name.split(".")[0])

    seen = 0

    def check(frame: pd.DataFrame) -> pd.DataFrame:
        nonlocal seen
        events = canonicalize(
            frame,
            source=str(path),
            user_col=o.user_col,
            behavior_col=o.behavior_col,
            time_col=o.time_col,
            context_cols=o.context_cols,
            parent_col=o.parent_col,
            split_col=o.split_col,
            lines=np.arange(first + seen, first + seen + len(frame)),
            unit=unit,
            time_format=o.time_format,
            times_are_utc=o.times_are_utc,
            skips=skips,
        )
        events[ORDER] += seen  # input order across chunks
        seen += len(frame)
        return events

    def canonical(head: pd.DataFrame | None) -> Iterator[pd.DataFrame]:
        if head is not None:
            yield head
            yield from (check(frame) for frame in frames)
        loaded.input_rows = seen

    # The first chunk now: a missing column or an unreadable file fails here, not later.
    head = next(frames, None)
    loaded.chunks = canonical(check(head) if head is not None else None)
    return loaded


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
    return LoadedLog.of(events, skips, str(file), len(frame), name, info)


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
    (:mod:`behaviorlm.training.data.chains`), so every action is a target once with its real
    history, and a chronological split per sequence applies; each action keeps the authors' split of
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
    return LoadedLog.of(events, skips, str(file), len(lines), name, info)


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
