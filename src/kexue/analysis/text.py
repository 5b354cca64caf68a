"""Metrics of generated text on plain token sequences: repetition, diversity, loops.

Shared by the articles that generate text (decoding that stops, bidirectional decoding, Gibbs
sampling, the theory of repetition). Every function takes token sequences as lists of ids or
strings (a string is a sequence of characters); :func:`repetition_metrics` also takes a (B, T)
tensor or array and cuts it at eos / drops padding. Definitions follow the code of Fu et al.
(AAAI 2021, github.com/fuzihaofzh/repetition-problem-nlg) and Welleck et al. (ICLR 2020):
per sequence, then averaged over sequences; distinct-n is pooled over the batch.

Example::

    repetition_metrics([[5, 6, 5, 6, 5, 6], [1, 2, 3]])["loop_fraction"]   # -> 0.5
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from kexue.errors import KexueError


def ngrams(seq: Sequence[Hashable], n: int) -> list[tuple]:
    """The n-grams of one sequence in order, as tuples: ``ngrams("abc", 2)`` -> [('a', 'b'), ('b', 'c')]."""
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def rep_w(seq: Sequence[Hashable], window: int = 16) -> float:
    """Share of tokens already present among the previous ``window`` tokens (Fu et al.: w = 16).

    Example: ``rep_w("abab", 16)`` -> 0.5 (the second a and b).
    """
    if not len(seq):
        return 0.0
    hits = sum(1 for i in range(len(seq)) if seq[i] in seq[max(0, i - window) : i])
    return hits / len(seq)


def rep_r(seq: Sequence[Hashable]) -> float:
    """Share of tokens covered by a bigram that occurs more than once in the sequence (Fu et al.).

    Both tokens of every such bigram position are marked. Example: ``rep_r("abcab")`` -> 0.8.
    """
    if len(seq) < 2:
        return 0.0
    grams = ngrams(seq, 2)
    counts = Counter(grams)
    marked = [False] * len(seq)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            marked[i] = marked[i + 1] = True
    return sum(marked) / len(seq)


def seq_rep_n(seq: Sequence[Hashable], n: int = 4) -> float:
    """Welleck et al.: 1 − |unique n-grams| / |n-grams| of one order n (0 when there are none).

    Example: ``seq_rep_n([5, 6, 5, 6, 5, 6], 4)`` -> 1/3 (5656, 6565, 5656).
    """
    grams = ngrams(seq, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def seq_rep_pooled(seq: Sequence[Hashable], orders: Sequence[int] = (1, 2, 3, 4)) -> float:
    """Fu et al.'s code: n-grams of all ``orders`` pooled, 1 − unique / total (0 when there are none)."""
    grams = [g for n in orders for g in ngrams(seq, n)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float:
    """Distinct-n over a batch: unique n-grams / all n-grams of all sequences (0 when none).

    Example: ``distinct_n([["the", "cat"], ["the", "dog"]], 1)`` -> 0.75.
    """
    grams = [g for s in sequences for g in ngrams(s, n)]
    return len(set(grams)) / len(grams) if grams else 0.0


@dataclass(frozen=True)
class Loop:
    """``repeats`` consecutive copies of a block of ``period`` tokens starting at ``start``."""

    start: int
    period: int
    repeats: int

    @property
    def end(self) -> int:
        return self.start + self.period * self.repeats


def find_loop(seq: Sequence[Hashable], min_repeats: int = 3, max_period: int = 32, at_end: bool = False) -> Loop | None:
    """The longest stretch made of ≥ ``min_repeats`` back-to-back copies of one block, or None.

    With ``at_end``, only a loop that reaches the last token counts (a decoder stuck until its
    length limit). Shorter periods win ties. Example: ``find_loop("xabababab")`` ->
    ``Loop(start=1, period=2, repeats=4)``.
    """
    toks = list(seq)
    best: Loop | None = None
    for p in range(1, min(max_period, len(toks) // max(min_repeats, 1)) + 1):
        i = p
        while i < len(toks):
            if toks[i] != toks[i - p]:
                i += 1
                continue
            j = i
            while j < len(toks) and toks[j] == toks[j - p]:
                j += 1
            # toks[i-p : j] has period p; it holds (j - i + p) // p whole copies
            copies = (j - i + p) // p
            if copies >= min_repeats and (not at_end or j == len(toks)):
                start = j - copies * p if at_end else i - p
                cand = Loop(start=start, period=p, repeats=copies)
                if best is None or cand.period * cand.repeats > best.period * best.repeats:
                    best = cand
            i = j
    return best


def token_lists(sequences, eos=None, pad=None) -> list[list]:
    """Sequences (lists, or a (B, T) tensor / array) as plain lists, each cut before its first
    ``eos`` and without ``pad`` tokens. Example: ``token_lists([[4, 2, 9, 7]], eos=9)`` -> [[4, 2]]."""
    if hasattr(sequences, "tolist"):  # tensor or array (B, T)
        sequences = sequences.tolist()
    out = []
    for s in sequences:
        s = list(s)
        if eos is not None and eos in s:
            s = s[: s.index(eos)]
        if pad is not None:
            s = [t for t in s if t != pad]
        out.append(s)
    return out


def repetition_metrics(
    sequences, eos=None, pad=None, window: int = 16, n: int = 4, min_repeats: int = 3, max_period: int = 32
) -> dict[str, float]:
    """All repetition metrics of a batch of generated sequences, as one flat dict.

    Args:
        sequences: list of token sequences (ids or strings), or a (B, T) tensor / array.
        eos: if given, each sequence is cut at its first eos (excluded).
        pad: if given, pad tokens are dropped.
        window: rep-w window (Fu et al.: 16). n: order of seq-rep-n (Welleck et al.: 4).
        min_repeats, max_period: what counts as a loop (see :func:`find_loop`).
    Returns:
        ``rep_w``, ``rep_r``, ``seq_rep_<n>``, ``seq_rep_pooled`` (orders 1..4), means over
        sequences; ``distinct_1``, ``distinct_2``, ``distinct_<n>`` and ``uniq`` (distinct tokens)
        over the batch; ``loop_fraction`` (share of sequences holding a loop anywhere) and
        ``loop_at_end_fraction`` (ending in one); ``mean_length``; ``sequences``.

    Example: ``repetition_metrics([[5, 6, 5, 6, 5, 6], [1, 2, 3]])["loop_fraction"]`` -> 0.5.
    """
    seqs = token_lists(sequences, eos, pad)
    if not seqs:
        raise KexueError("no sequences to measure")

    def mean(f) -> float:
        return math.fsum(float(f(s)) for s in seqs) / len(seqs)

    return {
        "rep_w": mean(lambda s: rep_w(s, window)),
        "rep_r": mean(rep_r),
        f"seq_rep_{n}": mean(lambda s: seq_rep_n(s, n)),
        "seq_rep_pooled": mean(seq_rep_pooled),
        "distinct_1": distinct_n(seqs, 1),
        "distinct_2": distinct_n(seqs, 2),
        f"distinct_{n}": distinct_n(seqs, n),
        "uniq": float(len({t for s in seqs for t in s})),
        "loop_fraction": mean(lambda s: find_loop(s, min_repeats, max_period) is not None),
        "loop_at_end_fraction": mean(lambda s: find_loop(s, min_repeats, max_period, at_end=True) is not None),
        "mean_length": mean(len),
        "sequences": float(len(seqs)),
    }
