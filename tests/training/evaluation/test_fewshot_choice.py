"""Which tail behaviors ``eval --fewshot`` holds out, and the anchor yardstick beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.evaluation.fewshot import FewShotConfig, choose_holdout
from behaviorlm.vocabulary import Vocabulary


def _vocab() -> Vocabulary:
    # 2 anchors (big), then tails with 400, 200, 60, 40, 30, 25, 22, 5, 3, 1 training targets.
    counts = {"a0": 40_000, "a1": 30_000}
    tails = [400, 200, 60, 40, 30, 25, 22, 5, 3, 1]
    counts.update({f"t{c}": c for c in tails})
    return Vocabulary.from_counts(counts, anchor_share=0.05)


def _cfg(**kw: object) -> FewShotConfig:
    return FewShotConfig(data=Path("d"), out=Path("o"), **kw)  # type: ignore[arg-type]


def test_median_choice_takes_typical_tails_not_the_largest() -> None:
    vocab = _vocab()
    assert set(vocab.tails) == {f"t{c}" for c in (400, 200, 60, 40, 30, 25, 22, 5, 3, 1)}
    # Test support: the largest tails have the most test samples; t5 and below cannot give 20.
    test = ["t400"] * 30 + ["t200"] * 20 + ["t60", "t40", "t30", "t25", "t22", "t5"] * 2
    held = choose_holdout(vocab, test, _cfg(ks=(0, 5, 20), holdout=3))
    # Median tail count is 27.5: the closest eligible (>= 20 training targets) in log scale.
    assert held == ["t30", "t25", "t22"]
    largest = choose_holdout(vocab, test, _cfg(ks=(0, 5, 20), holdout=3, choice="largest"))
    assert largest == ["t400", "t200", "t22"]


def test_defaults_hold_out_five_and_need_a_test_sample() -> None:
    vocab = _vocab()
    cfg = _cfg()
    assert (cfg.holdout, cfg.choice, cfg.ks) == (5, "median", (0, 5, 20))
    test = ["t400", "t200", "t60", "t40", "t30", "t25"]  # t22 has no test sample
    held = choose_holdout(vocab, test, cfg)
    assert len(held) == 5 and "t22" not in held and set(held) <= set(vocab.tails)
    distance = [abs(np.log(vocab.counts[vocab.index[n]]) - np.log(27.5)) for n in held]
    assert distance == sorted(distance)
    with pytest.raises(InputError, match=r"only 6 tail behaviors have >= 20 training samples"):
        choose_holdout(vocab, test, _cfg(holdout=7))
