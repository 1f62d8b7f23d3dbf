"""Classical baselines on hand-built sequences; expected distributions worked out by hand."""

from __future__ import annotations

import numpy as np
import pytest

from behaviorlm.training.evaluation.baselines import (
    GlobalMarkov,
    MostPopular,
    UserFrequency,
    UserMarkov,
    popularity_prior,
)
from behaviorlm.training.evaluation.sasrec import SASRec, SASRecConfig
from behaviorlm.training.evaluation.sequences import SequenceData

COUNTS = [3, 1]  # prior (add-one): [4/6, 2/6]


def seqs(histories: list[list[int]], targets: list[int]) -> SequenceData:
    """Raw ids equal labels here (no out-of-vocabulary events)."""
    arrs = [np.array(h, dtype=np.int64) for h in histories]
    n = len(targets)
    return SequenceData(
        user_ids=[f"u{i}" for i in range(n)],
        labels=arrs,
        raw=arrs,
        targets=np.array(targets, dtype=np.int64),
        hour=np.full(n, -1),
        weekday=np.full(n, -1),
    )


TRAIN = seqs([[0], [1, 0], [0, 1], []], [1, 1, 0, 0])


def test_popularity() -> None:
    assert popularity_prior(COUNTS) == pytest.approx([2 / 3, 1 / 3])
    mp = MostPopular(COUNTS)
    mp.fit(TRAIN, None)
    assert mp.predict(seqs([[1], []], [0, 1])) == pytest.approx(np.array([[2 / 3, 1 / 3]] * 2))


def test_user_frequency_whole_and_last_k() -> None:
    test = seqs([[1, 1, 0]], [1])
    whole = UserFrequency(COUNTS, alpha=1.0)
    whole.fit(TRAIN, None)
    # counts [1, 2], n 3: ([1, 2] + [2/3, 1/3]) / 4
    assert whole.predict(test)[0] == pytest.approx([5 / 12, 7 / 12])
    last2 = UserFrequency(COUNTS, window=2, alpha=1.0)
    last2.fit(TRAIN, None)
    # last two events [1, 0]: ([1, 1] + prior) / 3
    assert last2.predict(test)[0] == pytest.approx([5 / 9, 4 / 9])
    assert whole.name == "user-frequency-all" and last2.name == "user-frequency-last2"


def test_out_of_vocabulary_events_are_ignored_by_frequency() -> None:
    test = SequenceData(
        ["u"],
        [np.array([-1, 1, -1])],
        [np.array([5, 1, 6])],
        np.array([0]),
        np.array([-1]),
        np.array([-1]),
    )
    uf = UserFrequency(COUNTS, alpha=1.0)
    uf.fit(TRAIN, None)
    assert uf.predict(test)[0] == pytest.approx([(0 + 2 / 3) / 2, (1 + 1 / 3) / 2])


def test_global_and_user_markov() -> None:
    glob = GlobalMarkov(COUNTS, num_raw=2, beta=1.0)
    glob.fit(TRAIN, None)
    # train transitions from raw 0: -> 1, -> 1 ; so row 0 = ([0, 2] + prior) / 3
    assert glob.predict(seqs([[1, 0]], [0]))[0] == pytest.approx([2 / 9, 7 / 9])
    # from raw 1: -> 0 once; no previous event (state 2): -> 0 once
    assert glob.predict(seqs([[1]], [0]))[0] == pytest.approx([(1 + 2 / 3) / 2, (1 / 3) / 2])
    assert glob.predict(seqs([[]], [0]))[0] == pytest.approx([(1 + 2 / 3) / 2, (1 / 3) / 2])
    user = UserMarkov(glob, beta=1.0)
    user.fit(TRAIN, None)
    # user's own transitions out of 0 (the last event): 0->1 twice -> ([0, 2] + [2/9, 7/9]) / 3
    assert user.predict(seqs([[0, 1, 0, 1, 0]], [1]))[0] == pytest.approx([2 / 27, 25 / 27])
    # no own transition out of the last behavior: the global row
    assert user.predict(seqs([[1, 0]], [1]))[0] == pytest.approx([2 / 9, 7 / 9])


def test_smoothing_is_tuned_on_validation_nll() -> None:
    # A user who always repeats: less smoothing (small alpha) must win on validation.
    val = seqs([[1, 1, 1, 1]] * 5, [1] * 5)
    uf = UserFrequency(COUNTS)
    uf.fit(TRAIN, val)
    assert uf.alpha == min(uf.grid)
    assert uf.params["alpha"] == uf.alpha and "validation" in uf.params["tuned_on"]


def test_sasrec_learns_a_deterministic_successor() -> None:
    # next = (last + 1) mod 5: every baseline above but Markov fails; SASRec must learn it.
    rng = np.random.default_rng(0)
    hist = [list(rng.integers(0, 5, size=rng.integers(1, 6))) for _ in range(1500)]
    data = seqs(hist, [(h[-1] + 1) % 5 for h in hist])
    model = SASRec(
        num_raw=5,
        num_labels=5,
        config=SASRecConfig(max_len=6, dim=32, epochs=6, dropout=0.0, seed=0),
    )
    model.fit(data.subset(np.arange(1200)), data.subset(np.arange(1200, 1500)))
    probs = model.predict(data.subset(np.arange(1200, 1500)))
    assert probs.shape == (300, 5)
    assert probs.sum(axis=1) == pytest.approx(np.ones(300))
    assert (probs.argmax(axis=1) == data.targets[1200:]).mean() > 0.95
    # Same seed, same model.
    again = SASRec(
        num_raw=5,
        num_labels=5,
        config=SASRecConfig(max_len=6, dim=32, epochs=6, dropout=0.0, seed=0),
    )
    again.fit(data.subset(np.arange(1200)), data.subset(np.arange(1200, 1500)))
    assert again.predict(data.subset(np.arange(1200, 1500))) == pytest.approx(probs, abs=1e-6)
