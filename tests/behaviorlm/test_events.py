from datetime import datetime

import pytest

from behaviorlm.errors import InputError
from behaviorlm.events import Event, Sample, check_sorted


def test_sample_json_round_trip() -> None:
    s = Sample(
        "u7",
        (Event("Gym", datetime.fromisoformat("2018-01-02T07:00:00+08:00"), {"w": "Rain"}),),
        "Office",
        datetime.fromisoformat("2018-01-02T09:00:00+08:00"),
        {"w": "Clear"},
    )
    assert Sample.from_json(s.to_json()) == s


@pytest.mark.parametrize(
    ("obj", "message"),
    [
        ({"behavior": "   "}, "history\\[0\\]: field 'behavior'"),
        ({"behavior": "Gym", "timestamp": "yesterday"}, "'timestamp' is not ISO-8601: 'yesterday'"),
        ({"behavior": "Gym", "context": [1]}, "'context' must be an object"),
    ],
)
def test_bad_events_name_the_field(obj, message) -> None:
    with pytest.raises(InputError, match=message):
        Sample.from_json({"user_id": "u", "history": [obj], "target": None})


def test_unsorted_history_is_refused() -> None:
    events = [
        Event("a", datetime(2020, 1, 2)),
        Event("b", datetime(2020, 1, 1)),
    ]
    with pytest.raises(InputError, match=r"history\[1\]: timestamp 2020-01-01"):
        check_sorted(events, "history")
