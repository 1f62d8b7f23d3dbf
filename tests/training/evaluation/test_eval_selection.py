"""Which test samples every system is evaluated on."""

from __future__ import annotations

import numpy as np

from behaviorlm.training.evaluation.evaluate import choose_stratified, choose_subset


def test_uniform_subset_is_seeded_sorted_and_without_repeats() -> None:
    a = choose_subset(100, 10, seed=1)
    assert len(set(a.tolist())) == 10 and (np.diff(a) > 0).all()
    assert (a == choose_subset(100, 10, seed=1)).all()
    assert not (a == choose_subset(100, 10, seed=2)).all()
    assert (choose_subset(5, 10, seed=0) == np.arange(5)).all()
    assert (choose_subset(5, None, seed=0) == np.arange(5)).all()


def test_stratified_takes_half_anchor_half_tail() -> None:
    is_anchor = np.array([True] * 90 + [False] * 10)
    picked = choose_stratified(is_anchor, 12, seed=0)
    assert is_anchor[picked].sum() == 6 and (~is_anchor[picked]).sum() == 6
    # A group smaller than half contributes all it has.
    picked = choose_stratified(is_anchor, 40, seed=0)
    assert (~is_anchor[picked]).sum() == 10 and is_anchor[picked].sum() == 20
