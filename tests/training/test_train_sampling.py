"""Stage subsets: anchors, bounded difficulty candidates, per-class hard/random mix."""

from __future__ import annotations

import numpy as np

from behaviorlm.vocabulary import Vocabulary
from training.batching import draw_order, length_grouped_batches
from training.sampling import (
    add_natural_replay,
    anchor_subset,
    balanced_subset,
    by_class,
    difficulty_candidates,
)

TARGETS = ["a"] * 50 + ["b"] * 30 + ["c"] * 5 + ["d"] * 1


def test_anchor_subset_takes_anchor_targets_only() -> None:
    vocab = Vocabulary.from_counts({"a": 50, "b": 30, "c": 5, "d": 1}, anchor_share=0.1)
    subset = anchor_subset(TARGETS, vocab)
    assert {TARGETS[i] for i in subset} == {"a", "b"}
    assert len(subset) == 80


def test_difficulty_candidates_respect_quota_and_cap() -> None:
    rng = np.random.default_rng(0)
    got = difficulty_candidates(TARGETS, per_class=10, max_samples=1000, rng=rng)
    counts = {c: sum(TARGETS[i] == c for i in got) for c in "abcd"}
    assert counts == {"a": 10, "b": 10, "c": 5, "d": 1}
    capped = difficulty_candidates(TARGETS, per_class=10, max_samples=17, rng=rng)
    assert len(capped) <= 17
    # the small classes keep everything; the quota shrinks for the big ones
    assert sum(TARGETS[i] == "d" for i in capped) == 1
    assert sum(TARGETS[i] == "c" for i in capped) == 5


def test_balanced_subset_ranks_difficulty_within_each_class() -> None:
    # class "a": difficulty rises with the index; "b": falls. Global ranking would pick only "a".
    difficulty = {i: 0.9 + i / 1000 for i in range(50)}
    difficulty.update({i: 0.5 - (i - 50) / 100 for i in range(50, 80)})
    subset, report = balanced_subset(TARGETS, 10, 0.5, difficulty, np.random.default_rng(0))
    per = by_class([TARGETS[i] for i in subset])
    assert {c: len(v) for c, v in per.items()} == {"a": 10, "b": 10, "c": 5, "d": 1}
    assert report.hard == {"a": 5, "b": 5, "c": 0, "d": 0}
    assert set(range(45, 50)) <= set(subset)  # hardest of "a"
    assert set(range(50, 55)) <= set(subset)  # hardest of "b"
    assert len(set(subset)) == len(subset)


def test_balanced_without_difficulty_is_random_and_seeded() -> None:
    a, _ = balanced_subset(TARGETS, 10, 0.5, None, np.random.default_rng(1))
    b, report = balanced_subset(TARGETS, 10, 0.5, None, np.random.default_rng(1))
    assert a == b
    assert sum(report.hard.values()) == 0


def test_schedule_is_deterministic_and_length_grouped() -> None:
    lengths = {i: 10 + (i * 7) % 13 for i in range(100)}
    order = draw_order(list(range(100)), 64, np.random.default_rng(3))
    again = draw_order(list(range(100)), 64, np.random.default_rng(3))
    assert order.tolist() == again.tolist()
    assert len(set(order.tolist())) == 64  # one pass: no repeats
    batches = length_grouped_batches(order, lengths, 4, 4, np.random.default_rng(0))
    assert sorted(i for b in batches for i in b) == sorted(order.tolist())
    spread = [max(lengths[i] for i in b) - min(lengths[i] for i in b) for b in batches]
    assert np.mean(spread) <= 3  # sorted pools: neighbours have similar lengths


def test_difficulty_candidates_skip_classes_taken_whole() -> None:
    got = difficulty_candidates(TARGETS, 10, 1000, np.random.default_rng(0), min_class_size=5)
    assert {TARGETS[i] for i in got} == {"a", "b"}


def test_natural_replay_adds_samples_from_outside_the_balanced_subset() -> None:
    rng = np.random.default_rng(0)
    subset, report = balanced_subset(TARGETS, 5, 0.0, None, rng)
    assert len(subset) == 16  # 5 + 5 + 5 + 1
    assert add_natural_replay(subset, len(TARGETS), 0.0, rng, report) == subset
    mixed = add_natural_replay(subset, len(TARGETS), 0.5, rng, report)
    assert len(mixed) == 32 and len(set(mixed)) == 32 and set(subset) <= set(mixed)
    assert report.natural == 16 and report.total == 32
    # drawn from the natural distribution: the big behavior dominates the additions
    added = [TARGETS[i] for i in set(mixed) - set(subset)]
    assert added.count("a") > added.count("c") + added.count("d")
    # never more than exists outside the subset
    everything = add_natural_replay(subset, len(TARGETS), 0.99, rng, report)
    assert len(everything) == len(TARGETS)
