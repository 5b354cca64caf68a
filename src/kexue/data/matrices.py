"""Numeric matrices from a user's files: ``.npy``, ``.npz`` (scipy sparse or an array named P), ``.csv``, ``.txt``.

The repetition study reads transition matrices this way; whether the numbers form a chain is
checked by :func:`kexue.analysis.repetition.as_transition` (see
:func:`kexue.recipes.repetition.load_chain`).
"""

from __future__ import annotations

import io
import warnings
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from kexue.errors import KexueError
from kexue.io import read_text, reading

MATRIX_SUFFIXES = (".npy", ".npz", ".csv", ".txt")


def read_matrix(path: str | Path, flag: str = "--matrix"):
    """A real-valued matrix from ``.npy`` (dense), ``.npz`` (scipy.sparse.save_npz, or an array
    named P) or ``.csv`` / ``.txt`` (numbers separated by commas or spaces).

    A missing, unreadable, corrupt or non-numeric file is one KexueError naming the file and
    ``flag``. Returns an ndarray or a scipy sparse matrix (its shape is not checked here).
    """
    path = Path(path)
    if path.suffix not in MATRIX_SUFFIXES:
        raise KexueError(f"{flag} {path}: use a .npy, .npz, .csv or .txt file")
    with reading(path, f"{flag} file") as p:
        try:
            if p.suffix == ".npy":
                P = np.load(p, allow_pickle=False)
            elif p.suffix == ".npz":
                P = _load_npz(p, flag)
            else:
                text = read_text(p, f"{flag} file")
                with warnings.catch_warnings():  # an empty file: an empty array, refused below
                    warnings.simplefilter("ignore")
                    P = np.loadtxt(io.StringIO(text), delimiter="," if p.suffix == ".csv" else None, ndmin=2)
        except (ValueError, KeyError) as e:
            first = (str(e).strip().splitlines() or [type(e).__name__])[0]
            raise KexueError(f"{flag} {path} does not hold a numeric matrix ({first})") from None
    if not sp.issparse(P):
        P = np.asarray(P)
        if P.dtype == bool or not np.issubdtype(P.dtype, np.number) or np.iscomplexobj(P):
            raise KexueError(f"{flag} {path} holds {P.dtype} values, not real numbers")
    return P


def _load_npz(path: Path, flag: str):
    with np.load(path, allow_pickle=False) as z:
        names = set(z.files)
        if {"format", "shape", "data"} <= names:  # scipy.sparse.save_npz
            return sp.load_npz(path)
        if "P" not in names:
            raise KexueError(
                f"{flag} {path} holds neither a scipy sparse matrix nor an array named P "
                f"(arrays: {', '.join(sorted(names)) or 'none'})"
            )
        return z["P"]
