"""Repetition metrics of text (rep-w, rep-r, seq-rep-n, distinct-n, loops) and bigram chains from text."""

import numpy as np
import pytest
import torch

from kexue.analysis.repetition import (
    Loop,
    distinct_n,
    estimate_bigram,
    find_loop,
    rep_r,
    rep_w,
    repetition_metrics,
    seq_rep_n,
    seq_rep_pooled,
)
from kexue.errors import KexueError


def test_rep_w_counts_tokens_seen_in_the_window():
    assert rep_w("abab") == 0.5
    assert rep_w("abcdefa", window=16) == pytest.approx(1 / 7)
    assert rep_w("abcdefa", window=5) == 0.0  # the first a left the window
    assert rep_w("") == 0.0


def test_rep_r_marks_both_tokens_of_repeated_bigrams():
    assert rep_r("abcab") == pytest.approx(4 / 5)
    assert rep_r("aaa") == 1.0  # bigram (a, a) twice covers all three tokens
    assert rep_r("abcd") == 0.0


def test_seq_rep_single_order_and_pooled():
    s = [5, 6, 5, 6, 5, 6]
    assert seq_rep_n(s, 4) == pytest.approx(1 / 3)  # 5656, 6565, 5656
    assert seq_rep_n(s, 2) == pytest.approx(1 - 2 / 5)
    assert seq_rep_n([1, 2, 3], 4) == 0.0
    # pooled over orders 1..4: 6 + 5 + 4 + 3 = 18 n-grams, 2 distinct per order
    assert seq_rep_pooled(s) == pytest.approx(1 - 8 / 18)


def test_distinct_n_over_a_batch():
    batch = [["the", "cat"], ["the", "dog"]]
    assert distinct_n(batch, 1) == pytest.approx(3 / 4)
    assert distinct_n(batch, 2) == 1.0
    assert distinct_n(batch, 3) == 0.0


def test_find_loop_anywhere_and_at_the_end():
    assert find_loop("xabababab") == Loop(start=1, period=2, repeats=4)
    assert find_loop("xabababab", at_end=True) == Loop(start=1, period=2, repeats=4)
    assert find_loop("abcabcabcxyz") == Loop(start=0, period=3, repeats=3)
    assert find_loop("abcabcabcxyz", at_end=True) is None
    assert find_loop("the the cat") is None  # two copies are not a loop by default
    assert find_loop("aaab", min_repeats=3) == Loop(start=0, period=1, repeats=3)
    words = "i think that i think that i think that".split()
    assert find_loop(words, at_end=True) == Loop(start=0, period=3, repeats=3)
    assert find_loop("abab" * 10, max_period=1) is None


def test_repetition_metrics_of_a_batch_with_eos_and_padding():
    looped = [5, 6, 5, 6, 5, 6]
    plain = [1, 2, 3]
    m = repetition_metrics([looped, plain])
    assert m["loop_fraction"] == 0.5 and m["loop_at_end_fraction"] == 0.5
    assert m["seq_rep_4"] == pytest.approx((1 / 3 + 0) / 2)
    assert m["rep_w"] == pytest.approx((4 / 6 + 0) / 2)
    assert m["uniq"] == 5 and m["mean_length"] == 4.5 and m["sequences"] == 2
    # the same batch as a padded tensor, with eos = 9 and pad = 0
    t = torch.tensor([[5, 6, 5, 6, 5, 6, 9, 7], [1, 2, 3, 9, 0, 0, 0, 0]])
    assert repetition_metrics(t, eos=9, pad=0) == m
    with pytest.raises(KexueError):
        repetition_metrics([])


def test_estimate_bigram_by_hand():
    chain = estimate_bigram([["a", "b", "a"], ["b"]])
    # a: a->b once, a->eos once; b: b->a once, b->eos once
    assert chain.tokens == ["a", "b"]
    assert chain.P.toarray() == pytest.approx(np.array([[0, 0.5], [0.5, 0]]))
    assert chain.start == pytest.approx([0.5, 0.5])
    smooth = estimate_bigram([["a", "b", "a"], ["b"]], smoothing=1.0)
    assert smooth.P.toarray() == pytest.approx(np.array([[1, 2], [2, 1]]) / 5)  # (c + 1) / (2 + 3)
