"""The hybrid arm: an LLM system's probabilities fused with SASRec's, log-linearly.

    P(b) proportional to p_llm(b)^a * p_sasrec(b)^c

with (a, c) chosen on validation NLL over a grid (0..2 in steps of 0.1, not both 0). It answers
"what does the LLM add to a sequence model a user may already run?"; reports list it as kind
``hybrid``, never as the LLM. The weights are fitted on the validation samples the LLM's
temperature was fitted on, so nothing about the test samples is used.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from behaviorlm.training.evaluation.calibration import PROB_FLOOR, _normalise_log, mean_nll

GRID = np.round(np.arange(0.0, 2.01, 0.1), 2)


@dataclass(frozen=True)
class FusionFit:
    llm_weight: float
    other_weight: float
    validation_nll: float
    validation_samples: int


def fuse(llm: np.ndarray, other: np.ndarray, llm_weight: float, other_weight: float) -> np.ndarray:
    """The fused probabilities (rows sum to 1)."""
    log_llm = np.log(np.maximum(llm, PROB_FLOOR))
    log_other = np.log(np.maximum(other, PROB_FLOOR))
    return _normalise_log(llm_weight * log_llm + other_weight * log_other)


def fit_fusion(llm_val: np.ndarray, other_val: np.ndarray, true: np.ndarray) -> FusionFit:
    """The grid's (a, c) with the lowest validation NLL."""
    if len(true) == 0:
        raise ValueError("cannot fit a fusion on zero validation samples")
    best: tuple[float, float, float] | None = None
    for a in GRID:
        for c in GRID:
            if a == 0 and c == 0:
                continue
            nll = mean_nll(fuse(llm_val, other_val, float(a), float(c)), true)
            if best is None or nll < best[2]:
                best = (float(a), float(c), nll)
    assert best is not None
    return FusionFit(best[0], best[1], best[2], len(true))
