"""Split names: the spellings datasets use for train/validation/test (``--split dataset``).

The chronological per-user assignment itself is SQL:
:meth:`behaviorlm.training.data.steps.Steps.split_expression`.
"""

from __future__ import annotations

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
