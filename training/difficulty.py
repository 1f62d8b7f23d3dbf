"""Difficulty of every training target under the stage-1 adapter: 1 - p(true behavior).

One no-grad pass over the packed training rows reads every target (the label-word head at each
readout, the same computation as training and serving). Saved to ``<run>/difficulty.parquet``
(one row per training target, indexed like the train split's samples) so stage 2 can be rerun
(``--resume`` after deleting ``stage2/``, or ``--stage1-from``) without rescoring.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from behaviorlm.scoring.readout import eval_mode
from behaviorlm.vocabulary import Vocabulary
from training.batching import collate, cut_by_tokens
from training.losses import HeadTensors, readout_scores
from training.packing import PackedRows

log = logging.getLogger(__name__)
DIFFICULTY_FILE = "difficulty.parquet"
COLUMNS = ["index", "target", "p_true", "difficulty"]


def score_difficulty(
    model: Any,
    rows: PackedRows,
    labels: np.ndarray,
    head: HeadTensors,
    vocabulary: Vocabulary,
    batch_tokens: int,
    pad_id: int,
    device: Any,
) -> pd.DataFrame:
    """One row per readout: index, target, p_true, difficulty (rows sorted by index)."""
    import torch
    from tqdm import tqdm

    p_true = np.full(len(labels), np.nan)
    lengths = rows.lengths
    order = np.argsort(lengths, kind="stable").tolist()
    batches = cut_by_tokens(order, lengths, batch_tokens)
    started = time.perf_counter()
    with eval_mode(model), tqdm(total=len(labels), desc="difficulty", unit="target") as bar:
        for members in batches:
            batch = collate(rows, members, labels, None, pad_id).to(device)
            probs = torch.softmax(readout_scores(model, batch, head), dim=-1)
            true = probs.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
            p_true[batch.readout_index.cpu().numpy()] = true.double().cpu().numpy()
            bar.update(batch.readouts)
    seconds = time.perf_counter() - started
    if np.isnan(p_true).any():
        raise RuntimeError(f"difficulty: {int(np.isnan(p_true).sum())} targets were not read")
    log.info(
        "difficulty: %d targets in %.0f s (%.1f targets/s)",
        len(labels),
        seconds,
        len(labels) / max(seconds, 1e-9),
    )
    return pd.DataFrame(
        {
            "index": np.arange(len(labels)),
            "target": np.asarray(vocabulary.names, dtype=object)[labels],
            "p_true": p_true,
            "difficulty": 1.0 - p_true,
        },
        columns=COLUMNS,
    )


def save_difficulty(frame: pd.DataFrame, path: Path, vocabulary: Vocabulary) -> None:
    tmp = path.with_name(path.name + ".tmp")
    frame.to_parquet(tmp, index=False)
    tmp.replace(path)
    plot_difficulty(frame, vocabulary, path.with_suffix(".png"))


def load_difficulty(path: Path, n: int) -> np.ndarray:
    """Difficulty per training target from a saved file; refuses a file of another split."""
    frame = pd.read_parquet(path)
    if len(frame) != n or not (frame["index"].to_numpy() == np.arange(n)).all():
        raise ValueError(
            f"{path}: {len(frame)} difficulty scores for {n} training targets; it belongs to "
            "another dataset (delete it to rescore)"
        )
    log.info("difficulty: reusing %d scores from %s", n, path)
    return frame["difficulty"].to_numpy(dtype=np.float64)


def plot_difficulty(frame: pd.DataFrame, vocabulary: Vocabulary, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchors = set(vocabulary.anchors)
    is_anchor = frame["target"].isin(anchors)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41).tolist()
    ax.hist(frame.loc[is_anchor, "difficulty"], bins=bins, alpha=0.6, label="anchor targets")
    ax.hist(frame.loc[~is_anchor, "difficulty"], bins=bins, alpha=0.6, label="tail targets")
    ax.set_xlabel("difficulty = 1 - p(true) under the stage-1 adapter")
    ax.set_ylabel("training targets")
    ax.set_yscale("log")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
