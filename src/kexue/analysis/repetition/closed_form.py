"""The repetition probability R of a bigram chain, exactly (kexue.fm/archives/8128).

A repeat of the segment [w_1..w_k] is that segment followed by [w_1..w_k, w_1] again; its
probability is (P_{w1 w2} … P_{wk w1})². Summing over every closed walk of every length gives

    R = Σ_{k≥1} Tr((P∘P)^k) = Σ_i λ_i / (1 − λ_i)          # Su's corrected form, archives/8128

with λ_i the eigenvalues of Q = P∘P. :func:`repetition_by_token` computes it exactly per
strongly connected block of Q (a linear solve, or a series with a certified tail), with no
truncated series; :func:`analyze` gathers every analytic number of one chain.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.linalg
import scipy.sparse as sp

from kexue.analysis.repetition.bounds import perron_bounds, spectral_upper_bound
from kexue.analysis.repetition.matrix import as_transition, density, hadamard_square, row_concentration
from kexue.analysis.repetition.spectrum import (
    DENSE_BLOCK,
    block_radius,
    cyclic_blocks,
    dense_block,
    deterministic_cycle,
    largest_eigenvalue,
    sparse_block,
)
from kexue.errors import KexueError


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
    for idx in cyclic_blocks(Q):
        m = len(idx)
        use = "solve" if method == "auto" and m <= DENSE_BLOCK else method
        if use != "solve":
            B = sparse_block(Q, idx)
            lam = min(block_radius(Q, idx) * (1 + 1e-9), 1 - 1e-15)
            K = 1 if lam <= 0 else max(1, math.ceil(math.log(series_tol * (1 - lam) / m) / math.log(lam)))
            if use == "auto":
                use = "series" if B.nnz * m * K < m**3 else "solve"
        if use == "solve":
            B = dense_block(Q, idx)
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
        n=P.shape[0],
        zeta=density(P),
        lambda_1=lam,
        lambda_lower=lo,
        lambda_upper=hi,
        R=R,
        R_upper=spectral_upper_bound(P, lam),
        mean_concentration=float(row_concentration(P).mean()),
        deterministic_cycle=cycle,
        by_token=r,
    )
