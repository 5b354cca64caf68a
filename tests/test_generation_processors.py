"""Every logits processor on hand-made scores with exact expected values, plus properties."""

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.errors import KexueError
from kexue.generation import (
    ConsistentTopK,
    ConsistentTopP,
    EosLengthBoost,
    ForceEosAtMaxLength,
    MinLength,
    MinP,
    NoRepeatNGram,
    Processors,
    RepetitionPenalty,
    Temperature,
    TopK,
    TopP,
    Typical,
)

INF = math.inf


def probs_scores(p):
    """Log of a hand-made probability row: softmax gives back exactly these probabilities."""
    return torch.tensor([p]).log()


def test_temperature_divides():
    s = torch.tensor([[2.0, -4.0, 0.0]])
    assert torch.equal(Temperature(2.0)(None, s), torch.tensor([[1.0, -2.0, 0.0]]))
    with pytest.raises(KexueError):
        Temperature(0.0)


def test_top_k_keeps_k_best():
    s = torch.tensor([[1.0, 4.0, 3.0, 2.0]])
    assert torch.equal(TopK(2)(None, s), torch.tensor([[-INF, 4.0, 3.0, -INF]]))
    assert torch.equal(TopK(10)(None, s), s)  # k larger than the vocabulary keeps everything
    with pytest.raises(KexueError):
        TopK(0)


def test_top_p_keeps_crossing_token():
    s = probs_scores([0.5, 0.3, 0.15, 0.05])
    # 0.5 < 0.6, 0.5 + 0.3 crosses 0.6: keep the first two
    out = TopP(0.6)(None, s)
    assert torch.isfinite(out).tolist() == [[True, True, False, False]]
    assert torch.isfinite(TopP(0.5)(None, s)).tolist() == [[True, False, False, False]]
    assert torch.isfinite(TopP(0.81)(None, s)).tolist() == [[True, True, True, False]]
    # p = 0 keeps the single best token instead of failing (transformers #24111)
    assert torch.isfinite(TopP(0.0)(None, s)).tolist() == [[True, False, False, False]]
    assert torch.equal(TopP(1.0)(None, s), s)


def test_top_p_threshold_path_equals_the_sort_bit_for_bit():
    """The CPU fast path (values sorted by numpy, a threshold on the scores) gives HF's sorted mask."""
    g = torch.Generator().manual_seed(0)
    fast = 0
    for trial in range(400):
        vocab, rows = int(torch.randint(2, 200, (1,), generator=g)), int(torch.randint(1, 4, (1,), generator=g))
        s = torch.randn(rows, vocab, generator=g) * float(torch.rand(1, generator=g) * 5)
        if trial % 3 == 0:
            s = (s * 2).round() / 2  # many ties
        if trial % 5 == 0:
            s[:, : vocab // 3] = -INF
        top_p = TopP(float(torch.rand(1, generator=g)), int(torch.randint(1, 4, (1,), generator=g)))
        by_sort, by_threshold = top_p._by_sort(s), top_p._by_threshold(s)
        if by_threshold is not None:
            fast += 1
            assert torch.equal(by_threshold, by_sort)
        assert torch.equal(top_p(None, s), by_sort)
    assert fast > 300  # the fast path is the usual one


def test_top_p_tie_across_the_boundary_falls_back_to_the_sort():
    # 0.4 | 0.2 0.2 | 0.2: p = 0.5 keeps the 0.4 and one of the tied 0.2s; which one is the sort's call
    s = probs_scores([0.2, 0.4, 0.2, 0.2])
    assert TopP(0.5)._by_threshold(s) is None
    assert int(torch.isfinite(TopP(0.5)(None, s)).sum()) == 2


def test_min_p_relative_to_best():
    s = probs_scores([0.5, 0.3, 0.15, 0.05])
    # threshold 0.4 * 0.5 = 0.2
    assert torch.isfinite(MinP(0.4)(None, s)).tolist() == [[True, True, False, False]]
    assert torch.isfinite(MinP(1.0)(None, s)).tolist() == [[True, False, False, False]]


def test_typical_keeps_tokens_closest_to_entropy():
    p = torch.tensor([0.4, 0.3, 0.2, 0.1])
    s = p.log()[None]
    h = -(p * p.log()).sum()  # 1.2799
    distance = (-p.log() - h).abs()  # [0.364, 0.076, 0.330, 1.023]
    order = distance.argsort()  # [1, 2, 0, 3]
    assert order.tolist() == [1, 2, 0, 3]
    # mass 0.45: 0.3 < 0.45, 0.3 + 0.2 crosses -> keep tokens 1 and 2
    assert torch.isfinite(Typical(0.45)(None, s)).tolist() == [[False, True, True, False]]
    assert torch.isfinite(Typical(0.2)(None, s)).tolist() == [[False, True, False, False]]


def test_repetition_penalty_handles_negative_scores():
    s = torch.tensor([[2.0, -2.0, 1.0, -1.0]])
    tokens = torch.tensor([[0, 1, 1]])  # tokens 0 and 1 seen (1 twice: penalised once)
    out = RepetitionPenalty(2.0)(tokens, s)
    assert torch.equal(out, torch.tensor([[1.0, -4.0, 1.0, -1.0]]))
    with pytest.raises(KexueError):
        RepetitionPenalty(0.0)


def test_no_repeat_ngram_bans_completions():
    s = torch.zeros(2, 6)
    tokens = torch.tensor([[1, 2, 3, 1, 2], [4, 4, 4, 5, 4]])
    out = NoRepeatNGram(3)(tokens, s)
    # row 0: suffix (1, 2) was followed by 3; row 1: suffix (5, 4) never seen before
    assert torch.isinf(out).tolist() == [[False, False, False, True, False, False], [False] * 6]
    out2 = NoRepeatNGram(2)(tokens, s)
    # row 1: suffix (4,) was followed by 4 and 5
    assert torch.isinf(out2[1]).tolist() == [False, False, False, False, True, True]
    assert torch.isinf(NoRepeatNGram(1)(tokens, s)[0]).tolist() == [False, True, True, True, False, False]
    assert torch.equal(NoRepeatNGram(6)(tokens, s), s)  # sequence shorter than n


def test_min_length_masks_eos_until_reached():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    p = MinLength(4, eos_token_id=2)
    assert torch.equal(p(torch.zeros(1, 3, dtype=torch.long), s), torch.tensor([[1.0, 2.0, -INF]]))
    assert torch.equal(p(torch.zeros(1, 4, dtype=torch.long), s), s)
    with pytest.raises(KexueError, match="never stop"):
        MinLength(10, eos_token_id=2, max_length=10)


def test_force_eos_at_max_length():
    s = torch.tensor([[1.0, 2.0, 3.0]])
    p = ForceEosAtMaxLength(5, eos_token_id=0)
    assert torch.equal(p(torch.zeros(1, 4, dtype=torch.long), s), torch.tensor([[0.0, -INF, -INF]]))
    assert torch.equal(p(torch.zeros(1, 3, dtype=torch.long), s), s)


def test_eos_length_boost_is_exponential():
    s = torch.tensor([[1.0, -2.0, 0.5]])
    p = EosLengthBoost(start=2, factor=1.5, eos_token_id=1, prompt_length=3)
    assert torch.equal(p(torch.zeros(1, 5, dtype=torch.long), s), s)  # 2 generated: not yet
    out = p(torch.zeros(1, 7, dtype=torch.long), s)  # 4 generated: 2 past start
    assert out[0, 1].item() == pytest.approx(-2.0 + 2.0 * (1.5**2 - 1))
    assert out[0, 0] == 1.0 and out[0, 2] == 0.5


def test_consistent_variants_keep_eos():
    s = probs_scores([0.5, 0.3, 0.15, 0.05])
    out = ConsistentTopK(1, eos_token_id=3)(None, s)
    assert torch.equal(out, torch.tensor([[math.log(0.5), -INF, -INF, math.log(0.05)]]))
    q = ConsistentTopP(0.6, eos_token_id=3)(None, s).softmax(-1)
    assert torch.allclose(q, torch.tensor([[0.5, 0.3, 0.0, 0.05]]) / 0.85)


def test_fixed_order_and_eos_survives_later_truncation():
    s = probs_scores([0.5, 0.3, 0.15, 0.05])
    # temperature runs before top-k however the list is given
    a = Processors([TopK(2), Temperature(0.5)])(None, s)
    b = TopK(2)(None, Temperature(0.5)(None, s))
    assert torch.equal(a, b)
    assert [type(p).__name__ for p in Processors([TopK(2), MinLength(1, 0), Temperature(0.5)])] == [
        "MinLength",
        "Temperature",
        "TopK",
    ]
    # a plain top-p after a consistent top-k would drop eos; the chain gives it back
    out = Processors([ConsistentTopK(3, eos_token_id=3), TopP(0.5)])(None, s)
    assert torch.isfinite(out).tolist() == [[True, False, False, True]]
    # but a minimum length still masks eos in consistent mode
    out = Processors([ConsistentTopK(1, eos_token_id=3), MinLength(5, 3)])(torch.zeros(1, 2, dtype=torch.long), s)
    assert out[0, 3] == -INF


rows = st.lists(st.floats(-20, 20, allow_nan=False), min_size=3, max_size=12)


def all_processors(eos):
    return [
        TopK(2),
        TopP(0.5),
        TopP(0.0),
        MinP(0.3),
        Typical(0.7),
        Temperature(0.7),
        RepetitionPenalty(1.3),
        NoRepeatNGram(2),
        ConsistentTopK(1, eos),
        ConsistentTopP(0.3, eos),
        MinLength(2, eos),
        EosLengthBoost(0, 1.2, eos),
    ]


@settings(max_examples=60, deadline=None)
@given(rows, st.integers(0, 2), st.lists(st.integers(0, 2), min_size=1, max_size=6))
def test_properties(row, eos, history):
    scores = torch.tensor([row])
    before = scores.clone()
    tokens = torch.tensor([history])
    tokens_before = tokens.clone()
    for p in all_processors(eos):
        out = p(tokens, scores)
        assert torch.equal(scores, before) and torch.equal(tokens, tokens_before)  # never edits input
        if not isinstance(p, (NoRepeatNGram, MinLength)):
            q = out.softmax(-1)  # at least one token kept: a valid distribution
            assert torch.isfinite(q).all() and q.sum().item() == pytest.approx(1.0, abs=1e-5)
        if isinstance(p, (ConsistentTopK, ConsistentTopP)):
            assert out[0, eos] == scores[0, eos]
    chain = Processors([ConsistentTopK(1, eos), TopP(0.1), MinP(0.9), Typical(0.1)])(tokens, scores)
    assert chain[0, eos] == scores[0, eos]
