"""Which training samples each stage sees: anchors, difficulty candidates, balanced subsets.

Difficulty is ranked WITHIN each behavior. An anchor-only stage 1 gives nearly every tail sample
p(true) ~ 0 (difficulty ~ 1); a global ranking would then pick tail samples at random and fill
the "hard" share with the tail. Ranking per behavior keeps the question meaningful: which of
THIS behavior's samples does the model get most wrong.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from behaviorlm.vocabulary import Vocabulary


def by_class(targets: Sequence[str]) -> dict[str, list[int]]:
    """Sample indices per target behavior, ascending (deterministic)."""
    out: dict[str, list[int]] = {}
    for i, t in enumerate(targets):
        out.setdefault(t, []).append(i)
    return out


def anchor_subset(targets: Sequence[str], vocabulary: Vocabulary) -> list[int]:
    anchors = set(vocabulary.anchors)
    return [i for i, t in enumerate(targets) if t in anchors]


def difficulty_candidates(
    targets: Sequence[str],
    per_class: int,
    max_samples: int,
    rng: np.random.Generator,
    min_class_size: int = 0,
) -> list[int]:
    """Up to ``per_class`` random samples of each behavior, ``max_samples`` in all.

    Only behaviors with more than ``min_class_size`` samples are scored: stage 2 takes smaller
    behaviors whole, so their difficulty would decide nothing. When the per-class quota
    overshoots the cap, the quota shrinks (the largest quota whose total fits), so small
    behaviors keep all their samples and big ones are cut first.
    """
    classes = {c: ix for c, ix in by_class(targets).items() if len(ix) > min_class_size}
    sizes = {c: len(ix) for c, ix in classes.items()}

    def total(q: int) -> int:
        return sum(min(n, q) for n in sizes.values())

    quota = per_class
    if total(quota) > max_samples:
        lo, hi = 0, per_class
        while lo < hi:  # largest quota with total(quota) <= max_samples
            mid = (lo + hi + 1) // 2
            lo, hi = (mid, hi) if total(mid) <= max_samples else (lo, mid - 1)
        quota = lo
    chosen: list[int] = []
    for c in sorted(classes):
        ix = classes[c]
        if len(ix) <= quota:
            chosen.extend(ix)
        else:
            chosen.extend(int(i) for i in rng.choice(ix, size=quota, replace=False))
    return sorted(chosen)


@dataclass
class SubsetReport:
    """What the balanced selection took, per behavior (saved with the run)."""

    per_class: dict[str, int] = field(default_factory=dict)
    hard: dict[str, int] = field(default_factory=dict)
    total: int = 0
    natural: int = 0  # natural-distribution samples added on top (anchor replay)

    def to_json(self) -> dict[str, object]:
        return {
            "total": self.total,
            "per_class": self.per_class,
            "hard": self.hard,
            "natural": self.natural,
        }


def balanced_subset(
    targets: Sequence[str],
    per_class_max: int,
    hard_fraction: float,
    difficulty: Mapping[int, float] | None,
    rng: np.random.Generator,
) -> tuple[list[int], SubsetReport]:
    """Up to ``per_class_max`` samples per behavior (all of a behavior with fewer).

    Of each behavior's quota, ``round(hard_fraction * per_class_max)`` are its hardest scored
    samples (ranked within the behavior; ties by index), the rest random among the remaining.
    ``difficulty=None`` (the ``balanced`` strategy) takes them all at random.
    """
    report = SubsetReport()
    chosen: list[int] = []
    n_hard = round(hard_fraction * per_class_max) if difficulty is not None else 0
    for c, ix in sorted(by_class(targets).items()):
        if len(ix) <= per_class_max:
            picked = list(ix)
            hard: list[int] = []
        else:
            scored = [i for i in ix if difficulty is not None and i in difficulty]
            scored.sort(key=lambda i: (-difficulty[i], i) if difficulty else i)
            hard = scored[:n_hard]
            taken = set(hard)
            rest = [i for i in ix if i not in taken]
            extra = rng.choice(rest, size=per_class_max - len(hard), replace=False)
            picked = hard + [int(i) for i in extra]
        chosen.extend(picked)
        report.per_class[c] = len(picked)
        report.hard[c] = len(hard)
    report.total = len(chosen)
    return sorted(chosen), report


def add_natural_replay(
    subset: Sequence[int],
    n_samples: int,
    fraction: float,
    rng: np.random.Generator,
    report: SubsetReport,
) -> list[int]:
    """``subset`` plus random samples from outside it, so that ``fraction`` of the result
    follows the natural (training) distribution of behaviors. Updates ``report``."""
    if fraction <= 0.0:
        return list(subset)
    rest = np.setdiff1d(np.arange(n_samples, dtype=np.int64), np.asarray(subset, dtype=np.int64))
    wanted = min(len(rest), round(fraction / (1.0 - fraction) * len(subset)))
    extra = rng.choice(rest, size=wanted, replace=False) if wanted else np.empty(0, np.int64)
    report.natural = int(wanted)
    report.total = len(subset) + int(wanted)
    return sorted([*subset, *(int(i) for i in extra)])
