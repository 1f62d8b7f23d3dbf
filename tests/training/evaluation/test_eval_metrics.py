"""Metrics on hand-checkable cases: the expected numbers are worked out by hand in comments."""

from __future__ import annotations

import math

import numpy as np
import pytest

from behaviorlm.training.evaluation import metrics as M
from behaviorlm.training.evaluation.metrics import (
    compute_metrics,
    expected_calibration_error,
    per_behavior,
    ranks,
)

# Three classes; class 0 is the only anchor.
PROBS = np.array(
    [
        [0.7, 0.2, 0.1],  # true 0: top-1 0 (hit), rank 1
        [0.5, 0.3, 0.2],  # true 1: top-1 0, rank 2
        [0.2, 0.2, 0.6],  # true 2: top-1 2 (hit), rank 1
        [0.4, 0.4, 0.2],  # true 1: tie with class 0 -> top-1 is 0 (lower index), rank 2
    ]
)
TRUE = np.array([0, 1, 2, 1])
ANCHOR = np.array([True, False, False])


def test_ranks_break_ties_by_index() -> None:
    assert ranks(PROBS, TRUE).tolist() == [1, 2, 1, 2]


def test_overall_sample_metrics() -> None:
    m = compute_metrics(PROBS, TRUE, ANCHOR)["overall"]
    assert m["samples"] == 4
    assert m["accuracy"] == pytest.approx(2 / 4)
    assert m["hr@5"] == pytest.approx(1.0)
    assert m["mrr"] == pytest.approx((1 + 1 / 2 + 1 + 1 / 2) / 4)
    assert m["nll"] == pytest.approx(
        -(math.log(0.7) + math.log(0.3) + math.log(0.6) + math.log(0.4)) / 4
    )
    # Brier per row: .09+.04+.01, .25+.49+.04, .04+.04+.16, .16+.36+.04
    assert m["brier"] == pytest.approx((0.14 + 0.78 + 0.24 + 0.56) / 4)
    # Top-1 confidences .7 .5 .6 .4 fall in four different 1/15-wide bins; each bin's gap is
    # |accuracy - confidence| = .3, .5, .4, .4 with weight 1/4.
    assert m["ece"] == pytest.approx((0.3 + 0.5 + 0.4 + 0.4) / 4)


def test_overall_class_averages() -> None:
    # top-1 = [0, 0, 2, 0]. class 0: P 1/3 R 1 F1 .5; class 1: 0 0 0; class 2: 1 1 1.
    m = compute_metrics(PROBS, TRUE, ANCHOR)["overall"]
    assert m["macro_precision"] == pytest.approx((1 / 3 + 0 + 1) / 3)
    assert m["macro_recall"] == pytest.approx((1 + 0 + 1) / 3)
    assert m["macro_f1"] == pytest.approx((0.5 + 0 + 1) / 3)
    # supports 1, 2, 1
    assert m["weighted_f1"] == pytest.approx((0.5 * 1 + 0 * 2 + 1 * 1) / 4)
    assert m["weighted_recall"] == pytest.approx((1 * 1 + 0 * 2 + 1 * 1) / 4)


def test_anchor_and_tail_subsets() -> None:
    m = compute_metrics(PROBS, TRUE, ANCHOR)
    anchor, tail = m["anchor"], m["tail"]
    assert anchor["samples"] == 1 and anchor["accuracy"] == 1.0
    assert anchor["macro_f1"] == pytest.approx(0.5)  # class 0 precision suffers from 2 FPs
    assert tail["samples"] == 3
    assert tail["accuracy"] == pytest.approx(1 / 3)
    assert tail["mrr"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert tail["macro_f1"] == pytest.approx((0 + 1) / 2)
    assert tail["predicted_share"] == pytest.approx(1 / 4)  # one top-1 prediction is a tail class
    assert tail["classes_predicted"] == 1
    assert anchor["predicted_share"] == pytest.approx(3 / 4)


def test_classes_absent_from_test_do_not_enter_macro() -> None:
    # Class 2 never occurs as a target; its false positive hurts no average but the
    # predicted-share count; class 0: P 1/1 R 1/2, F1 2/3; class 1: P 1 R 1, F1 1.
    probs = np.array([[0.6, 0.1, 0.3], [0.1, 0.1, 0.8], [0.2, 0.7, 0.1]])
    true = np.array([0, 0, 1])
    m = compute_metrics(probs, true, np.array([True, True, False]))
    assert m["overall"]["classes"] == 2
    assert m["overall"]["macro_f1"] == pytest.approx((2 / 3 + 1) / 2)
    assert math.isnan(m["tail"]["macro_f1"])
    assert m["tail"]["samples"] == 0 and math.isnan(m["tail"]["accuracy"])


def test_ece_pools_samples_of_one_bin() -> None:
    # .90 and .92 share the bin (14/15 - 1/15, 14/15]: accuracy .5, confidence .91.
    assert expected_calibration_error(np.array([0.9, 0.92]), np.array([1.0, 0.0])) == (
        pytest.approx(0.41)
    )
    # A perfectly calibrated bin: confidence 0.5, half right.
    assert expected_calibration_error(np.array([0.5, 0.5]), np.array([1.0, 0.0])) == (
        pytest.approx(0.0)
    )


def test_ece_by_prediction_groups_samples_by_the_predicted_class() -> None:
    # PROBS's top-1 = [0, 0, 2, 0]: anchor predictions are rows 0, 1, 3 (confidences .7 .5 .4,
    # right / wrong / wrong, three bins: gaps .3 .5 .4); the tail prediction is row 2 (.6, right:
    # gap .4).
    m = compute_metrics(PROBS, TRUE, ANCHOR)
    assert m["anchor"]["predictions"] == 3 and m["tail"]["predictions"] == 1
    assert m["anchor"]["ece_by_prediction"] == pytest.approx((0.3 + 0.5 + 0.4) / 3)
    assert m["tail"]["ece_by_prediction"] == pytest.approx(0.4)
    assert m["overall"]["ece_by_prediction"] == pytest.approx(m["overall"]["ece"])


def test_a_calibrated_anchor_only_model_is_calibrated_by_prediction_not_by_target() -> None:
    # Always predicts anchor 0 with p = .6 and is right 60% of the time; the other 40% are tail
    # targets, where it is always wrong: the target-conditioned tail "ECE" is .6 although the
    # probabilities are exactly right.
    probs = np.tile([0.6, 0.2, 0.2], (10, 1))
    true = np.array([0] * 6 + [1] * 2 + [2] * 2)
    m = compute_metrics(probs, true, ANCHOR)
    assert m["overall"]["ece"] == pytest.approx(0.0)
    assert m["tail"]["ece"] == pytest.approx(0.6)
    assert m["anchor"]["ece_by_prediction"] == pytest.approx(0.0)
    assert m["tail"]["predictions"] == 0 and math.isnan(m["tail"]["ece_by_prediction"])


def test_per_behavior_rows() -> None:
    rows = per_behavior(PROBS, TRUE, ["a", "b", "c"], [100, 5, 3], ANCHOR)
    assert [r["behavior"] for r in rows] == ["a", "b", "c"]
    assert rows[0] == {
        "behavior": "a",
        "anchor": True,
        "train_count": 100,
        "support": 1,
        "predicted": 3,
        "precision": pytest.approx(1 / 3),
        "recall": 1.0,
        "f1": pytest.approx(0.5),
    }
    assert rows[1]["f1"] == 0.0 and rows[1]["support"] == 2 and rows[1]["predicted"] == 0
    assert rows[2]["f1"] == 1.0


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="anchor mask"):
        compute_metrics(PROBS, TRUE, np.array([True, False]))
    with pytest.raises(ValueError, match="true indices"):
        compute_metrics(PROBS, np.array([0, 1, 2, 3]), ANCHOR)


def test_bootstrap_intervals_cover_the_value_and_shrink_with_samples() -> None:
    rng = np.random.default_rng(1)
    v = 6
    anchor = np.array([True, True, False, False, False, False])

    def system(n: int) -> tuple[np.ndarray, np.ndarray]:
        true = rng.integers(0, v, n)
        logits = rng.normal(size=(n, v))
        logits[np.arange(n), true] += 1.5  # better than chance, not perfect
        probs = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
        return probs, true

    probs, true = system(400)
    full = M.compute_metrics(probs, true, anchor)
    small = M.bootstrap_intervals(probs, true, anchor, resamples=100)
    assert set(small) == {f"{s}.{m}" for s, m in M.INTERVAL_METRICS}
    for key, (lo, hi) in small.items():
        subset, metric = key.split(".")
        assert lo <= full[subset][metric] <= hi, key
    # the same draws twice: the same intervals
    assert M.bootstrap_intervals(probs, true, anchor, resamples=100) == small
    probs4, true4 = system(4000)
    large = M.bootstrap_intervals(probs4, true4, anchor, resamples=100)
    width = {k: hi - lo for k, (lo, hi) in small.items()}
    assert all(large[k][1] - large[k][0] < width[k] for k in small)


def test_paired_differences_of_a_system_and_itself_and_a_worked_case() -> None:
    a = M.Resampling.from_probs(PROBS, TRUE)
    same = M.paired_differences(a, a, TRUE, ANCHOR, resamples=50)
    assert set(same) == {f"{s}.{m}" for s, m in M.DIFFERENCE_METRICS}
    for d in same.values():
        assert d == {"difference": 0.0, "interval": [0.0, 0.0], "above_zero": 0.0}
    # The reference answers class 0 everywhere: acc 1/4 (sample 0), PROBS gets 2/4 (samples
    # 0, 2); tail samples (1, 2, 3): 1/3 vs 0/3. Tail macro-F1 over the tail classes present
    # (1, 2): PROBS has class 2 P = R = 1 (F1 1) and class 1 F1 0 -> 0.5; the reference 0.
    ref = M.Resampling.from_probs(np.tile([0.5, 0.3, 0.2], (4, 1)), TRUE)
    d = M.paired_differences(a, ref, TRUE, ANCHOR, resamples=50)
    assert d["overall.accuracy"]["difference"] == pytest.approx(0.25)
    assert d["tail.macro_f1"]["difference"] == pytest.approx(0.5)
    # PROBS is never worse on any sample, so no resample puts it behind
    assert d["overall.accuracy"]["interval"][0] >= 0.0
    assert 0.0 < d["overall.accuracy"]["above_zero"] <= 1.0


def test_a_paired_difference_is_clear_of_zero_where_the_intervals_overlap() -> None:
    """Two systems that agree on most samples: B is A with 30 of its 1,000 hits lost. Their own
    intervals overlap (each is about +-0.03 wide), the paired one excludes 0 (the shared hits
    cancel), which is why reports give both."""
    rng = np.random.default_rng(0)
    n, v = 1000, 5
    anchor = np.array([True, True, False, False, False])
    true = rng.integers(0, v, n)
    pred_a = np.where(rng.random(n) < 0.4, true, (true + 1) % v)
    hits = np.flatnonzero(pred_a == true)
    pred_b = pred_a.copy()
    pred_b[hits[:30]] = (true[hits[:30]] + 1) % v
    probs_a = np.full((n, v), 0.1)
    probs_a[np.arange(n), pred_a] = 0.6
    probs_b = np.full((n, v), 0.1)
    probs_b[np.arange(n), pred_b] = 0.6
    ia = M.bootstrap_intervals(probs_a, true, anchor)["overall.accuracy"]
    ib = M.bootstrap_intervals(probs_b, true, anchor)["overall.accuracy"]
    assert ib[1] > ia[0]  # overlapping
    d = M.paired_differences(
        M.Resampling.from_probs(probs_a, true), M.Resampling.from_probs(probs_b, true), true, anchor
    )["overall.accuracy"]
    assert d["difference"] == pytest.approx(0.03)
    assert d["interval"][0] > 0 and d["above_zero"] == 1.0
