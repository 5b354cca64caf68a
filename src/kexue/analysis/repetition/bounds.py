"""Bounds on λ_1(P∘P) and on the repetition probability R (kexue.fm/archives/8128).

Upper bounds follow from |Tr Q^k| ≤ n λ_1^k; the lower bounds are Su's Cauchy–Schwarz argument
over the closed walks of P (exact walk count: a guarantee; its ζ^k n^k estimate: a heuristic),
and the paper's form as Su corrects it. The power sums are dense: for small n.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.sparse as sp

from kexue.analysis.repetition.matrix import as_transition, density, row_concentration
from kexue.analysis.repetition.spectrum import largest_eigenvalue


def perron_bounds(P) -> tuple[float, float]:
    """(min_i Σ_j P_ij², max_i Σ_j P_ij²): λ_1(P∘P) lies between them (Perron–Frobenius)."""
    c = row_concentration(P)
    return float(c.min()), float(c.max())


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
