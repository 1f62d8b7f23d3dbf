"""Chronological train/validation/test assignment of targets, per user (no future in training)."""

from __future__ import annotations

import numpy as np
import pandas as pd

from behaviorlm.errors import InputError
from training.data.config import PrepareConfig

# Spellings of the split names that datasets use (SmartThings: trn/vld/test).
SPLIT_ALIASES = {
    "train": "train",
    "trn": "train",
    "training": "train",
    "validation": "validation",
    "valid": "validation",
    "vld": "validation",
    "val": "validation",
    "dev": "validation",
    "test": "test",
    "tst": "test",
    "testing": "test",
}


def assign_splits(users: pd.Series, hints: pd.Series | None, config: PrepareConfig) -> np.ndarray:
    """The split of each candidate target; ``users`` is in per-user chronological order.

    leave-one-out fills from the end of each user's targets: test, then validation, then train,
    so every train target is earlier than the user's validation and test targets.
    """
    if config.split == "dataset":
        if hints is None:
            raise InputError(
                "--split dataset: this input has no split column; use leave-one-out or ratio"
            )
        mapped = hints.str.lower().map(SPLIT_ALIASES)
        unknown = sorted(set(hints[mapped.isna() & hints.notna()].astype(str)))
        if unknown:
            raise InputError(
                f"--split dataset: unknown split names {unknown[:5]}; "
                f"expected one of {sorted(SPLIT_ALIASES)}"
            )
        return mapped.to_numpy(dtype=object)
    grouped = users.groupby(users, sort=False)
    from_end = grouped.cumcount(ascending=False).to_numpy()
    if config.split == "leave-one-out":
        return np.where(from_end == 0, "test", np.where(from_end == 1, "validation", "train"))
    # ratio: the k-th of n targets (1-based) falls in the split whose cumulative share covers k/n.
    rank = grouped.cumcount().to_numpy() + 1
    n = rank + from_end
    pos = rank / n
    train_end = config.ratios[0]
    val_end = config.ratios[0] + config.ratios[1]
    return np.where(
        pos <= train_end + 1e-9, "train", np.where(pos <= val_end + 1e-9, "validation", "test")
    )
