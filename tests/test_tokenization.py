"""Rebalanced encoding: learned merges on hand-made corpora, exact round trips, files."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.data.tokenization import RebalancedEncoding
from kexue.errors import KexueError


def test_learned_rounds_on_a_hand_made_corpus():
    # round 1: c(a)=3, V=3: P(b|a) = (2+1)/(3+3+1) = 3/7 > 0.35, P(c|a) = 2/7 < 0.35 -> merge (a, b)
    # round 2: tokens ab, ab, a c: c(a)=1, V=3: P(c|a) = 2/5 > 0.35 -> merge (a, c); round 3: no pairs
    enc = RebalancedEncoding.learn([list("ab"), list("ab"), list("ac")], threshold=0.35)
    assert enc.rounds == [[("a", "b")], [("a", "c")]]
    assert enc.encode(list("abac")) == ["ab", "ac"]
    assert enc.decode(["ab", "ac"]) == list("abac")
    assert enc.parts == {"ab": ("a", "b"), "ac": ("a", "c")}


def test_merges_go_left_to_right_without_overlap():
    enc = RebalancedEncoding([[("a", "a")]])
    assert enc.encode(list("aaa")) == ["aa", "a"]
    assert enc.encode(list("aaaa")) == ["aa", "aa"]
    assert enc.encode_corpus([list("aaa"), [], list("baaa")]) == [["aa", "a"], [], ["b", "aa", "a"]]


def test_pairs_do_not_cross_sentence_ends():
    # "ab" never occurs inside a sentence, only across the boundary of the two sentences
    enc = RebalancedEncoding.learn([list("xa"), list("bx")] * 5, threshold=0.3)
    assert ("a", "b") not in [p for r in enc.rounds for p in r]
    assert enc.encode_corpus([list("xa"), list("bx")]) == [enc.encode(list("xa")), enc.encode(list("bx"))]


def test_word_level_needs_a_joiner_and_round_trips():
    words = [s.split() for s in ["new york is big", "new york city", "in new york"]]
    enc = RebalancedEncoding.learn(words, threshold=0.3, joiner="_")
    # P(york | new) = (3 + 1) / (3 + 6 + 1) = 0.4; every other pair stays below 0.3
    assert enc.rounds == [[("new", "york")]]
    coded = enc.encode("i like new york".split())
    assert coded == ["i", "like", "new_york"]
    assert enc.decode(coded) == "i like new york".split()
    with pytest.raises(KexueError, match="joiner"):
        RebalancedEncoding.learn([["a_b", "c"]] * 3, joiner="_")


def test_a_unit_that_spells_a_merged_token_is_refused():
    enc = RebalancedEncoding([[("a", "b")]], joiner="_")
    with pytest.raises(KexueError, match="spells a merged token"):
        enc.encode(["a_b"])


@settings(max_examples=80, deadline=None)
@given(
    corpus=st.lists(st.text(alphabet="abcde ", min_size=1, max_size=30), min_size=1, max_size=20),
    probe=st.text(alphabet="abcdefxyz ", max_size=40),
    threshold=st.floats(0.05, 0.9),
)
def test_round_trip_is_exact_for_any_text(corpus, probe, threshold):
    enc = RebalancedEncoding.learn([list(s) for s in corpus], threshold=threshold, iterations=5)
    coded = enc.encode(list(probe))
    assert "".join(enc.decode(coded)) == probe
    assert len(coded) <= len(probe)
    assert enc.encode_corpus([list(probe), list(corpus[0])]) == [coded, enc.encode(list(corpus[0]))]


def test_merging_shortens_a_repetitive_corpus_and_survives_a_file(tmp_path):
    text = [list("the cat sat on the mat")] * 20
    enc = RebalancedEncoding.learn(text, threshold=0.1)
    coded = enc.encode(text[0])
    assert len(coded) < len(text[0]) / 3
    back = RebalancedEncoding.load(enc.save(tmp_path / "enc.json"))
    assert back.encode(text[0]) == coded and back.rounds == enc.rounds
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(KexueError, match="not valid JSON"):
        RebalancedEncoding.load(tmp_path / "bad.json")
    (tmp_path / "bad.json").write_text('{"joiner": "", "rounds": [["a"]]}')
    with pytest.raises(KexueError, match="malformed"):
        RebalancedEncoding.load(tmp_path / "bad.json")
    with pytest.raises(KexueError, match="not found"):
        RebalancedEncoding.load(tmp_path / "none.json")
