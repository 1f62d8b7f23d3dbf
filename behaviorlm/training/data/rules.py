"""Vocabulary rules: which raw behaviors become labels, and what the others become.

Counts are training-split target counts only (validation/test never shape the vocabulary).
Rule order: ``min_count`` first, then ``max_vocab`` on the survivors, most frequent kept.
The fallback labels (parents or the ``other`` bucket) count towards ``max_vocab``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig

KEPT = "kept"
MIN_COUNT = "min_count"
MAX_VOCAB = "max_vocab"


@dataclass(frozen=True)
class LabelRules:
    """raw name -> label (None = dropped) and which rule decided it."""

    label: dict[str, str | None]
    rule: dict[str, str]


def _fallback(raw: str, parents: Mapping[str, str | None], config: PrepareConfig) -> str | None:
    if config.fallback == "drop":
        return None
    if config.fallback == "parent":
        parent = parents.get(raw)
        if parent:
            return parent
    return config.other_label


def build_label_rules(
    train_counts: Mapping[str, int],
    all_behaviors: list[str],
    parents: Mapping[str, str | None],
    config: PrepareConfig,
) -> LabelRules:
    """Apply min_count, then max_vocab, to every raw behavior seen anywhere in the log."""
    counts = {b: int(train_counts.get(b, 0)) for b in all_behaviors}
    frequent = sorted(
        (b for b, c in counts.items() if c >= config.min_count), key=lambda b: (-counts[b], b)
    )
    rare = [b for b in counts if counts[b] < config.min_count]
    keep = len(frequent)
    if config.max_vocab is not None:
        keep = _largest_fit(frequent, rare, parents, config)
    kept = set(frequent[:keep])
    label: dict[str, str | None] = {}
    rule: dict[str, str] = {}
    for b in counts:
        if b in kept:
            label[b], rule[b] = b, KEPT
        else:
            label[b] = _fallback(b, parents, config)
            rule[b] = MIN_COUNT if counts[b] < config.min_count else MAX_VOCAB
    return LabelRules(label, rule)


def _largest_fit(
    frequent: list[str], rare: list[str], parents: Mapping[str, str | None], config: PrepareConfig
) -> int:
    """The most frequent behaviors to keep so that they plus their fallback labels fit."""
    assert config.max_vocab is not None
    n = min(len(frequent), config.max_vocab)
    while n >= 0:
        top = set(frequent[:n])
        mapped = [*frequent[n:], *rare]
        extra = {_fallback(b, parents, config) for b in mapped} - {None} - top
        if n + len(extra) <= config.max_vocab:
            return n
        n -= 1
    raise InputError(
        f"--max-vocab {config.max_vocab}: too small for the {config.fallback!r} fallback labels "
        "alone; raise it or use --fallback other/drop"
    )
