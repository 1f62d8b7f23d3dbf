"""Vocabulary rules (min-count, max-vocab, fallbacks) and the anchor/tail partition."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
import pytest

from behaviorlm.errors import InputError
from behaviorlm.training.data.config import PrepareConfig
from behaviorlm.training.data.dataset import PreparedDataset
from behaviorlm.training.data.pipeline import prepare_log
from behaviorlm.training.data.rules import build_label_rules


def _log(counts: dict[str, int], parents: dict[str, str] | None = None) -> pd.DataFrame:
    """Ten users; behavior b appears counts[b] times as a *train* target (spread over users),
    then every user ends with 'pad' x2 (their validation and test targets)."""
    rows = []
    names = [b for b, n in counts.items() for _ in range(n)]
    for i, b in enumerate(names):
        rows.append((f"u{i % 10}", b))
    rows += [(f"u{u}", "pad") for u in range(10) for _ in range(2)]
    frame = pd.DataFrame(rows, columns=["user_id", "behavior"])
    first = pd.DataFrame({"user_id": [f"u{u}" for u in range(10)], "behavior": "start"})
    frame = pd.concat([first, frame], ignore_index=True)
    frame["timestamp"] = pd.Timestamp("2024-01-01") + pd.to_timedelta(frame.index, unit="min")
    parents = parents or {}
    frame["group"] = frame["behavior"].map(parents)
    return frame


COUNTS = {"a": 40, "b": 30, "c": 20, "d": 4, "e": 3, "f": 1}
PARENTS = {"a": "G1", "b": "G1", "c": "G2", "d": "G1", "e": "G2"}  # f has no parent


def _prepare(tmp_path: Path, **config: Any) -> PreparedDataset:
    log = _log(COUNTS, PARENTS)
    return prepare_log(
        log,
        tmp_path / "d",
        PrepareConfig(**config),
        parent_col="group",
    )


def test_min_count_to_parent(tmp_path: Path) -> None:
    ds = _prepare(tmp_path, min_count=5, fallback="parent")
    assert ds.label_of("d") == "G1" and ds.label_of("e") == "G2"
    assert ds.label_of("f") == "other"  # no parent: the other bucket
    assert ds.label_of("a") == "a"
    # 'pad' has no training target (count 0 < 5) and no parent: it is 'other' too
    assert set(ds.vocabulary.names) == {"a", "b", "c", "G1", "G2", "other"}
    assert ds.vocabulary.counts[ds.vocabulary.index["G1"]] == 4
    rule = ds.stats["vocabulary_rules"]["min_count"]
    # d, e, f and 'start' (a target never: it is always first) are rare
    assert rule["targets"]["train"] == 4 + 3 + 1
    assert rule["to"] == "parent"


def test_min_count_to_other(tmp_path: Path) -> None:
    ds = _prepare(tmp_path, min_count=5, fallback="other", other_label="misc")
    assert {ds.label_of(b) for b in "def"} == {"misc"}
    assert ds.vocabulary.counts[ds.vocabulary.index["misc"]] == 8
    assert ds.label_of("never seen") == "misc"


def test_min_count_drop(tmp_path: Path) -> None:
    ds = _prepare(tmp_path, min_count=5, fallback="drop")
    assert ds.label_of("d") is None and "d" not in ds.vocabulary
    assert ds.stats["targets_dropped_by_vocabulary"]["train"] == 8
    assert ds.stats["vocabulary_rules"]["min_count"]["dropped"]["train"] == 8
    assert ds.num_samples("train") == 40 + 30 + 20
    # dropped behaviors still appear in the histories of the samples after them
    log = pd.DataFrame({"user_id": "u", "behavior": list("aaaaaafaaa")})
    log["timestamp"] = pd.date_range("2024-01-01", periods=10, freq="h")
    ds = prepare_log(log, tmp_path / "h", PrepareConfig(min_count=5, fallback="drop"))
    assert ds.label_of("f") is None
    after = ds.samples("train")[-1]
    assert after.target == "a" and after.history[-1].behavior == "f"


def test_max_vocab_counts_fallback_labels(tmp_path: Path) -> None:
    ds = _prepare(tmp_path, min_count=0, max_vocab=4, fallback="other")
    assert len(ds.vocabulary) == 4
    assert set(ds.vocabulary.names) == {"a", "b", "c", "other"}
    rules = ds.stats["vocabulary_rules"]
    assert rules["max_vocab"]["targets"]["train"] == 8
    assert rules["max_vocab"]["targets"]["test"] == 10  # every user's last 'pad'


def test_max_vocab_with_parents(tmp_path: Path) -> None:
    ds = _prepare(tmp_path, min_count=0, max_vocab=5, fallback="parent")
    assert len(ds.vocabulary) <= 5
    assert {"a", "b"} <= set(ds.vocabulary.names)
    assert set(ds.vocabulary.names) - {"a", "b", "c", "pad"} <= {"G1", "G2", "other"}


def test_max_vocab_too_small_names_the_flag() -> None:
    config = PrepareConfig(min_count=0, max_vocab=1, fallback="parent")
    parents = {"a": "P", "b": "Q", "c": "R"}
    with pytest.raises(InputError, match="--max-vocab 1: too small"):
        build_label_rules({"a": 5, "b": 3, "c": 1}, ["a", "b", "c"], parents, config)


def test_vocabulary_counts_come_from_training_targets_only(tmp_path: Path) -> None:
    log = _log({"a": 30, "b": 30})
    log.loc[log["behavior"] == "pad", "behavior"] = "late"  # only validation and test targets
    ds = prepare_log(log, tmp_path / "t", PrepareConfig(min_count=1, fallback="other"))
    assert ds.label_of("late") == "other"
    assert ds.vocabulary.counts[ds.vocabulary.index["other"]] == 0
    assert ds.stats["vocabulary"]["labels_without_train_samples"] == 1


@pytest.mark.parametrize("share", [0.01, 0.2])
def test_anchor_tail_partition(tmp_path: Path, share: float) -> None:
    ds = _prepare(tmp_path, min_count=0, anchor_share=share)
    v = ds.vocabulary
    total = sum(v.counts)
    expected = {n for n, c in zip(v.names, v.counts, strict=True) if c / total > share}
    assert set(v.anchors) == expected
    assert set(v.tails) == set(v.names) - expected
    assert ds.stats["vocabulary"]["anchors"] == len(expected)
    if share == 0.2:
        assert set(v.anchors) == {"a", "b", "c"}  # c: 20/98 = 0.204 > 0.2; d: 4/98


def test_labels_without_samples_are_not_labels(tmp_path: Path) -> None:
    # 'rare' is only ever a first event (never a target): its parent has no sample
    log = pd.DataFrame(
        {
            "user_id": ["a"] * 4 + ["b"] * 3,
            "behavior": ["rare", "x", "x", "x", "x", "x", "x"],
            "group": ["P", "Q", "Q", "Q", "Q", "Q", "Q"],
        }
    )
    log["timestamp"] = pd.date_range("2024-01-01", periods=7, freq="h")
    ds = prepare_log(log, tmp_path / "d", PrepareConfig(min_count=1), parent_col="group")
    assert list(ds.vocabulary.names) == ["x"]
    assert ds.label_of("rare") is None and ds.label_of("x") == "x"
    events = pd.read_parquet(ds.root / "events.parquet")
    assert events["label"].isna().sum() == 1
