"""The steps of `data prepare` on Spark, for logs that outgrow one node.

:class:`SparkRunner` runs the very SQL of :mod:`behaviorlm.training.data.steps` (dedupe, per-user
order, split, counts, label joins) through ``spark.sql``, so a cluster does the heavy steps and only
small aggregates (behavior counts, the vocabulary) come back to the driver::

    from pyspark.sql import SparkSession
    from behaviorlm.training.data.config import ReadOptions
    from behaviorlm.training.data.pipeline import prepare_events
    from behaviorlm.training.data.readers import read_generic
    from behaviorlm.training.data.spark import SparkRunner

    spark = SparkSession.builder.getOrCreate()
    loaded = read_generic(Path("log.csv"), ReadOptions(context_cols=("place",)))
    with SparkRunner(spark, scratch=Path("/shared/scratch")) as runner:
        prepare_events(loaded.chunks, "prepared", config, name="log", source=loaded.source,
                       skips=loaded.skips, sql=runner)

Here the canonical events are checked on the driver and written as Parquet parts to
``scratch`` (a path every executor reads: HDFS, S3, a shared disk); on a real cluster the
reading step is a per-partition map as well (``mapInPandas`` over
:func:`behaviorlm.training.data.events.canonicalize`, which works row by row), and ``load`` can be
skipped by registering that output as the ``raw`` view. Every table a step makes is
written to ``scratch`` and read back (a checkpoint: Spark would otherwise recompute each
step's lineage every time a later step reads it). The two output files are written as one
sorted part each (``events.parquet`` / ``samples.parquet`` are single files by contract);
docs/data.md says where that stops scaling.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from behaviorlm.training.data.sql import SPARK, arrow_events


class SparkRunner:
    """:class:`behaviorlm.training.data.sql.SqlRunner` on a SparkSession."""

    dialect = SPARK

    def __init__(self, spark: Any, scratch: Path) -> None:
        self.spark = spark
        self.scratch = Path(scratch)
        self.scratch.mkdir(parents=True, exist_ok=True)
        # Naive times keep their wall-clock value through TIMESTAMP casts and writes.
        spark.conf.set("spark.sql.session.timeZone", "UTC")
        self.views: list[str] = []

    def __enter__(self) -> SparkRunner:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        value: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def load(self, chunks: Iterable[pd.DataFrame], rows_read: Callable[[int], None]) -> int:
        raw = self.scratch / "raw"
        shutil.rmtree(raw, ignore_errors=True)
        raw.mkdir(parents=True)
        rows = 0
        for i, frame in enumerate(chunks):
            pq.write_table(arrow_events(frame), raw / f"part-{i:05d}.parquet")
            rows += len(frame)
            rows_read(rows)
        if rows:
            self._view("raw", self.spark.read.parquet(str(raw)))
        return rows

    def create(self, name: str, select: str) -> None:
        path = self.scratch / name
        self.spark.sql(select).write.mode("overwrite").parquet(str(path))
        self._view(name, self.spark.read.parquet(str(path)))

    def rows(self, select: str) -> list[tuple[Any, ...]]:
        return [tuple(r) for r in self.spark.sql(select).collect()]

    def put(self, name: str, table: pa.Table) -> None:
        from pyspark.sql.types import StringType, StructField, StructType

        schema = StructType([StructField(f.name, StringType(), True) for f in table.schema])
        rows = [tuple(r.values()) for r in table.to_pylist()]
        self._view(name, self.spark.createDataFrame(rows, schema))

    def columns(self, name: str) -> list[str]:
        return list(self.spark.table(name).columns)

    def drop(self, name: str) -> None:
        self.spark.catalog.dropTempView(name)

    def write_parquet(self, select: str, path: Path) -> None:
        """One sorted part (the select's ORDER BY; coalesce keeps the range order)."""
        out = self.scratch / f"out-{path.name}"
        self.spark.sql(select).coalesce(1).write.mode("overwrite").parquet(str(out))
        (part,) = sorted(out.glob("part-*.parquet"))
        shutil.move(str(part), str(path))
        shutil.rmtree(out, ignore_errors=True)

    def close(self) -> None:
        for name in self.views:
            self.spark.catalog.dropTempView(name)
        self.views.clear()

    def _view(self, name: str, frame: Any) -> None:
        frame.createOrReplaceTempView(name)
        if name not in self.views:
            self.views.append(name)
