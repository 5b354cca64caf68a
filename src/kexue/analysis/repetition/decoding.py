"""The chain a decoder follows: temperature, top-k, top-p and greedy applied to a bigram chain.

Each row of ``P`` is a distribution over the n tokens plus eos (eos = 1 − row sum). A decoder
rewrites every row the way the decoding engine's processors do (same order, same ties), which
turns ``P`` into the chain the decoder samples from; its repetition probability is then the R of
that chain. Greedy makes rows one-hot, so its chain is a deterministic map:
:func:`greedy_cycles` follows it from every token.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kexue.analysis.repetition.matrix import as_transition, row_sums
from kexue.errors import KexueError


def decoding_chain(
    P, top_k: int | None = None, top_p: float | None = None, temperature: float = 1.0, renormalize: bool = True
):
    """The chain a decoder follows when it samples from ``P`` after its logits processors.

    Each row is taken over the n tokens plus eos (eos = 1 − row sum). In the decoding engine's
    order: temperature (p^(1/T), renormalised) → top-k (keep the k largest; ties go to the lower
    index, eos counting as index n) → top-p (keep the smallest prefix of the sorted row whose mass
    reaches p; the first token is always kept) → renormalise. ``top_k=1`` is greedy. With
    ``renormalize=False`` the kept entries keep their (tempered) probabilities and the removed
    mass vanishes, which is not a decoder but the sub-stochastic matrix some analyses use.

    Returns the n × n part of the new chain, of the same kind (dense / CSR) as ``P``; its eos
    probabilities are again 1 − row sum.

    Example: ``decoding_chain(P, top_k=1)`` is the greedy chain: one-hot rows (or all-eos rows).
    """
    dense = not sp.issparse(P)
    P = sp.csr_matrix(as_transition(P))
    if top_k is not None and (int(top_k) != top_k or top_k < 1):
        raise KexueError(f"top_k must be a positive integer, got {top_k}")
    if top_p is not None and not 0 < top_p <= 1:
        raise KexueError(f"top_p must lie in (0, 1], got {top_p}")
    if not temperature > 0:
        raise KexueError(f"temperature must be positive, got {temperature}")
    n = P.shape[0]
    eos = np.clip(1.0 - row_sums(P), 0.0, 1.0)
    eos[eos < 1e-12] = 0.0
    full = sp.hstack([P, sp.csr_matrix(eos[:, None])], format="csr")  # (n, n + 1), eos last
    full.eliminate_zeros()
    rows = np.repeat(np.arange(n), np.diff(full.indptr))
    cols, vals = full.indices.copy(), full.data.copy()
    if temperature != 1.0:
        vals = np.exp(np.log(vals) / temperature)  # p^(1/T); vals > 0 here
        vals /= np.bincount(rows, vals, minlength=n)[rows]
    order = np.lexsort((cols, -vals, rows))  # by row, then descending value, then index
    rows, cols, vals = rows[order], cols[order], vals[order]
    starts = np.searchsorted(rows, np.arange(n))
    rank = np.arange(len(rows)) - starts[rows]
    keep = np.ones(len(rows), dtype=bool)
    if top_k is not None:
        keep &= rank < top_k
    if top_p is not None:
        mass = np.where(keep, vals, 0.0)
        cum = np.cumsum(mass)
        row_start_cum = np.concatenate([[0.0], cum])[starts][rows]
        before = cum - mass - row_start_cum  # mass of the better-ranked kept tokens of the row
        total = np.bincount(rows, mass, minlength=n)[rows]
        keep &= (before < top_p * total * (1 - 1e-12)) | (rank == 0)
    vals = np.where(keep, vals, 0.0)
    if renormalize:
        tot = np.bincount(rows, vals, minlength=n)
        vals = vals / tot[rows]
    sel = keep & (cols < n)
    out = sp.csr_matrix((vals[sel], (rows[sel], cols[sel])), shape=(n, n))
    out.sum_duplicates()
    return out.toarray() if dense else out


def named_chain(P, decoder: str):
    """:func:`decoding_chain` from a short name: ``sample``, ``greedy``, ``top_k:10``, ``top_p:0.9``, ``temp:0.7``.

    Names combine with ``+``, e.g. ``temp:0.7+top_p:0.9``.
    """
    kwargs: dict = {}
    for part in decoder.split("+"):
        name, _, arg = part.strip().partition(":")
        try:
            if name == "sample":
                continue
            if name == "greedy":
                kwargs["top_k"] = 1
            elif name == "top_k":
                kwargs["top_k"] = int(arg)
            elif name == "top_p":
                kwargs["top_p"] = float(arg)
            elif name in ("temp", "temperature"):
                kwargs["temperature"] = float(arg)
            else:
                raise ValueError
        except ValueError:
            raise KexueError(
                f"unknown decoder {part!r}; use sample, greedy, top_k:K, top_p:P, temp:T (joined with +)"
            ) from None
    return decoding_chain(P, **kwargs)


def greedy_successors(P) -> np.ndarray:
    """The greedy next token of each token (argmax over tokens and eos; ties to the lower index), -1 for eos."""
    G = sp.csr_matrix(decoding_chain(sp.csr_matrix(as_transition(P)), top_k=1))
    succ = np.full(G.shape[0], -1)
    r = np.repeat(np.arange(G.shape[0]), np.diff(G.indptr))
    succ[r] = G.indices
    return succ


@dataclass
class GreedyCycles:
    """Where greedy decoding goes from each start token."""

    cycles: list[list[int]]  # the distinct cycles of the greedy map
    start_cycles: np.ndarray  # (n,) bool: the greedy chain from this token never reaches eos
    steps_to_cycle: np.ndarray  # (n,) steps before entering a cycle (-1 when it reaches eos)

    @property
    def cycle_fraction(self) -> float:
        return float(self.start_cycles.mean())


def greedy_cycles(P) -> GreedyCycles:
    """Follow the greedy map from every token: it ends at eos or enters a cycle (R = ∞ there).

    A greedy bigram decoder is a deterministic map on a finite set, so without eos it must cycle.
    """
    succ = greedy_successors(P)
    n = len(succ)
    status = np.zeros(n, dtype=np.int8)  # 0 unseen, 1 on path, 2 reaches eos, 3 cycles
    dist = np.full(n, -1)
    cycles: list[list[int]] = []
    for s in range(n):
        path, i = [], s
        while i >= 0 and status[i] == 0:
            status[i] = 1
            path.append(i)
            i = succ[i]
        if i >= 0 and status[i] == 1:  # closed a new cycle
            c = path[path.index(i) :]
            cycles.append([int(j) for j in c])
            for j in c:
                status[j], dist[j] = 3, 0
            path = path[: path.index(i)]
            i = c[0]
        end = 2 if i < 0 else status[i]
        d = 0 if i < 0 or end == 2 else dist[i]
        for j in reversed(path):
            status[j] = end
            if end == 3:
                d += 1
                dist[j] = d
    return GreedyCycles(cycles=cycles, start_cycles=status == 3, steps_to_cycle=dist)
