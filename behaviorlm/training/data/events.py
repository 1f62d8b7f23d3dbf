"""The canonical event table every reader produces, and the row-level checks on it.

One row per event, vectorised (pandas/pyarrow), never one Python object per row:

- ``user_id`` (str), ``behavior`` (str, whitespace-normalised raw name as in the log),
- ``timestamp``: the event's own wall-clock time, naive ``datetime64[us]`` (NaT when the log has
  no times), and ``utc_offset_min``: its UTC offset in minutes (null for naive times). Times are
  not converted to UTC: the prompt renders the weekday and hour people lived them in.
- ``parent``: optional parent category (the ``parent`` fallback of the vocabulary rules),
- ``split_hint``: optional split given by the dataset (``--split dataset``),
- ``ctx.<name>``: optional context columns (strings),
- ``_target_ok``: optional; False marks events that may only be history (SmartThings' windows
  overlap, so only their last action is a target),
- ``_line``: where the row came from (file line or row number, for messages), ``_order``: input
  order, which breaks timestamp ties and orders logs without timestamps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from behaviorlm.errors import InputError

USER = "user_id"
BEHAVIOR = "behavior"
TIME = "timestamp"
OFFSET = "utc_offset_min"
PARENT = "parent"
SPLIT_HINT = "split_hint"
LINE = "_line"
ORDER = "_order"
TARGET_OK = "_target_ok"
CTX_PREFIX = "ctx."
MAX_EXAMPLES = 5

# hh:mm[:ss[.fff]] then Z or ±hh[[:]mm] at the end: the offset of an extended ISO-8601 time.
_OFFSET_RE = r"\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?\s*(?P<off>Z|z|[+-]\d{2}(?::?\d{2})?)$"


@dataclass
class SkipLog:
    """Rows left out, counted by reason, with a few examples naming file, line and value."""

    strict: bool = False
    counts: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    def add(self, reason: str, n: int, examples: Sequence[str] = ()) -> None:
        if n <= 0:
            return
        if self.strict:
            first = examples[0] if examples else f"{n} row(s)"
            raise InputError(f"{first} ({reason}; drop --strict to skip and count such rows)")
        self.counts[reason] = self.counts.get(reason, 0) + int(n)
        kept = self.examples.setdefault(reason, [])
        kept.extend(list(examples)[: MAX_EXAMPLES - len(kept)])

    def summary_lines(self) -> list[str]:
        lines = []
        for reason, n in sorted(self.counts.items(), key=lambda kv: -kv[1]):
            lines.append(f"skipped {n:,} row(s): {reason}")
            lines.extend(f"    e.g. {ex}" for ex in self.examples.get(reason, []))
        return lines


def context_columns(events: pd.DataFrame) -> list[str]:
    return [c for c in events.columns if c.startswith(CTX_PREFIX)]


def require_columns(df: pd.DataFrame, wanted: dict[str, str | None], source: str) -> None:
    """``wanted`` maps a flag (e.g. ``--user-col``) to the column it names (or the column to
    itself when no flag names it)."""
    available = [str(c) for c in df.columns]
    missing = [(flag, col) for flag, col in wanted.items() if col is not None and col not in df]
    if missing:
        what = ", ".join(
            f"{col!r}" + (f" ({flag})" if flag != col else "") for flag, col in missing
        )
        raise InputError(f"{source}: column {what} not found; available columns: {available}")


def _arrow_text(s: pd.Series) -> pa.Array:
    """The column as an Arrow string array (zero-copy for pandas' Arrow-backed strings)."""
    try:
        arr = pa.array(s.array) if isinstance(s.array, pd.arrays.ArrowStringArray) else None
    except (TypeError, pa.ArrowException):
        arr = None
    if arr is None:
        try:
            arr = pa.array(s.to_numpy(dtype=object), from_pandas=True)
        except (TypeError, pa.ArrowException):  # mixed types: each value as text
            arr = pa.array([None if pd.isna(v) else str(v) for v in s], type=pa.string())
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if not pa.types.is_string(arr.type) and not pa.types.is_large_string(arr.type):
        arr = pc.cast(arr, pa.string())
    return arr


def _as_text(s: pd.Series, normalize_spaces: bool = False) -> pd.Series:
    """Strings stripped (and inner whitespace collapsed); missing and empty values become NA.

    Cleans the distinct values only (logs repeat the same users, behaviors and contexts
    millions of times) with Arrow kernels, never a Python loop over rows.
    """
    encoded = pc.dictionary_encode(_arrow_text(s))
    values = pc.utf8_trim_whitespace(encoded.dictionary)
    if normalize_spaces:
        values = pc.replace_substring_regex(values, r"\s+", " ")
    values = pc.if_else(pc.equal(values, ""), pa.scalar(None, values.type), values)
    text = pc.take(values, encoded.indices)
    return pd.Series(pd.array(text, dtype="str"), index=s.index)


def _offset_minutes(suffix: str) -> float:
    """``Z`` / ``+08:00`` / ``-0530`` / ``+08`` -> minutes east of UTC."""
    if suffix in ("Z", "z"):
        return 0.0
    digits = suffix[1:].replace(":", "")
    minutes = int(digits[:2]) * 60 + (int(digits[2:4]) if len(digits) >= 4 else 0)
    return float(minutes if suffix[0] == "+" else -minutes)


def _where(
    source: str, unit: str, lines: np.ndarray, values: pd.Series, mask: np.ndarray
) -> list[str]:
    idx = np.flatnonzero(mask)[:MAX_EXAMPLES]
    return [f"{source} {unit} {int(lines[i])}: {values.iloc[i]!r}" for i in idx]


def parse_timestamps(
    raw: pd.Series, time_format: str | None = None
) -> tuple[pd.Series, pd.Series, np.ndarray]:
    """(wall-clock naive datetime64[us], UTC offset minutes (nullable), unparsable mask).

    Accepts datetime columns (naive or tz-aware, e.g. from Parquet), numbers (Unix seconds, UTC)
    and text: ISO-8601 with or without offset, or ``time_format`` (strftime) when given.
    """
    n = len(raw)
    no_offset = pd.Series(pd.array([pd.NA] * n, dtype="Int32"), index=raw.index)
    if isinstance(raw.dtype, pd.DatetimeTZDtype):
        wall = raw.dt.tz_localize(None).astype("datetime64[us]")
        utc = raw.dt.tz_convert("UTC").dt.tz_localize(None).astype("datetime64[us]")
        offset = ((wall - utc) // pd.Timedelta(minutes=1)).astype("Int32")
        return wall, offset, np.zeros(n, dtype=bool)
    if pd.api.types.is_datetime64_dtype(raw.dtype):
        return raw.astype("datetime64[us]"), no_offset, np.zeros(n, dtype=bool)
    if pd.api.types.is_numeric_dtype(raw.dtype) and not pd.api.types.is_bool_dtype(raw.dtype):
        wall = pd.to_datetime(raw, unit="s", errors="coerce").astype("datetime64[us]")
        offset = pd.Series(0, index=raw.index, dtype="Int32").mask(wall.isna())
        return wall, offset, (wall.isna() & raw.notna()).to_numpy()
    arrow = _arrow_text(raw)
    arrow = pc.utf8_trim_whitespace(arrow)
    arrow = pc.if_else(pc.equal(arrow, ""), pa.scalar(None, arrow.type), arrow)
    text = pd.Series(pd.array(arrow, dtype="str"), index=raw.index)
    if time_format is not None:
        try:
            parsed = pd.to_datetime(text, format=time_format, errors="coerce")
        except ValueError as exc:
            raise InputError(f"--time-format {time_format!r}: {exc}") from exc
        wall, offset, _ = parse_timestamps(parsed)
        return wall, offset, (parsed.isna() & text.notna()).to_numpy()
    utc = pd.to_datetime(text, utc=True, format="ISO8601", errors="coerce")
    bad = (utc.isna() & text.notna()).to_numpy()
    # Offsets repeat (one or a few per log): parse each distinct suffix once.
    suffix = pc.struct_field(pc.extract_regex(arrow, _OFFSET_RE), "off")
    encoded = pc.dictionary_encode(suffix)
    minutes = np.array([_offset_minutes(str(u)) for u in encoded.dictionary.to_pylist()] + [np.nan])
    codes = encoded.indices.fill_null(-1).to_numpy(zero_copy_only=False)
    offset = pd.Series(minutes[codes], index=raw.index).astype("Int32")
    offset = offset.mask(utc.isna())
    wall = utc.dt.tz_localize(None).astype("datetime64[us]")
    shift = pd.to_timedelta(offset.fillna(0).astype("int64"), unit="m")
    wall = wall + shift
    return wall, offset, bad


def canonicalize(
    df: pd.DataFrame,
    *,
    source: str,
    user_col: str,
    behavior_col: str,
    time_col: str | None = None,
    context_cols: Sequence[str] = (),
    parent_col: str | None = None,
    split_col: str | None = None,
    lines: np.ndarray | None = None,
    unit: str = "line",
    time_format: str | None = None,
    times_are_utc: bool = False,
    skips: SkipLog,
) -> pd.DataFrame:
    """Map a log's columns to the canonical table, skipping and counting unusable rows.

    ``times_are_utc``: the clock times in the log are UTC although they carry a UTC offset (a
    known flaw of some exports); each is moved to its offset's wall-clock.
    """
    require_columns(
        df,
        {
            "--user-col": user_col,
            "--behavior-col": behavior_col,
            "--time-col": time_col,
            "--parent-col": parent_col,
            "--split-col": split_col,
            **{f"--context-cols[{i}]": c for i, c in enumerate(context_cols)},
        },
        source,
    )
    n = len(df)
    line_no = np.arange(2, n + 2) if lines is None else np.asarray(lines)
    out = pd.DataFrame(index=pd.RangeIndex(n))
    out[USER] = _as_text(df[user_col]).array
    out[BEHAVIOR] = _as_text(df[behavior_col], normalize_spaces=True).array
    if time_col is not None:
        wall, offset, bad = parse_timestamps(df[time_col].reset_index(drop=True), time_format)
        out[TIME] = wall.reset_index(drop=True)
        out[OFFSET] = offset.reset_index(drop=True)
        if times_are_utc:
            out[TIME] = out[TIME] + pd.to_timedelta(out[OFFSET].fillna(0).astype("int64"), unit="m")
    else:
        out[TIME] = pd.Series(pd.NaT, index=out.index, dtype="datetime64[us]")
        out[OFFSET] = pd.Series(pd.NA, index=out.index, dtype="Int32")
        bad = np.zeros(n, dtype=bool)
    out[PARENT] = (
        _as_text(df[parent_col], normalize_spaces=True).array
        if parent_col is not None
        else pd.Series(pd.NA, index=out.index, dtype="string")
    )
    if split_col is not None:
        out[SPLIT_HINT] = _as_text(df[split_col]).array
    for col in context_cols:
        out[CTX_PREFIX + col] = _as_text(df[col]).array
    out[LINE] = line_no.astype("int64")
    out[ORDER] = np.arange(n, dtype="int64")

    checks: list[tuple[str, np.ndarray, pd.Series]] = [
        ("missing user id", out[USER].isna().to_numpy(), df[user_col]),
        ("empty behavior", out[BEHAVIOR].isna().to_numpy(), df[behavior_col]),
    ]
    if time_col is not None:
        raw_t = df[time_col].reset_index(drop=True)
        textual = raw_t.dtype == object or pd.api.types.is_string_dtype(raw_t.dtype)
        missing_t = (_as_text(raw_t) if textual else raw_t).isna().to_numpy()
        checks.append(("missing timestamp", missing_t & ~bad, raw_t))
        checks.append(("unparsable timestamp", bad, raw_t))
    if skips.strict:
        _raise_first_bad(checks, source, unit, line_no)
    keep = np.ones(n, dtype=bool)
    for reason, mask, values in checks:
        mask = mask & keep
        skips.add(reason, int(mask.sum()), _where(source, unit, line_no, values, mask))
        keep &= ~mask
    return out[keep].reset_index(drop=True)


def _raise_first_bad(
    checks: list[tuple[str, np.ndarray, pd.Series]], source: str, unit: str, lines: np.ndarray
) -> None:
    """--strict: the earliest bad row of the file, whatever its reason."""
    firsts = [(int(np.argmax(m)), r, v) for r, m, v in checks if m.any()]
    if firsts:
        i, reason, values = min(firsts, key=lambda f: f[0])
        raise InputError(
            f"{source} {unit} {int(lines[i])}: {values.iloc[i]!r} ({reason}; "
            "drop --strict to skip and count such rows)"
        )
