"""Repeat features: golden values on a small past, and the bulk hour/weekday arrays."""

from __future__ import annotations

from datetime import datetime, timedelta

import numpy as np
import pytest

from behaviorlm.repeats import (
    FEATURES,
    UNKNOWN,
    RepeatInput,
    feature_matrix,
    features_by_name,
    hours_weekdays,
)


def _past() -> RepeatInput:
    # Saturday 2018-03-03; now is Saturday 13h
    t0 = datetime(2018, 3, 3, 8, 0)
    times = [t0, t0 + timedelta(hours=5), t0 + timedelta(hours=6), None, t0 + timedelta(days=7)]
    return RepeatInput.of_events(
        ["Cafe", "Gym", "Cafe", "Bar", "Cafe"], times, datetime(2018, 3, 3, 13, 30), shown=2
    )


def test_golden_features() -> None:
    feats = features_by_name(_past())
    assert set(feats) == {"Cafe", "Gym", "Bar"}
    by = {name: dict(zip(FEATURES, vec.tolist(), strict=True)) for name, vec in feats.items()}
    assert by["Cafe"]["log_count"] == pytest.approx(np.log(4))
    assert by["Cafe"]["log_count_shown"] == pytest.approx(np.log(2))  # Bar, Cafe are shown
    assert by["Cafe"]["recency"] == 1.0 and by["Cafe"]["is_last"] == 1.0
    # Gym at 13h on a Saturday: same hour and weekday as now
    assert by["Gym"]["same_hour"] == pytest.approx(np.log(2))
    assert by["Gym"]["same_weekday"] == pytest.approx(np.log(2))
    assert by["Gym"]["recency"] == pytest.approx(1 / 4) and by["Gym"]["is_last"] == 0.0
    assert by["Gym"]["log_count_shown"] == 0.0
    # Bar has no time: no hour or weekday match; it is the second-to-last event
    assert by["Bar"]["same_hour"] == 0.0 and by["Bar"]["same_weekday"] == 0.0
    assert by["Bar"]["recency"] == pytest.approx(1 / 2)
    # Cafe: Saturday 08h twice and Saturday 14h: weekday matches all three, hour none
    assert by["Cafe"]["same_weekday"] == pytest.approx(np.log(4))
    assert by["Cafe"]["same_hour"] == 0.0


def test_window_and_matrix() -> None:
    past = _past().last(2)
    assert past.behaviors == ("Bar", "Cafe")
    matrix = feature_matrix(past, {"Gym": 0, "Cafe": 1, "Other": 2}, 3)
    assert matrix.shape == (3, len(FEATURES))
    assert not matrix[0].any() and not matrix[2].any()  # absent: all zero
    assert matrix[1, FEATURES.index("log_count")] == pytest.approx(np.log(2))


def test_no_now_time_means_no_time_features() -> None:
    past = RepeatInput.of_events(["A", "A"], [datetime(2020, 1, 1, 9), None], None, shown=2)
    vec = features_by_name(past)["A"]
    assert vec[FEATURES.index("same_hour")] == 0.0 and vec[FEATURES.index("same_weekday")] == 0.0


def test_bulk_hours_weekdays_match_datetime() -> None:
    stamps = [datetime(1970, 1, 1), datetime(2018, 3, 3, 13, 59), datetime(2024, 12, 31, 23, 1)]
    micros = np.asarray(
        [int((s - datetime(1970, 1, 1)).total_seconds() * 1_000_000) for s in stamps] + [0]
    )
    hours, weekdays = hours_weekdays(micros, np.asarray([True, True, True, False]))
    assert hours.tolist() == [s.hour for s in stamps] + [UNKNOWN]
    assert weekdays.tolist() == [s.weekday() for s in stamps] + [UNKNOWN]
