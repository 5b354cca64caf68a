"""Search strategies and the decode loop on hand-written probability tables."""

import itertools
import math

import pytest
import torch

from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, MinLength, Sample, Stopping, TopK, decode

EOS, A, B = 0, 1, 2
# p(next | prefix) for a 3-token vocabulary; unlisted prefixes end almost surely.
TABLE = {
    (): [0.1, 0.5, 0.4],
    (A,): [0.4, 0.3, 0.3],
    (B,): [0.9, 0.05, 0.05],
}
END = [0.98, 0.01, 0.01]


def table_prob(prefix):
    return TABLE.get(tuple(prefix), END)


class TableLM:
    """A step function that reads the table; its state is the generated prefix (N, t)."""

    def __call__(self, tokens, state):
        state = tokens[:, 1:] if state is None else torch.cat([state, tokens], 1)  # prompt is one bos token
        probs = torch.tensor([table_prob(row.tolist()) for row in state])
        return probs.log(), state


def sequence_logp(seq):
    return sum(math.log(table_prob(seq[:i])[tok]) for i, tok in enumerate(seq))


def brute_force_best(max_len, length_penalty):
    best, best_score = None, -math.inf
    for n in range(1, max_len + 1):
        for body in itertools.product([A, B], repeat=n - 1):
            seq = list(body) + [EOS]
            score = sequence_logp(seq) / n**length_penalty
            if score > best_score:
                best, best_score = seq, score
    return best, best_score


def test_greedy_follows_the_argmax_and_misses_the_best():
    out = decode(TableLM(), torch.zeros(1, 1, dtype=torch.long), search=Greedy(), stopping=Stopping(5, EOS))
    assert out.sequences() == [[A, EOS]]
    assert out.stop_reasons == ["eos"] and out.finished.tolist() == [True]
    assert torch.allclose(out.log_probs, torch.tensor([[math.log(0.5), math.log(0.4)]]))


@pytest.mark.parametrize("length_penalty", [0.0, 1.0])
def test_beam_finds_the_known_best_sequence(length_penalty):
    best, best_score = brute_force_best(4, length_penalty)
    assert best == [B, EOS]  # p = 0.36 beats greedy's [A, EOS] (0.2)
    prompt = torch.zeros(2, 1, dtype=torch.long)
    out = decode(TableLM(), prompt, search=Beam(2, length_penalty, early_stopping=True), stopping=Stopping(4, EOS))
    assert out.sequences() == [best, best]
    assert out.scores[0].item() == pytest.approx(best_score, rel=1e-5)
    assert out.stop_reasons == ["eos", "eos"]
    assert out.log_probs[0].sum().item() == pytest.approx(math.log(0.36), rel=1e-5)


def test_beam_of_one_is_greedy():
    out = decode(TableLM(), torch.zeros(1, 1, dtype=torch.long), search=Beam(1, 0.0), stopping=Stopping(5, EOS))
    assert out.sequences() == [[A, EOS]]


def test_length_cap_and_min_length():
    prompt = torch.zeros(1, 1, dtype=torch.long)
    out = decode(TableLM(), prompt, [MinLength(3, EOS)], Greedy(), Stopping(3, EOS))
    # eos masked while the sequence (bos included) is shorter than 3: A, then A (tie with B), then eos
    assert out.sequences() == [[A, A, EOS]] and out.stop_reasons == ["eos"]
    out = decode(TableLM(), prompt, search=Greedy(), stopping=Stopping(1, EOS))
    assert out.stop_reasons == ["max_length"] and out.finished.tolist() == [False] and out.lengths.tolist() == [1]
    # min length >= max length would mask eos at every step: a config error
    with pytest.raises(KexueError, match="never stop"):
        decode(TableLM(), prompt, [MinLength(3, EOS)], Greedy(), Stopping(2, EOS))


def test_sampling_uses_the_generator_and_the_table():
    prompt = torch.zeros(4000, 1, dtype=torch.long)
    runs = [
        decode(
            TableLM(), prompt, search=Sample(), stopping=Stopping(1, EOS), generator=torch.Generator().manual_seed(7)
        )
        for _ in range(2)
    ]
    assert torch.equal(runs[0].tokens, runs[1].tokens)
    freq = torch.bincount(runs[0].tokens[:, 0], minlength=3).float() / 4000
    assert torch.allclose(freq, torch.tensor(TABLE[()]), atol=0.03)
    # top-1 sampling is greedy; finished rows are padded and keep their reason
    out = decode(TableLM(), prompt[:3], [TopK(1)], Sample(), Stopping(6, EOS), torch.Generator().manual_seed(0))
    assert out.sequences() == [[A, EOS]] * 3 and out.stop_reasons == ["eos"] * 3


class PrefixLM:
    """Each row's logits depend on its own prefix only (seeded by it): the row's first token sets how
    soon eos becomes likely, so rows of a batch finish at different steps. Records rows per call."""

    V = 7

    def __init__(self):
        self.rows = []

    def __call__(self, tokens, state):
        state = tokens if state is None else torch.cat([state, tokens], 1)
        self.rows.append(len(state))
        out = []
        for row in state.tolist():
            g = torch.Generator().manual_seed(hash(tuple(row)) % 2**31)
            logits = torch.randn(self.V, generator=g)
            logits[EOS] += 0.8 * (len(row) - 1) * (1 + row[0]) / self.V  # later rows' eos comes sooner
            out.append(logits)
        return torch.stack(out), state


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0])
def test_beam_rows_that_are_decided_leave_the_batch_with_the_same_results(early_stopping, length_penalty):
    prompt = torch.arange(1, 7)[:, None]  # six rows, eos likely at different steps
    out, lm = {}, {}
    for drop in (False, True):
        lm[drop] = PrefixLM()
        search = Beam(3, length_penalty, early_stopping, drop_finished=drop)
        out[drop] = decode(lm[drop], prompt, search=search, stopping=Stopping(30, EOS))
    for field in ("tokens", "log_probs", "lengths", "finished", "scores"):
        assert torch.equal(getattr(out[True], field), getattr(out[False], field)), field
    assert out[True].stop_reasons == out[False].stop_reasons
    assert len(set(out[True].lengths.tolist())) > 1  # rows ended at different lengths
    assert set(lm[False].rows) == {18}  # without dropping every call computes all 6 x 3 rows
    assert lm[True].rows[0] == 18 and lm[True].rows[-1] < 18 and lm[True].rows == sorted(lm[True].rows, reverse=True)
    assert all(n % 3 == 0 for n in lm[True].rows)  # a row leaves with all its beams
    assert sum(lm[True].rows) < sum(lm[False].rows)


def _flat_top(scores, running, K):
    """HF's selection: the top 2K of all K x V sums of a row (the reference of the fast path)."""
    b, V = running.shape[0], scores.shape[1]
    top, flat = torch.topk((scores.view(b, K, V) + running[:, :, None]).view(b, K * V), 2 * K, dim=1)
    lp = scores.view(b, K * V).gather(1, flat)
    return top, flat // V, flat % V, lp


def test_the_per_beam_top_k_returns_what_the_top_k_over_all_sums_returns():
    from kexue.generation.search import _top_candidates

    g = torch.Generator().manual_seed(0)
    K, b, V = 4, 3, 50
    hits = 0
    for trial in range(200):
        scores = torch.randn(b * K, V, generator=g).log_softmax(-1)
        running = torch.randn(b, K, generator=g) * 3
        if trial % 4 == 1:  # the first step: only beam 0 may expand
            running[:, 1:] = -1.0e9
        got = _top_candidates(scores, running, K)
        if got is not None:
            hits += 1
            for x, y in zip(got, _flat_top(scores, running, K)):
                assert torch.equal(x, y)
    assert hits == 200  # continuous random scores: no ties, the fast path always applies


def test_the_per_beam_top_k_declines_ties_and_infinite_scores():
    from kexue.generation.search import _top_candidates

    K = 2
    scores = torch.full((2, 10), -5.0)  # every token ties: the order of the sums is the top-k's to decide
    assert _top_candidates(scores, torch.zeros(1, 2), K) is None
    scores = torch.randn(2, 10).log_softmax(-1)
    scores[:, 1:] = -math.inf  # one token per beam left: the third- and fourth-best sums are -inf
    assert _top_candidates(scores, torch.zeros(1, 2), K) is None
    scores = torch.randn(2, 10)
    scores[1, 3] = math.nan
    assert _top_candidates(scores, torch.zeros(1, 2), K) is None


def test_beam_search_with_tied_scores_matches_the_top_k_over_all_sums(monkeypatch):
    """Quantised log-probs tie often; the fast path then defers to the full top-k, so a beam
    search with it returns exactly what one without it returns."""
    import kexue.generation.search as search_module

    g = torch.Generator().manual_seed(3)
    table = (torch.randn(64, 12, generator=g) * 2).round().log_softmax(-1)  # few distinct values

    def step(tokens, state):
        last = tokens[:, -1] * 7 + tokens.shape[1]
        return table[last % 64], state

    prompt = torch.randint(0, 12, (3, 2), generator=g)
    args = dict(search=Beam(3, 1.0), stopping=Stopping(9, 0))
    fast = decode(step, prompt, **args)
    monkeypatch.setattr(search_module, "_top_candidates", lambda *a: None)
    slow = decode(step, prompt, **args)
    assert torch.equal(fast.tokens, slow.tokens) and torch.equal(fast.scores, slow.scores)
