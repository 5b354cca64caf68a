"""The shared in-place KV buffer against a plain torch.cat / index_select reference."""

import pytest
import torch

from kexue.errors import KexueError
from kexue.generation.kvcache import KVBuffer, moved_rows


def test_append_grow_and_move_rows_match_the_concatenated_reference():
    g = torch.Generator().manual_seed(0)
    buf = KVBuffer(capacity=3)  # small: the appends below must grow it
    ref_k = ref_v = None
    for step, t in enumerate([2, 1, 1, 3, 1]):
        k, v = torch.randn(4, 2, t, 5, generator=g), torch.randn(4, 2, t, 5, generator=g)
        keys, values = buf.append(k, v)
        ref_k = k if ref_k is None else torch.cat([ref_k, k], 2)
        ref_v = v if ref_v is None else torch.cat([ref_v, v], 2)
        assert torch.equal(keys, ref_k) and torch.equal(values, ref_v)  # (rows, heads, T, dim) views
        index = torch.tensor([[0, 1, 2, 3], [3, 3, 0, 1], [1, 0, 2, 3], [0, 1, 2, 3], [2, 2, 2, 2]][step])
        buf.move_rows(index)
        ref_k, ref_v = ref_k.index_select(0, index), ref_v.index_select(0, index)
        assert torch.equal(buf.keys, ref_k) and torch.equal(buf.values, ref_v)
    assert buf.length == 8 and buf.allocated >= 8


def test_random_moves_few_or_many_rows_expansions_and_drops_match_the_reference():
    """Moves of one or two rows (copied in place), of most rows (gathered into the spare buffer),
    expansions (beam search's first reorder: more rows than the buffer holds) and drops."""
    g = torch.Generator().manual_seed(1)
    buf, ref_k = KVBuffer(capacity=2), None
    rows = 3
    for step in range(40):
        k = torch.randn(rows, 2, 1, 4, generator=g)
        buf.append(k, -k)
        ref_k = k if ref_k is None else torch.cat([ref_k, k], 2)
        kind = step % 4
        if kind == 0:  # one or two rows take another's place
            index = torch.arange(rows)
            for _ in range(1 + step % 2):
                index[torch.randint(rows, (1,), generator=g)] = torch.randint(rows, (1,), generator=g)
        elif kind == 1:  # everything shuffles
            index = torch.randint(rows, (rows,), generator=g)
        elif kind == 2:  # grow by up to two rows (copies of existing ones), keeping the others
            index = torch.cat([torch.arange(rows), torch.randint(rows, (1 + step % 2,), generator=g)])
        else:  # drop a row from the middle
            index = (
                torch.cat([torch.arange(rows)[: rows // 2], torch.arange(rows)[rows // 2 + 1 :]])
                if rows > 2
                else torch.arange(rows)
            )
        buf.move_rows(index)
        ref_k = ref_k.index_select(0, index)
        rows = len(index)
        assert torch.equal(buf.keys, ref_k) and torch.equal(buf.values, -ref_k)


def test_a_move_of_few_rows_copies_in_place_without_a_spare_buffer():
    buf = KVBuffer()
    keys = torch.randn(6, 2, 3, 4)
    buf.append(keys, keys)
    ptr = buf._k.data_ptr()
    buf.move_rows(torch.tensor([0, 2, 1, 3, 4, 5]))  # a swap: two rows of six
    assert buf._k.data_ptr() == ptr and buf._k2 is None
    assert torch.equal(buf.keys, keys[[0, 2, 1, 3, 4, 5]])


def test_moves_that_keep_every_row_in_place_copy_nothing():
    buf = KVBuffer()
    buf.append(torch.randn(3, 1, 2, 4), torch.randn(3, 1, 2, 4))
    ptr, before = buf._k.data_ptr(), buf.keys.clone()
    buf.move_rows(torch.tensor([0, 1]))  # the last row finished and leaves: nothing moves
    assert buf._k.data_ptr() == ptr and buf._k2 is None and torch.equal(buf.keys, before[:2])
    assert moved_rows(torch.tensor([0, 2, 2])).tolist() == [1]


def test_wrong_row_count_is_one_clear_error_and_no_gradient_is_kept():
    buf = KVBuffer()
    k = torch.randn(2, 1, 1, 3, requires_grad=True)
    keys, _ = buf.append(k, k)
    assert not keys.requires_grad  # a decoding cache: values are detached
    with pytest.raises(KexueError, match="holds 2 rows but the step got 3"):
        buf.append(torch.randn(3, 1, 1, 3), torch.randn(3, 1, 1, 3))


def test_a_beam_reorder_copies_only_where_the_two_rows_pasts_differ():
    """Rows that share a past (a beam and the copy it was made from) copy only the tail after the
    point where they parted; the result is still exactly the full gather's."""
    g = torch.Generator().manual_seed(2)
    buf = KVBuffer()
    k = torch.randn(4, 2, 10, 3, generator=g)
    buf.append(k, k)
    ref = k
    buf.move_rows(torch.tensor([0, 0, 0, 0]))  # every row becomes row 0: most of the buffer changes,
    ref = ref[[0, 0, 0, 0]]
    assert buf.copied == 4 * 10  # so it is gathered whole into the spare buffer
    for _ in range(2):  # two steps: each row gets its own positions
        k = torch.randn(4, 2, 1, 3, generator=g)
        buf.append(k, k)
        ref = torch.cat([ref, k], 2)
    buf.move_rows(torch.tensor([1, 0, 2, 2]))  # a swap and a copy: the rows parted two positions ago
    ref = ref[[1, 0, 2, 2]]
    assert torch.equal(buf.keys, ref) and torch.equal(buf.values, ref)
    assert buf.copied == 3 * 2  # three rows, the last two positions each, not 3 x 12


def test_tail_groups_split_the_rows_where_it_saves_most():
    from kexue.generation.kvcache import _tail_groups

    moved, src = torch.tensor([0, 1, 2, 3]), torch.tensor([1, 0, 3, 2])
    groups = _tail_groups(moved, src, torch.tensor([98, 2, 99, 97]), 100)
    # one group would copy 4 x 98 positions; rows 0, 2, 3 from 97 and row 1 from 2 copy 3 x 3 + 98
    assert [(r.tolist(), s.tolist(), start) for r, s, start in groups] == [([1], [0], 2), ([3, 0, 2], [2, 1, 3], 97)]
    assert _tail_groups(moved, src, torch.tensor([5, 5, 5, 5]), 10)[0][2] == 5


def test_rows_that_left_and_come_back_are_copied_whole():
    """A move that gathers into the spare buffer and drops a row, then a move back to more rows:
    the returning row's old slots are stale, so it copies its whole past (the full gather's result)."""
    g = torch.Generator().manual_seed(4)
    buf = KVBuffer()
    k = torch.randn(4, 1, 3, 2, generator=g)
    buf.append(k, k)
    ref = k
    for index in ([3, 2, 1], [0, 1, 2, 0], [1], [0, 0, 0, 0, 0]):
        buf.move_rows(torch.tensor(index))
        ref = ref[index]
        assert torch.equal(buf.keys, ref) and torch.equal(buf.values, ref)


def test_a_move_with_nothing_cached_copies_nothing():
    buf = KVBuffer()
    k = torch.randn(2, 1, 3, 2)
    buf.append(k, k)
    buf.crop_to(0)
    buf.move_rows(torch.tensor([1, 0, 0]))
    assert buf.rows == 3 and buf.keys.shape == (3, 1, 0, 2) and buf.copied == 0
    k2 = torch.randn(3, 1, 1, 2)
    assert torch.equal(buf.append(k2, k2)[0], k2)
