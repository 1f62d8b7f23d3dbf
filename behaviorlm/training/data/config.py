"""How a behavior log becomes samples: the one configuration object of the data pipeline."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Literal, get_args

from behaviorlm.errors import InputError
from behaviorlm.options import option
from behaviorlm.vocabulary import DEFAULT_ANCHOR_SHARE

SplitMode = Literal["leave-one-out", "ratio", "dataset"]
Fallback = Literal["parent", "other", "drop"]
SPLITS: tuple[str, ...] = ("train", "validation", "test")


@dataclass(frozen=True)
class PrepareConfig:
    """Options of ``behaviorlm data prepare``; each field is its ``--flag`` (dashes), its key in a
    ``--config`` YAML and its name in stats.json (``--help`` is generated from the fields)."""

    history_len: int = option(
        10, help="K: previous events shown with each target (the paper's window)"
    )
    min_history: int = option(1, help="events a user must have before an event can be a target")
    split: SplitMode = option(
        "leave-one-out",
        parse=str,
        choices=get_args(SplitMode),
        help="leave-one-out: per user, the last target is test, the one before validation, the "
        "rest train (a user with one target has only a test sample); ratio: per user in time "
        "order by --ratios; dataset: the log's own split column (SmartThings' trn/vld/test)",
    )
    ratios: tuple[float, float, float] = option(
        (0.8, 0.1, 0.1), parse=str, help="train,validation,test shares for --split ratio"
    )
    min_count: int = option(5, help="behaviors with fewer training targets go to the fallback")
    max_vocab: int | None = option(
        None,
        help="most labels in the vocabulary, fallback labels included; the least frequent "
        "behaviors beyond it go to the fallback (none: no limit)",
    )
    fallback: Fallback = option(
        "parent",
        parse=str,
        choices=get_args(Fallback),
        help="what rare behaviors become: their parent category (when the data has one, else "
        "--other-label), one --other-label bucket, or dropped as targets (they stay in "
        "histories)",
    )
    other_label: str = option("other", help="name of the catch-all label")
    anchor_share: float = option(
        DEFAULT_ANCHOR_SHARE, help="a label with a larger training share is an anchor (paper: 1%%)"
    )
    not_a_target: tuple[str, ...] = option(
        (),
        parse=str,
        metavar="NAMES",
        help="comma-separated placeholder behaviors (e.g. Context Trails' UNKNOWN, a venue "
        "without a category) that stay in histories as they are but are never targets, since "
        "predicting them tells a caller nothing; counted in the stats (context-trails "
        "default: UNKNOWN; '' for none)",
    )
    keep_duplicates: bool = option(
        False, help="keep rows identical in user, time, behavior and context"
    )
    strict: bool = option(
        False, help="stop at the first bad row instead of skipping and counting it"
    )

    def __post_init__(self) -> None:
        def bad(flag: str, why: str) -> InputError:
            return InputError(f"--{flag.replace('_', '-')}: {why}")

        if self.history_len < 1:
            raise bad("history_len", f"must be at least 1, got {self.history_len}")
        if self.min_history < 0:
            raise bad("min_history", f"must be at least 0, got {self.min_history}")
        if self.split not in ("leave-one-out", "ratio", "dataset"):
            raise bad("split", f"must be leave-one-out, ratio or dataset, got {self.split!r}")
        if len(self.ratios) != 3 or any(r < 0 for r in self.ratios) or sum(self.ratios) <= 0:
            raise bad("ratios", f"need three non-negative shares, got {self.ratios}")
        if abs(sum(self.ratios) - 1.0) > 1e-6:
            raise bad("ratios", f"shares must sum to 1, got {self.ratios}")
        if self.min_count < 0:
            raise bad("min_count", f"must be at least 0, got {self.min_count}")
        if self.max_vocab is not None and self.max_vocab < 1:
            raise bad("max_vocab", f"must be at least 1, got {self.max_vocab}")
        if self.fallback not in ("parent", "other", "drop"):
            raise bad("fallback", f"must be parent, other or drop, got {self.fallback!r}")
        if not self.other_label.strip() or self.other_label != " ".join(self.other_label.split()):
            raise bad("other_label", f"must be a non-empty single-line name: {self.other_label!r}")
        if not 0.0 <= self.anchor_share < 1.0:
            raise bad("anchor_share", f"must be in [0, 1), got {self.anchor_share}")

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["ratios"] = list(self.ratios)
        out["not_a_target"] = list(self.not_a_target)
        return out

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str = "config") -> PrepareConfig:
        """Build from a YAML/JSON mapping or CLI overrides; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InputError(f"{where}: unknown option(s) {unknown}; known: {sorted(known)}")
        kwargs = dict(values)
        if "ratios" in kwargs:
            kwargs["ratios"] = _parse_ratios(kwargs["ratios"])
        if "not_a_target" in kwargs:
            kwargs["not_a_target"] = _parse_names(kwargs["not_a_target"])
        return cls(**kwargs)

    def with_overrides(self, values: Mapping[str, Any]) -> PrepareConfig:
        merged = {**self.to_json(), **values}
        return PrepareConfig.from_mapping(merged)


Format = Literal["generic", "context-trails", "smartthings"]


def _columns(text: str) -> tuple[str, ...]:
    return tuple(c.strip() for c in text.split(",") if c.strip())


@dataclass(frozen=True)
class ReadOptions:
    """How ``behaviorlm data prepare`` reads its input: each field is one ``--flag`` (dashes),
    documented here once. The generic columns go to ``readers.read_generic`` as this object;
    the dataset formats read the fields that apply to them."""

    format: Format = option(
        "generic",
        parse=str,
        choices=get_args(Format),
        help="generic: any CSV/TSV/JSONL/Parquet log with the column options; "
        "context-trails: a Context Trails city directory (checkins.csv.gz) or file; "
        "smartthings: a SmartThings directory (windows.csv.gz) or file",
    )
    user_col: str = option("user_id", help="generic: user id column")
    time_col: str | None = option(
        "timestamp",
        parse=str,
        help="generic: timestamp column: ISO-8601 with or without UTC offset (each event "
        "keeps its own wall-clock), a datetime column, or Unix seconds; 'none' = no "
        "timestamps (file order)",
    )
    behavior_col: str = option("behavior", help="generic: behavior (label) column")
    context_cols: tuple[str, ...] = option(
        (),
        parse=_columns,
        metavar="COL,COL",
        help="generic: comma-separated context columns shown with each event (e.g. place,weather)",
    )
    parent_col: str | None = option(
        None, help="generic: parent category column, used by --fallback parent"
    )
    split_col: str | None = option(
        None,
        help="generic: column with the log's own split (train/validation/test or "
        "trn/vld/test), for --split dataset",
    )
    time_format: str | None = option(None, help="generic: strftime format for non-ISO timestamps")
    sep: str | None = option(None, help="generic: CSV delimiter (none: ',' or tab for .tsv)")
    times_are_utc: bool = option(
        False,
        help="generic and context-trails: the clock times are UTC although they carry an "
        "offset; move each to its offset's local time (Context Trails Petaling Jaya looks "
        "like this: check-ins peak at 05h as published)",
    )
    weather: str | None = option(
        None,
        nargs="?",
        const="auto",
        parse=str,
        metavar="ZIP",
        help="context-trails: add weather context (conditions, temperature) from "
        "trails_weather.zip; without a value ('auto'), the one beside checkins.csv.gz",
    )
    keep_automatic: bool = option(
        False,
        help="smartthings: keep '*:refresh refresh' polls and 'None:location' events "
        "(filtered by default: no user acts there)",
    )
    no_chain: bool = option(
        False,
        help="smartthings: keep each window a separate sequence with only its last action a "
        "target (the authors' protocol, --split dataset); by default windows are chained "
        "back into per-user sequences, every action a target once",
    )

    def __post_init__(self) -> None:
        if self.time_col is not None and self.time_col.strip().lower() == "none":
            object.__setattr__(self, "time_col", None)  # the flag's way to say "no timestamps"

    def check_format(self) -> None:
        """Options of one format given with another are an error, not silently ignored."""
        if self.format != "generic":
            generic = ReadOptions(format=self.format, times_are_utc=self.times_are_utc)
            given = [
                "--" + f.replace("_", "-")
                for f in (
                    "user_col",
                    "time_col",
                    "behavior_col",
                    "context_cols",
                    "parent_col",
                    "split_col",
                    "time_format",
                    "sep",
                )
                if getattr(self, f) != getattr(generic, f)
            ]
            if given:
                raise InputError(f"{', '.join(given)}: apply to --format generic only")
        if self.weather is not None and self.format != "context-trails":
            raise InputError("--weather applies to --format context-trails only")
        if (self.keep_automatic or self.no_chain) and self.format != "smartthings":
            flag = "--keep-automatic" if self.keep_automatic else "--no-chain"
            raise InputError(f"{flag} applies to --format smartthings only")
        if self.times_are_utc and self.format == "smartthings":
            raise InputError("--times-are-utc: SmartThings windows have no timestamps")


@dataclass(frozen=True)
class SqlSettings:
    """How `data prepare` runs (not what it makes: a dataset does not depend on these);
    each field is a ``--flag``, recorded in prepare.json."""

    memory_limit: str = option(
        "1GB",
        help="DuckDB memory limit (e.g. 1GB, 8GB); past it tables and sorts spill to disk, so "
        "a log larger than memory still prepares (peak RSS is this plus ~0.5 GB of reading)",
    )
    threads: int | None = option(None, help="DuckDB threads (none: all cores)")
    temp_dir: Path | None = option(
        None,
        help="where the scratch database and spill files go (none: the system temp "
        "directory); needs about the size of the log as Parquet",
    )
    chunk_rows: int = option(
        1_000_000, help="rows read and checked at a time (memory of the reading step)"
    )

    def __post_init__(self) -> None:
        if self.chunk_rows < 1:
            raise InputError(f"--chunk-rows: must be at least 1, got {self.chunk_rows}")
        if self.threads is not None and self.threads < 1:
            raise InputError(f"--threads: must be at least 1, got {self.threads}")
        import re

        if not re.fullmatch(r"\d+(\.\d+)?\s*(B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)", self.memory_limit):
            raise InputError(
                f"--memory-limit: expected a size like 1GB or 512MB, got {self.memory_limit!r}"
            )

    def to_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["temp_dir"] = str(self.temp_dir) if self.temp_dir else None
        return out


def _parse_ratios(value: Any) -> tuple[float, float, float]:
    parts = value.split(",") if isinstance(value, str) else list(value)
    try:
        out = tuple(float(p) for p in parts)
    except (TypeError, ValueError) as exc:
        raise InputError(
            f"--ratios: expected three numbers like 0.8,0.1,0.1, got {value!r}"
        ) from exc
    if len(out) != 3:
        raise InputError(f"--ratios: expected three numbers like 0.8,0.1,0.1, got {value!r}")
    return (out[0], out[1], out[2])


def _parse_names(value: Any) -> tuple[str, ...]:
    """``"UNKNOWN,Other"`` or a list -> normalised names (empty string: none)."""
    from behaviorlm.events import normalize_behavior

    parts = value.split(",") if isinstance(value, str) else list(value or ())
    return tuple(n for n in (normalize_behavior(str(p)) for p in parts) if n)


PRESETS_DIR = Path(__file__).parent / "presets"


def presets() -> list[str]:
    return sorted(p.stem for p in PRESETS_DIR.glob("*.yaml"))


def load_config_file(path: Path) -> dict[str, Any]:
    """A YAML file of PrepareConfig fields, or the name of a preset in ``presets/``."""
    import yaml

    if not path.exists() and path.suffix == "" and (PRESETS_DIR / f"{path}.yaml").is_file():
        path = PRESETS_DIR / f"{path}.yaml"
    elif not path.exists():
        raise InputError(f"--config: {path} is neither a file nor a preset ({presets()})")

    try:
        data = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise InputError(f"--config: {path} is not valid YAML ({exc})") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(f"--config: {path} must hold a mapping of options")
    return data


__all__ = [
    "SPLITS",
    "Fallback",
    "PrepareConfig",
    "SplitMode",
    "SqlSettings",
    "load_config_file",
    "presets",
]
