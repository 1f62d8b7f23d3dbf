"""The hybrid arm's log-linear fusion: weights fitted on validation, never worse than either
system alone on validation NLL."""

from __future__ import annotations

import numpy as np

from behaviorlm.training.evaluation.calibration import mean_nll
from behaviorlm.training.evaluation.fusion import fit_fusion, fuse


def _probs(logits: np.ndarray) -> np.ndarray:
    e = np.exp(logits - logits.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def test_fusion_uses_both_systems_when_each_knows_part() -> None:
    rng = np.random.default_rng(0)
    n, v = 400, 6
    true = rng.integers(0, v, n)
    # system A knows the answer on even samples, system B on odd ones
    a_logits = rng.normal(size=(n, v))
    b_logits = rng.normal(size=(n, v))
    a_logits[np.arange(0, n, 2), true[::2]] += 4
    b_logits[np.arange(1, n, 2), true[1::2]] += 4
    a, b = _probs(a_logits), _probs(b_logits)
    fit = fit_fusion(a, b, true)
    assert fit.llm_weight > 0 and fit.other_weight > 0
    fused = fuse(a, b, fit.llm_weight, fit.other_weight)
    np.testing.assert_allclose(fused.sum(axis=1), 1.0)
    assert fit.validation_nll == mean_nll(fused, true)
    assert fit.validation_nll < min(mean_nll(a, true), mean_nll(b, true))


def test_fusion_ignores_a_useless_system() -> None:
    rng = np.random.default_rng(1)
    n, v = 300, 5
    true = rng.integers(0, v, n)
    good = rng.normal(size=(n, v))
    good[np.arange(n), true] += 3
    noise = _probs(rng.normal(size=(n, v)) * 3)
    fit = fit_fusion(_probs(good), noise, true)
    assert fit.other_weight <= 0.2 < fit.llm_weight
