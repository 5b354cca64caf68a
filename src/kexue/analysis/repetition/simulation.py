"""Monte-Carlo check of the closed form: simulate the chain and count immediate repeats.

From a start token s the chain runs 2·K steps (or to eos); N counts the k ≤ K at which the path
repeats its first k steps right away (x_k = x_0 and x_{k+1..2k} = x_{1..k}). E[N | s] is
Σ_{k≤K} ((P∘P)^k)_ss, so N / q_s with s ~ q is unbiased for Σ_{k≤K} Tr(Q^k), the part of R that
the simulation sees; :func:`kexue.analysis.repetition.tail_bound` bounds the rest.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from kexue.analysis.repetition.bounds import tail_bound
from kexue.analysis.repetition.closed_form import repetition_probability
from kexue.analysis.repetition.matrix import as_transition, hadamard_square
from kexue.analysis.repetition.spectrum import largest_eigenvalue
from kexue.errors import KexueError


class ChainSampler:
    """Vectorised sampling of next tokens from a (sub-stochastic) chain; -1 is eos.

    Each row's cumulative sum is offset by its row index, so one ``searchsorted`` over all
    chains finds every next token at once: O(log nnz) per step and chain, any n.
    """

    def __init__(self, P):
        P = sp.csr_matrix(as_transition(P))
        self.n = P.shape[0]
        self.indptr, self.indices = P.indptr, P.indices
        rows = np.repeat(np.arange(self.n), np.diff(P.indptr))
        cum = np.cumsum(P.data)
        row_base = np.concatenate([[0.0], cum])[P.indptr[:-1]]
        within = np.minimum(cum - row_base[rows], 1.0)  # (nnz,) cumulative mass inside the row
        self.key = rows + within  # non-decreasing: row r's keys lie in (r, r + 1]

    def step(self, state: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Next tokens of chains at ``state`` (-1 stays -1), shape like ``state``."""
        alive = state >= 0
        nxt = np.full_like(state, -1)
        s = state[alive]
        pos = np.searchsorted(self.key, s + rng.random(len(s)), side="right")
        ok = pos < self.indptr[s + 1]  # beyond the row's last entry: eos
        out = np.full(len(s), -1, dtype=state.dtype)
        out[ok] = self.indices[pos[ok]]
        nxt[alive] = out
        return nxt


def sample_sequences(P, start: np.ndarray, count: int, max_length: int, seed: int = 0) -> list[list[int]]:
    """Generate ``count`` token sequences from a chain: first token from ``start``, then P until eos.

    Sequences stop at eos or after ``max_length`` tokens (a greedy cycle runs to the limit).
    Returns lists of state indices; feed them to :func:`kexue.analysis.text.repetition_metrics`.
    """
    rng = np.random.default_rng(seed)
    start = np.asarray(start, dtype=np.float64)
    paths = np.full((count, max_length), -1, dtype=np.int64)
    paths[:, 0] = rng.choice(len(start), size=count, p=start / start.sum())
    sampler = ChainSampler(P)
    for t in range(1, max_length):
        paths[:, t] = sampler.step(paths[:, t - 1], rng)
    return [row[row >= 0].tolist() for row in paths]


def count_repeats(paths: np.ndarray, k_max: int) -> np.ndarray:
    """Number of k ≤ k_max with x_k = x_0 and x_{k+1..2k} = x_{1..k} (an immediate repeat of a k-cycle).

    ``paths``: (M, 2·k_max + 1) token ids from position 0, -1 after eos. Returns (M,) counts.
    Its expectation from start i is Σ_{k≤k_max} ((P∘P)^k)_ii, the quantity R sums.
    """
    counts = np.zeros(len(paths), dtype=np.int64)
    for k in range(1, k_max + 1):
        cand = np.flatnonzero(paths[:, k] == paths[:, 0])  # rare: filter before comparing windows
        if len(cand):
            same = (paths[cand, k + 1 : 2 * k + 1] == paths[cand, 1 : k + 1]).all(axis=1)
            counts[cand[same]] += 1
    return counts


@dataclass
class MonteCarlo:
    """A simulated estimate of R with its standard error."""

    value: float
    stderr: float
    n_chains: int
    k_max: int
    bias_bound: float  # the uncounted tail Σ_{k>k_max} Tr(Q^k) is at most this

    def z_score(self, exact: float) -> float:
        return (self.value - exact) / self.stderr if self.stderr > 0 else (0.0 if self.value == exact else math.inf)


def importance_weights(P) -> np.ndarray:
    """A start distribution for the simulation that favours tokens likely to repeat, shape (n,).

    Proportional to the exact k = 1 and 2 terms of r_i, ((P∘P) + (P∘P)²)_ii, mixed half and half
    with the uniform distribution (so no token has weight zero). It uses nothing of R itself.
    """
    Q = sp.csr_matrix(hadamard_square(P))
    n = Q.shape[0]
    short = Q.diagonal() + np.asarray(Q.multiply(Q.T).sum(axis=1)).ravel()
    u = np.full(n, 1.0 / n)
    return u if short.sum() == 0 else 0.5 * u + 0.5 * short / short.sum()


def simulate_repetition(
    P,
    n_chains: int,
    k_max: int,
    seed: int = 0,
    start_weights: np.ndarray | None = None,
    chunk: int = 250_000,
    progress=None,
    lam: float | None = None,
    rel_stderr: float | None = None,
    min_chains: int = 0,
) -> MonteCarlo:
    """Estimate R = Σ_i Σ_k ((P∘P)^k)_ii by simulating the chain and counting immediate repeats.

    A start token s is drawn from ``start_weights`` q (default uniform), the chain runs 2·k_max
    steps (or to eos), and N = the number of k ≤ k_max for which the path repeats its first k
    steps is counted; N / q_s is unbiased for Σ_{k≤k_max} Tr(Q^k). Standard error: the sample
    standard deviation of N / q_s over √n_chains.

    Args:
        P: (n, n) transition matrix (dense or sparse), e.g. from :func:`decoding_chain`.
        n_chains: number of simulated chains.
        k_max: longest cycle counted; the neglected tail is bounded in ``bias_bound``.
        seed: seeds the one numpy Generator used.
        start_weights: (n,) start distribution q (importance sampling), e.g. :func:`importance_weights`.
        progress: optional callable(done_chains) for progress bars.
        lam: λ_1(P∘P) if already known (for the bias bound).
        rel_stderr: if given, stop early (after ``min_chains``) once stderr / estimate falls below it;
            ``n_chains`` is then the cap. (Sequential stopping; with millions of chains its bias is negligible.)
        min_chains: see ``rel_stderr``.
    """
    P = as_transition(P)
    n = P.shape[0]
    q = np.full(n, 1.0 / n) if start_weights is None else np.asarray(start_weights, dtype=np.float64)
    if q.shape != (n,) or q.min() < 0 or not np.isclose(q.sum(), 1.0):
        raise KexueError("start_weights must be a probability vector of length n")
    rng = np.random.default_rng(seed)
    sampler = ChainSampler(P)
    total, total_sq, done = 0.0, 0.0, 0
    while done < n_chains:
        m = min(chunk, n_chains - done)
        starts = rng.choice(n, size=m, p=q)
        paths = np.empty((m, 2 * k_max + 1), dtype=np.int64)
        paths[:, 0] = starts
        for t in range(1, 2 * k_max + 1):
            paths[:, t] = sampler.step(paths[:, t - 1], rng)
        est = count_repeats(paths, k_max) / q[starts]
        total += est.sum()
        total_sq += np.square(est).sum()
        done += m
        if progress is not None:
            progress(done)
        if rel_stderr is not None and done >= min_chains and total > 0:
            mu = total / done
            se = math.sqrt(max(total_sq / done - mu**2, 0.0) / max(done - 1, 1))
            if se <= rel_stderr * mu:
                break
    mean = total / done
    var = max(total_sq / done - mean**2, 0.0) * done / max(done - 1, 1)
    lam = largest_eigenvalue(P) if lam is None else lam
    return MonteCarlo(
        value=mean, stderr=math.sqrt(var / done), n_chains=done, k_max=k_max, bias_bound=tail_bound(P, k_max, lam)
    )


def cycle_length_for(
    P, rel_tail: float = 1e-3, cap: int = 400, R: float | None = None, lam: float | None = None
) -> int:
    """The smallest k_max whose tail bound n λ_1^(k+1)/(1 − λ_1) is below ``rel_tail``·R (at most ``cap``).

    ``R`` and ``lam`` may be passed when already known (they cost a solve and an eigenvalue).
    """
    lam = largest_eigenvalue(P) if lam is None else lam
    R = repetition_probability(P) if R is None else R
    n = P.shape[0]
    if lam <= 0 or R <= 0:
        return 1
    k = math.log(rel_tail * R * (1 - lam) / n) / math.log(lam) - 1
    return int(min(max(math.ceil(k), 1), cap))
