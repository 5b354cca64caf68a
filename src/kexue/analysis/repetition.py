"""Theory of repetition in decoding (kexue.fm/archives/8128; Fu et al., AAAI 2021).

A decoder that conditions only on the previous token is a transition matrix ``P`` (n × n over
the vocabulary without eos; row i may sum to less than one, the rest being the probability of
eos). A repeat of the segment [w_1..w_k] is that segment followed by [w_1..w_k, w_1] again; its
probability is (P_{w1 w2} … P_{wk w1})². Summing over every closed walk of every length gives

    R = Σ_{k≥1} Tr((P∘P)^k) = Σ_i λ_i / (1 − λ_i)          # Su's corrected form, archives/8128

with λ_i the eigenvalues of Q = P∘P. This module computes R exactly (a linear solve per strongly
connected block of Q, no truncated series), says when it diverges (a deterministic cycle), gives
λ_1(Q) and its bounds, turns P into the chain that greedy / top-k / top-p / temperature decoding
follow, and checks R by simulating that chain. Text metrics (rep-w, rep-r, seq-rep-n, distinct-n,
loops) on generated sequences are at the end.

Everything works on numpy arrays or ``scipy.sparse`` matrices; results are float64.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass
from typing import Hashable, Iterable, Sequence

import numpy as np
import scipy.linalg
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from kexue.errors import KexueError

_ROW_TOL = 1e-9  # rows may sum to 1 + rounding
_DETERMINISTIC_TOL = 1e-12  # a row of P∘P summing to 1 within this is one-hot (P_ij = 1)


# --------------------------------------------------------------------------- validation


def as_transition(P) -> np.ndarray | sp.csr_matrix:
    """Check that ``P`` is a square, finite, non-negative, row-sub-stochastic matrix.

    Returns a float64 copy: a dense ``ndarray`` for dense input, a ``csr_matrix`` for sparse input.
    A tensor is accepted too. Raises :class:`KexueError` on anything else.
    """
    if hasattr(P, "detach"):  # torch tensor
        P = P.detach().cpu().double().numpy()
    if sp.issparse(P):
        M = sp.csr_matrix(P, dtype=np.float64, copy=True)
        M.sum_duplicates()
        M.eliminate_zeros()
        data = M.data
    else:
        M = np.array(P, dtype=np.float64)
        data = M
    if M.ndim != 2 or M.shape[0] != M.shape[1] or M.shape[0] == 0:
        raise KexueError(f"a transition matrix must be square and non-empty, got shape {M.shape}")
    if not np.all(np.isfinite(data)):
        raise KexueError("the transition matrix has non-finite entries")
    if data.size and data.min() < 0:
        raise KexueError(f"the transition matrix has negative entries (min {data.min():.3g})")
    rows = _row_sums(M)
    if rows.max() > 1 + _ROW_TOL:
        i = int(rows.argmax())
        raise KexueError(f"row {i} of the transition matrix sums to {rows[i]:.6g} > 1 (rows are probabilities)")
    return M


def _row_sums(M) -> np.ndarray:
    return np.asarray(M.sum(axis=1)).ravel()


def eos_probabilities(P) -> np.ndarray:
    """The probability of eos after each token: 1 − row sum, shape (n,)."""
    return np.clip(1.0 - _row_sums(as_transition(P)), 0.0, 1.0)


def hadamard_square(P):
    """Q = P∘P, same kind (dense or CSR) as the input."""
    P = as_transition(P)
    return P.multiply(P).tocsr() if sp.issparse(P) else P * P


# --------------------------------------------------------------------------- spectrum and bounds


def row_concentration(P) -> np.ndarray:
    """Σ_j P_ij² for each row i: the row sums of P∘P, shape (n,). 1 only for one-hot rows."""
    return _row_sums(hadamard_square(P))


def perron_bounds(P) -> tuple[float, float]:
    """(min_i Σ_j P_ij², max_i Σ_j P_ij²): λ_1(P∘P) lies between them (Perron–Frobenius)."""
    c = row_concentration(P)
    return float(c.min()), float(c.max())


def density(P) -> float:
    """ζ: the fraction of non-zero entries of P (greedy gives 1/n, sampling a full P gives 1)."""
    P = as_transition(P)
    nnz = P.nnz if sp.issparse(P) else int(np.count_nonzero(P))
    return nnz / P.shape[0] ** 2


def _blocks(Q) -> list[np.ndarray]:
    """Index sets of the strongly connected blocks of Q that carry a cycle (only they enter Tr Q^k)."""
    n = Q.shape[0]
    S = sp.csr_matrix(Q)
    count, labels = connected_components(S, directed=True, connection="strong")
    order = np.argsort(labels, kind="stable")
    bounds = np.searchsorted(labels[order], np.arange(count + 1))
    diag = S.diagonal()
    out = []
    for b in range(count):
        idx = order[bounds[b] : bounds[b + 1]]
        if len(idx) > 1 or diag[idx[0]] > 0:
            out.append(idx)
    assert sum(len(i) for i in out) <= n
    return out


def _dense_block(Q, idx: np.ndarray) -> np.ndarray:
    if sp.issparse(Q):
        return Q[idx][:, idx].toarray()
    return Q[np.ix_(idx, idx)]


def _sparse_block(Q, idx: np.ndarray) -> sp.csr_matrix:
    return (Q[idx][:, idx] if sp.issparse(Q) else sp.csr_matrix(Q[np.ix_(idx, idx)])).tocsr()


def _block_radius(Q, idx: np.ndarray) -> float:
    """Perron root of the irreducible non-negative block Q[idx, idx]."""
    if len(idx) <= 600:
        return float(np.abs(np.linalg.eigvals(_dense_block(Q, idx))).max())
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    B = _sparse_block(Q, idx)
    try:
        val = eigs(B, k=1, which="LM", return_eigenvectors=False, maxiter=5000, tol=1e-12)
        return float(abs(val[0]))
    except ArpackNoConvergence:
        # A periodic block has several eigenvalues of modulus ρ; shifting by I leaves ρ + 1 alone
        # on top (ρ(B + I) = ρ(B) + 1 for an irreducible non-negative B).
        val = eigs(B + sp.identity(len(idx), format="csr"), k=1, which="LM", return_eigenvectors=False)
        return float(abs(val[0]) - 1.0)


def largest_eigenvalue(P) -> float:
    """λ_1(P∘P), the Perron root (spectral radius) of the Hadamard square; 0 for a chain without cycles.

    Example: ``largest_eigenvalue(np.full((4, 4), 0.25))`` -> 0.25 (= 1/n for a uniform chain).
    """
    Q = hadamard_square(P)
    radii = [_block_radius(Q, idx) for idx in _blocks(Q)]
    return max(radii, default=0.0)


def deterministic_cycle(P) -> list[int] | None:
    """A cycle of tokens each followed by the next with probability one, or None.

    R converges exactly when there is none: for an irreducible block of Q = P∘P with row sums
    ≤ 1, ρ = 1 only if every row sum within the block is 1, i.e. the block is such a cycle.
    """
    P = as_transition(P)
    n = P.shape[0]
    Ps = sp.csr_matrix(P)
    succ = np.full(n, -1)
    one = np.flatnonzero(row_concentration(Ps) >= 1 - _DETERMINISTIC_TOL)
    for i in one:
        row = Ps.getrow(i)
        succ[i] = row.indices[row.data.argmax()]
    return _first_cycle(succ)


def _first_cycle(succ: np.ndarray) -> list[int] | None:
    """The first cycle of the functional graph i -> succ[i] (succ = -1: stop), or None."""
    state = np.zeros(len(succ), dtype=np.int8)  # 0 unseen, 1 on current path, 2 done
    for s in range(len(succ)):
        path = []
        i = s
        while i >= 0 and state[i] == 0:
            state[i] = 1
            path.append(i)
            i = succ[i]
        if i >= 0 and state[i] == 1:
            return [int(j) for j in path[path.index(i) :]]
        for j in path:
            state[j] = 2
    return None


def repetition_by_token(P, method: str = "auto", series_tol: float = 1e-14) -> np.ndarray:
    """r_i = Σ_{k≥1} ((P∘P)^k)_ii: the repeats that pass through token i; R = r.sum(), shape (n,).

    Per strongly connected block B of Q = P∘P (only they carry cycles), one of two exact routes:

    - ``solve``: diag of X = (I − B)⁻¹ B from one dense LU solve (m³ work);
    - ``series``: Σ_{k≤K} diag(B^k) by sparse products on blocks of unit vectors (nnz·m·K work),
      with K chosen so that the neglected tail, at most m λ_B^(K+1) / (1 − λ_B) since
      |Tr B^k| ≤ m λ_B^k, is below ``series_tol`` (absolute; float64 rounding is larger).

    ``auto`` takes the cheaper one per block. Raises :class:`KexueError` if R diverges.
    """
    if method not in ("auto", "solve", "series"):
        raise KexueError(f"method must be auto, solve or series, got {method!r}")
    P = as_transition(P)
    cycle = deterministic_cycle(P)
    if cycle is not None:
        shown = " -> ".join(map(str, cycle[:8])) + (" -> ..." if len(cycle) > 8 else "")
        raise KexueError(
            f"the repetition probability diverges: tokens {shown} follow each other with probability 1 "
            f"(λ_1(P∘P) = 1); greedy-like chains must be studied with greedy_cycles()"
        )
    Q = hadamard_square(P)
    r = np.zeros(P.shape[0])
    for idx in _blocks(Q):
        m = len(idx)
        use = "solve" if method == "auto" and m <= 600 else method
        if use != "solve":
            B = _sparse_block(Q, idx)
            lam = min(_block_radius(Q, idx) * (1 + 1e-9), 1 - 1e-15)
            K = 1 if lam <= 0 else max(1, math.ceil(math.log(series_tol * (1 - lam) / m) / math.log(lam)))
            if use == "auto":
                use = "series" if B.nnz * m * K < m**3 else "solve"
        if use == "solve":
            B = _dense_block(Q, idx)
            X = scipy.linalg.solve(np.eye(m) - B, B, check_finite=False)  # Σ_k B^k = (I − B)⁻¹ B
            r[idx] = np.diag(X)
        else:
            r[idx] = _series_diagonal(B, K)
    return r


def _series_diagonal(B: sp.csr_matrix, K: int, width: int = 256) -> np.ndarray:
    """Σ_{k=1..K} diag(B^k), computing B^k E for blocks E of ``width`` unit vectors."""
    m = B.shape[0]
    out = np.zeros(m)
    for lo in range(0, m, width):
        cols = np.arange(lo, min(lo + width, m))
        Y = np.zeros((m, len(cols)))
        Y[cols, np.arange(len(cols))] = 1.0  # (m, c)
        for _ in range(K):
            Y = B @ Y  # (m, c) = B^k E
            out[cols] += Y[cols, np.arange(len(cols))]
    return out


def repetition_probability(P) -> float:
    """Su's R = Σ_{k≥1} Tr((P∘P)^k), exactly. Raises :class:`KexueError` where it diverges.

    Example: a uniform stochastic 4 × 4 chain gives R = 1/(n − 1) = 1/3.
    """
    return float(repetition_by_token(P).sum())


def repetition_spectral(P) -> float:
    """R = Σ_i λ_i / (1 − λ_i) from all eigenvalues of P∘P (dense; a cross-check for small n)."""
    Q = hadamard_square(P)
    Q = Q.toarray() if sp.issparse(Q) else Q
    lam = np.linalg.eigvals(Q)
    if np.abs(lam).max(initial=0.0) >= 1 - 1e-12:
        raise KexueError("the repetition probability diverges: λ_1(P∘P) = 1")
    return float(np.real(np.sum(lam / (1 - lam))))


def trace_powers(P, k_max: int) -> np.ndarray:
    """Tr((P∘P)^k) for k = 1..k_max (dense), shape (k_max,): the terms of R."""
    Q = hadamard_square(P)
    Q = Q.toarray() if sp.issparse(Q) else Q
    out, M = [], np.eye(Q.shape[0])
    for _ in range(k_max):
        M = M @ Q
        out.append(np.trace(M))
    return np.array(out)


def tail_bound(P, k_max: int, lam: float | None = None) -> float:
    """Upper bound on Σ_{k>k_max} Tr((P∘P)^k): n λ_1^(k_max+1) / (1 − λ_1), since |Tr Q^k| ≤ n λ_1^k."""
    lam = largest_eigenvalue(P) if lam is None else lam
    if lam >= 1:
        return math.inf
    return P.shape[0] * lam ** (k_max + 1) / (1 - lam)


def spectral_upper_bound(P, lam: float | None = None) -> float:
    """R ≤ n λ_1 / (1 − λ_1) (each Tr Q^k = Σ λ_i^k ≤ n λ_1^k)."""
    return tail_bound(P, 0, lam)


def cauchy_schwarz_lower_bound(P, k_max: int = 20) -> float:
    """A rigorous lower bound on R: Σ_{k≤k_max} (Tr P^k)² / N_k (dense, small n).

    N_k = Tr(B^k) counts the closed walks of length k through non-zero entries (B = [P > 0]); by
    Cauchy–Schwarz their squared products sum to at least (their sum)² / N_k (archives/8128).
    """
    P = as_transition(P)
    P = P.toarray() if sp.issparse(P) else P
    B = (P > 0).astype(np.float64)
    total, Mp, Mb = 0.0, np.eye(len(P)), np.eye(len(P))
    for _ in range(k_max):
        Mp, Mb = Mp @ P, Mb @ B
        walks = np.trace(Mb)
        if walks > 0:
            total += np.trace(Mp) ** 2 / walks
    return float(total)


def _power_sum(P, k_max: int, term) -> float:
    """Σ_{k=1..k_max} term(P^k, k, n, ζ) over the dense powers of a transition matrix."""
    P = as_transition(P)
    P = P.toarray() if sp.issparse(P) else P
    n, zeta = len(P), density(P)
    total, M = 0.0, np.eye(n)
    for k in range(1, k_max + 1):
        M = M @ P
        total += term(M, k, n, zeta)
    return float(total)


def su_lower_bound(P, k_max: int = 20) -> float:
    """Su's heuristic Σ_k (Tr P^k)² / (ζ^k n^k): N_k replaced by its estimate ζ^k n^k. Not a guarantee."""
    return _power_sum(P, k_max, lambda M, k, n, zeta: np.trace(M) ** 2 / (zeta * n) ** k)


def paper_bound(P, k_max: int = 20) -> float:
    """The paper's form as corrected by Su: Σ_k Tr(P^k ∘ P^k) / (ζ^k n^(k−1)) (dense, small n)."""
    return _power_sum(P, k_max, lambda M, k, n, zeta: np.trace(M * M) / (zeta**k * n ** (k - 1)))


@dataclass
class Analysis:
    """Every analytic number of one chain (see :func:`analyze`)."""

    n: int
    zeta: float
    lambda_1: float
    lambda_lower: float
    lambda_upper: float
    R: float  # inf when a deterministic cycle exists
    R_upper: float
    mean_concentration: float  # mean_i Σ_j P_ij²
    deterministic_cycle: list[int] | None
    by_token: np.ndarray | None = None  # r_i, R = Σ r_i (None when R diverges)

    def as_dict(self) -> dict:
        d = dict(self.__dict__)
        d.pop("by_token")
        d["deterministic_cycle"] = None if self.deterministic_cycle is None else list(self.deterministic_cycle)
        return d


def analyze(P) -> Analysis:
    """n, ζ, λ_1(P∘P) with its Perron bounds, R (inf if it diverges) and its spectral upper bound."""
    P = as_transition(P)
    lo, hi = perron_bounds(P)
    cycle = deterministic_cycle(P)
    lam = 1.0 if cycle is not None else largest_eigenvalue(P)
    r = None if cycle is not None else repetition_by_token(P)
    R = math.inf if r is None else float(r.sum())
    return Analysis(
        n=P.shape[0], zeta=density(P), lambda_1=lam, lambda_lower=lo, lambda_upper=hi, R=R,
        R_upper=spectral_upper_bound(P, lam), mean_concentration=float(row_concentration(P).mean()),
        deterministic_cycle=cycle, by_token=r,
    )


# --------------------------------------------------------------------------- decoding chains


def decoding_chain(P, top_k: int | None = None, top_p: float | None = None, temperature: float = 1.0,
                   renormalize: bool = True):
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
    eos = np.clip(1.0 - _row_sums(P), 0.0, 1.0)
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


# --------------------------------------------------------------------------- Monte-Carlo check


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
    Returns lists of state indices; feed them to :func:`repetition_metrics`.
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


def simulate_repetition(P, n_chains: int, k_max: int, seed: int = 0, start_weights: np.ndarray | None = None,
                        chunk: int = 250_000, progress=None, lam: float | None = None,
                        rel_stderr: float | None = None, min_chains: int = 0) -> MonteCarlo:
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
    return MonteCarlo(value=mean, stderr=math.sqrt(var / done), n_chains=done, k_max=k_max,
                      bias_bound=tail_bound(P, k_max, lam))


def cycle_length_for(P, rel_tail: float = 1e-3, cap: int = 400, R: float | None = None,
                     lam: float | None = None) -> int:
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


# --------------------------------------------------------------------------- bigram chains from text


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


# --------------------------------------------------------------------------- text metrics
# Definitions of the paper code (fuzihaofzh/repetition-problem-nlg) and Welleck et al. (ICLR 2020),
# on plain token sequences (lists of ids or strings): per sequence, then averaged.


def rep_w(seq: Sequence[Hashable], window: int = 16) -> float:
    """Share of tokens already present among the previous ``window`` tokens (paper: w = 16).

    Example: ``rep_w("abab", 16)`` -> 0.5 (the second a and b).
    """
    if not len(seq):
        return 0.0
    hits = sum(1 for i in range(len(seq)) if seq[i] in seq[max(0, i - window) : i])
    return hits / len(seq)


def rep_r(seq: Sequence[Hashable]) -> float:
    """Share of tokens covered by a bigram that occurs more than once in the sequence.

    Both tokens of every such bigram position are marked. Example: ``rep_r("abcab")`` -> 0.8.
    """
    if len(seq) < 2:
        return 0.0
    grams = list(zip(seq[:-1], seq[1:]))
    counts = Counter(grams)
    marked = [False] * len(seq)
    for i, g in enumerate(grams):
        if counts[g] > 1:
            marked[i] = marked[i + 1] = True
    return sum(marked) / len(seq)


def _ngrams(seq: Sequence[Hashable], n: int) -> list[tuple]:
    return [tuple(seq[i : i + n]) for i in range(len(seq) - n + 1)]


def seq_rep_n(seq: Sequence[Hashable], n: int = 4) -> float:
    """Welleck et al.: 1 − |unique n-grams| / |n-grams| of one order n (0 when there are none)."""
    grams = _ngrams(seq, n)
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def seq_rep_pooled(seq: Sequence[Hashable], orders: Sequence[int] = (1, 2, 3, 4)) -> float:
    """The paper code's seq-rep: n-grams of all ``orders`` pooled, 1 − unique / total."""
    grams = [g for n in orders for g in _ngrams(seq, n)]
    return 1.0 - len(set(grams)) / len(grams) if grams else 0.0


def distinct_n(sequences: Sequence[Sequence[Hashable]], n: int) -> float:
    """Distinct-n over a batch: unique n-grams / all n-grams of all sequences (0 when none)."""
    grams = [g for s in sequences for g in _ngrams(s, n)]
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


def _plain_sequences(sequences, eos=None, pad=None) -> list[list]:
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


def repetition_metrics(sequences, eos=None, pad=None, window: int = 16, n: int = 4,
                       min_repeats: int = 3, max_period: int = 32) -> dict[str, float]:
    """All repetition metrics of a batch of generated sequences, as one flat dict.

    Args:
        sequences: list of token sequences (ids or strings), or a (B, T) tensor / array.
        eos: if given, each sequence is cut at its first eos (excluded).
        pad: if given, pad tokens are dropped.
        window: rep-w window (paper: 16). n: order of seq-rep-n (Welleck: 4).
        min_repeats, max_period: what counts as a loop (see :func:`find_loop`).
    Returns:
        ``rep_w``, ``rep_r``, ``seq_rep_<n>``, ``seq_rep_pooled`` (orders 1..4), means over
        sequences; ``distinct_1``, ``distinct_2``, ``distinct_<n>`` and ``uniq`` (distinct tokens)
        over the batch; ``loop_fraction`` (share of sequences holding a loop anywhere) and
        ``loop_at_end_fraction`` (ending in one); ``mean_length``; ``sequences``.

    Example: ``repetition_metrics([[5, 6, 5, 6, 5, 6], [1, 2, 3]])["loop_fraction"]`` -> 0.5.
    """
    seqs = _plain_sequences(sequences, eos, pad)
    if not seqs:
        raise KexueError("no sequences to measure")

    def mean(f) -> float:
        return float(np.mean([f(s) for s in seqs]))

    out = {
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
    return out
