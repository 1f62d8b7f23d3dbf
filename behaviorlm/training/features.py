"""Repeat features of every training target, computed once per run with the code the service
uses (``behaviorlm.repeats``), stored sparse: a target only has features for the behaviors in
its user's last ``window`` events.

A target's past is the ``window`` events of the same user right before it (what a request
would send), and ``shown`` of them are the prompt's (the dataset's K). Placeholder or
out-of-vocabulary names in the past are read like any other name and then dropped, as the
service drops names outside the candidates.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.repeats import FEATURES, features_by_name
from behaviorlm.training.data.dataset import EventTable
from behaviorlm.training.packing import Readouts
from behaviorlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ReadoutFeatures:
    """CSR rows, one per target: ``behaviors[ptr[i]:ptr[i+1]]`` (vocabulary indices) and
    their feature vectors ``values`` [nnz, len(FEATURES)]."""

    ptr: np.ndarray
    behaviors: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.ptr) - 1

    def gather(self, readout_index: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(batch position, vocabulary index, features) of the entries of these targets."""
        starts, ends = self.ptr[readout_index], self.ptr[readout_index + 1]
        sizes = ends - starts
        rows = np.repeat(np.arange(len(readout_index), dtype=np.int64), sizes)
        if len(rows) == 0:
            return rows, rows.copy(), np.zeros((0, len(FEATURES)), dtype=np.float32)
        # offsets of each entry within its target's slice
        within = np.arange(len(rows)) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        flat = np.repeat(starts, sizes) + within
        return rows, self.behaviors[flat], self.values[flat]

    def logits(self, readout_index: Any, weights: Any, vocab_size: int) -> Any:
        """[N, vocab_size] torch: the features' share of each target's behavior scores."""
        import torch

        rows, behaviors, values = self.gather(np.asarray(readout_index.cpu(), dtype=np.int64))
        device = weights.device
        out = torch.zeros((len(readout_index), vocab_size), dtype=torch.float32, device=device)
        if len(rows) == 0:
            return out
        contribution = torch.as_tensor(values, device=device) @ weights
        out = out.index_put(
            (torch.as_tensor(rows, device=device), torch.as_tensor(behaviors, device=device)),
            contribution,
            accumulate=True,
        )
        return out


def readout_features(
    table: EventTable, readouts: Readouts, vocabulary: Vocabulary, window: int, shown: int
) -> ReadoutFeatures:
    """Features of every target (``readouts``) from its user's last ``window`` events."""
    started = time.perf_counter()
    index = vocabulary.index
    ptr = np.zeros(len(readouts) + 1, dtype=np.int64)
    behaviors: list[int] = []
    values: list[np.ndarray] = []
    for i, row in enumerate(readouts.rows.tolist()):
        past = table.past(row, window, shown)
        for name, vec in features_by_name(past).items():
            k = index.get(name)
            if k is not None:
                behaviors.append(k)
                values.append(vec)
        ptr[i + 1] = len(behaviors)
    out = ReadoutFeatures(
        ptr,
        np.asarray(behaviors, dtype=np.int64),
        np.stack(values).astype(np.float32)
        if values
        else np.zeros((0, len(FEATURES)), dtype=np.float32),
    )
    log.info(
        "repeat features: %d targets, %.1f behaviors each, window %d (%.1f s)",
        len(readouts),
        len(behaviors) / max(len(readouts), 1),
        window,
        time.perf_counter() - started,
    )
    return out
