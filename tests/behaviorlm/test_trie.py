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


def test_queries_root_first_and_only_branching_nodes() -> None:
    trie = AnswerTrie.build(["a", "b", "c"], [(1, 2, END), (1, 3, END), (4, END)])
    assert trie.queries == [((), (1, 4)), ((1,), (2, 3))]
    single = AnswerTrie.build(["a", "b"], [(1, 2, END), (1, 3, END)])
    # the root is read even with one child: its raw mass is label_mass
    assert single.queries == [((), (1,)), ((1,), (2, 3))]


def test_combine_by_hand() -> None:
    trie = AnswerTrie.build(["a", "b", "c"], [(1, 2, END), (1, 3, END), (4, END)])
    root = [math.log(0.3), math.log(0.1)]  # raw P(1), P(4): label_mass 0.4
    node = [math.log(0.2), math.log(0.6)]  # raw P(2|1), P(3|1)
    probs, mass = trie.combine({(): root, (1,): node})
    assert mass == pytest.approx(0.4)
    np.testing.assert_allclose(probs, [0.75 * 0.25, 0.75 * 0.75, 0.25])
    hot, _ = trie.combine({(): root, (1,): node}, temperature=2.0)
    expected = np.sqrt([0.75 * 0.25, 0.75 * 0.75, 0.25])
    np.testing.assert_allclose(hot, expected / expected.sum())


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
    assert sub.queries == [((), (1, 4))]  # (1,) no longer branches
    with pytest.raises(InputError, match="zzz"):
        trie.subset(["a", "zzz"])


def test_real_tokenizer_shared_prefixes(smollm2_tokenizer: object) -> None:
    names = ["Chinese Restaurant", "Chinese Breakfast Place", "Chinese Breakfast Bar", "Gym"]
    trie = AnswerTrie.from_tokenizer(smollm2_tokenizer, names)  # type: ignore[arg-type]
    depths = sorted(len(p) for p, _ in trie.queries)
    assert depths == [0, 1, 2]  # root, after "Chinese", after "Chinese Breakfast"


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
def test_combine_is_the_product_of_renormalised_branches(
    case: tuple[list[tuple[int, ...]], dict[tuple[int, ...], list[float]]],
) -> None:
    codes, logprobs = case
    trie = AnswerTrie.build([str(c) for c in codes], codes)
    probs, mass = trie.combine(logprobs)
    assert probs.sum() == pytest.approx(1.0)
    kids = dict(trie.queries)
    for i, code in enumerate(codes):
        p = 1.0
        for d in range(len(code)):
            node = code[:d]
            if node in kids:
                raw = dict(zip(kids[node], np.exp(logprobs[node]), strict=True))
                p *= raw[code[d]] / sum(raw.values())
        assert probs[i] == pytest.approx(p, rel=1e-9, abs=1e-12)
    assert mass == pytest.approx(float(np.exp(logprobs[()]).sum()))
