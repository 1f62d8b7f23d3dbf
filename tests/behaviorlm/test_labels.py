import numpy as np
import pytest

from behaviorlm.errors import EngineError, InputError
from behaviorlm.labels import LabelHead
from behaviorlm.prompt import PieceEncoder


def _head() -> LabelHead:
    return LabelHead(("A b", "C", "D e f"), ((5, 7), (9,), (5, 11, 12)))


def test_union_matrix_and_first_tokens() -> None:
    head = _head()
    assert head.union.tolist() == [5, 7, 9, 11, 12]
    expected = np.array(
        [[0.5, 0.5, 0, 0, 0], [0, 0, 1, 0, 0], [1 / 3, 0, 0, 1 / 3, 1 / 3]], dtype=np.float32
    )
    np.testing.assert_allclose(head.matrix, expected)
    assert head.first_columns.tolist() == [0, 2]  # tokens 5 and 9


def test_combine_is_softmax_of_mean_logits_and_label_mass() -> None:
    head = _head()
    logits = np.array([2.0, 0.0, 1.0, -1.0, 3.0])  # tokens 5, 7, 9, 11, 12
    lse = 4.0
    probs, mass = head.combine(logits, lse, temperature=1.0)
    scores = np.array([1.0, 1.0, 4 / 3])
    expected = np.exp(scores) / np.exp(scores).sum()
    np.testing.assert_allclose(probs, expected, rtol=1e-12)
    # label mass: probability of the first tokens (5 and 9) under the full softmax
    assert mass == pytest.approx(np.exp(2.0 - lse) + np.exp(1.0 - lse))
    # a log-softmax shift cancels (vLLM hands log-probs with normaliser 0)
    shifted, mass2 = head.combine(logits - lse, 0.0)
    np.testing.assert_allclose(shifted, probs, rtol=1e-12)
    assert mass2 == pytest.approx(mass)
    hot, _ = head.combine(logits, lse, temperature=0.5)
    assert hot.max() > probs.max()


def test_colliding_names_are_rejected_naming_both() -> None:
    with pytest.raises(InputError, match="'Bus Stop' and 'Stop Bus'"):
        LabelHead(("Bus Stop", "Stop Bus"), ((1, 2), (2, 1)))
    with pytest.raises(InputError, match="no tokens"):
        LabelHead(("x",), ((),))
    with pytest.raises(InputError, match="duplicate"):
        LabelHead(("x", "x"), ((1,), (2,)))


def test_real_tokenizer_collision(smollm2_tokenizer) -> None:
    encoder = PieceEncoder(smollm2_tokenizer)
    # Same words in another order: the same multiset of tokens.
    with pytest.raises(InputError, match="same label tokens"):
        LabelHead.from_encoder(encoder, ["Coffee Shop", "Shop Coffee"])


def test_subset_and_new_behaviors(smollm2_tokenizer) -> None:
    encoder = PieceEncoder(smollm2_tokenizer)
    head = LabelHead.from_encoder(encoder, ["Coffee Shop", "Gym", "Bar"])
    sub = head.subset(["Bar", "Gym"])
    assert sub.names == ("Bar", "Gym") and sub.tokens[0] == head.tokens[2]
    with pytest.raises(InputError, match="unknown candidate"):
        head.subset(["Zoo"])
    # A behavior never trained joins by its name alone.
    bigger = LabelHead.from_encoder(encoder, [*head.names, "Rooftop Cinema"])
    assert bigger.tokens[-1] == encoder.label_tokens("Rooftop Cinema")


def test_non_finite_logits_are_an_engine_error() -> None:
    with pytest.raises(EngineError, match="non-finite"):
        _head().combine(np.array([np.nan, 0, 0, 0, 0.0]), 0.0)
    with pytest.raises(ValueError, match="expected 5"):
        _head().combine(np.zeros(3), 0.0)
