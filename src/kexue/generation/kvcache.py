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
  another's place; when a few rows do, only those rows are copied (gathered, then written in place);
  when most do, the filled part is gathered once into a spare buffer of the same shape that then
  becomes the cache (no allocation per step).

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
        k, v = self._k, self._v
        self._k = k.new_empty((rows, k.shape[1], capacity, k.shape[3]))
        self._v = v.new_empty((rows, v.shape[1], capacity, v.shape[3]))
        self._k2 = self._v2 = None
        n = min(rows, self.rows)
        self._k[:n, :, : self.length] = k[:n, :, : self.length]
        self._v[:n, :, : self.length] = v[:n, :, : self.length]

    def append(self, key_states: torch.Tensor, value_states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Write ``t`` new positions (rows, heads, t, dim) after the filled part; return the views."""
        N, heads, t, dim = key_states.shape
        end = self.length + t
        if self._k is None:
            cap = max(self.capacity, end) if self.capacity else max(2 * end, end + 64)
            self._k = key_states.detach().new_empty((N, heads, cap, dim))
            self._v = value_states.detach().new_empty((N, value_states.shape[1], cap, value_states.shape[3]))
            self.rows = N
        elif self.rows != N:
            raise KexueError(f"the cache holds {self.rows} rows but the step got {N}")
        elif end > self._k.shape[2]:
            self._alloc(self._k.shape[0], max(2 * self._k.shape[2], end))
        self._k[:N, :, self.length : end] = key_states.detach()  # a decoding cache: no gradient
        self._v[:N, :, self.length : end] = value_states.detach()
        self.length = end
        self._views()
        return self.keys, self.values

    def move_rows(self, index: torch.Tensor, moved: torch.Tensor | None = None) -> None:
        """Row ``i`` becomes old row ``index[i]`` (``len(index)`` rows afterwards). ``moved``: the
        ``i`` with ``index[i] != i`` (:func:`moved_rows`); when none, nothing is copied."""
        if self._k is None:
            return
        m = len(index)
        if moved is None:
            moved = moved_rows(index)
        n = self.length
        if len(moved) == 0 and m <= self.rows:
            self.rows = m  # rows kept in place, finished ones dropped from the end
            self._views()
            return
        if m > self._k.shape[0]:
            self._alloc(m, self._k.shape[2])
        if 2 * len(moved) <= m:
            # few rows change: copy those (gathered first, so a swap reads the old rows), in place
            src = index.index_select(0, moved)
            for buf in (self._k, self._v):
                filled = buf[:, :, :n]
                filled.index_copy_(0, moved, filled.index_select(0, src))
            self.rows = m
            self._views()
            return
        if self._k2 is None or self._k2.shape != self._k.shape:
            self._k2, self._v2 = torch.empty_like(self._k), torch.empty_like(self._v)
        # one gather of the filled part into the spare buffer (no allocation), then swap the two
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
        self._k = self._v = self._k2 = self._v2 = None
        self.keys = self.values = None
        self.rows = self.length = 0
