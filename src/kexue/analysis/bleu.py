"""BLEU of generated text against a large reference set, and self-BLEU (Wang & Cho 2019, bert-gen).

bert-gen scores a set of generations as ONE corpus BLEU in which every hypothesis has the whole
reference set as its references (multi-reference clipping: an n-gram counts up to its largest
count in any one reference; the brevity penalty takes the closest reference length). Handing
5,000 references per hypothesis to sacrebleu re-reads every reference once per hypothesis;
here the clipping table (max count of each n-gram over the references) is built once, and the
statistics go to sacrebleu's own formula (``BLEU.compute_bleu``, no smoothing, 4-grams), so the
numbers are sacrebleu's (a test checks equality with ``sacrebleu.corpus_bleu`` on a small case).

Self-BLEU: each sample against all the other samples, pooled into one corpus BLEU the same way
(bert-gen's convention, not Texygen's average of sentence BLEUs). Lower is more diverse.
Inputs are lists of words (already tokenised, e.g. PTB words; WordPiece ``##`` merged).
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Sequence

from kexue.errors import KexueError

ORDER = 4


def _ngrams(words: Sequence[str], n: int) -> Counter:
    return Counter(tuple(words[i : i + n]) for i in range(len(words) - n + 1))


def _sacrebleu_score(correct, total, sys_len, ref_len) -> float:
    try:
        from sacrebleu.metrics.bleu import BLEU
    except ImportError:
        raise KexueError("BLEU needs sacrebleu (pip install sacrebleu)") from None
    return BLEU.compute_bleu(correct, total, sys_len, ref_len, smooth_method="none", max_ngram_order=ORDER).score


def _closest(lengths: list[int], n: int) -> int:
    """Reference length closest to ``n`` (ties: the shorter, as sacrebleu)."""
    i = bisect.bisect_left(lengths, n)
    near = [lengths[j] for j in (i - 1, i) if 0 <= j < len(lengths)]
    return min(near, key=lambda r: (abs(r - n), r))


class ReferenceSet:
    """The clipping table of a reference set: for each n-gram, its largest count in one reference."""

    def __init__(self, references: Sequence[Sequence[str]]):
        if not references:
            raise KexueError("BLEU needs at least one reference sentence")
        self.max_counts: dict[tuple, int] = {}
        for ref in references:
            for n in range(1, ORDER + 1):
                for g, c in _ngrams(ref, n).items():
                    if c > self.max_counts.get(g, 0):
                        self.max_counts[g] = c
        self.lengths = sorted(len(r) for r in references)

    def stats(self, hyp: Sequence[str]) -> tuple[list[int], list[int], int, int]:
        correct, total = [0] * ORDER, [0] * ORDER
        for n in range(1, ORDER + 1):
            grams = _ngrams(hyp, n)
            total[n - 1] = sum(grams.values())
            correct[n - 1] = sum(min(c, self.max_counts.get(g, 0)) for g, c in grams.items())
        return correct, total, len(hyp), _closest(self.lengths, len(hyp))


def _pool(rows) -> float:
    correct, total, sys_len, ref_len = [0] * ORDER, [0] * ORDER, 0, 0
    for c, t, s, r in rows:
        correct = [a + b for a, b in zip(correct, c)]
        total = [a + b for a, b in zip(total, t)]
        sys_len, ref_len = sys_len + s, ref_len + r
    return _sacrebleu_score(correct, total, sys_len, ref_len)


def corpus_bleu_all_refs(hypotheses: Sequence[Sequence[str]], references: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) of ``hypotheses``, each scored against ALL of ``references``."""
    if not hypotheses:
        raise KexueError("BLEU needs at least one hypothesis")
    refs = ReferenceSet(references)
    return _pool(refs.stats(h) for h in hypotheses)


def self_bleu(samples: Sequence[Sequence[str]]) -> float:
    """Corpus BLEU (0-100) of each sample against all the others (bert-gen); needs >= 2 samples.

    One pass: per n-gram the two largest counts and who holds the largest, so sample i clips
    with the largest count among the others.
    """
    if len(samples) < 2:
        raise KexueError("self-BLEU needs at least 2 samples")
    top: dict[tuple, list[int]] = {}  # n-gram -> [largest, holder, second largest]
    counts = [[_ngrams(s, n) for n in range(1, ORDER + 1)] for s in samples]
    for i, per_n in enumerate(counts):
        for grams in per_n:
            for g, c in grams.items():
                t = top.setdefault(g, [0, -1, 0])
                if c > t[0]:
                    t[:] = [c, i, t[0]]
                elif c > t[2]:
                    t[2] = c
    lengths = sorted(len(s) for s in samples)
    rows = []
    for i, per_n in enumerate(counts):
        correct = [sum(min(c, top[g][2] if top[g][1] == i else top[g][0]) for g, c in grams.items()) for grams in per_n]
        total = [sum(grams.values()) for grams in per_n]
        others = lengths.copy()
        others.remove(len(samples[i]))
        rows.append((correct, total, len(samples[i]), _closest(others, len(samples[i]))))
    return _pool(rows)
