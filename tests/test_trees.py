"""Tree induction from distances, bracket F1 with the paper's conventions, baselines."""

import random

import pytest
import torch

from kexue.analysis.trees import (
    baseline_scores,
    build_tree,
    left_branching,
    mean_f1,
    random_tree,
    right_branching,
    select_distances,
    sentence_f1,
    to_brackets,
    tree_depth,
    tree_spans,
    wsj10,
)
from kexue.errors import KexueError


def test_build_tree_hand_made_distances():
    assert build_tree([0.1, 0.9, 0.2], "abc") == ["a", ["b", "c"]]
    # split before the largest distance: [parse(left), [x_k, parse(right)]]
    words = "the cat sat on the mat".split()
    tree = build_tree([0.0, 0.1, 0.8, 0.5, 0.3, 0.2], words)
    assert tree == [["the", "cat"], ["sat", ["on", ["the", "mat"]]]]
    # first maximum wins on ties; the maximum at position 0 gives [x_0, rest]
    assert build_tree([0.5, 0.5, 0.1], "abc") == ["a", ["b", "c"]]
    assert build_tree([0.1, 0.2, 0.9], "abc") == [["a", "b"], "c"]
    assert build_tree([0.3], ["x"]) == "x"
    with pytest.raises(KexueError):
        build_tree([0.1], "ab")


def test_spans_exclude_whole_sentence_and_single_words():
    assert tree_spans([["a", "b"], ["c", ["d", "e"]]]) == {(0, 2), (2, 5), (3, 5)}
    assert tree_spans([["a", "b", "c"]]) == set()  # unary wrapper: only the whole sentence
    assert tree_spans("a") == set()


def test_sentence_f1_hand_made_pairs():
    gold = [["the", "cat"], ["sat", ["on", ["the", "mat"]]]]  # (0,2) (2,6) (3,6) (4,6)
    pred = ["the", ["cat", ["sat", ["on", ["the", "mat"]]]]]  # (1,6) (2,6) (3,6) (4,6)
    p, g = tree_spans(pred), tree_spans(gold)
    assert sentence_f1(p, g) == pytest.approx(0.75)
    assert sentence_f1(g, g) == 1.0
    # gold without brackets: recall 1; an empty prediction too: precision 1
    assert sentence_f1(set(), set()) == 1.0
    assert sentence_f1({(0, 2)}, set()) == 0.0
    assert sentence_f1(set(), {(0, 2)}) == 0.0
    # mean of sentence F1s, not pooled
    golds = [gold, ["a", ["b", "c"]]]
    preds = [pred, [["a", "b"], "c"]]
    assert mean_f1(preds, golds) == pytest.approx((0.75 + 0.0) / 2)


def test_baselines_and_depth():
    w = list("abcd")
    assert right_branching(w) == ["a", ["b", ["c", "d"]]]
    assert left_branching(w) == [[["a", "b"], "c"], "d"]
    assert tree_depth(right_branching(w)) == 3
    t = random_tree(w, random.Random(0))
    assert sorted(tree_spans(t, keep_whole=True)) and len(tree_spans(t, keep_whole=True)) == 3  # binary
    golds = [right_branching(list("abcdef")), left_branching(list("abcde"))]
    s = baseline_scores(golds)
    assert s["right_branching"] == pytest.approx((1.0 + 0.0) / 2)
    assert s["left_branching"] == pytest.approx((0.0 + 1.0) / 2)
    assert wsj10([list("ab"), list("abcdefghijk"), list("abcdefghij")]) == [0, 2]
    assert to_brackets(["a", ["b", "c"]]) == "(a (b c))"


def test_select_distances_layers():
    d = [torch.tensor([1.0, 2.0]), torch.tensor([3.0, 4.0]), torch.tensor([5.0, 9.0])]
    assert torch.equal(select_distances(d), d[1])
    assert torch.equal(select_distances(d, "mean"), torch.tensor([3.0, 5.0]))
    assert torch.equal(select_distances(d, 0), d[0])
    with pytest.raises(KexueError):
        select_distances(d, 3)
