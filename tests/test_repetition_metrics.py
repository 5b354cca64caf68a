"""Text metrics (kexue.analysis.text: rep-w, rep-r, seq-rep-n, distinct-n, loops) on hand-made token lists,
and bigram chains from text."""

import numpy as np
import pytest
import torch

from kexue.analysis import repetition, text
from kexue.analysis.repetition import estimate_bigram
from kexue.analysis.text import (
    Loop,
    distinct_n,
    find_loop,
    ngrams,
    rep_r,
    rep_w,
    repetition_metrics,
    seq_rep_n,
    seq_rep_pooled,
    token_lists,
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


def test_ngrams_and_token_lists_by_hand():
    assert ngrams("abc", 2) == [("a", "b"), ("b", "c")]
    assert ngrams([1, 2], 3) == []
    assert ngrams(["x"], 1) == [("x",)]
    # cut at the first eos (excluded), then drop padding; arrays and tensors become lists
    assert token_lists([[4, 2, 9, 7, 9], [0, 3, 0]], eos=9, pad=0) == [[4, 2], [3]]
    assert token_lists(np.array([[1, 9], [9, 1]]), eos=9) == [[1], []]
    assert token_lists(torch.tensor([[5, 0, 6]]), pad=0) == [[5, 6]]


def test_every_metric_of_a_hand_made_batch_exactly():
    # "a b a b a b" holds a 2-token loop three times; "x y z x" repeats x once, 3 tokens apart
    batch = [list("ababab"), list("xyzx")]
    m = repetition_metrics(batch)
    assert m == {
        "rep_w": pytest.approx((4 / 6 + 1 / 4) / 2),  # a b a b a b: the last four; x y z x: the last x
        "rep_r": pytest.approx((1 + 0) / 2),  # (a,b) twice and (b,a) twice cover all six tokens
        "seq_rep_4": pytest.approx((1 - 2 / 3 + 0) / 2),  # abab, baba, abab | xyzx
        # orders 1-4 pooled: ababab 6+5+4+3 = 18 grams, 2 distinct each -> 1 - 8/18; xyzx 4+3+2+1 = 10, 3+3+2+1 = 9
        "seq_rep_pooled": pytest.approx((1 - 8 / 18 + 1 - 9 / 10) / 2),
        "distinct_1": pytest.approx(5 / 10),  # a b x y z of 10 tokens
        "distinct_2": pytest.approx(5 / 8),  # ab ba | xy yz zx of 5 + 3 bigrams
        "distinct_4": pytest.approx(3 / 4),  # abab baba abab | xyzx
        "uniq": 5.0,
        "loop_fraction": 0.5,
        "loop_at_end_fraction": 0.5,
        "mean_length": 5.0,
        "sequences": 2.0,
    }
    # window and order are parameters: rep_w with window 2 misses the x three tokens back
    m2 = repetition_metrics(batch, window=2, n=2)
    assert m2["rep_w"] == pytest.approx((4 / 6 + 0) / 2) and m2["seq_rep_2"] == pytest.approx((1 - 2 / 5 + 0) / 2)
    assert "seq_rep_4" not in m2 and m2["distinct_2"] == m["distinct_2"]


def test_seq_rep_pooled_orders_and_loops_by_period():
    assert seq_rep_pooled("aaaa", orders=(1,)) == pytest.approx(1 - 1 / 4)
    assert seq_rep_pooled("ab", orders=(3,)) == 0.0
    loop = find_loop("qqabcabcabc", at_end=True)
    assert loop == Loop(start=2, period=3, repeats=3) and loop.end == 11
    assert find_loop("qqabcabcabc", min_repeats=4) is None


def test_the_repetition_package_re_exports_the_text_metrics():
    for name in (
        "rep_w",
        "rep_r",
        "seq_rep_n",
        "seq_rep_pooled",
        "distinct_n",
        "find_loop",
        "Loop",
        "repetition_metrics",
    ):
        assert getattr(repetition, name) is getattr(text, name)


def test_the_text_metrics_import_nothing_heavy():
    """Articles that only measure text need neither numpy, scipy nor torch for it."""
    import subprocess
    import sys

    code = "import sys, kexue.analysis.text; print(sorted(m for m in ('numpy', 'scipy', 'torch') if m in sys.modules))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
