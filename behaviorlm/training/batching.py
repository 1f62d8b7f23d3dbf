"""The step schedule over packed rows and the batches it feeds the model.

A stage trains on the rows that hold at least one readout with a positive weight. Its schedule
is a pure function of (seed, rows, steps or epochs, token budget): shuffled passes over the
rows (``plan_batches`` takes a number of steps, ``plan_passes`` a number of passes), each pass
cut into pools of ``length_pool`` batches' worth of tokens, a pool sorted by length and
cut so that rows x longest row stays within ``batch_tokens`` (a batch pads to its longest,
similar, member), and the pool's batches shuffled. Resuming at step k replays exactly the
batches an uninterrupted run would have drawn, with no sampler state beyond k.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from behaviorlm.training.packing import PackedRows


def cut_by_tokens(rows: Sequence[int], lengths: np.ndarray, batch_tokens: int) -> list[list[int]]:
    """Consecutive groups of ``rows`` (sorted by length) within the padded token budget; a row
    longer than the budget goes alone."""
    batches: list[list[int]] = []
    current: list[int] = []
    widest = 0
    for r in rows:
        wider = max(widest, int(lengths[r]))
        if current and (len(current) + 1) * wider > batch_tokens:
            batches.append(current)
            current, wider = [], int(lengths[r])
        current.append(int(r))
        widest = wider
    if current:
        batches.append(current)
    return batches


def plan_batches(
    lengths: np.ndarray,
    rows: np.ndarray,
    batch_tokens: int,
    length_pool: int,
    steps: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    """``steps`` batches of row indices (see the module doc)."""
    if len(rows) == 0:
        raise ValueError("cannot plan batches over no rows")
    out: list[list[int]] = []
    while len(out) < steps:
        out.extend(_one_pass(lengths, rows, batch_tokens, length_pool, rng))
    return out[:steps]


def plan_passes(
    lengths: np.ndarray,
    rows: np.ndarray,
    batch_tokens: int,
    length_pool: int,
    epochs: float,
    rng: np.random.Generator,
) -> list[list[int]]:
    """The batches of ``epochs`` passes over ``rows``: whole passes, then the first
    ``fraction x`` batches of one more (at least one batch). The same draws as
    ``plan_batches`` for the number of steps it returns."""
    if len(rows) == 0:
        raise ValueError("cannot plan batches over no rows")
    if not epochs > 0:
        raise ValueError(f"epochs must be > 0, got {epochs}")
    out: list[list[int]] = []
    left = epochs
    while left > 1e-9:
        batches = _one_pass(lengths, rows, batch_tokens, length_pool, rng)
        take = len(batches) if left >= 1 else max(1, round(left * len(batches)))
        out.extend(batches[:take])
        left -= 1
    return out


def _one_pass(
    lengths: np.ndarray,
    rows: np.ndarray,
    batch_tokens: int,
    length_pool: int,
    rng: np.random.Generator,
) -> list[list[int]]:
    """Every row once: a shuffled order cut into pools, each pool sorted by length and cut
    into batches, the pool's batches shuffled."""
    span = batch_tokens * length_pool
    out: list[list[int]] = []
    order = rng.permutation(np.asarray(rows, dtype=np.int64))
    pool_of = np.cumsum(lengths[order]) // span
    for chunk in np.split(order, np.flatnonzero(np.diff(pool_of)) + 1):
        pool = chunk.tolist()
        pool.sort(key=lambda r: int(lengths[r]))  # stable: ties keep the drawn order
        cut = cut_by_tokens(pool, lengths, batch_tokens)
        out.extend(cut[int(k)] for k in rng.permutation(len(cut)))
    return out


@dataclass
class Batch:
    """Right-padded rows and their weighted readouts."""

    input_ids: Any  # long [B, L], right-padded (no mask needed: see behaviorlm/scoring/readout)
    readout_row: Any  # long [N]: batch row of each readout
    readout_col: Any  # long [N]: token position of each readout
    labels: Any  # long [N]: target vocabulary index
    weights: Any  # float [N]: loss weight (the stage's selection; mean 1 over the stage)
    readout_index: Any  # long [N]: index into the split's targets (difficulty, logs)
    tokens: int
    padding: int

    @property
    def readouts(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: Any) -> Batch:
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return Batch(
            move(self.input_ids),
            move(self.readout_row),
            move(self.readout_col),
            move(self.labels),
            move(self.weights),
            move(self.readout_index),
            self.tokens,
            self.padding,
        )


def collate(
    packed: PackedRows,
    rows: Sequence[int],
    labels: np.ndarray,
    weights: np.ndarray | None,
    pad_id: int,
) -> Batch:
    """A batch of packed rows; readouts with weight 0 are left out (``weights=None``: all)."""
    import torch

    width = max(len(packed.ids[r]) for r in rows)
    input_ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    b_rows, cols, index = [], [], []
    for b, r in enumerate(rows):
        ids = packed.ids[r]
        input_ids[b, : len(ids)] = torch.from_numpy(ids.astype(np.int64))
        mask[b, : len(ids)] = 1
        keep = (
            np.ones(len(packed.readouts[r]), bool)
            if weights is None
            else weights[packed.readouts[r]] > 0
        )
        b_rows.append(np.full(int(keep.sum()), b, dtype=np.int64))
        cols.append(packed.positions[r][keep])
        index.append(packed.readouts[r][keep])
    readout_index = np.concatenate(index)
    padding = int((mask == 0).sum())
    w = np.ones(len(readout_index)) if weights is None else weights[readout_index]
    return Batch(
        input_ids=input_ids,
        readout_row=torch.from_numpy(np.concatenate(b_rows)),
        readout_col=torch.from_numpy(np.concatenate(cols)),
        labels=torch.from_numpy(labels[readout_index].astype(np.int64)),
        weights=torch.from_numpy(np.asarray(w, dtype=np.float32)),
        readout_index=torch.from_numpy(readout_index),
        tokens=int(mask.sum()),
        padding=padding,
    )
