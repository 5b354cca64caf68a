"""λ_1(P∘P), the Perron root that decides whether the repetition probability R converges.

Only the strongly connected blocks of Q = P∘P carry cycles, so λ_1 is the largest Perron root
over those blocks (a dense eigen-solve for small blocks, ARPACK for large sparse ones). R
diverges exactly when λ_1 = 1, i.e. when some tokens follow each other with probability one:
:func:`deterministic_cycle` finds such a cycle without any eigenvalue.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from scipy.sparse.csgraph import connected_components

from kexue.analysis.repetition.matrix import as_transition, hadamard_square, row_concentration

DETERMINISTIC_TOL = 1e-12  # a row of P∘P summing to 1 within this is one-hot (P_ij = 1)
DENSE_BLOCK = 600  # blocks up to this size are solved densely


def cyclic_blocks(Q) -> list[np.ndarray]:
    """Index sets of the strongly connected blocks of Q that carry a cycle (only they enter Tr Q^k)."""
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
    return out


def dense_block(Q, idx: np.ndarray) -> np.ndarray:
    """Q[idx, idx] as a dense (m, m) array."""
    if sp.issparse(Q):
        return Q[idx][:, idx].toarray()
    return Q[np.ix_(idx, idx)]


def sparse_block(Q, idx: np.ndarray) -> sp.csr_matrix:
    """Q[idx, idx] as a (m, m) CSR matrix."""
    return (Q[idx][:, idx] if sp.issparse(Q) else sp.csr_matrix(Q[np.ix_(idx, idx)])).tocsr()


def block_radius(Q, idx: np.ndarray) -> float:
    """Perron root of the irreducible non-negative block Q[idx, idx]."""
    if len(idx) <= DENSE_BLOCK:
        return float(np.abs(np.linalg.eigvals(dense_block(Q, idx))).max())
    from scipy.sparse.linalg import ArpackNoConvergence, eigs

    B = sparse_block(Q, idx)
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
    radii = [block_radius(Q, idx) for idx in cyclic_blocks(Q)]
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
    one = np.flatnonzero(row_concentration(Ps) >= 1 - DETERMINISTIC_TOL)
    for i in one:
        row = Ps.getrow(i)
        succ[i] = row.indices[row.data.argmax()]
    return first_cycle(succ)


def first_cycle(succ: np.ndarray) -> list[int] | None:
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
