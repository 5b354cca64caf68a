"""Transition matrices of bigram decoders: the checks every function of the package starts with.

A decoder that conditions only on the previous token is a matrix ``P`` (n × n over the tokens
without eos); row i may sum to less than one, the rest being the probability of eos after token
i. Functions take numpy arrays, ``scipy.sparse`` matrices or tensors and work in float64.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from kexue.errors import KexueError

ROW_TOL = 1e-9  # rows may sum to 1 + rounding


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
    rows = row_sums(M)
    if rows.max() > 1 + ROW_TOL:
        i = int(rows.argmax())
        raise KexueError(f"row {i} of the transition matrix sums to {rows[i]:.6g} > 1 (rows are probabilities)")
    return M


def row_sums(M) -> np.ndarray:
    """Σ_j M_ij for each row, shape (n,), for a dense or sparse matrix (no checks)."""
    return np.asarray(M.sum(axis=1)).ravel()


def eos_probabilities(P) -> np.ndarray:
    """The probability of eos after each token: 1 − row sum, shape (n,)."""
    return np.clip(1.0 - row_sums(as_transition(P)), 0.0, 1.0)


def hadamard_square(P):
    """Q = P∘P, same kind (dense or CSR) as the input."""
    P = as_transition(P)
    return P.multiply(P).tocsr() if sp.issparse(P) else P * P


def row_concentration(P) -> np.ndarray:
    """Σ_j P_ij² for each row i: the row sums of P∘P, shape (n,). 1 only for one-hot rows."""
    return row_sums(hadamard_square(P))


def density(P) -> float:
    """ζ: the fraction of non-zero entries of P (greedy gives 1/n, sampling a full P gives 1)."""
    P = as_transition(P)
    nnz = P.nnz if sp.issparse(P) else int(np.count_nonzero(P))
    return nnz / P.shape[0] ** 2
