"""Difficulty of every training target under the stage-1 adapter: 1 - p(true behavior).

One no-grad pass over the packed training rows reads every target (the label-word head at each
readout, the same computation as training and serving). Saved to ``<run>/difficulty.parquet``
(one row per training target, indexed like the train split's samples) so stage 2 can be rerun
(``--resume`` after deleting ``stage2/``, or ``--stage1-from``) without rescoring.

Scoring every target takes ~56 min on 2 CPU cores for Context Trails PJ (102,834 targets at
~31/s, fp32), so it resumes after a kill: the scores read so far go to
``difficulty.partial.npz`` about once a minute, keyed by the stage-1 adapter's sha256, and a
restart (``--resume``) skips every batch whose targets are all in it. A partial file of another
stage-1 adapter or split is ignored (and logged), never mixed in.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from behaviorlm.scoring.readout import eval_mode
from behaviorlm.training.batching import collate, cut_by_tokens
from behaviorlm.training.losses import HeadTensors, readout_scores
from behaviorlm.training.packing import PackedRows
from behaviorlm.vocabulary import Vocabulary

log = logging.getLogger(__name__)
DIFFICULTY_FILE = "difficulty.parquet"
PARTIAL_FILE = "difficulty.partial.npz"
COLUMNS = ["index", "target", "p_true", "difficulty"]
# How often the scores read so far are saved: a kill loses at most this much scoring.
SAVE_EVERY_SECONDS = 60.0


def adapter_identity(weights: Path) -> str:
    """sha256 of a stage's weights file (``tuning.weights_file``): what a partial score file
    must have been read with."""
    h = hashlib.sha256()
    with open(weights, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def load_partial(path: Path, identity: str, n: int) -> np.ndarray:
    """p_true read so far (NaN where not yet read); all NaN when there is no usable file."""
    p_true = np.full(n, np.nan)
    if not path.exists():
        return p_true
    with np.load(path, allow_pickle=False) as saved:
        found, scores = str(saved["identity"]), saved["p_true"]
    if found != identity or len(scores) != n:
        log.warning(
            "difficulty: ignoring %s (read with adapter %s... for %d targets; now %s... for %d)",
            path,
            found[:12],
            len(scores),
            identity[:12],
            n,
        )
        return p_true
    read = int((~np.isnan(scores)).sum())
    log.info("difficulty: resuming, %d of %d targets already read", read, n)
    return scores.astype(np.float64)


def save_partial(path: Path, identity: str, p_true: np.ndarray) -> None:
    tmp = path.with_name(path.name + ".tmp.npz")
    np.savez(tmp, identity=np.array(identity), p_true=p_true)
    tmp.replace(path)


def score_difficulty(
    model: Any,
    rows: PackedRows,
    labels: np.ndarray,
    head: HeadTensors,
    vocabulary: Vocabulary,
    batch_tokens: int,
    pad_id: int,
    device: Any,
    partial: Path | None = None,
    identity: str = "",
) -> pd.DataFrame:
    """One row per readout: index, target, p_true, difficulty (rows sorted by index).

    With ``partial``, the scores read so far are saved there (keyed by ``identity``) about
    once a minute and reused on the next call; the caller deletes it once the result is saved.
    """
    import torch
    from tqdm import tqdm

    n = len(labels)
    p_true = load_partial(partial, identity, n) if partial else np.full(n, np.nan)
    lengths = rows.lengths
    order = np.argsort(lengths, kind="stable").tolist()
    batches = cut_by_tokens(order, lengths, batch_tokens)
    started = last_save = time.perf_counter()
    done_before = int((~np.isnan(p_true)).sum())
    bar = tqdm(total=n, initial=done_before, desc="difficulty", unit="target")
    with eval_mode(model), bar:
        for members in batches:
            batch = collate(rows, members, labels, None, pad_id)
            index = batch.readout_index.numpy()
            if not np.isnan(p_true[index]).any():
                continue  # read before a restart
            batch = batch.to(device)
            probs = torch.softmax(readout_scores(model, batch, head), dim=-1)
            true = probs.gather(1, batch.labels.unsqueeze(1)).squeeze(1)
            fresh = np.isnan(p_true[index]).sum()
            p_true[index] = true.double().cpu().numpy()
            bar.update(int(fresh))
            if partial and time.perf_counter() - last_save > SAVE_EVERY_SECONDS:
                save_partial(partial, identity, p_true)
                last_save = time.perf_counter()
    seconds = time.perf_counter() - started
    if np.isnan(p_true).any():
        raise RuntimeError(f"difficulty: {int(np.isnan(p_true).sum())} targets were not read")
    log.info(
        "difficulty: %d targets in %.0f s (%.1f targets/s; %d read before a restart)",
        n,
        seconds,
        (n - done_before) / max(seconds, 1e-9),
        done_before,
    )
    return pd.DataFrame(
        {
            "index": np.arange(n),
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
