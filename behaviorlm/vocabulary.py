"""The behavior vocabulary: names, training frequencies and the anchor/tail partition.

An anchor is a behavior whose share of training targets is above ``anchor_share`` (the paper's
1%); every other behavior is tail. A behavior may have count 0: it was added without examples
and is still scored (the few-shot experiment relies on that).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from behaviorlm.errors import InputError
from behaviorlm.events import normalize_behavior

DEFAULT_ANCHOR_SHARE = 0.01


def name_index(names: Iterable[str]) -> dict[str, int]:
    """Each name's position: the one name -> row map of vocabularies, heads and label sets."""
    return {n: i for i, n in enumerate(names)}


@dataclass(frozen=True)
class Vocabulary:
    """Behaviors ordered by decreasing training count (ties by name), with the partition."""

    names: tuple[str, ...]
    counts: tuple[int, ...]
    anchor_share: float = DEFAULT_ANCHOR_SHARE

    def __post_init__(self) -> None:
        if len(self.names) != len(self.counts):
            raise InputError("vocabulary: names and counts differ in length")
        if not self.names:
            raise InputError("vocabulary: no behaviors")
        if len(set(self.names)) != len(self.names):
            dupes = sorted({n for n in self.names if self.names.count(n) > 1})
            raise InputError(f"vocabulary: duplicate behaviors {dupes[:5]}")
        for name in self.names:
            if not name or name != normalize_behavior(name):
                raise InputError(
                    f"vocabulary: behavior {name!r} is empty or has newlines/extra spaces"
                )
        if not 0.0 <= self.anchor_share < 1.0:
            raise InputError(f"vocabulary: anchor_share must be in [0, 1), got {self.anchor_share}")

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], anchor_share: float = DEFAULT_ANCHOR_SHARE
    ) -> Vocabulary:
        items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        return cls(tuple(k for k, _ in items), tuple(int(v) for _, v in items), anchor_share)

    @cached_property
    def total(self) -> int:
        return sum(self.counts)

    def share(self, name: str) -> float:
        total = self.total
        return self.counts[self.index[name]] / total if total else 0.0

    @cached_property
    def index(self) -> dict[str, int]:
        return name_index(self.names)

    def is_anchor(self, name: str) -> bool:
        return self.share(name) > self.anchor_share

    @cached_property
    def anchor_mask(self) -> np.ndarray:
        """[behaviors] bool: which rows are anchors (the partition as an array, in name order)."""
        return np.array([self.is_anchor(n) for n in self.names], dtype=bool)

    @cached_property
    def anchors(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if self.is_anchor(n))

    @cached_property
    def tails(self) -> tuple[str, ...]:
        return tuple(n for n in self.names if not self.is_anchor(n))

    def __contains__(self, name: object) -> bool:
        return name in self.index

    def __len__(self) -> int:
        return len(self.names)

    def with_behaviors(self, names: Iterable[str]) -> Vocabulary:
        """A vocabulary with extra behaviors (count 0): few-shot / zero-shot additions."""
        counts = dict(zip(self.names, self.counts, strict=True))
        for n in names:
            counts.setdefault(normalize_behavior(n), 0)
        return Vocabulary.from_counts(counts, self.anchor_share)

    def to_json(self) -> dict[str, Any]:
        return {
            "anchor_share": self.anchor_share,
            "behaviors": [
                {"name": n, "count": c, "anchor": self.is_anchor(n)}
                for n, c in zip(self.names, self.counts, strict=True)
            ],
        }

    @classmethod
    def from_json(cls, obj: Mapping[str, Any], where: str = "vocabulary") -> Vocabulary:
        try:
            rows = obj["behaviors"]
            return cls(
                tuple(str(r["name"]) for r in rows),
                tuple(int(r["count"]) for r in rows),
                float(obj.get("anchor_share", DEFAULT_ANCHOR_SHARE)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"{where}: malformed vocabulary ({exc})") from exc

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_json(), indent=1, ensure_ascii=False) + "\n")

    @classmethod
    def load(cls, path: Path) -> Vocabulary:
        try:
            return cls.from_json(json.loads(path.read_text()), str(path))
        except json.JSONDecodeError as exc:
            raise InputError(f"{path}: line {exc.lineno}: invalid JSON ({exc.msg})") from exc
