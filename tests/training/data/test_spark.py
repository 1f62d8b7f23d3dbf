"""The prepare steps on Spark give exactly the dataset DuckDB gives (the distributed example).

Runs a local SparkSession (pyspark, a dev dependency, and a Java runtime); skipped, with the
reason, where either is missing.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from behaviorlm.training.data.config import PrepareConfig, ReadOptions
from behaviorlm.training.data.pipeline import prepare_events
from behaviorlm.training.data.readers import read_generic
from behaviorlm.training.data.synthetic import make_synthetic_log

pyspark = pytest.importorskip("pyspark", reason="pyspark is not installed")
if shutil.which("java") is None:
    pytest.skip("no Java runtime for Spark", allow_module_level=True)


@pytest.fixture(scope="module")
def spark() -> Iterator[Any]:
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[2]")
        .appName("behaviorlm-test")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "4")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()


def _log(path: Path) -> Path:
    log = make_synthetic_log(40, 3000, 60, seed=3, tz_offset="+02:00")
    extra = pd.DataFrame(
        {
            "user_id": ["solo", "u1", "u1"],
            "timestamp": [f"2024-03-01T0{h}:00:00+02:00" for h in (7, 8, 9)],
            "behavior": ["music 1", "UNKNOWN", "UNKNOWN"],
            "category": ["music", "none", "none"],
            "place": ["home"] * 3,
        }
    )
    # a repeated row (a duplicate), a placeholder behavior, a user too short to give a target
    pd.concat([log, log.iloc[[5]], extra], ignore_index=True).to_csv(path, index=False)
    return path


def _prepare(csv: Path, out: Path, config: PrepareConfig, sql: Any = None) -> Any:
    loaded = read_generic(csv, ReadOptions(context_cols=("place",), parent_col="category"))
    return prepare_events(
        loaded.chunks, out, config, name="t", source=loaded.source, skips=loaded.skips, sql=sql
    )


@pytest.mark.parametrize(
    "config",
    [
        PrepareConfig(min_count=3, not_a_target=("UNKNOWN",)),
        PrepareConfig(split="ratio", min_history=2, fallback="other", max_vocab=20),
    ],
    ids=["leave-one-out", "ratio"],
)
def test_spark_gives_the_duckdb_dataset(spark: Any, tmp_path: Path, config: PrepareConfig) -> None:
    from behaviorlm.training.data.spark import SparkRunner

    csv = _log(tmp_path / "log.csv")
    local = _prepare(csv, tmp_path / "duckdb", config)
    with SparkRunner(spark, tmp_path / "scratch") as runner:
        remote = _prepare(csv, tmp_path / "spark", config, sql=runner)
    assert remote.info["sql"]["name"] == "spark"
    for name in ("events.parquet", "samples.parquet"):
        a = pd.read_parquet(local.root / name)
        b = pd.read_parquet(remote.root / name)
        assert list(a.columns) == list(b.columns)
        assert len(a) == len(b) > 1000
        for column in a.columns:
            left, right = a[column].astype(str).tolist(), b[column].astype(str).tolist()
            assert left == right, f"{name}:{column} differs"
    for name in ("vocabulary.json", "label_map.json"):
        assert json.loads((local.root / name).read_text()) == json.loads(
            (remote.root / name).read_text()
        )
    stats_a, stats_b = local.stats, remote.stats
    assert stats_a == stats_b
    assert stats_a["skipped_rows"]["duplicate row"] == 1
    assert stats_a["users_too_short"] >= 1
    if config.not_a_target:
        assert stats_a["not_a_target"]["UNKNOWN"] == 2
