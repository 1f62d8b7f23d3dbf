"""constrained_scores on the tiny random Llama: exact against a brute-force computation."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from behaviorlm.scoring.constrained import TreeLayout, constrained_scores
from behaviorlm.trie import AnswerTrie

# Shared prefixes at several depths, so the trie branches below the root.
NAMES = (
    "Chinese Restaurant",
    "Chinese Breakfast Place",
    "Chinese Breakfast Bar",
    "Chinese Bakery",
    "Coffee Shop",
    "Coffee Roaster",
    "Malay Restaurant",
    "Gym",
    "Bus Stop",
    "Bus Line",
    "Bus Stop Shelter",
    "Art Museum",
)
PROMPTS = (
    "Predict the user's next behavior from their history.\nHistory:\nMon 08h Gym\nNext:",
    "Predict the user's next behavior from their history.\nHistory:\nTue 12h Chinese Bakery\n"
    "Tue 13h +1h Coffee Shop | weather: rain\nWed 09h +20h Bus Stop\nNow: Wed 10h +1h\nNext:",
    "History:\nNext:",
)


@pytest.fixture(scope="module")
def fp32_model(tiny_model: Any) -> tuple[Any, Any]:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(str(tiny_model.path), dtype=torch.float32)
    return model.eval(), AutoTokenizer.from_pretrained(str(tiny_model.path))


def brute_force(
    model: Any, tokenizer: Any, prompt: str, trie: AnswerTrie
) -> tuple[np.ndarray, float]:
    """A full uncached forward of prompt + answer per candidate: each answer's sequence
    log-probability, normalised over the candidates."""
    import torch

    prompt_ids = tokenizer.encode(prompt)
    logp = np.zeros(len(trie.names))
    for i, code in enumerate(trie.codes):
        ids = torch.tensor([prompt_ids + list(code)])
        with torch.no_grad():
            lp = torch.log_softmax(model(ids).logits[0].double(), dim=-1).numpy()
        logp[i] = sum(lp[len(prompt_ids) - 1 + d, code[d]] for d in range(len(code)))
    return np.exp(logp) / np.exp(logp).sum(), float(np.exp(logp).sum())


def _trie(tokenizer: Any, names: Sequence[str] = NAMES) -> AnswerTrie:
    return AnswerTrie.from_tokenizer(tokenizer, names)


def test_trie_branches_below_the_root(fp32_model: tuple[Any, Any]) -> None:
    _, tok = fp32_model
    trie = _trie(tok)
    deep = [p for p, _ in trie.queries if len(p) >= 2]
    assert deep, "the test vocabulary must exercise branching nodes deeper than one token"
    layout = TreeLayout.of(trie)
    assert len(layout.read_at) == len(trie.queries)
    # every tree node's ancestors are in the tree: a node attends to exactly depth + 1 nodes
    assert list(layout.ancestors.sum(axis=1)) == [d + 1 for d in layout.depths]


def test_exact_against_brute_force(fp32_model: tuple[Any, Any]) -> None:
    model, tok = fp32_model
    trie = _trie(tok)
    results = constrained_scores(model, tok, PROMPTS, [trie] * len(PROMPTS))
    for prompt, (probs, mass) in zip(PROMPTS, results, strict=True):
        expected, expected_mass = brute_force(model, tok, prompt, trie)
        assert probs.sum() == pytest.approx(1.0, abs=1e-12)
        assert expected.sum() == pytest.approx(1.0, abs=1e-9)
        np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
        assert mass == pytest.approx(expected_mass, rel=1e-4)
        assert 0.0 < mass < 1.0


def test_padding_invariance(fp32_model: tuple[Any, Any]) -> None:
    model, tok = fp32_model
    trie = _trie(tok)
    small = _trie(tok, NAMES[:4])  # a different tree length in the same batch
    alone = constrained_scores(model, tok, [PROMPTS[2]], [trie])[0]
    batch = constrained_scores(
        model, tok, [PROMPTS[1], PROMPTS[2], PROMPTS[0]], [trie, trie, small]
    )
    np.testing.assert_allclose(batch[1][0], alone[0], atol=1e-6, rtol=0)
    assert batch[1][1] == pytest.approx(alone[1], abs=1e-6)
    # batch_size=1 (no padding at all) gives the same as one padded batch
    one_by_one = constrained_scores(model, tok, PROMPTS, [trie] * 3, batch_size=1)
    together = constrained_scores(model, tok, PROMPTS, [trie] * 3)
    for a, b in zip(one_by_one, together, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6, rtol=0)


def test_subset_restriction_renormalises_the_full_distribution(
    fp32_model: tuple[Any, Any],
) -> None:
    model, tok = fp32_model
    full = _trie(tok)
    names = ["Chinese Restaurant", "Chinese Bakery", "Gym"]
    sub = full.subset(names)
    (p_full, m_full), (p_sub, m_sub) = constrained_scores(model, tok, [PROMPTS[1]] * 2, [full, sub])
    # The subset's probabilities equal brute force on the subset...
    expected, _ = brute_force(model, tok, PROMPTS[1], sub)
    np.testing.assert_allclose(p_sub, expected, atol=1e-5, rtol=0)
    assert p_sub.sum() == pytest.approx(1.0)
    # ...and the label mass only counts the subset's answers.
    assert m_sub < m_full
    assert len(p_full) == len(NAMES)


def test_temperature_flattens(fp32_model: tuple[Any, Any]) -> None:
    model, tok = fp32_model
    trie = _trie(tok)
    (p1, m1), (p2, m2) = constrained_scores(
        model, tok, [PROMPTS[0]] * 2, [trie, trie], temperatures=[1.0, 2.0]
    )
    expected = np.exp(np.log(p1) / 2.0)
    np.testing.assert_allclose(p2, expected / expected.sum(), atol=1e-9)
    assert m1 == pytest.approx(m2)
    assert p2.max() < p1.max()


def test_peft_model_and_training_mode_restored(
    fp32_model: tuple[Any, Any], tiny_adapters: list[Any]
) -> None:
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    _, tok = fp32_model
    model = AutoModelForCausalLM.from_pretrained(
        str(fp32_model[0].name_or_path), dtype=torch.float32
    )
    peft_model = PeftModel.from_pretrained(model, str(tiny_adapters[0].path))
    peft_model.train()
    trie = _trie(tok)
    ((probs, _),) = constrained_scores(peft_model, tok, [PROMPTS[1]], [trie])
    assert peft_model.training
    peft_model.eval()
    expected, _ = brute_force(peft_model, tok, PROMPTS[1], trie)
    np.testing.assert_allclose(probs, expected, atol=1e-5, rtol=0)
    with peft_model.disable_adapter():
        ((base_probs, _),) = constrained_scores(peft_model, tok, [PROMPTS[1]], [trie])
    assert not np.allclose(base_probs, probs, atol=1e-3), "the adapter must change the scores"
    assert math.isclose(float(base_probs.sum()), 1.0)


def test_read_budget_splits_batches_without_changing_results(
    fp32_model: tuple[Any, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    from behaviorlm.scoring import constrained

    model, tok = fp32_model
    trie = _trie(tok)
    width = len(TreeLayout.of(trie).read_at)
    together = constrained_scores(model, tok, PROMPTS, [trie] * 3)
    assert constrained._chunks([0, 1, 2], [width] * 3, 32) == [[0, 1, 2]]
    monkeypatch.setattr(constrained, "READ_BUDGET", 2 * width)
    assert constrained._chunks([0, 1, 2], [width] * 3, 32) == [[0, 1], [2]]
    split = constrained_scores(model, tok, PROMPTS, [trie] * 3)
    for a, b in zip(split, together, strict=True):
        np.testing.assert_allclose(a[0], b[0], atol=1e-6, rtol=0)
