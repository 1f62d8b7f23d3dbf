from datetime import UTC, datetime, timedelta, timezone

import numpy as np
import pytest

from behaviorlm.events import Event, Sample
from behaviorlm.prompt import (
    HEADER,
    PROMPT_VERSION,
    PieceEncoder,
    Prompt,
    event_head,
    format_gap,
    name_piece,
    render_prompt,
    render_sample,
)

MYT = timezone(timedelta(hours=8))

GOLDEN_V2 = (
    "A user's events, oldest first (day hour +gap | context: behavior)\n"
    "Wednesday 00h: Organization\n"
    "Wednesday 01h +22m | weather: Rain: Bakery\n"
    "Saturday 10h +3d | place: mall, weather: Clear: Coffee Shop\n"
    "Saturday 11h +1h | weather: Clear:"
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


def test_golden_prompt_v2() -> None:
    # Changing this string changes what every adapter was trained on: bump PROMPT_VERSION.
    assert PROMPT_VERSION == "v2"
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    prompt = render_prompt(_history(), now, {"weather": "Clear"})
    assert prompt.text == GOLDEN_V2
    # header, (head, name) x 3, the readout's head
    assert len(prompt.pieces) == 1 + 2 * 3 + 1
    assert prompt.pieces[0] == HEADER and prompt.pieces[-1].endswith(":")
    assert prompt.pieces[2] == " Organization"


def test_render_sample_is_render_prompt() -> None:
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    sample = Sample("u1", _history(), "Chinese Restaurant", now, {"weather": "Clear"})
    assert render_sample(sample) == render_prompt(_history(), now, {"weather": "Clear"})
    # The target is not part of the prompt (it is read, not shown).
    assert "Chinese Restaurant" not in render_sample(sample).text


def test_wall_clock_of_each_timezone_is_rendered() -> None:
    # 03:00 UTC is 11h in Kuala Lumpur: behavior follows local time, so the prompt says 11h.
    utc_ts = datetime(2017, 10, 7, 3, 0, tzinfo=UTC)
    assert "Saturday 11h:" in render_prompt([Event("Gym", utc_ts.astimezone(MYT))]).text


def test_gap_formatting_and_unknown_time() -> None:
    t0 = datetime(2020, 1, 1, 8, 0)
    assert format_gap(t0, t0 + timedelta(minutes=5)) == "+5m"
    assert format_gap(t0, t0 + timedelta(hours=30)) == "+30h"
    assert format_gap(t0, t0 + timedelta(days=9)) == "+9d"
    assert format_gap(None, t0) == ""
    # Naive and aware timestamps cannot be subtracted: no gap rather than an error.
    assert format_gap(t0, t0.replace(tzinfo=MYT)) == ""
    text = render_prompt([Event("TV:on", None, {"day": "Wed"})], None, {"day": "Wed"}).text
    assert text.splitlines()[1:] == ["day: Wed: TV:on", "day: Wed:"]
    # Neither a time nor a context: a placeholder head still gives a readout.
    assert event_head(None, None, None) == "\n-:"


def test_context_values_cannot_break_lines() -> None:
    head = event_head(None, {"note": "two\nlines  here"}, None)
    assert head == "\nnote: two lines here:" and head.count("\n") == 1


def test_name_piece_normalises_whitespace() -> None:
    assert name_piece("  Chinese   Restaurant ") == " Chinese Restaurant"


def test_piece_encoder_concatenates_pieces(smollm2_tokenizer) -> None:
    encoder = PieceEncoder(smollm2_tokenizer)
    now = datetime(2017, 10, 7, 11, 30, tzinfo=MYT)
    prompt = render_prompt(_history(), now, {"weather": "Clear"})
    ids = encoder.encode(prompt)
    expected = list(smollm2_tokenizer.encode(HEADER))
    for piece in prompt.pieces[1:]:
        expected += smollm2_tokenizer.encode(piece, add_special_tokens=False)
    assert ids == expected
    # The batch call (used to build training rows) gives the same ids as one piece at a time.
    assert encoder.encode_batch(list(prompt.pieces[1:])) == [
        encoder.piece(p) for p in prompt.pieces[1:]
    ]
    # Label tokens are the name piece's tokens.
    assert encoder.label_tokens("Coffee Shop") == tuple(
        smollm2_tokenizer.encode(" Coffee Shop", add_special_tokens=False)
    )
    with pytest.raises(ValueError, match="header"):
        encoder.encode(Prompt(("no header",)))


def test_served_prompt_is_a_training_row_prefix(smollm2_tokenizer, tmp_path) -> None:
    """Token for token: the ids the service sends for an event with the same history equal the
    ids of a packed training row up to that event's readout."""
    from behaviorlm.training.data.config import PrepareConfig
    from behaviorlm.training.data.pipeline import prepare_log
    from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log
    from behaviorlm.training.packing import Readouts, encode_rows, plan_rows

    ds = prepare_log(
        make_synthetic_log(12, 400, 20, seed=3),
        tmp_path / "ds",
        PrepareConfig(history_len=4),
        name="synth",
        **SYNTHETIC_COLUMNS,
    )
    rows_, starts, targets = ds.split_arrays("train")
    labels = np.asarray([ds.vocabulary.index[t] for t in targets])
    readouts = Readouts(rows_, starts, labels)
    encoder = PieceEncoder(smollm2_tokenizer)
    plans = plan_rows(ds.table.users, readouts, chunk=9)
    packed = encode_rows(encoder, ds.table, readouts, plans)
    samples = ds.samples("train")
    seen = 0
    exact_window = 0
    for plan, ids, positions in zip(plans, packed.ids, packed.positions, strict=True):
        for readout, pos in zip(plan.readouts, positions, strict=True):
            target_row = int(readouts.rows[readout])
            table = ds.table
            history = [table.event(r) for r in range(plan.start, target_row)]
            served = render_prompt(history, table.time(target_row), table.context(target_row))
            assert encoder.encode(served) == ids[: pos + 1].tolist()
            if plan.start == int(readouts.starts[readout]):  # the dataset's own K window
                assert encoder.encode(render_sample(samples[int(readout)])) == (
                    ids[: pos + 1].tolist()
                )
                exact_window += 1
            seen += 1
    assert seen == len(readouts) and exact_window > 0
    assert sum(len(p.readouts) for p in plans) == len(readouts)  # every target read once
    # Every target keeps at least the dataset's history window inside its row.
    for plan in plans:
        assert (readouts.starts[plan.readouts] >= plan.start).all()
        assert int(readouts.rows[plan.readouts[-1]]) - plan.start < 9
