"""Pipeline: targets, history windows and the chronological split (no leakage)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig, ReadOptions
from behaviorlm.training.data.dataset import PreparedDataset
from behaviorlm.training.data.pipeline import prepare_events, prepare_log
from behaviorlm.training.data.readers import read_generic
from behaviorlm.training.data.synthetic import SYNTHETIC_COLUMNS, make_synthetic_log


def _now_by_user(ds: PreparedDataset, split: str) -> pd.DataFrame:
    view = ds.samples(split)
    return pd.DataFrame(
        {"user": ds.user_ids(split), "now": [view[i].now for i in range(len(view))]}
    )


@pytest.fixture(scope="module")
def loo(tmp_path_factory: pytest.TempPathFactory) -> PreparedDataset:
    log = make_synthetic_log(60, 1500, 20, seed=2)
    return prepare_log(log, tmp_path_factory.mktemp("loo") / "d", PrepareConfig(min_count=0))


def test_leave_one_out_has_no_leakage(loo: PreparedDataset) -> None:
    train = _now_by_user(loo, "train").groupby("user")["now"].max()
    val = _now_by_user(loo, "validation").set_index("user")["now"]
    test = _now_by_user(loo, "test").set_index("user")["now"]
    assert val.index.is_unique and test.index.is_unique
    both = pd.concat({"train": train, "val": val, "test": test}, axis=1).dropna()
    assert len(both) > 50
    assert (both["train"] < both["val"]).all()
    assert (both["val"] < both["test"]).all()


def test_history_is_the_k_previous_events(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 6 + ["b"] * 2,
            "timestamp": pd.date_range("2024-01-01", periods=8, freq="h"),
            "behavior": ["e0", "e1", "e2", "e3", "e4", "e5", "f0", "f1"],
        }
    )
    ds = prepare_log(log, tmp_path / "k", PrepareConfig(history_len=3, min_count=0))
    hist = {s.target: [e.behavior for e in s.history] for s in ds.samples("train")}
    assert hist == {"e1": ["e0"], "e2": ["e0", "e1"], "e3": ["e0", "e1", "e2"]}
    (test_a,) = [s for s in ds.samples("test") if s.user_id == "a"]
    assert [e.behavior for e in test_a.history] == ["e2", "e3", "e4"] and test_a.target == "e5"
    # b has one target: it goes to test (filled from the end), no train or validation
    assert "b" not in ds.user_ids("train") + ds.user_ids("validation")
    assert ds.stats["users_without_train_samples"] == 1


def test_min_history_and_too_short_users_are_counted(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 5 + ["b"] * 2 + ["c"],
            "timestamp": pd.date_range("2024-01-01", periods=8, freq="h"),
            "behavior": list("xyxyxyxy"),
        }
    )
    ds = prepare_log(log, tmp_path / "m", PrepareConfig(min_history=2, min_count=0))
    assert all(len(s.history) >= 2 for split in ds.splits() for s in ds.samples(split))
    assert ds.stats["users_too_short"] == 2
    (reason,) = ds.stats["skipped_rows"]
    assert reason.startswith("user with at most 2 event(s)")
    assert ds.stats["skipped_rows"][reason] == 3
    assert sum(ds.num_samples(s) for s in ds.splits()) == 3


def test_ratio_split_is_chronological_per_user(tmp_path: Path) -> None:
    log = make_synthetic_log(20, 2000, 10, seed=0)
    config = PrepareConfig(split="ratio", ratios=(0.6, 0.2, 0.2), min_count=0)
    ds = prepare_log(log, tmp_path / "r", config)
    total = sum(ds.num_samples(s) for s in ds.splits())
    assert abs(ds.num_samples("train") / total - 0.6) < 0.03
    assert abs(ds.num_samples("test") / total - 0.2) < 0.03
    train = _now_by_user(ds, "train").groupby("user")["now"].max()
    val = _now_by_user(ds, "validation").groupby("user")["now"]
    test = _now_by_user(ds, "test").groupby("user")["now"].min()
    assert (train < val.min()).all() and (val.max() < test).all()


def test_samples_and_events_are_consistent_on_disk(loo: PreparedDataset) -> None:
    events = pd.read_parquet(loo.root / "events.parquet")
    samples = pd.read_parquet(loo.root / "samples.parquet")
    assert set(samples["split"]) == {"train", "validation", "test"}
    rows = samples["target_row"].to_numpy()
    starts = samples["history_start"].to_numpy()
    assert (events["label"].to_numpy()[rows] == samples["target"].to_numpy()).all()
    users = events["user_id"].to_numpy()
    assert (users[starts] == users[rows]).all()
    assert ((rows - starts >= 1) & (rows - starts <= 10)).all()
    assert np.unique(rows).size == rows.size  # each event is a target at most once


def test_synthetic_one_call_with_context_and_parents(tmp_path: Path) -> None:
    log = make_synthetic_log(30, 1200, 80, seed=0)
    ds = prepare_log(log, tmp_path / "s", PrepareConfig(min_count=5), **SYNTHETIC_COLUMNS)
    rule = ds.stats["vocabulary_rules"]["min_count"]
    assert rule["to"] == "parent" and rule["behaviors"] > 0
    # rare behaviors became their group ("music", "news", ...)
    assert any(name in ds.vocabulary for name in ("music", "news", "chat", "game"))
    assert (tmp_path / "s" / "behavior_frequency.png").stat().st_size > 1000
    assert "## Vocabulary" in (tmp_path / "s" / "stats.md").read_text()


def test_empty_result_is_an_error(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {"user_id": ["a", "b"], "timestamp": ["2024-01-01", "2024-01-02"], "behavior": ["x", "y"]}
    )
    with pytest.raises(InputError, match="empty result, no user has enough events"):
        prepare_log(log, tmp_path / "e")
    assert not (tmp_path / "e").exists()
    log = make_synthetic_log(5, 50, 4, seed=0)
    with pytest.raises(InputError, match="no target survived the vocabulary rules"):
        prepare_log(log, tmp_path / "e", PrepareConfig(min_count=10_000, fallback="drop"))


def test_dataset_split_column(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(
        "user_id,timestamp,behavior,part\n"
        "a,2024-01-01T00:00,x,trn\na,2024-01-01T01:00,y,trn\na,2024-01-01T02:00,x,vld\n"
        "b,2024-01-01T00:00,y,\nb,2024-01-01T01:00,x,test\nb,2024-01-01T02:00,y,Test\n"
    )
    loaded = read_generic(csv, ReadOptions(split_col="part"))
    config = PrepareConfig(split="dataset", min_count=0)
    ds = prepare_events(
        loaded.events, tmp_path / "d", config, name="s", source=loaded.source, skips=loaded.skips
    )
    assert [ds.num_samples(s) for s in ds.splits()] == [1, 1, 2]
    csv.write_text(csv.read_text().replace("vld", "holdout"))
    loaded = read_generic(csv, ReadOptions(split_col="part"))
    with pytest.raises(InputError, match=r"--split dataset: unknown split names \['holdout'\]"):
        prepare_events(
            loaded.events,
            tmp_path / "e",
            config,
            name="s",
            source=loaded.source,
            skips=loaded.skips,
        )
    with pytest.raises(InputError, match="--split dataset: this input has no split column"):
        prepare_log(make_synthetic_log(3, 30, 3), tmp_path / "f", config)


def test_log_without_timestamps_keeps_input_order(tmp_path: Path) -> None:
    log = pd.DataFrame({"uid": [7, 7, 7, 7, 8, 8], "behavior": ["d", "c", "a", "b", "a", "c"]})
    ds = prepare_log(log, tmp_path / "n", PrepareConfig(min_count=0), user_col="uid", time_col=None)
    (s7,) = [s for s in ds.samples("test") if s.user_id == "7"]  # numeric ids become text
    assert [e.behavior for e in s7.history] == ["d", "c", "a"] and s7.target == "b"
    assert s7.now is None and all(e.timestamp is None for e in s7.history)


def test_placeholder_behaviors_stay_in_histories_but_are_never_targets(tmp_path: Path) -> None:
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 6,
            "timestamp": pd.date_range("2024-01-01", periods=6, freq="h"),
            "behavior": ["x", "UNKNOWN", "y", "UNKNOWN", "x", "y"],
        }
    )
    config = PrepareConfig(history_len=5, min_count=0, not_a_target=("UNKNOWN",))
    ds = prepare_log(log, tmp_path / "p", config, name="city")
    assert ds.stats["name"] == "city"  # not the placeholder's name
    targets = [t for s in ds.splits() for t in ds.targets(s)]
    assert "UNKNOWN" not in targets and "UNKNOWN" not in ds.vocabulary
    assert len(targets) == 3  # y, x, y (the first x has no history)
    (test,) = ds.samples("test")
    assert [e.behavior for e in test.history] == ["x", "UNKNOWN", "y", "UNKNOWN", "x"]
    assert ds.stats["not_a_target"] == {"UNKNOWN": 2}
    assert "UNKNOWN: 2 events" in (ds.root / "stats.md").read_text()
    assert PrepareConfig.from_mapping({"not_a_target": "UNKNOWN, Other"}).not_a_target == (
        "UNKNOWN",
        "Other",
    )
    assert PrepareConfig.from_mapping({"not_a_target": ""}).not_a_target == ()


def test_no_training_samples_is_an_error_naming_the_fix(tmp_path: Path) -> None:
    csv = tmp_path / "log.csv"
    csv.write_text(
        "user_id,timestamp,behavior,part\n"
        "a,2024-01-01T00:00,x,vld\na,2024-01-01T01:00,y,vld\na,2024-01-01T02:00,x,test\n"
    )
    loaded = read_generic(csv, ReadOptions(split_col="part"))
    with pytest.raises(InputError, match=r"no training samples \(train 0, validation 1, test 1\)"):
        prepare_events(
            loaded.events,
            tmp_path / "d",
            PrepareConfig(split="dataset", min_count=0),
            name="s",
            source=loaded.source,
            skips=loaded.skips,
        )
    csv.write_text(csv.read_text() + "a,2024-01-01T03:00,y,test\n")
    loaded = read_generic(csv, ReadOptions(split_col="part"))
    ds = prepare_events(
        loaded.events,
        tmp_path / "c",
        PrepareConfig(split="leave-one-out", min_count=0),
        name="s",
        source=loaded.source,
        skips=loaded.skips,
    )
    assert [ds.num_samples(s) for s in ds.splits()] == [1, 1, 1]
