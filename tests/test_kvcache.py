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
    assert buf.length == 8 and buf._k.shape[1] >= 8


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
