"""AnswerTrie: structure, errors, and combine() against a direct computation."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from behaviorlm.errors import InputError
from behaviorlm.trie import AnswerTrie

END = 0  # the end marker's token: makes every answer a prefix-free code


def test_queries_are_every_internal_node_root_first() -> None:
    trie = AnswerTrie.build(["a", "b", "c"], [(1, 2, END), (1, 3, END), (4, END)])
    assert trie.queries == [
        ((), (1, 4)),
        ((1,), (2, 3)),
        ((4,), (END,)),  # single-child nodes are read too: their tokens cost probability
        ((1, 2), (END,)),
        ((1, 3), (END,)),
    ]


def test_combine_by_hand() -> None:
    trie = AnswerTrie.build(["a", "b", "c"], [(1, 2, END), (1, 3, END), (4, END)])
    lp = {
        (): [math.log(0.3), math.log(0.1)],  # raw P(1), P(4)
        (1,): [math.log(0.2), math.log(0.6)],  # raw P(2|1), P(3|1)
        (4,): [math.log(0.5)],
        (1, 2): [math.log(1.0)],
        (1, 3): [math.log(0.5)],
    }
    seq = np.array([0.3 * 0.2 * 1.0, 0.3 * 0.6 * 0.5, 0.1 * 0.5])  # whole-answer probabilities
    probs, mass = trie.combine(lp)
    assert mass == pytest.approx(seq.sum())
    np.testing.assert_allclose(probs, seq / seq.sum())
    hot, _ = trie.combine(lp, temperature=2.0)
    np.testing.assert_allclose(hot, np.sqrt(seq) / np.sqrt(seq).sum())


def test_a_rare_first_token_does_not_win_by_itself() -> None:
    """The failure of per-branch renormalisation: "Sat|ay" must pay for its unlikely "ay"."""
    trie = AnswerTrie.build(["Satay", "Shopping Mall"], [(7, 8, END), (5, 6, END)])
    lp = {
        (): [math.log(0.2), math.log(0.3)],  # P(" Shopping"), P(" Sat")
        (5,): [math.log(0.9)],  # P(" Mall" | " Shopping")
        (7,): [math.log(0.001)],  # P("ay" | " Sat"): the model meant the weekday
        (5, 6): [0.0],
        (7, 8): [0.0],
    }
    probs, _ = trie.combine(lp)
    assert probs[1] > 0.99


def test_build_errors_name_the_behaviors() -> None:
    with pytest.raises(InputError, match="'x' and 'y'"):
        AnswerTrie.build(["x", "y"], [(1, END), (1, END)])
    with pytest.raises(InputError, match="prefix"):
        AnswerTrie.build(["x", "y"], [(1,), (1, 2)])
    with pytest.raises(InputError, match="no tokens"):
        AnswerTrie.build(["x"], [()])
    with pytest.raises(InputError):
        AnswerTrie.build([], [])


def test_subset_keeps_codes_and_rejects_unknown() -> None:
    trie = AnswerTrie.build(["a", "b", "c"], [(1, 2, END), (1, 3, END), (4, END)])
    sub = trie.subset(["c", "a"])
    assert sub.names == ("c", "a") and sub.codes == ((4, END), (1, 2, END))
    assert sub.queries == [((), (1, 4)), ((1,), (2,)), ((4,), (END,)), ((1, 2), (END,))]
    with pytest.raises(InputError, match="zzz"):
        trie.subset(["a", "zzz"])


def test_real_tokenizer_shared_prefixes(smollm2_tokenizer: object) -> None:
    names = ["Chinese Restaurant", "Chinese Breakfast Place", "Chinese Breakfast Bar", "Gym"]
    trie = AnswerTrie.from_tokenizer(smollm2_tokenizer, names)  # type: ignore[arg-type]
    codes = dict(zip(trie.names, trie.codes, strict=True))
    # every proper prefix of every answer is read, each once
    expected = {c[:d] for c in codes.values() for d in range(len(c))}
    assert [p for p, _ in trie.queries] == sorted(expected, key=lambda p: (len(p), p))
    shared = codes["Chinese Breakfast Place"][:2]
    assert dict(trie.queries)[shared] == tuple(
        sorted({codes["Chinese Breakfast Place"][2], codes["Chinese Breakfast Bar"][2]})
    )


@st.composite
def _vocab(draw: st.DrawFn) -> tuple[list[tuple[int, ...]], dict[tuple[int, ...], list[float]]]:
    bodies = draw(
        st.lists(
            st.lists(st.integers(1, 4), min_size=1, max_size=4).map(tuple),
            min_size=1,
            max_size=12,
            unique=True,
        )
    )
    codes = [(*b, END) for b in bodies]
    trie = AnswerTrie.build([str(c) for c in codes], codes)
    logprobs = {p: [draw(st.floats(-12.0, 0.0)) for _ in kids] for p, kids in trie.queries}
    return codes, logprobs


@settings(max_examples=60, deadline=None)
@given(_vocab())
def test_combine_is_the_sequence_probability_restricted_to_the_vocabulary(
    case: tuple[list[tuple[int, ...]], dict[tuple[int, ...], list[float]]],
) -> None:
    codes, logprobs = case
    trie = AnswerTrie.build([str(c) for c in codes], codes)
    probs, mass = trie.combine(logprobs)
    assert probs.sum() == pytest.approx(1.0)
    kids = dict(trie.queries)
    seq = []
    for code in codes:
        p = 1.0
        for d in range(len(code)):
            raw = dict(zip(kids[code[:d]], np.exp(logprobs[code[:d]]), strict=True))
            p *= raw[code[d]]
        seq.append(p)
    np.testing.assert_allclose(probs, np.array(seq) / sum(seq), rtol=1e-9, atol=1e-12)
    assert mass == pytest.approx(sum(seq), rel=1e-9)


def test_non_finite_log_probs_are_an_error_not_a_ranking() -> None:
    from behaviorlm.errors import EngineError

    trie = AnswerTrie.build(["a", "b"], [(1, END), (2, END)])
    lp = {(): [math.nan, -1.0], (1,): [0.0], (2,): [0.0]}
    with pytest.raises(EngineError, match="non-finite"):
        trie.combine(lp)
