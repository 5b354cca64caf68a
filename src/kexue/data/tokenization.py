"""Rebalanced encoding (Fu et al., AAAI 2021; kexue.fm/archives/8128): merge highly predictive pairs.

A bigram decoder repeats itself when its rows are nearly one-hot. Rebalanced encoding flattens
them: estimate P(b | a) with add-one smoothing, merge every pair with P(b | a) > threshold into
one token, recount, and repeat (the paper: threshold 0.1, up to 10 rounds).

:class:`RebalancedEncoding` learns the rounds from a corpus of unit sequences (characters,
words or subwords) and is then a tokenizer transform: ``encode(units) -> tokens`` and
``decode(tokens) -> units`` with ``decode(encode(x)) == x`` for every input it accepts.

Example::

    enc = RebalancedEncoding.learn([list("the cat"), list("the hat")], threshold=0.3)
    enc.encode(list("the mat"))   # e.g. ['the', ' ', 'm', 'at']
    "".join(enc.decode(enc.encode(list("the mat"))))  # 'the mat'
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

import numpy as np

from kexue.errors import KexueError
from kexue.io import read_json, write_json


class RebalancedEncoding:
    """Merge rounds learned from a corpus; each round is a list of (left, right) token spellings.

    Attributes:
        rounds: per round, the pairs merged in it (as spellings of the tokens at that round).
        joiner: inserted between the spellings of a merged pair ("" for characters).
        parts: spelling of every merged token -> the base units it stands for.
    """

    def __init__(self, rounds: list[list[tuple[str, str]]], joiner: str = ""):
        self.rounds = [[(str(a), str(b)) for a, b in r] for r in rounds]
        self.joiner = joiner
        self.parts: dict[str, tuple[str, ...]] = {}
        for r in self.rounds:
            for a, b in r:
                units = self.parts.get(a, (a,)) + self.parts.get(b, (b,))
                name = a + joiner + b
                if self.parts.setdefault(name, units) != units:
                    raise KexueError(
                        f"merged token {name!r} would stand for both {self.parts[name]} and {units}; "
                        "use a joiner that does not occur in the units"
                    )
        # round -> {(left, right) -> merged}, applied left to right
        self._tables = [{(a, b): a + joiner + b for a, b in r} for r in self.rounds]

    # ------------------------------------------------------------------ learning

    @classmethod
    def learn(
        cls,
        sentences: Iterable[Sequence[str]],
        threshold: float = 0.1,
        iterations: int = 10,
        joiner: str = "",
        progress: Callable[[int, int], None] | None = None,
    ) -> RebalancedEncoding:
        """Learn up to ``iterations`` merge rounds from sentences of units.

        In each round the bigram probability of every observed pair is estimated with add-one
        smoothing over the current vocabulary plus eos, P(b | a) = (c(a, b) + 1) / (c(a) + V + 1),
        and every pair above ``threshold`` is merged (left to right, no overlap). Stops early when
        a round merges nothing.

        Args:
            sentences: token sequences, e.g. ``[list(line) for line in lines]`` for characters.
            threshold: merge pairs with P(b | a) above it (paper: 0.1).
            iterations: maximum number of rounds (paper: 10).
            joiner: put between merged spellings; "" for characters, e.g. "_" for words.
            progress: optional callable(round, vocabulary_size).
        """
        if not 0 < threshold < 1:
            raise KexueError(f"threshold must lie in (0, 1), got {threshold}")
        sents = [list(s) for s in sentences if len(s)]
        if not sents:
            raise KexueError("no sentences to learn a rebalanced encoding from")
        names: list[str] = []
        index: dict[str, int] = {}
        ids = np.array([index.setdefault(u, len(index)) for s in sents for u in s], dtype=np.int64)
        names = [None] * len(index)
        for u, i in index.items():
            names[i] = u
        if joiner and any(joiner in u for u in names):
            raise KexueError(f"the joiner {joiner!r} occurs inside some units; choose another")
        base = set(names)
        ends = np.zeros(len(ids), dtype=bool)
        ends[np.cumsum([len(s) for s in sents]) - 1] = True  # last unit of each sentence
        rounds: list[list[tuple[str, str]]] = []
        for it in range(iterations):
            V = len(names)
            follows = ~ends[:-1]  # pair (i, i+1) inside one sentence
            keys = ids[:-1][follows] * V + ids[1:][follows]
            uniq, pair_counts = np.unique(keys, return_counts=True)
            left = uniq // V
            occurrences = np.bincount(ids, minlength=V)  # c(a): each occurrence has a successor or eos
            present = int(np.count_nonzero(occurrences))  # the current vocabulary
            prob = (pair_counts + 1) / (occurrences[left] + present + 1)
            chosen = uniq[prob > threshold]
            if len(chosen) == 0:
                break
            new_ids = np.full(len(chosen), -1, dtype=np.int64)
            pairs = []
            for j, key in enumerate(chosen.tolist()):
                a, b = names[key // V], names[key % V]
                name = a + joiner + b
                if name in base:
                    raise KexueError(f"merged token {name!r} collides with a unit; use a non-empty joiner")
                if name not in index:
                    index[name] = len(names)
                    names.append(name)
                new_ids[j] = index[name]
                pairs.append((a, b))
            rounds.append(pairs)
            ids, ends = _apply(ids, ends, chosen, new_ids, V)
            if progress is not None:
                progress(it + 1, len(names))
        return cls(rounds, joiner)

    # ------------------------------------------------------------------ transform

    def encode(self, units: Sequence[str]) -> list[str]:
        """Units (e.g. characters) -> rebalanced tokens. Raises if a unit spells a merged token."""
        toks = [str(u) for u in units]
        clash = [u for u in toks if u in self.parts]
        if clash:
            raise KexueError(f"unit {clash[0]!r} spells a merged token, so the encoding could not be undone")
        for table in self._tables:
            out, i = [], 0
            while i < len(toks):
                merged = table.get((toks[i], toks[i + 1])) if i + 1 < len(toks) else None
                if merged is not None:
                    out.append(merged)
                    i += 2
                else:
                    out.append(toks[i])
                    i += 1
            toks = out
        return toks

    def decode(self, tokens: Sequence[str]) -> list[str]:
        """Rebalanced tokens -> the units they stand for (the exact inverse of :meth:`encode`)."""
        out: list[str] = []
        for t in tokens:
            out.extend(self.parts.get(t, (t,)))
        return out

    def encode_corpus(self, sentences: Iterable[Sequence[str]]) -> list[list[str]]:
        """:meth:`encode` for many sentences, vectorised (same result)."""
        sents = [[str(u) for u in s] for s in sentences]
        index: dict[str, int] = {}
        names: list[str] = []

        def idx(u: str) -> int:
            if u not in index:
                index[u] = len(names)
                names.append(u)
            return index[u]

        for s in sents:
            for u in s:
                if u in self.parts:
                    raise KexueError(f"unit {u!r} spells a merged token, so the encoding could not be undone")
        ids = np.array([idx(u) for s in sents for u in s], dtype=np.int64)
        lengths = [len(s) for s in sents]
        ends = np.zeros(len(ids), dtype=bool)
        nonempty = np.cumsum(lengths)[np.asarray(lengths) > 0] - 1
        ends[nonempty] = True
        for r in self.rounds:
            chosen, new_ids = [], []
            for a, b in r:
                if a in index and b in index:
                    chosen.append((index[a], index[b]))
                    new_ids.append(idx(a + self.joiner + b))
            if not chosen or len(ids) < 2:
                continue
            V = len(names)
            keys = np.array([a * V + b for a, b in chosen], dtype=np.int64)
            order = np.argsort(keys)
            ids, ends = _apply(ids, ends, keys[order], np.asarray(new_ids, dtype=np.int64)[order], V)
        chunks = iter(np.split(ids, np.flatnonzero(ends)[:-1] + 1)) if len(ids) else iter(())
        return [[names[i] for i in next(chunks)] if L else [] for L in lengths]

    @property
    def vocabulary(self) -> list[str]:
        """The merged tokens (the base units are whatever the input holds)."""
        return list(self.parts)

    # ------------------------------------------------------------------ files

    def save(self, path: str | Path) -> Path:
        """Write the rounds as JSON (atomically)."""
        return write_json(
            path,
            {
                "kind": "rebalanced-encoding",
                "joiner": self.joiner,
                "rounds": [[list(p) for p in r] for r in self.rounds],
            },
        )

    @classmethod
    def load(cls, path: str | Path) -> RebalancedEncoding:
        """Read an encoding written by :meth:`save`; a missing, unreadable or malformed file is a KexueError."""
        data = read_json(path, "encoding file")
        rounds, joiner = data.get("rounds"), data.get("joiner")
        if data.get("kind", "rebalanced-encoding") != "rebalanced-encoding":
            raise KexueError(f"encoding file {path} is a {data['kind']!r}, not a rebalanced encoding")

        def is_pair(p) -> bool:
            return isinstance(p, list) and len(p) == 2 and all(isinstance(u, str) and u for u in p)

        if (
            not isinstance(joiner, str)
            or not isinstance(rounds, list)
            or not all(isinstance(r, list) and all(is_pair(p) for p in r) for r in rounds)
        ):
            raise KexueError(
                f"encoding file {path} is malformed: expected " + '{"joiner": str, "rounds": '
                "[[[left, right], ...], ...]} (as written by `kexue repetition rebalance`)"
            )
        unknown = sorted(set(data) - {"kind", "joiner", "rounds"})
        if unknown:
            raise KexueError(f"encoding file {path} has unknown key(s) {', '.join(unknown)}")
        try:
            return cls([[tuple(p) for p in r] for r in rounds], joiner)
        except KexueError as e:
            raise KexueError(f"encoding file {path}: {e}") from None


def _apply(ids: np.ndarray, ends: np.ndarray, keys: np.ndarray, new_ids: np.ndarray, V: int):
    """One merge round on a flat id stream: merge pairs whose key a·V + b is in sorted ``keys``.

    Left to right without overlap: inside a run of consecutive mergeable positions, positions
    at even offsets from the run's start merge (exactly what a left-to-right scan does).
    Returns the new ids and sentence-end flags.
    """
    if len(ids) < 2:
        return ids, ends
    pair = ids[:-1] * V + ids[1:]
    pos = np.searchsorted(keys, pair)
    pos = np.minimum(pos, len(keys) - 1)
    can = (keys[pos] == pair) & ~ends[:-1]  # (N-1,) position i may merge with i+1
    # offset of each position inside its run of consecutive True
    idx = np.arange(len(can))
    run_start = np.where(can & ~np.concatenate([[False], can[:-1]]), idx, 0)
    run_start = np.maximum.accumulate(run_start)
    take = can & ((idx - run_start) % 2 == 0)
    keep = np.ones(len(ids), dtype=bool)
    keep[1:][take] = False  # the right element of a merged pair disappears
    new = ids.copy()
    new[:-1][take] = new_ids[pos[take]]
    new_ends = ends.copy()
    new_ends[:-1][take] = ends[1:][take]  # the merged token ends a sentence if its right part did
    return new[keep], new_ends[keep]
