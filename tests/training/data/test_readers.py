"""Readers: generic CSV/JSONL/Parquet logs, bad rows, and the two real-data formats."""

from __future__ import annotations

import dataclasses
import gzip
import json
import zipfile
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig, ReadOptions
from behaviorlm.training.data.dataset import PreparedDataset
from behaviorlm.training.data.pipeline import prepare_events
from behaviorlm.training.data.readers import (
    LoadedLog,
    read_context_trails,
    read_generic,
    read_smartthings,
)

CSV = """user,when,action,place
u1,2024-05-01T08:00:00+02:00,coffee,home
u1,2024-05-01T09:00:00+02:00,mail,work
u1,2024-05-01T12:30:00+02:00,lunch,work
u1,2024-05-01T18:00:00+02:00,coffee,
u2,2024-05-01 07:00:00,coffee,home
u2,2024-05-01 08:00:00,mail,home
u2,2024-05-02 08:00:00,coffee,out
"""
COLUMNS = ReadOptions(
    user_col="user", time_col="when", behavior_col="action", context_cols=("place",)
)


def _prepare(loaded: LoadedLog, out: Path, **config: Any) -> PreparedDataset:
    cfg = PrepareConfig(**{"min_count": 0, **config})
    return prepare_events(
        loaded.events,
        out,
        cfg,
        name=loaded.name,
        source=loaded.source,
        skips=loaded.skips,
        input_rows=loaded.input_rows,
    )


def _as_json(ds: PreparedDataset) -> list[dict[str, object]]:
    return [s.to_json() for split in ds.splits() for s in ds.samples(split)]


def test_csv_jsonl_parquet_give_the_same_samples(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(CSV)
    frame = pd.read_csv(csv, dtype=str)
    jsonl = tmp_path / "log.jsonl"
    jsonl.write_text(
        "\n".join(
            json.dumps({k: v for k, v in r.items() if pd.notna(v)})
            for r in frame.to_dict("records")
        )
        + "\n"
    )
    parquet = tmp_path / "log.parquet"
    frame.to_parquet(parquet)
    gz = tmp_path / "log.csv.gz"
    gz.write_bytes(gzip.compress(CSV.encode()))
    results = [
        _as_json(_prepare(read_generic(p, COLUMNS), tmp_path / p.name.replace(".", "_")))
        for p in (csv, jsonl, parquet, gz)
    ]
    assert results[0] == results[1] == results[2] == results[3]
    assert len(results[0]) == 5


def test_timestamps_keep_their_own_wall_clock(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(CSV)
    ds = _prepare(read_generic(csv, COLUMNS), tmp_path / "d")
    (u1,) = [s for s in ds.samples("test") if s.user_id == "u1"]
    plus2 = timezone(timedelta(hours=2))
    assert u1.now == datetime(2024, 5, 1, 18, tzinfo=plus2)
    assert [e.timestamp for e in u1.history][1] == datetime(2024, 5, 1, 9, tzinfo=plus2)
    assert u1.now_context == {}  # empty context value -> no field
    (u2,) = [s for s in ds.samples("test") if s.user_id == "u2"]
    assert u2.now == datetime(2024, 5, 2, 8)  # naive stays naive


def test_unix_seconds_and_time_format(tmp_path: Path) -> None:
    log = tmp_path / "log.parquet"
    pd.DataFrame(
        {"user_id": ["a"] * 4, "timestamp": [0, 3600, 7200, 10800], "behavior": list("xyxy")}
    ).to_parquet(log)
    ds = _prepare(read_generic(log), tmp_path / "unix")
    assert ds.samples("test")[0].now == datetime(1970, 1, 1, 3, tzinfo=UTC)
    csv = tmp_path / "fmt.csv"
    csv.write_text(
        "user_id,timestamp,behavior\na,01/05/2024 08:00,x\na,01/05/2024 09:15,y\n"
        "a,01/05/2024 09:30,x\na,01/05/2024 10:45,y\n"
    )
    ds = _prepare(read_generic(csv, ReadOptions(time_format="%d/%m/%Y %H:%M")), tmp_path / "fmt")
    assert ds.samples("test")[0].now == datetime(2024, 5, 1, 10, 45)


def test_tz_aware_parquet_column(tmp_path: Path) -> None:
    log = tmp_path / "tz.parquet"
    stamps = pd.date_range("2024-03-30 22:00", periods=4, freq="12h", tz="Europe/Paris")
    pd.DataFrame({"user_id": "a", "timestamp": stamps, "behavior": list("xyxy")}).to_parquet(log)
    ds = _prepare(read_generic(log), tmp_path / "d")
    sample = ds.samples("test")[0]
    # 12 hours after 22:00 on the night the clocks moved forward is 11:00 local (+02:00)
    assert sample.now == datetime(2024, 4, 1, 11, tzinfo=timezone(timedelta(hours=2)))
    first = sample.history[0].timestamp
    assert first == datetime(2024, 3, 30, 22, tzinfo=timezone(timedelta(hours=1)))


def test_missing_column_lists_available_columns(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(CSV)
    with pytest.raises(InputError) as err:
        read_generic(csv, dataclasses.replace(COLUMNS, behavior_col="activity"))
    msg = str(err.value)
    assert "'activity' (--behavior-col) not found" in msg
    assert "available columns: ['user', 'when', 'action', 'place']" in msg
    assert str(csv) in msg


BAD = """user_id,timestamp,behavior
a,2024-01-01T08:00:00,x
a,yesterday,y
a,2024-01-01T09:00:00,
a,2024-01-01T10:00:00,y
a,2024-01-01T10:00:00,y
,2024-01-01T11:00:00,x
a,,x
a,2024-01-01T12:00:00,x
a,2024-01-01T13:00:00,y
"""


def test_bad_rows_are_skipped_and_counted_with_file_line_value(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(BAD)
    loaded = read_generic(csv)
    ds = _prepare(loaded, tmp_path / "d")
    skipped = ds.stats["skipped_rows"]
    assert skipped == {
        "unparsable timestamp": 1,
        "empty behavior": 1,
        "duplicate row": 1,
        "missing user id": 1,
        "missing timestamp": 1,
    }
    ex = ds.stats["skipped_examples"]
    assert ex["unparsable timestamp"] == [f"{csv} line 3: 'yesterday'"]
    assert ex["empty behavior"][0].startswith(f"{csv} line 4:")
    assert ex["duplicate row"] == [f"{csv} line 6: 'y'"]
    assert ex["missing user id"][0].startswith(f"{csv} line 7:")
    assert ex["missing timestamp"][0].startswith(f"{csv} line 8:")
    assert ds.stats["input_rows"] == 9 and ds.stats["events"] == 4
    assert "unparsable timestamp: 1" in (ds.root / "stats.md").read_text()


def test_strict_stops_at_the_first_bad_row(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(BAD)
    with pytest.raises(InputError, match=r"bad.csv line 3: 'yesterday' \(unparsable timestamp"):
        read_generic(csv, strict=True)
    csv.write_text(BAD.replace("a,yesterday,y\n", ""))
    with pytest.raises(InputError, match=r"bad.csv line 3: nan \(empty behavior; drop --strict"):
        read_generic(csv, strict=True)
    csv.write_text("user_id,timestamp,behavior\na,2024-01-01,x\na,2024-01-01,x\n")
    loaded = read_generic(csv, strict=True)
    with pytest.raises(InputError, match=r"bad.csv line 3: 'x' \(duplicate row"):
        prepare_events(
            loaded.events,
            tmp_path / "d",
            PrepareConfig(strict=True),
            name="b",
            source=loaded.source,
            skips=loaded.skips,
        )


def test_keep_duplicates(tmp_path: Path) -> None:
    csv = tmp_path / "bad.csv"
    csv.write_text(BAD)
    ds = _prepare(read_generic(csv), tmp_path / "d", keep_duplicates=True)
    assert "duplicate row" not in ds.stats["skipped_rows"] and ds.stats["events"] == 5


def test_invalid_files(tmp_path: Path) -> None:
    bad = tmp_path / "log.jsonl"
    bad.write_text('{"user_id": "a", "timestamp": "2024-01-01", "behavior": "x"}\n{oops\n')
    with pytest.raises(InputError, match=r"log.jsonl line 2: invalid JSON"):
        read_generic(bad)
    with pytest.raises(InputError, match="does not exist"):
        read_generic(tmp_path / "missing.csv")
    other = tmp_path / "log.xlsx"
    other.write_text("x")
    with pytest.raises(InputError, match=r"unknown file type '\.xlsx'"):
        read_generic(other)


WINDOWS_HEADER = "window_id,split,position,day_of_week,hour_bin,device,action\n"


def _windows(rows: list[tuple[int, str, list[str]]]) -> str:
    out = WINDOWS_HEADER
    for wid, split, actions in rows:
        for pos, action in enumerate(actions):
            device = action.split(":")[0]
            out += f"{wid},{split},{pos},day:Sat,time:(6~9),{device},{action}\n"
    return out


def test_smartthings_windows(tmp_path: Path) -> None:
    on, off = "Light:switch on", "Light:switch off"
    poll, loc = "Television:refresh refresh", "None:location"
    rows = [
        (0, "trn", [on, off, poll, on, off, loc, on, off, on, off]),
        (1, "trn", [off, on, off, on, poll, on, off, on, off, on]),
        (2, "trn", [on, on, on, on, on, on, on, on, on, poll]),  # last is a poll: no target
        (0, "vld", [on] * 9 + [off]),
        (0, "test", [off] * 9 + ["Blind:windowShade open"]),
    ]
    path = tmp_path / "windows.csv.gz"
    path.write_bytes(gzip.compress(_windows(rows).encode()))
    loaded = read_smartthings(tmp_path, chain=False)
    ds = _prepare(loaded, tmp_path / "d", split="dataset", min_count=1)
    assert [ds.num_samples(s) for s in ds.splits()] == [2, 1, 1]
    first = ds.samples("train")[0]
    assert [e.behavior for e in first.history] == [on, off, on, off, on, off, on]
    assert first.target == off and first.now_context == {"hours": "06-09h", "weekday": "Sat"}
    assert first.now is None
    # the test target was never a training target: it falls back to its device
    assert ds.targets("test") == ["Blind"]
    skipped = ds.stats["skipped_rows"]
    assert skipped["automatic '*:refresh refresh' poll (filtered)"] == 3
    assert skipped["'None:location' event (filtered)"] == 1
    assert skipped["action of a window whose last action was filtered (no target)"] == 9
    kept = read_smartthings(path, keep_automatic=True, chain=False)
    ds = _prepare(kept, tmp_path / "k", split="dataset", min_count=1)
    assert ds.num_samples("train") == 3


def _slide(actions: list[str], start_id: int, splits: list[str]) -> list[tuple[int, str, list]]:
    """The sliding windows of one user's actions, with shuffled ids (not in time order)."""
    n = len(actions) - 9
    ids = [start_id + n - 1 - i for i in range(n)]  # later windows get smaller ids
    return [(ids[i], splits[i % len(splits)], actions[i : i + 10]) for i in range(n)]


def test_smartthings_windows_chain_into_sequences(tmp_path: Path) -> None:
    poll = "Television:refresh refresh"
    user1 = [f"Light:level {i}" if i % 4 else poll for i in range(16)]  # 7 windows
    user2 = [f"Blind:open {i}" for i in range(12)]  # 3 windows
    rows = _slide(user1, 0, ["trn", "trn", "vld", "test"]) + _slide(user2, 100, ["vld", "test"])
    (tmp_path / "windows.csv.gz").write_bytes(gzip.compress(_windows(rows).encode()))
    loaded = read_smartthings(tmp_path)
    chains = loaded.info["chains"]
    assert chains["sequences"] == 2 and chains["windows_chained_to_a_predecessor"] == 6 + 2
    assert chains["sequence_length"]["max"] == 16 and loaded.info["targets_one_per_window"] == 9
    ds = _prepare(loaded, tmp_path / "c", split="leave-one-out", min_count=0)
    # every user-facing action once, in time order, polls only in the skip counts
    seqs: dict[str, list[str]] = {}
    for split in ds.splits():
        for s in ds.samples(split):
            seqs.setdefault(s.user_id, []).append(s.target)
    got = sorted(len(v) for v in seqs.values())
    assert got == [11, len([a for a in user1 if a != poll]) - 1]
    (test1,) = [s for s in ds.samples("test") if "Light" in (s.target or "")]
    assert test1.target == "Light:level 15"
    assert [e.behavior for e in test1.history][-2:] == ["Light:level 13", "Light:level 14"]
    assert ds.stats["skipped_rows"]["automatic '*:refresh refresh' poll (filtered)"] == 4
    # The authors' split on the chained sequences: each action keeps its window's split;
    # the first window's first 9 actions belong to no window as a last action.
    with_split = read_smartthings(tmp_path)
    ds = _prepare(with_split, tmp_path / "d", split="dataset", min_count=0)
    assert sum(ds.num_samples(s) for s in ds.splits()) == 9  # one per window, minus a poll


def test_smartthings_without_train_windows(tmp_path: Path) -> None:
    """No trn windows: chained and split in time order it trains; the authors' split cannot."""
    rows = _slide([f"Light:level {i}" for i in range(20)], 0, ["vld", "test"])
    (tmp_path / "windows.csv.gz").write_bytes(gzip.compress(_windows(rows).encode()))
    ds = _prepare(read_smartthings(tmp_path), tmp_path / "c", split="ratio", min_count=0)
    assert ds.num_samples("train") >= 12 and ds.vocabulary.names
    with pytest.raises(InputError, match=r"no training samples.*--split leave-one-out or"):
        _prepare(read_smartthings(tmp_path), tmp_path / "d", split="dataset", min_count=0)


def test_smartthings_needs_its_columns(tmp_path: Path) -> None:
    (tmp_path / "windows.csv.gz").write_bytes(gzip.compress(b"window_id,split\n0,trn\n"))
    with pytest.raises(
        InputError, match=r"column 'position', 'day_of_week', 'hour_bin', 'action' not found"
    ):
        read_smartthings(tmp_path)
    with pytest.raises(InputError, match=r"has no windows\.csv\.gz"):
        read_smartthings(tmp_path / "..")


CHECKINS = """user_id,trail_id,timestamp,venue_id,category,category_lvl1
1,10,2017-10-04T00:47:00+08:00,v1,Bakery,Retail
1,10,2017-10-04T01:09:00+08:00,v2,Office,Business
1,11,2017-10-05T08:00:00+08:00,v1,Bakery,Retail
1,11,2017-10-05T09:00:00+08:00,v3,Gym,Sports
"""
WEATHER = """trail_id;user_id;venue_id;timestamp;temp;precip;windspeed;preciptype;conditions
10;1;v1;2017-10-04T00:47:00+08:00;28.4;0.0;3.6;nan;Partially cloudy
10;1;v2;2017-10-04T01:09:00+08:00;27.6;0.0;3.6;rain;Rain
11;1;v1;2017-10-05T08:00:00+08:00;25.0;0.0;3.6;nan;Clear
"""


def test_context_trails_with_weather(tmp_path: Path) -> None:
    (tmp_path / "checkins.csv.gz").write_bytes(gzip.compress(CHECKINS.encode()))
    with zipfile.ZipFile(tmp_path / "trails_weather.zip", "w") as zf:
        zf.writestr("City_trails_weather.csv", WEATHER)
    loaded = read_context_trails(tmp_path, weather=tmp_path / "trails_weather.zip")
    assert loaded.info["weather"]["checkins_matched"] == 3
    ds = _prepare(loaded, tmp_path / "d", min_count=1)
    test = ds.samples("test")[0]
    assert test.history[0].context == {"temp": "28C", "weather": "Partially cloudy"}
    assert test.history[2].context == {"temp": "25C", "weather": "Clear"}
    assert test.now_context == {}  # no weather row for the last check-in
    assert ds.targets("test") == ["Sports"]  # Gym has no training target: its parent
    assert ds.samples("test")[0].history[0].behavior == "Bakery"
    plain = read_context_trails(tmp_path / "checkins.csv.gz")
    assert "ctx.weather" not in plain.events


def test_context_trails_times_are_utc(tmp_path: Path) -> None:
    (tmp_path / "checkins.csv.gz").write_bytes(gzip.compress(CHECKINS.encode()))
    ds = _prepare(read_context_trails(tmp_path, times_are_utc=True), tmp_path / "d")
    sample = ds.samples("test")[0]
    plus8 = timezone(timedelta(hours=8))
    assert sample.now == datetime(2017, 10, 5, 17, tzinfo=plus8)  # 09:00 "+08:00" was UTC
    assert sample.history[0].timestamp == datetime(2017, 10, 4, 8, 47, tzinfo=plus8)
