"""PreparedDataset: the on-disk contract read by training and evaluation."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

import pandas as pd
import pytest

from behaviorlm.errors import InputError
from behaviorlm.events import Sample
from behaviorlm.prompt import render_sample
from behaviorlm.training.data.config import PrepareConfig
from behaviorlm.training.data.dataset import PreparedDataset
from behaviorlm.training.data.pipeline import prepare_log
from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log


@pytest.fixture(scope="module")
def synthetic_ds(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    log = make_synthetic_log(80, 4000, 30, seed=1)
    return prepare_log(log, tmp_path_factory.mktemp("ds") / "syn", **SYNTHETIC_COLUMNS)


def test_load_roundtrip_and_split_sizes(synthetic_ds: PreparedDataset) -> None:
    ds = PreparedDataset.load(synthetic_ds.root)
    assert ds.splits() == ("train", "validation", "test")
    # leave-one-out: every user with at least 3 targets has exactly one test and one validation
    assert ds.num_samples("test") == 80
    assert ds.num_samples("validation") == 80
    assert ds.num_samples("train") == len(ds.targets("train")) > 3000
    assert ds.info["config"]["history_len"] == 10
    assert set(ds.targets("train")) <= set(ds.vocabulary.names)


def test_samples_are_lazy_indexable_and_render(synthetic_ds: PreparedDataset) -> None:
    view = synthetic_ds.samples("train")
    assert len(view) == synthetic_ds.num_samples("train")
    s = view[5]
    assert isinstance(s, Sample)
    assert s.target == synthetic_ds.targets("train")[5]
    assert s.user_id == synthetic_ds.user_ids("train")[5]
    assert 1 <= len(s.history) <= 10
    assert s.now is not None and all(e.timestamp is not None for e in s.history)
    assert all(e.timestamp <= s.now for e in s.history if e.timestamp is not None)
    assert s.now_context.keys() == {"place"}
    sub = view[3:8]
    assert len(sub) == 5 and sub[2] == view[5]
    assert view[-1] == view[len(view) - 1]
    assert view.take([5, 0])[0] == s
    with pytest.raises(IndexError):
        view[len(view)]
    prompt = render_sample(s)
    assert prompt.text.endswith(":") and len(prompt.pieces) == 2 * len(s.history) + 2


def test_history_is_previous_events_of_the_same_user(synthetic_ds: PreparedDataset) -> None:
    view = synthetic_ds.samples("test")
    users = synthetic_ds.user_ids("test")
    for i in range(0, len(view), 7):
        s = view[i]
        assert s.user_id == users[i]
        times = [e.timestamp for e in s.history]
        assert times == sorted(t for t in times if t is not None)
        assert len(s.history) == 10  # synthetic users are long enough


def test_label_of(synthetic_ds: PreparedDataset) -> None:
    name = synthetic_ds.vocabulary.names[0]
    assert synthetic_ds.label_of(name) == name
    assert synthetic_ds.label_of(f"  {name} ") == name
    assert synthetic_ds.label_of("never seen behavior") is None  # no rule fired, no other label


def test_timezone_wall_clock_is_kept(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 4,
            "timestamp": [
                "2024-03-01T08:00:00+08:00",
                "2024-03-01T09:30:00+08:00",
                "2024-03-01T02:00:00-05:00",  # later instant than the first two
                "2024-03-02T10:00:00Z",
            ],
            "behavior": ["x", "y", "x", "y"],
        }
    )
    ds = prepare_log(log, tmp_path / "tz", PrepareConfig(min_count=0))
    s = ds.samples("test")[0]
    assert s.now == datetime(2024, 3, 2, 10, tzinfo=UTC)
    first = s.history[0].timestamp
    assert first == datetime(2024, 3, 1, 8, tzinfo=timezone(timedelta(hours=8)))
    assert first is not None and first.hour == 8  # rendered in its own wall-clock
    assert s.history[2].timestamp is not None and s.history[2].timestamp.hour == 2
    assert "Friday 08h" in render_sample(s).text


def test_naive_timestamps_stay_naive(tmp_path: Path) -> None:
    log = make_synthetic_log(5, 60, 4, seed=0)
    ds = prepare_log(log, tmp_path / "naive", PrepareConfig(min_count=0))
    s = ds.samples("test")[0]
    assert s.now is not None and s.now.tzinfo is None


def test_load_rejects_non_prepared_dirs(tmp_path: Path, synthetic_ds: PreparedDataset) -> None:
    with pytest.raises(InputError, match=r"not a prepared dataset \(missing events.parquet"):
        PreparedDataset.load(tmp_path)
    with pytest.raises(InputError, match="unknown split 'dev'"):
        synthetic_ds.num_samples("dev")
    broken = tmp_path / "broken"
    broken.mkdir()
    for f in synthetic_ds.root.iterdir():
        (broken / f.name).write_bytes(f.read_bytes())
    (broken / "prepare.json").write_text(json.dumps({"format_version": 99}))
    with pytest.raises(InputError, match="format_version 99"):
        PreparedDataset.load(broken)


def test_refuses_to_overwrite_without_flag(tmp_path: Path) -> None:
    log = make_synthetic_log(5, 60, 4, seed=0)
    prepare_log(log, tmp_path / "d", PrepareConfig(min_count=0))
    with pytest.raises(InputError, match="already exists"):
        prepare_log(log, tmp_path / "d", PrepareConfig(min_count=0))
    ds = prepare_log(log, tmp_path / "d", PrepareConfig(min_count=0), overwrite=True)
    assert ds.num_samples("test") == 5
