from datetime import UTC, datetime, timedelta, timezone

from behaviorlm.events import Event, Sample
from behaviorlm.prompt import (
    ANSWER_END,
    PROMPT_VERSION,
    format_gap,
    render_answer,
    render_prompt,
    render_sample,
)

MYT = timezone(timedelta(hours=8))
UTC_TZ = UTC

GOLDEN_V1 = (
    "Predict the user's next behavior from their history.\n"
    "History:\n"
    "Wed 00h Organization\n"
    "Wed 01h +22m Bakery | weather: Rain\n"
    "Sat 10h +3d Coffee Shop | place: mall, weather: Clear\n"
    "Now: Sat 11h +1h | weather: Clear\n"
    "Next:"
)


def _history() -> list[Event]:
    return [
        Event("Organization", datetime(2017, 10, 4, 0, 47, tzinfo=MYT)),
        Event("Bakery", datetime(2017, 10, 4, 1, 9, tzinfo=MYT), {"weather": "Rain"}),
        Event(
            "Coffee Shop",
            datetime(2017, 10, 7, 10, 5, tzinfo=MYT),
            {"weather": "Clear", "place": "mall"},
        ),
    ]


def test_golden_prompt_v1() -> None:
    # Changing this string changes what every adapter was trained on: bump PROMPT_VERSION.
    assert PROMPT_VERSION == "v1"
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    assert render_prompt(_history(), now, {"weather": "Clear"}) == GOLDEN_V1


def test_served_prompt_is_training_text_minus_answer() -> None:
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    train = Sample("u1", _history(), "Chinese Restaurant", now, {"weather": "Clear"})
    prompt, answer = render_sample(train)
    assert answer == " Chinese Restaurant" + ANSWER_END
    served = render_sample(Sample("u1", _history(), None, now, {"weather": "Clear"}))
    assert served == (prompt, None)
    assert (prompt + answer).removesuffix(answer) == prompt


def test_wall_clock_of_each_timezone_is_rendered() -> None:
    # 03:00 UTC is 11h in Kuala Lumpur: behavior follows local time, so the prompt says 11h.
    utc_ts = datetime(2017, 10, 7, 3, 0, tzinfo=UTC_TZ)
    assert "Sat 11h" in render_prompt([Event("Gym", utc_ts.astimezone(MYT))])


def test_gap_formatting_and_unknown_time() -> None:
    t0 = datetime(2020, 1, 1, 8, 0)
    assert format_gap(t0, t0 + timedelta(minutes=5)) == "+5m"
    assert format_gap(t0, t0 + timedelta(hours=30)) == "+30h"
    assert format_gap(t0, t0 + timedelta(days=9)) == "+9d"
    assert format_gap(None, t0) == ""
    # Naive and aware timestamps cannot be subtracted: no gap rather than an error.
    assert format_gap(t0, t0.replace(tzinfo=MYT)) == ""
    text = render_prompt([Event("TV:on", None, {"day": "Wed"})], None, {"day": "Wed"})
    assert text.splitlines()[2:] == ["TV:on | day: Wed", "Now: day: Wed", "Next:"]


def test_answer_normalises_whitespace() -> None:
    assert render_answer("  Chinese   Restaurant ") == " Chinese Restaurant\n"


def test_prompt_and_answer_tokenise_at_a_clean_boundary(smollm2_tokenizer) -> None:
    # Training appends the answer's ids to the prompt's; BPE must not merge across the boundary
    # or the served prompt would not be a prefix of what was trained.
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    prompt = render_prompt(_history(), now, {"weather": "Clear"})
    for name in ["Chinese Restaurant", "Bar", "Café", "Caf\u00e9 & Bistro", "UNKNOWN"]:
        answer = render_answer(name)
        joint = smollm2_tokenizer.encode(prompt + answer, add_special_tokens=False)
        split = smollm2_tokenizer.encode(prompt, add_special_tokens=False)
        split += smollm2_tokenizer.encode(answer, add_special_tokens=False)
        assert joint == split, name
