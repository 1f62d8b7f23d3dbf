"""What each stage trains on, as a loss weight per readout (every readout stays in the forward).

- stage 1: 1 on anchor-target readouts, 0 on tail ones.
- sft: 1 everywhere.
- the class-balanced subset of stage 2 (and of ``balanced``) as *inclusion probabilities*: a
  behavior with n readouts and cap M contributes min(n, M) readouts' worth of weight. Of a big
  behavior's M, ``hard_fraction * M`` go to its hardest readouts (difficulty ranked WITHIN the
  behavior, weight 1 each) and the rest spread evenly over its other readouts (each gets
  (M - hard) / (n - hard): the chance a random draw of the rest would pick it). Anchor replay
  (``natural_fraction`` f) adds the inclusion probability of a uniform draw from all readouts
  sized so that f of the total weight follows the natural distribution.

Why weights and not a drawn subset: a subset of ~8% of the readouts leaves most of each packed
row unread (measured: 8-16 targets per step instead of ~75); weights keep every forward full
and the expected loss equal to the subset's. Weights are scaled to mean 1 over the readouts.

Why within-behavior difficulty: an anchor-only stage 1 gives nearly every tail readout
p(true) ~ 0; a global ranking would fill the "hard" share with the tail at random. Ranking per
behavior asks which of THIS behavior's samples the model gets most wrong.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from behaviorlm.vocabulary import Vocabulary


@dataclass
class SubsetReport:
    """What a weighting selects, per behavior (saved with the run)."""

    per_class: dict[str, float] = field(default_factory=dict)  # readouts' worth of weight
    hard: dict[str, int] = field(default_factory=dict)  # readouts taken hardest-first
    balanced: float = 0.0  # total weight of the class-balanced part
    natural: float = 0.0  # total weight of the natural-distribution replay
    readouts: int = 0  # readouts with a positive weight

    def to_json(self) -> dict[str, object]:
        return {
            "balanced": round(self.balanced, 2),
            "natural": round(self.natural, 2),
            "readouts_with_weight": self.readouts,
            "per_class": {k: round(v, 2) for k, v in self.per_class.items()},
            "hard": self.hard,
        }


def normalise(weights: np.ndarray) -> np.ndarray:
    """Scaled to mean 1 over the readouts with a positive weight."""
    positive = weights > 0
    if not positive.any():
        return weights
    return weights / weights[positive].mean()


def anchor_weights(labels: np.ndarray, vocabulary: Vocabulary) -> np.ndarray:
    anchors = vocabulary.anchor_mask
    return anchors[labels].astype(np.float64)


def balanced_weights(
    labels: np.ndarray,
    names: Sequence[str],
    per_class_max: int,
    hard_fraction: float,
    difficulty: np.ndarray | None,
    natural_fraction: float,
) -> tuple[np.ndarray, SubsetReport]:
    """Inclusion weights of the class-balanced subset plus replay (see the module doc).

    ``difficulty``: one value per readout (None: the ``balanced`` strategy, all random).
    """
    report = SubsetReport()
    weights = np.zeros(len(labels), dtype=np.float64)
    n_hard = round(hard_fraction * per_class_max) if difficulty is not None else 0
    for c in np.unique(labels):
        idx = np.flatnonzero(labels == c)
        if len(idx) <= per_class_max:
            weights[idx] = 1.0
            hard = 0
        else:
            assert difficulty is not None or n_hard == 0
            hardest = (
                idx[np.lexsort((idx, -difficulty[idx]))[:n_hard]]
                if difficulty is not None and n_hard
                else idx[:0]
            )
            weights[idx] = (per_class_max - len(hardest)) / (len(idx) - len(hardest))
            weights[hardest] = 1.0
            hard = len(hardest)
        report.per_class[str(names[int(c)])] = float(weights[idx].sum())
        report.hard[str(names[int(c)])] = hard
    report.balanced = float(weights.sum())
    if natural_fraction > 0:
        extra = natural_fraction / (1.0 - natural_fraction) * report.balanced
        weights += extra / len(labels)
        report.natural = float(extra)
    report.readouts = int((weights > 0).sum())
    return normalise(weights), report
