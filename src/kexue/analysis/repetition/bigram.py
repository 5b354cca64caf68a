"""Bigram chains estimated from tokenised text: the P that the repetition theory studies."""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kexue.errors import KexueError


@dataclass
class BigramChain:
    """A bigram model of a corpus: P (n, n) CSR between tokens (1 − row sum = eos), first-token distribution."""

    P: sp.csr_matrix
    start: np.ndarray  # (n,) distribution of the first token of a sentence
    tokens: list  # state i is tokens[i]
    counts: np.ndarray  # (n,) occurrences of each token


def estimate_bigram(sequences: Iterable[Sequence[Hashable]], smoothing: float = 0.0) -> BigramChain:
    """Maximum-likelihood (or add-``smoothing``) bigram chain of tokenised sentences, with eos.

    Each sentence contributes its transitions and a final transition to eos. States are the
    distinct tokens in order of first appearance. With ``smoothing`` α > 0 every row gets α added
    to each of its n + 1 outcomes (dense rows, so only for small vocabularies).

    Example: ``estimate_bigram([["a", "b"], ["a"]]).P`` -> [[0, .5], [0, 0]] (a -> b or eos; b -> eos).
    """
    index: dict = {}
    flat: list[int] = []
    ends: list[int] = []
    for sentence in sequences:
        if len(sentence) == 0:
            continue
        for tok in sentence:
            flat.append(index.setdefault(tok, len(index)))
        ends.append(len(flat))
    if not flat:
        raise KexueError("no tokens to estimate a bigram chain from")
    n = len(index)
    ids = np.asarray(flat, dtype=np.int64)
    last = np.zeros(len(ids), dtype=bool)
    last[np.asarray(ends) - 1] = True
    first = np.concatenate([[0], np.asarray(ends[:-1])])
    src, dst = ids[:-1][~last[:-1]], ids[1:][~last[:-1]]
    counts = np.bincount(ids, minlength=n).astype(np.float64)  # each occurrence has one successor or eos
    C = sp.csr_matrix((np.ones(len(src)), (src, dst)), shape=(n, n))
    C.sum_duplicates()
    if smoothing > 0:
        if n > 5000:
            raise KexueError(f"add-α smoothing makes dense rows; {n} tokens is too many (use smoothing=0)")
        P = sp.csr_matrix((C.toarray() + smoothing) / (counts[:, None] + smoothing * (n + 1)))
    else:
        P = sp.csr_matrix(C.multiply(1.0 / counts[:, None]))
    start = np.bincount(ids[first], minlength=n) / len(first)
    tokens = [None] * n
    for tok, i in index.items():
        tokens[i] = tok
    return BigramChain(P=P, start=start, tokens=tokens, counts=counts)
