"""The SQL runner of `data prepare`: chunked reading, DuckDB's memory limit (spilling), options."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig, ReadOptions, SqlSettings
from behaviorlm.training.data.pipeline import prepare_events
from behaviorlm.training.data.readers import read_generic
from behaviorlm.training.data.synthetic import make_synthetic_log


def _prepare(
    csv: Path, out: Path, chunk_rows: int, sql_settings: SqlSettings | None = None
) -> pd.DataFrame:
    loaded = read_generic(csv, ReadOptions(context_cols=("place",)), chunk_rows=chunk_rows)
    ds = prepare_events(
        loaded.chunks,
        out,
        PrepareConfig(min_count=2),
        name="t",
        source=loaded.source,
        skips=loaded.skips,
        sql_settings=sql_settings,
    )
    return pd.concat(
        [pd.read_parquet(ds.root / "samples.parquet"), pd.DataFrame({"stats": [ds.stats]})],
        axis=1,
    )


def test_chunks_give_the_one_chunk_dataset_and_file_lines(tmp_path: Path) -> None:
    log = make_synthetic_log(30, 2000, 40, seed=1, tz_offset="+01:00")
    log.loc[1500, "timestamp"] = "not a time"  # line 1502: in the 8th chunk of 200 rows
    log = pd.concat([log, log.iloc[[1700]]], ignore_index=True)  # a duplicate at line 2002
    csv = tmp_path / "log.csv"
    log.to_csv(csv, index=False)
    whole = _prepare(csv, tmp_path / "a", chunk_rows=10_000)
    chunked = _prepare(csv, tmp_path / "b", chunk_rows=200)
    samples = ["split", "target_row", "history_start", "target"]
    assert whole[samples].dropna().equals(chunked[samples].dropna())
    stats = chunked["stats"].iloc[0]
    assert stats == whole["stats"].iloc[0]
    assert stats["input_rows"] == 2001
    assert stats["skipped_examples"]["unparsable timestamp"] == [f"{csv} line 1502: 'not a time'"]
    assert stats["skipped_examples"]["duplicate row"][0].startswith(f"{csv} line 2002: ")


def test_a_small_memory_limit_spills_and_gives_the_same_dataset(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    make_synthetic_log(2000, 300_000, 300, seed=2).to_csv(csv, index=False)
    roomy = _prepare(csv, tmp_path / "a", chunk_rows=100_000)
    tight = _prepare(
        csv,
        tmp_path / "b",
        100_000,
        SqlSettings(memory_limit="40MB", threads=1, temp_dir=tmp_path),
    )
    assert roomy.drop(columns="stats").equals(tight.drop(columns="stats"))
    assert len(roomy) > 290_000
    assert not list(tmp_path.glob("behaviorlm-prepare-*")), "scratch database left behind"


def test_mixed_line_ends_are_read(tmp_path: Path) -> None:
    """DuckDB's strict CSV parser refuses a CRLF body under an LF header; Arrow reads it."""
    csv = tmp_path / "log.csv"
    rows = "".join(f"u{i % 3},2024-01-0{1 + i // 3}T10:00:00,b{i % 4}\r\n" for i in range(9))
    csv.write_bytes(("user_id,timestamp,behavior\n" + rows).encode())
    events = read_generic(csv).events
    assert len(events) == 9 and set(events["behavior"]) == {"b0", "b1", "b2", "b3"}


def test_sql_settings_are_checked() -> None:
    with pytest.raises(InputError, match=r"--memory-limit: expected a size like 1GB.*'lots'"):
        SqlSettings(memory_limit="lots")
    with pytest.raises(InputError, match="--chunk-rows: must be at least 1"):
        SqlSettings(chunk_rows=0)


def test_sql_flags_in_help_and_prepare_json(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    make_synthetic_log(20, 600, 10, seed=0).to_csv(csv, index=False)
    cli = [sys.executable, "-m", "behaviorlm.cli", "data", "prepare"]
    helptext = subprocess.run([*cli, "--help"], capture_output=True, text=True).stdout
    assert "--memory-limit" in helptext and "spill to disk" in helptext
    out = tmp_path / "d"
    proc = subprocess.run(
        [*cli, "--input", str(csv), "--out", str(out), "--memory-limit", "256MB", "--threads", "1"],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    import json

    sql = json.loads((out / "prepare.json").read_text())["sql"]
    assert sql["name"] == "duckdb" and sql["memory_limit"] == "256MB" and sql["threads"] == 1
