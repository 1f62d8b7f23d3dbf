"""The generated log: shape, long tail, and structure a model can learn."""

from __future__ import annotations

import pandas as pd

from behaviorlm.training.data.synthetic import make_synthetic_log


def test_shape_and_determinism() -> None:
    log = make_synthetic_log(50, 5000, 40, seed=3)
    assert len(log) == 5000 and log["user_id"].nunique() == 50
    assert list(log.columns) == ["user_id", "timestamp", "behavior", "category", "place"]
    assert log.equals(make_synthetic_log(50, 5000, 40, seed=3))
    assert not log.equals(make_synthetic_log(50, 5000, 40, seed=4))
    # per user in time order
    assert log.groupby("user_id")["timestamp"].apply(lambda t: t.is_monotonic_increasing).all()


def test_long_tail() -> None:
    log = make_synthetic_log(500, 50_000, 200, seed=0)
    share = log["behavior"].value_counts(normalize=True)
    assert share.iloc[0] > 5 / 200  # ten times the uniform share
    assert (share < 0.01).sum() > 100
    assert share.index.size > 150


def test_next_behavior_depends_on_the_user_more_than_on_chance() -> None:
    log = make_synthetic_log(200, 20_000, 50, seed=0)
    top_user = log.groupby("user_id")["behavior"].agg(
        lambda b: b.value_counts(normalize=True).iloc[0]
    )
    top_global = log["behavior"].value_counts(normalize=True).iloc[0]
    assert top_user.median() > 1.5 * top_global
    # the previous behavior predicts the next one beyond its base rate
    pairs = pd.DataFrame({"prev": log["behavior"].shift(), "next": log["behavior"]})
    pairs = pairs[log["user_id"] == log["user_id"].shift()]
    best_next = pairs.groupby("prev")["next"].agg(lambda b: b.value_counts(normalize=True).iloc[0])
    assert best_next.median() > 2 * top_global


def test_tz_offset_text() -> None:
    log = make_synthetic_log(3, 30, 5, seed=0, tz_offset="+08:00")
    assert log["timestamp"].str.endswith("+08:00").all()
