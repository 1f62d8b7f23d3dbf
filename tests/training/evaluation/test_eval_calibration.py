"""Temperature fitting and logit adjustment on cases with known answers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from behaviorlm.manifest import AdapterManifest, BaseModelRef
from behaviorlm.training.evaluation.calibration import (
    apply_temperature,
    fit_temperature,
    logit_adjust,
    store_temperature,
    temperature_ece_floor,
)
from behaviorlm.training.evaluation.metrics import expected_calibration_error
from behaviorlm.vocabulary import Vocabulary


def test_temperature_two_takes_square_roots() -> None:
    # sqrt(.8) / sqrt(.2) = 2, so T=2 turns [.8, .2] into [2/3, 1/3].
    out = apply_temperature(np.array([[0.8, 0.2]]), 2.0)
    assert out[0] == pytest.approx([2 / 3, 1 / 3])
    assert apply_temperature(np.array([[0.8, 0.2]]), 1.0)[0] == pytest.approx([0.8, 0.2])


def test_logit_adjustment_divides_by_the_prior() -> None:
    # [.5, .5] / [.8, .2] = [.625, 2.5] -> [.2, .8]
    out = logit_adjust(np.array([[0.5, 0.5]]), np.array([0.8, 0.2]), tau=1.0)
    assert out[0] == pytest.approx([0.2, 0.8])
    same = logit_adjust(np.array([[0.3, 0.7]]), np.array([0.8, 0.2]), tau=0.0)
    assert same[0] == pytest.approx([0.3, 0.7])


def _overconfident_by_two(seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(q, labels drawn from q, q^2 renormalised): a system over-confident by T = 2."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(20000, 6)) * 1.5
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    true = np.array([rng.choice(6, p=row) for row in q])
    return q, true, apply_temperature(q, 0.5)


def test_fit_recovers_the_overconfidence_factor() -> None:
    # Labels drawn from q; the system reports q^2 (renormalised), i.e. it is over-confident by
    # a temperature factor of 2, so the NLL-optimal correction is T = 2.
    q, true, reported = _overconfident_by_two(seed=0)
    fit = fit_temperature(reported, true)
    assert fit.temperature == pytest.approx(2.0, rel=0.05)
    assert fit.nll_after < fit.nll_before
    calibrated = fit_temperature(q, true)
    assert calibrated.temperature == pytest.approx(1.0, rel=0.05)


def test_ece_floor_finds_the_temperature_that_calibrates() -> None:
    # Over-confident by a factor of 2 (reported = q^2): the floor's temperature is near 2 and
    # its ECE is that of the true q (small, sampling noise only), far below the reported ECE.
    q, true, reported = _overconfident_by_two(seed=1)
    anchor = np.array([True, True, False, False, False, False])
    floor = temperature_ece_floor(reported, true, anchor)
    assert floor["temperature"] == pytest.approx(2.0, rel=0.1)

    def ece(p: np.ndarray) -> float:
        pred = p.argmax(axis=1)
        return expected_calibration_error(p.max(axis=1), (pred == true).astype(float))

    assert floor["ece"] <= ece(q) + 0.005 and ece(reported) > floor["ece"] + 0.05
    assert 0 <= floor["ece_anchor_pred"] < 0.05 and 0 <= floor["ece_tail_pred"] < 0.05


def test_store_temperature_updates_the_manifest(tmp_path: Path) -> None:
    vocab = Vocabulary.from_counts({"a": 5, "b": 1})
    manifest = AdapterManifest.for_vocabulary(
        vocab,
        [[1], [2]],
        name="run",
        version="1",
        stage="stage2",
        strategy="behaviorlm",
        base_model=BaseModelRef(id="tiny", sha256="0" * 64),
    )
    manifest.save(tmp_path)
    fit = fit_temperature(np.array([[0.99, 0.01], [0.99, 0.01], [0.01, 0.99]]), np.array([0, 1, 1]))
    store_temperature(tmp_path, fit, fitted_on="validation (3 samples)")
    reloaded = AdapterManifest.load(tmp_path)
    assert reloaded.calibration.temperature == pytest.approx(fit.temperature)
    assert reloaded.calibration.temperature > 1.0  # over-confident mistakes -> flatten
    assert reloaded.calibration.fitted_on == "validation (3 samples)"
    assert reloaded.calibration.nll_after == pytest.approx(fit.nll_after)
    assert reloaded.vocabulary == manifest.vocabulary
