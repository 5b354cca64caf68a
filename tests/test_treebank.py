"""The .mrg reader (traces, function tags, punctuation, numbers) and the grammar generator."""

import pytest

from kexue.analysis.trees import leaves_of, tree_spans
from kexue.data.treebank import generate_sentences, grammar_corpus, grammar_symbols, read_mrg, read_treebank
from kexue.errors import KexueError

SAMPLE = """
( (S
    (NP-SBJ-1 (NNP Pierre) (NNP Vinken) (, ,)
      (ADJP (NP (CD 61) (NNS years)) (JJ old)) (, ,))
    (VP (MD will)
      (VP (VB join)
        (NP (DT the) (NN board))
        (PP-CLR (IN as) (NP (DT a) (JJ nonexecutive) (NN director)))
        (NP-TMP (NNP Nov.) (CD 29))))
    (. .)) )
( (S (NP-SBJ (-NONE- *-1)) (VP (VBD rose) (NP-EXT (CD 1.2) (NN %)) (PP (IN to) (NP ($ $) (CD 5,000)))) (. .)) )
"""


def test_reader_strips_punctuation_traces_function_tags():
    first, second = read_mrg(SAMPLE)
    assert first.words == "pierre vinken N years old will join the board as a nonexecutive director nov. N".split()
    # the subject NP is flat in the source: its commas go, its words stay its direct children
    assert first.tree == [
        ["pierre", "vinken", [["N", "years"], "old"]],
        ["will", ["join", ["the", "board"], ["as", ["a", "nonexecutive", "director"]], ["nov.", "N"]]],
    ]
    assert first.bracketed.startswith("(S (NP pierre vinken (ADJP (NP N years) old)) (VP will (VP join")
    # the trace subject disappears, "$" goes, S -> VP collapses, PP keeps "to N"
    assert second.words == ["rose", "N", "%", "to", "N"]
    assert second.tree == ["rose", ["N", "%"], ["to", "N"]]
    assert tree_spans(second.tree) == {(1, 3), (3, 5)}
    assert second.bracketed == "(VP rose (NP N %) (PP to N))"


def test_reader_errors_and_files(tmp_path):
    with pytest.raises(KexueError):
        read_mrg("( (S (NP (DT the) (NN cat)) )")
    with pytest.raises(KexueError):
        read_treebank(tmp_path / "missing")
    with pytest.raises(KexueError):
        read_treebank(tmp_path)
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "wsj_0001.mrg").write_text(SAMPLE)
    assert len(read_treebank(tmp_path)) == 2


def test_generator_deterministic_recursive_and_consistent():
    a = generate_sentences(300, seed=5)
    assert [s.words for s in a] == [s.words for s in generate_sentences(300, seed=5)]
    assert len(grammar_symbols()) >= 24
    depths = []
    for s in a:
        assert leaves_of(s.tree) == s.words
        assert 3 <= len(s.words) <= 30
        assert s.bracketed.count("(") == s.bracketed.count(")")
        depths.append(s.bracketed.count("(NP (NP"))
    assert max(depths) >= 1  # recursion through NP -> NP PP / NP RC
    assert any("(CP that (S" in s.bracketed for s in a)


def test_unreadable_treebank_files_name_the_file(tmp_path):
    (tmp_path / "wsj_0001.mrg").mkdir()
    with pytest.raises(KexueError, match="wsj_0001.mrg is a folder"):
        read_treebank(tmp_path)
    bad = tmp_path / "bad.mrg"
    bad.write_text("( (S (NP (DT the) (NN cat)) )")
    with pytest.raises(KexueError, match="bad.mrg: unbalanced"):
        read_treebank(bad)


def test_grammar_corpus_splits_are_seeded_apart():
    """`corpus=grammar`: train / valid / test come from seeds 10*seed + 0 / 1 / 2, so they never share a stream."""
    test = grammar_corpus("test", 50)
    assert [g.words for g in test] == [g.words for g in generate_sentences(50, seed=2)]
    assert [g.words for g in grammar_corpus("train", 50, seed=3)] == [g.words for g in generate_sentences(50, seed=30)]
    assert [g.words for g in grammar_corpus("valid", 50)] != [g.words for g in test]
    with pytest.raises(KexueError, match="grammar split"):
        grammar_corpus("dev", 5)
