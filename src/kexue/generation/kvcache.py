"""One attention layer's keys and values for incremental decoding, written in place.

:class:`KVBuffer` is the cache machinery every decoder of the library shares: the transformers
adapter (:class:`kexue.generation.hf.InPlaceLayer` is a ``DynamicLayer`` built on it) and the
synchronous bidirectional seq2seq model (:mod:`kexue.models.seq2seq`, whose decoder rows are the
L2R and R2L streams stacked) and the lean GPT-2 step. Keys and values live in one preallocated
buffer per layer of shape (rows, heads, capacity, dim):

* a step writes its new positions in place (no ``torch.cat`` of the whole past per layer and step);
* attention reads the views ``buffer[:rows, :, :length]``, the (rows, heads, length, dim) layout
  models use, each (row, head) block contiguous (attention reads it as fast as a contiguous tensor;
  time before heads made sdpa a third slower at 32 rows: measured);
* the capacity doubles when full (one copy of the past per doubling, not one per step);
* a row move (a beam reorder, finished rows leaving the batch) copies nothing when no row takes
  another's place, and when rows do, only the positions where the two rows' pasts differ: each
  slot carries the id of the write that filled it (a copy keeps the id; a row that left the batch
  and is filled again is marked unknown), so two rows whose slots hold the same id hold the same
  numbers (the same bits). Beams share most of their history (the
  prompt, and every token before they parted), so a reorder copies a short tail, not the whole
  past (``kexue bench decoding`` reports the share as ``decoding.cache_copy_share.beam4``);
  only when the tails are long (more than half of the filled part) is the filled part gathered
  once into a spare buffer of the same shape that then becomes the cache (no allocation per step).

Example::

    buf = KVBuffer()
    keys, values = buf.append(k, v)      # k, v (rows, heads, t, dim) -> views (rows, heads, T, dim)
    buf.move_rows(torch.tensor([0, 0]))  # row 1 becomes a copy of row 0
"""

from __future__ import annotations

import torch

from kexue.errors import KexueError


def moved_rows(index: torch.Tensor) -> torch.Tensor:
    """The positions ``i`` with ``index[i] != i``: the rows a move must copy (found once for all layers)."""
    return (index != torch.arange(len(index), device=index.device)).nonzero()[:, 0]


def _tail_groups(
    moved: torch.Tensor, src: torch.Tensor, first: torch.Tensor, n: int
) -> list[tuple[torch.Tensor, torch.Tensor, int]]:
    """Split the moved rows into at most two groups, each copied from its earliest first position
    (one gather per group): the split of the rows sorted by ``first`` that copies the fewest
    positions. Returns (rows, source rows, start) per group."""
    order = torch.argsort(first)
    f = first.index_select(0, order).tolist()
    k = len(f)
    if k == 0:
        return []
    # rows order[:i] copy from f[0], rows order[i:] from f[i]; i = 0 is one group
    cost = [k * (n - f[0])] + [i * (n - f[0]) + (k - i) * (n - f[i]) for i in range(1, k)]
    i = min(range(k), key=cost.__getitem__)
    parts = [(order[:i], f[0]), (order[i:], f[i])] if i else [(order, f[0])]
    return [(moved.index_select(0, o), src.index_select(0, o), start) for o, start in parts if start < n]


class KVBuffer:
    """Keys/values of one attention layer in a preallocated (rows, heads, capacity, dim) buffer.

    The buffer holds no gradient (it is a decoding cache: values are detached when written).

    Args:
        capacity: positions to preallocate (0: twice the first append, at least 64 more).
    Attributes:
        keys, values: (rows, heads, length, dim) views of the filled part (None before the first append).
        rows, length: the filled part.
    """

    def __init__(self, capacity: int = 0):
        self.capacity, self.rows, self.length = capacity, 0, 0
        self._k = self._v = self._k2 = self._v2 = None  # the buffers and a spare pair for row moves
        self._id = None  # (rows, capacity) the write that filled each slot; -1: nothing known
        self._writes = 0  # ids handed out so far
        self.copied = 0  # row positions copied by the last move_rows (a diagnostic)
        self.keys = self.values = None

    @property
    def allocated(self) -> int:
        """Positions the buffer holds now (0 before the first append)."""
        return 0 if self._k is None else self._k.shape[2]

    def _views(self) -> None:
        self.keys = self._k[: self.rows, :, : self.length]
        self.values = self._v[: self.rows, :, : self.length]

    def _alloc(self, rows: int, capacity: int) -> None:
        """(Re)allocate the buffers, keeping the filled part."""
        k, v, ids = self._k, self._v, self._id
        self._k = k.new_empty((rows, k.shape[1], capacity, k.shape[3]))
        self._v = v.new_empty((rows, v.shape[1], capacity, v.shape[3]))
        self._id = torch.full((rows, capacity), -1, dtype=torch.long, device=ids.device)
        self._k2 = self._v2 = None
        n = min(rows, self.rows)
        self._k[:n, :, : self.length] = k[:n, :, : self.length]
        self._v[:n, :, : self.length] = v[:n, :, : self.length]
        self._id[:n, : self.length] = ids[:n, : self.length]

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``t`` new positions (rows, heads, t, dim) after the filled part; return the views."""
        N, heads, t, dim = key_states.shape
        end = self.length + t
        if self._k is None:
            cap = max(self.capacity, end) if self.capacity else max(2 * end, end + 64)
            self._k = key_states.detach().new_empty((N, heads, cap, dim))
            self._v = value_states.detach().new_empty((N, value_states.shape[1], cap, value_states.shape[3]))
            self._id = torch.full((N, cap), -1, dtype=torch.long, device=key_states.device)
            self.rows = N
        elif self.rows != N:
            raise KexueError(f"the cache holds {self.rows} rows but the step got {N}")
        elif end > self._k.shape[2]:
            self._alloc(self._k.shape[0], max(2 * self._k.shape[2], end))
        self._k[:N, :, self.length : end] = key_states.detach()  # a decoding cache: no gradient
        self._v[:N, :, self.length : end] = value_states.detach()
        fresh = torch.arange(self._writes, self._writes + N * t, device=self._id.device).view(N, t)
        self._id[:N, self.length : end] = fresh
        self._writes += N * t
        self.length = end
        self._views()
        return self.keys, self.values

    def move_rows(self, index: torch.Tensor, moved: torch.Tensor | None = None) -> None:
        """Row ``i`` becomes old row ``index[i]`` (``len(index)`` rows afterwards). ``moved``: the
        ``i`` with ``index[i] != i`` (:func:`moved_rows`); when none, nothing is copied. A moved row
        copies only the positions from the first one whose slot id differs from its new source's."""
        if self._k is None:
            return
        m = len(index)
        if moved is None:
            moved = moved_rows(index)
        n = self.length
        self.copied = 0
        if len(moved) == 0 and m <= self.rows:
            self.rows = m  # rows kept in place, finished ones dropped from the end
            self._views()
            return
        if m > self._k.shape[0]:
            self._alloc(m, self._k.shape[2])  # the new rows' ids are -1: they copy everything
        if m > self.rows:  # rows left earlier and now filled again hold stale data: they copy everything
            self._id[self.rows : m, :n] = -1
        if n == 0:  # nothing cached yet (or all cropped): no positions to copy
            self.rows = m
            self._views()
            return
        src = index.index_select(0, moved)
        ids = self._id[:, :n]
        differ = ids.index_select(0, moved) != ids.index_select(0, src)  # (moved, n)
        # each moved row's first position to copy (n: nothing differs)
        first = torch.where(differ.any(1), differ.int().argmax(1), n)
        self._id[:m, :n] = ids[: self.rows].index_select(0, index)
        groups = _tail_groups(moved, src, first, n)
        tails = sum(len(rows) * (n - start) for rows, _, start in groups)
        if 2 * tails <= m * n:
            self.copied = tails
            # short tails: gather every tail first (a swap reads the old rows), then write them in place
            for buf in (self._k, self._v):
                gathered = [(rows, buf[:, :, start:n].index_select(0, frm), start) for rows, frm, start in groups]
                for rows, tail, start in gathered:
                    buf[:, :, start:n].index_copy_(0, rows, tail)
            self.rows = m
            self._views()
            return
        if self._k2 is None or self._k2.shape != self._k.shape:
            self._k2, self._v2 = torch.empty_like(self._k), torch.empty_like(self._v)
        # one gather of the filled part into the spare buffer (no allocation), then swap the two
        self.copied = m * n
        torch.index_select(self._k[: self.rows, :, :n], 0, index, out=self._k2[:m, :, :n])
        torch.index_select(self._v[: self.rows, :, :n], 0, index, out=self._v2[:m, :, :n])
        self._k, self._k2, self._v, self._v2 = self._k2, self._k, self._v2, self._v
        self.rows = m
        self._views()

    def crop_to(self, length: int) -> None:
        """Forget the positions from ``length`` on."""
        if self._k is not None:
            self.length = max(min(length, self.length), 0)
            self._views()

    def clear(self) -> None:
        self._k = self._v = self._k2 = self._v2 = self._id = None
        self.keys = self.values = None
        self.rows = self.length = 0
