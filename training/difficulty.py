"""Difficulty of training samples under the stage-1 adapter: 1 - p(true behavior).

Scored through the shared constrained scorer (``behaviorlm.scoring``), exactly as evaluation and
the service score, on a per-behavior bounded candidate set (``difficulty.per_class``,
``difficulty.max_samples``). Saved to ``<run>/difficulty.parquet`` so stage 2 can be rerun
(``--resume`` after deleting ``stage2/``) without rescoring.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from behaviorlm.trie import AnswerTrie
from training.config import TrainConfig
from training.sampling import difficulty_candidates

if TYPE_CHECKING:
    from training.stages import TrainingData
    from training.trainer import DistInfo

log = logging.getLogger(__name__)
DIFFICULTY_FILE = "difficulty.parquet"


def score_difficulty(
    model: Any,
    tokenizer: Any,
    data: TrainingData,
    indices: list[int],
    trie: AnswerTrie,
    batch_size: int,
) -> pd.DataFrame:
    """One row per scored sample: index, target, p_true, difficulty, label_mass."""
    from tqdm import tqdm

    from behaviorlm.prompt import render_prompt
    from behaviorlm.scoring.constrained import constrained_scores
    from training.batching import encode_prompts

    position = {n: i for i, n in enumerate(trie.names)}
    rows: list[dict[str, Any]] = []
    chunk = batch_size * 8
    bar = tqdm(total=len(indices), desc="difficulty", unit="sample", mininterval=2.0)
    for start in range(0, len(indices), chunk):
        part = indices[start : start + chunk]
        samples = data.take(part)
        prompts = [render_prompt(s.history, s.now, s.now_context) for s in samples]
        scored = constrained_scores(
            model,
            tokenizer,
            prompts,
            [trie] * len(part),
            batch_size=batch_size,
            prompt_ids=encode_prompts(tokenizer, samples),
        )
        for i, sample, (probs, mass) in zip(part, samples, scored, strict=True):
            assert sample.target is not None
            p_true = float(probs[position[sample.target]])
            rows.append(
                {
                    "index": i,
                    "target": sample.target,
                    "p_true": p_true,
                    "difficulty": 1.0 - p_true,
                    "label_mass": float(mass),
                }
            )
        bar.update(len(part))
    bar.close()
    return pd.DataFrame(rows, columns=["index", "target", "p_true", "difficulty", "label_mass"])


def load_or_score_difficulty(
    out: Path,
    model: Any,
    tokenizer: Any,
    data: TrainingData,
    trie: AnswerTrie,
    config: TrainConfig,
    dist: DistInfo,
) -> dict[int, float]:
    """{sample index: difficulty}, from ``difficulty.parquet`` when the run already has it."""
    path = out / DIFFICULTY_FILE
    if path.exists():
        frame = pd.read_parquet(path)
        log.info("difficulty: reusing %d scores from %s", len(frame), path)
    else:
        rng = np.random.default_rng([config.seed, 10])
        settings = config.difficulty
        candidates = difficulty_candidates(
            data.targets,
            settings.per_class,
            settings.max_samples,
            rng,
            min_class_size=config.subset.per_class_max,
        )
        log.info("difficulty: scoring %d samples with the stage-1 adapter", len(candidates))
        # Every rank scores the (small) candidate set itself: same result, no gather needed.
        frame = score_difficulty(model, tokenizer, data, candidates, trie, settings.batch_size)
        if dist.main:
            tmp = path.with_name(path.name + ".tmp")
            frame.to_parquet(tmp, index=False)
            tmp.replace(path)
            _plot(frame, data, out / "difficulty.png")
        dist.barrier()
    return dict(zip(frame["index"].astype(int), frame["difficulty"].astype(float), strict=True))


def _plot(frame: pd.DataFrame, data: TrainingData, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    anchors = set(data.vocabulary.anchors)
    is_anchor = frame["target"].isin(anchors)
    fig, ax = plt.subplots(figsize=(6, 3.5))
    bins = np.linspace(0, 1, 41).tolist()
    ax.hist(frame.loc[is_anchor, "difficulty"], bins=bins, alpha=0.6, label="anchor targets")
    ax.hist(frame.loc[~is_anchor, "difficulty"], bins=bins, alpha=0.6, label="tail targets")
    ax.set_xlabel("difficulty = 1 - p(true) under the stage-1 adapter")
    ax.set_ylabel("samples")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
