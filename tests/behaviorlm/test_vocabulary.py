import pytest

from behaviorlm.errors import InputError
from behaviorlm.vocabulary import Vocabulary


def test_anchor_tail_split_by_share() -> None:
    # 1000 targets: shares 0.5, 0.3, 0.189, 0.01 (exactly 1%: tail, the rule is share > 1%), 0.001
    counts = {"a": 500, "b": 300, "c": 189, "d": 10, "e": 1}
    vocab = Vocabulary.from_counts(counts)
    assert vocab.names == ("a", "b", "c", "d", "e")
    assert vocab.anchors == ("a", "b", "c")
    assert vocab.tails == ("d", "e")
    assert vocab.share("d") == pytest.approx(0.01)
    assert Vocabulary.from_counts(counts, anchor_share=0.2).anchors == ("a", "b")


def test_ordering_and_ties_are_deterministic() -> None:
    vocab = Vocabulary.from_counts({"z": 3, "y": 3, "x": 7})
    assert vocab.names == ("x", "y", "z")


def test_round_trip(tmp_path) -> None:
    vocab = Vocabulary.from_counts({"Coffee Shop": 40, "Gym": 2}, anchor_share=0.05)
    vocab.save(tmp_path / "v.json")
    assert Vocabulary.load(tmp_path / "v.json") == vocab


def test_zero_count_additions_are_tail() -> None:
    vocab = Vocabulary.from_counts({"a": 10, "b": 5}).with_behaviors(["New Thing"])
    assert "New Thing" in vocab
    assert vocab.counts[vocab.index["New Thing"]] == 0
    assert not vocab.is_anchor("New Thing")


@pytest.mark.parametrize(
    ("names", "counts", "message"),
    [
        ((), (), "no behaviors"),
        (("a", "a"), (1, 1), "duplicate"),
        (("a\nb",), (1,), "newlines"),
        (("a",), (1, 2), "differ in length"),
    ],
)
def test_rejects_bad_vocabularies(names, counts, message) -> None:
    with pytest.raises(InputError, match=message):
        Vocabulary(names, counts)


def test_load_names_file_and_line(tmp_path) -> None:
    bad = tmp_path / "vocab.json"
    bad.write_text('{"behaviors": [\n  {"name": "a", "count": 1,}\n]}')
    with pytest.raises(InputError, match=r"vocab.json: line 2"):
        Vocabulary.load(bad)
