"""Stage weights (anchors, class-balanced inclusion weights with the hard/random mix, replay),
row planning and the token-budget schedule."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.training.batching import cut_by_tokens, plan_batches, plan_passes
from behaviorlm.training.packing import Readouts, plan_rows
from behaviorlm.training.sampling import anchor_weights, balanced_weights
from behaviorlm.vocabulary import Vocabulary

NAMES = ["a", "b", "c", "d"]
LABELS = np.asarray([0] * 50 + [1] * 30 + [2] * 5 + [3] * 1)


def test_anchor_weights_take_anchor_targets_only() -> None:
    vocab = Vocabulary.from_counts({"a": 50, "b": 30, "c": 5, "d": 1}, anchor_share=0.1)
    w = anchor_weights(LABELS, vocab)
    assert set(w[LABELS < 2]) == {1.0} and set(w[LABELS >= 2]) == {0.0}


def test_balanced_weights_are_inclusion_probabilities() -> None:
    w, report = balanced_weights(LABELS, NAMES, 10, 0.0, None, 0.0)
    # per class min(n, M) readouts' worth of weight, spread evenly inside a class
    assert report.per_class == pytest.approx({"a": 10, "b": 10, "c": 5, "d": 1})
    raw = w * report.balanced / len(LABELS)  # undo the mean-1 scaling
    assert raw[LABELS == 0] == pytest.approx(np.full(50, 10 / 50))
    assert raw[LABELS == 3] == pytest.approx([1.0])
    assert w.mean() == pytest.approx(1.0)


def test_hard_fraction_ranks_difficulty_within_each_class() -> None:
    difficulty = np.linspace(0, 1, len(LABELS))[::-1].copy()  # earlier = harder globally
    difficulty[49] = 2.0  # the hardest "a" sample sits last among the a's
    w, report = balanced_weights(LABELS, NAMES, 10, 0.5, difficulty, 0.0)
    assert report.hard == {"a": 5, "b": 5, "c": 0, "d": 0}
    a = w[:50]
    top = set(np.argsort(-a, kind="stable")[:5].tolist())
    assert 49 in top and top == {49, 0, 1, 2, 3}  # hardest first, then by difficulty
    assert report.per_class["a"] == pytest.approx(10)  # 5 hard x 1 + 45 x (5 / 45)


def test_natural_replay_adds_a_uniform_share() -> None:
    _, plain = balanced_weights(LABELS, NAMES, 10, 0.0, None, 0.0)
    w, report = balanced_weights(LABELS, NAMES, 10, 0.0, None, 0.5)
    assert report.natural == pytest.approx(plain.balanced)  # half of the total is natural
    assert (w > 0).all() and w.mean() == pytest.approx(1.0)
    assert report.readouts == len(LABELS)


def test_rows_cover_every_readout_once_within_chunk_and_users() -> None:
    users = np.asarray(["u"] * 30 + ["v"] * 10, dtype=object)
    rows = np.asarray([*range(1, 30), *range(31, 40)])
    starts = np.asarray([max(0, r - 4) if r < 30 else max(30, r - 4) for r in rows])
    readouts = Readouts(rows, starts, np.zeros(len(rows), dtype=np.int64))
    plans = plan_rows(users, readouts, chunk=10)
    seen = np.concatenate([p.readouts for p in plans])
    assert sorted(seen.tolist()) == list(range(len(rows)))
    for plan in plans:
        last = int(rows[plan.readouts[-1]])
        assert last - plan.start < 10  # at most chunk events
        assert len({users[plan.start], users[last]}) == 1  # never across users
        assert (starts[plan.readouts] >= plan.start).all()  # K history kept
    # consecutive rows of a long user overlap by the history window
    assert plans[1].start == int(starts[plans[1].readouts[0]])


def test_epochs_are_whole_passes_over_the_rows() -> None:
    """epochs=2 reads every row exactly twice, one pass after the other; a fraction ends
    inside the last pass; the draws are plan_batches' for the same number of steps."""
    lengths = np.asarray([10, 200, 35, 40, 180, 12, 90, 95, 300, 20, 50, 60])
    rows = np.arange(2, 12)  # row 0 and 1 hold no selected target

    def passes(epochs: float) -> list[list[int]]:
        return plan_passes(lengths, rows, 400, 2, epochs, np.random.default_rng(5))

    one, two = passes(1), passes(2)
    assert sorted(r for b in one for r in b) == rows.tolist()
    counts = np.bincount([r for b in two for r in b], minlength=12)
    assert counts[:2].tolist() == [0, 0] and set(counts[2:]) == {2}
    assert two[: len(one)] == one
    steps = plan_batches(lengths, rows, 400, 2, len(two), np.random.default_rng(5))
    assert steps == two
    half = passes(1.5)
    assert len(one) < len(half) < len(two) and half == two[: len(half)]
    assert len(passes(0.01)) == 1  # at least one batch
    with pytest.raises(ValueError, match="epochs must be > 0"):
        passes(0)


def test_schedule_is_deterministic_within_budget_and_length_grouped() -> None:
    lengths = np.asarray([10, 200, 35, 40, 180, 12, 90, 95, 300, 20])
    a = plan_batches(lengths, np.arange(10), 400, 4, 7, np.random.default_rng(3))
    b = plan_batches(lengths, np.arange(10), 400, 4, 7, np.random.default_rng(3))
    assert a == b and len(a) == 7
    for batch in a:
        assert len(batch) * max(lengths[batch]) <= 400 or len(batch) == 1
    assert cut_by_tokens([0, 5, 9, 2], lengths, 80) == [[0, 5, 9], [2]]
    with pytest.raises(ValueError):
        plan_batches(lengths, np.arange(0), 400, 4, 1, np.random.default_rng(0))
