"""Nyström attention: exactness when landmarks are the tokens, error against m, gradients,
padding and batch invariances, no NaN."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import pytest
import torch

from kexue.errors import KexueError
from kexue.nn.nystrom import (
    NystromAttention,
    exact_attention,
    iterative_pinv,
    nystrom_attention,
    segment_ids,
    segment_means,
)


def rand(*shape, dtype=torch.float32, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=dtype)


def rel_err(a, b):
    return float((a - b).norm() / b.norm())


def test_segment_ids_hand_made():
    mask = torch.tensor([[True] * 5, [False, True, True, False, True]])
    ids, counts = segment_ids(mask, 2)
    # 5 real tokens -> floor(r*2/5) = 0 0 0 1 1; 3 real tokens -> 0 0 1, pads go to slot 2
    assert ids.tolist() == [[0, 0, 0, 1, 1], [2, 0, 0, 2, 1]]
    assert counts.tolist() == [[3, 2], [2, 1]]


def test_segment_means_uneven_lengths_and_padding():
    x = torch.arange(7.0).view(1, 1, 7, 1)
    means, counts = segment_means(x, 3)  # 7 tokens, 3 segments: sizes 3, 2, 2
    assert counts.tolist() == [[3, 2, 2]]
    assert means.flatten().tolist() == pytest.approx([1.0, 3.5, 5.5])
    mask = torch.tensor([[True, True, False, True, True, True, False]])  # real: 0 1 3 4 5
    means, counts = segment_means(x, 2, mask)  # 5 real tokens: {0, 1, 3}, {4, 5}
    assert counts.tolist() == [[3, 2]]
    assert means.flatten().tolist() == pytest.approx([4 / 3, 4.5])


def test_iterative_pinv_converges_per_matrix():
    a = torch.softmax(rand(3, 8, 8, dtype=torch.float64, seed=1), dim=-1)
    a[1] = a[1] * 1e-3  # very different scales in one batch
    z = iterative_pinv(a, 60)
    torch.testing.assert_close(z, torch.linalg.pinv(a), rtol=1e-8, atol=1e-8)


def test_short_sequence_is_exact_attention():
    q, k, v = rand(2, 3, 40, 16, seed=1), rand(2, 3, 40, 16, seed=2), rand(2, 3, 40, 16, seed=3)
    torch.testing.assert_close(nystrom_attention(q, k, v, num_landmarks=64), exact_attention(q, k, v))
    manual = torch.softmax(q @ k.transpose(-1, -2) / 4.0, dim=-1) @ v
    torch.testing.assert_close(exact_attention(q, k, v), manual, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("iterations, tol", [(6, 5e-2), (40, 1e-10)])
def test_landmarks_equal_to_tokens_give_exact_attention(iterations, tol):
    # n = 2m with every token duplicated: the segment means are exactly the m distinct tokens,
    # so F·A^†·B·V = exact attention once A^† has converged (A·A^†·A = A).
    b, h, m, d = 2, 3, 12, 16
    q = rand(b, h, m, d, dtype=torch.float64, seed=1).repeat_interleave(2, dim=2)
    k = rand(b, h, m, d, dtype=torch.float64, seed=2).repeat_interleave(2, dim=2)
    v = rand(b, h, 2 * m, d, dtype=torch.float64, seed=3)
    assert rel_err(nystrom_attention(q, k, v, m, iterations), exact_attention(q, k, v)) < tol


def test_error_falls_as_landmarks_grow():
    q, k, v = (rand(1, 2, 512, 32, seed=s) * 1.5 for s in (1, 2, 3))
    exact = exact_attention(q, k, v)
    errors = [rel_err(nystrom_attention(q, k, v, m), exact) for m in (8, 32, 128, 512)]
    assert all(a > b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-5


def test_gradcheck_float64():
    q, k, v = (rand(2, 2, 10, 4, dtype=torch.float64, seed=s).requires_grad_() for s in (1, 2, 3))
    mask = torch.tensor([[True] * 10, [True] * 7 + [False] * 3])
    assert torch.autograd.gradcheck(lambda q, k, v: nystrom_attention(q, k, v, 3, 6, mask), (q, k, v))
    assert torch.autograd.gradcheck(lambda q, k, v: nystrom_attention(q, k, v, 4, 6), (q, k, v))


def test_no_nan_with_heavy_or_full_padding():
    q, k, v = (rand(3, 2, 200, 8, seed=s).requires_grad_() for s in (1, 2, 3))
    mask = torch.zeros(3, 200, dtype=torch.bool)
    mask[0, :3] = True  # 3 real tokens out of 200 (fewer than m)
    mask[1, 100:170] = True  # 70 real tokens, more than m
    # sample 2 is entirely padding
    out = nystrom_attention(q, k, v, 16, 6, mask)
    out.sum().backward()
    assert torch.isfinite(out).all()
    assert all(torch.isfinite(t.grad).all() for t in (q, k, v))
    assert out[2].abs().max() == 0 and out[~mask[:, None, :].expand(3, 2, 200)].abs().max() == 0
    # the 3-token sample gets exact attention
    exact = exact_attention(q[:1, :, :3], k[:1, :, :3], v[:1, :, :3])
    torch.testing.assert_close(out[:1, :, :3], exact, rtol=1e-5, atol=1e-6)


def test_padding_never_changes_real_outputs():
    n, pad = 150, 50
    q, k, v = (rand(1, 2, n, 8, seed=s) for s in (1, 2, 3))
    alone = nystrom_attention(q, k, v, 16)
    for where in ("right", "left"):
        junk = [rand(1, 2, pad, 8, seed=9) * 100 for _ in range(3)]
        cat = (lambda a, j: torch.cat([a, j], 2)) if where == "right" else (lambda a, j: torch.cat([j, a], 2))
        qp, kp, vp = cat(q, junk[0]), cat(k, junk[1]), cat(v, junk[2])
        mask = torch.ones(1, n + pad, dtype=torch.bool)
        if where == "right":
            mask[:, n:] = False
            real = slice(0, n)
        else:
            mask[:, :pad] = False
            real = slice(pad, n + pad)
        padded = nystrom_attention(qp, kp, vp, 16, 6, mask)
        torch.testing.assert_close(padded[:, :, real], alone, rtol=1e-5, atol=1e-6)


def test_module_padding_invariance_with_conv():
    torch.manual_seed(0)
    layer = NystromAttention(32, 4, num_landmarks=8, conv_kernel=5).eval()
    x = rand(1, 60, 32, seed=1)
    xp = torch.cat([x, rand(1, 25, 32, seed=2)], 1)
    mask = torch.ones(1, 85, dtype=torch.bool)
    mask[:, 60:] = False
    torch.testing.assert_close(layer(xp, mask)[:, :60], layer(x), rtol=1e-5, atol=1e-6)


def test_batch_independence():
    q, k, v = (rand(4, 2, 130, 8, seed=s) for s in (1, 2, 3))
    out = nystrom_attention(q, k, v, 16)
    q2, k2, v2 = q.clone(), k.clone(), v.clone()
    q2[1:], k2[1:] = q2[1:] * 30, k2[1:] * 30  # other samples: far larger attention logits
    v2[1:] = rand(3, 2, 130, 8, seed=7)
    torch.testing.assert_close(nystrom_attention(q2, k2, v2, 16)[0], out[0])
    torch.testing.assert_close(nystrom_attention(q[:1], k[:1], v[:1], 16)[0], out[0])


def test_module_matches_manual_projection():
    torch.manual_seed(0)
    layer = NystromAttention(16, 2, num_landmarks=4)
    x = rand(2, 20, 16, seed=1)
    q, k, v = layer.to_qkv(x).split(16, dim=-1)
    split = lambda t: t.view(2, 20, 2, 8).transpose(1, 2)
    core = nystrom_attention(split(q), split(k), split(v), 4, 6)
    expected = layer.to_out(core.transpose(1, 2).reshape(2, 20, 16))
    torch.testing.assert_close(layer(x), expected)


def test_bad_inputs_raise_kexue_error():
    q = rand(1, 2, 10, 4)
    with pytest.raises(KexueError, match="causal"):
        nystrom_attention(q, q, q, 4, causal=True)
    with pytest.raises(KexueError, match="key_padding_mask"):
        nystrom_attention(q, q, q, 4, key_padding_mask=torch.ones(1, 9, dtype=torch.bool))
    with pytest.raises(KexueError, match="odd"):
        NystromAttention(8, 2, conv_kernel=4)


def test_relative_errors_of_the_peers_against_exact_attention():
    """kexue.analysis.attention: the peers' cores on [q | k | v] agree with ours; errors vs exact fall with m."""
    pytest.importorskip("nystrom_attention")
    pytest.importorskip("transformers")
    from kexue.analysis.attention import call_core, core_functions, pack_qkv, relative_errors

    q, k, v = (rand(2, 2, 64, 8, seed=s) for s in range(3))  # (B, H, n, d)
    packed = pack_qkv(q, k, v)  # (B, n, 3·H·d)
    assert packed.shape == (2, 64, 48)
    torch.testing.assert_close(packed[..., 16:32], k.transpose(1, 2).flatten(2))
    exact = exact_attention(q, k, v).transpose(1, 2).flatten(2)
    outs = {name: call_core(fn, layout, q, k, v) for name, (fn, layout) in core_functions(64, 16, 16, 2).items()}
    torch.testing.assert_close(outs["exact"], exact)
    for peer in ("lucidrains", "hf"):  # same method, other pseudo-inverse starts: close, not equal
        assert rel_err(outs[peer], outs["ours"]) < 0.05
    errors = relative_errors(64, [4, 16, 64], q, k, v)
    assert set(errors) == {4, 16, 64} and set(errors[4]) == {"lucidrains", "hf", "ours"}
    assert errors[64]["ours"] < 1e-5  # m = n: ours is exact attention
    assert errors[4]["ours"] > errors[16]["ours"] > errors[64]["ours"]
