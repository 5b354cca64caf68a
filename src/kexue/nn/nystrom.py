"""Nyström attention (Xiong et al., AAAI 2021; Su, kexue.fm/archives/8180).

Softmax attention ``softmax(QKᵀ/√d)·V`` costs O(n²). With m landmark queries Q̃ and keys K̃
(segment means of Q and K) it is approximated by

    Attn ≈ softmax(QK̃ᵀ/√d) · softmax(Q̃K̃ᵀ/√d)^† · softmax(Q̃Kᵀ/√d) · V        (eq. 15 of the paper)
         =        F        ·          A^†          ·         B         · V

which is exact when the landmarks are all the tokens (A·A^†·A = A). We evaluate it right to
left, and both n-sided products with PyTorch's fused attention kernel, so no n × m matrix is
ever stored:

    BV  = softmax(Q̃Kᵀ/√d)·V  = SDPA(Q̃, K, V)       (m queries over n keys)      O(nmd)
    W   = A^† · BV                                  (m × m times m × d)          O(m²d)
    out = softmax(QK̃ᵀ/√d)·W  = SDPA(Q, K̃, W)       (n queries over m keys)      O(nmd)

A^† comes from the iterative Moore–Penrose scheme (eq. 16 of the paper), started per matrix,
i.e. per sample and head, so that no sample's output depends on the rest of the batch.

Landmarks and lengths. The m segments are taken over a sample's *real* tokens in order: the
r-th real token (r = 0 … L−1) of a sample with L real tokens belongs to segment ⌊r·m/L⌋. When m
divides L this is the paper's segment means; otherwise segments hold ⌊L/m⌋ or ⌈L/m⌉ tokens (no
padding to a multiple of m, no empty landmark). Padded tokens take part in nothing — not in the
landmark means, not in any softmax — so adding padding never changes the outputs at real
positions. A sample with L ≤ m gets exact attention (its landmarks are its tokens); when the
whole sequence has n ≤ m the call is plain exact attention.

Why it cannot be causal: every landmark key averages a segment that reaches past a given query,
and the n × n matrix is never formed, so no triangular mask can be applied.
"""

from __future__ import annotations

import contextlib
import functools

import torch
import torch.nn.functional as F
from torch import nn

from kexue.errors import KexueError

# CPU m × m work below this many flops runs on one thread (see _OneThread)
SINGLE_THREAD_FLOPS = 5e8

__all__ = [
    "ExactAttention",
    "NystromAttention",
    "exact_attention",
    "iterative_pinv",
    "nystrom_attention",
    "segment_means",
]


def exact_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention ``softmax(QKᵀ/√d)·V`` with padded keys excluded (PyTorch SDPA).

    Args:
        q, k, v: ``(B, H, n, d)``.
        key_padding_mask: ``(B, n)`` bool, True at real tokens; None means no padding.
    Returns:
        ``(B, H, n, d)``; rows at padded positions are zero.
    """
    if key_padding_mask is None:
        return F.scaled_dot_product_attention(q, k, v)
    keep = _keep_mask(key_padding_mask)  # (B, n)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
    return out * key_padding_mask[:, None, :, None].to(out.dtype)


def _keep_mask(mask: torch.Tensor) -> torch.Tensor:
    """Mask for a softmax: a fully padded sample keeps everything (its outputs are zeroed
    afterwards), so that no softmax row is empty and nothing becomes NaN."""
    return mask | ~mask.any(dim=-1, keepdim=True)


def segment_ids(key_padding_mask: torch.Tensor, num_landmarks: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Segment of each token: the r-th real token of a sample with L real tokens goes to ⌊r·m/L⌋.

    Args:
        key_padding_mask: ``(B, n)`` bool, True at real tokens.
        num_landmarks: m.
    Returns:
        ``ids`` ``(B, n)`` int64 in ``[0, m]`` (m marks padding) and ``counts`` ``(B, m)`` tokens
        per segment (zero for the empty segments of samples shorter than m).
    Example: ``segment_ids(torch.ones(1, 5, dtype=torch.bool), 2)[0]`` -> ``[[0, 0, 0, 1, 1]]``.
    """
    m = num_landmarks
    valid = key_padding_mask.long()
    lengths = valid.sum(dim=1, keepdim=True)  # (B, 1)
    rank = valid.cumsum(dim=1) - 1  # (B, n)
    ids = torch.where(key_padding_mask, rank * m // lengths.clamp(min=1), m)
    counts = torch.zeros(ids.shape[0], m + 1, dtype=valid.dtype, device=ids.device)
    counts.scatter_add_(1, ids, valid)
    return ids, counts[:, :m]


def segment_means(
    x: torch.Tensor, num_landmarks: int, key_padding_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """Landmarks: means of x over the m segments of each sample's real tokens.

    Args:
        x: ``(B, H, n, d)``.
        num_landmarks: m.
        key_padding_mask: ``(B, n)`` bool, True at real tokens; None means none.
    Returns:
        ``landmarks`` ``(B, H, m, d)`` (zero rows for empty segments) and ``counts`` ``(B, m)``.
    """
    b, h, n, d = x.shape
    m = num_landmarks
    if key_padding_mask is None and n % m == 0:
        # contiguous equal segments: b h (m l) d -> b h m d
        counts = torch.full((b, m), n // m, dtype=torch.long, device=x.device)
        return x.unflatten(2, (m, n // m)).mean(dim=3), counts
    if key_padding_mask is None:
        key_padding_mask = torch.ones(b, n, dtype=torch.bool, device=x.device)
    ids, counts = segment_ids(key_padding_mask, m)  # (B, n), (B, m)
    # one flat index per (b, h, token) into B·H·(m+1) slots; slot m of each (b, h) collects pads
    offset = torch.arange(b * h, device=x.device).view(b, h, 1) * (m + 1)
    flat = (offset + ids[:, None, :]).reshape(-1)  # (B·H·n,)
    sums = x.new_zeros(b * h * (m + 1), d).index_add(0, flat, x.reshape(-1, d))
    sums = sums.view(b, h, m + 1, d)[:, :, :m]  # (B, H, m, d)
    return sums / counts.clamp(min=1)[:, None, :, None].to(x.dtype), counts


def iterative_pinv(a: torch.Tensor, iterations: int = 6) -> torch.Tensor:
    """Moore–Penrose pseudo-inverse of each square matrix in ``a`` by the cubic iteration

        Z₀ = Aᵀ / (‖A‖₁ ‖A‖∞),   Z_{k+1} = ¼ Z_k (13I − A Z_k (15I − A Z_k (7I − A Z_k)))

    (eq. 16, Razavi et al. 2014), with the starting scale computed per matrix (never over the
    batch). It converges to A^† whenever ‖I − A Z₀‖ < 1; zero rows and columns stay zero.

    Args:
        a: ``(..., m, m)``.
        iterations: number of updates (6 in the paper).
    Returns:
        ``(..., m, m)``.
    """
    m = a.shape[-1]
    batch_shape = a.shape[:-2]
    a = a.reshape(-1, m, m)  # (N, m, m)
    norm_1 = a.abs().sum(dim=-2).amax(dim=-1)  # (N,) max column sum
    norm_inf = a.abs().sum(dim=-1).amax(dim=-1)  # (N,) max row sum
    scale = (norm_1 * norm_inf).clamp(min=torch.finfo(a.dtype).tiny)
    z = a.transpose(-1, -2) / scale[:, None, None]
    eye = torch.eye(m, dtype=a.dtype, device=a.device)
    eye7, eye13, eye15 = ((c * eye).expand_as(a) for c in (7, 13, 15))
    for _ in range(iterations):
        az = torch.bmm(a, z)
        t = eye7 - az  # 7I − AZ
        t = torch.baddbmm(eye15, az, t, alpha=-1)  # 15I − AZ(7I − AZ)
        t = torch.baddbmm(eye13, az, t, alpha=-1)  # 13I − AZ(15I − …)
        z = torch.baddbmm(z, z, t, beta=0, alpha=0.25)  # ¼ Z(13I − …)
    return z.reshape(*batch_shape, m, m)


def _landmark_solve(
    q_land: torch.Tensor, k_land: torch.Tensor, bv: torch.Tensor, landmark_mask: torch.Tensor | None, iterations: int
) -> torch.Tensor:
    """W = softmax(Q̃K̃ᵀ/√d)^† · BV, the m × m middle of eq. (15): (B, H, m, d) -> (B, H, m, dv).

    Empty landmarks (samples with fewer real tokens than m) drop out: their columns are masked
    and their rows zeroed, so A = [[A_real, 0], [0, 0]] and A^† keeps that shape.
    """
    logits = (q_land @ k_land.transpose(-1, -2)) * q_land.shape[-1] ** -0.5  # (B, H, m, m)
    if landmark_mask is not None:
        logits = logits.masked_fill(~landmark_mask[:, None, None, :], torch.finfo(logits.dtype).min)
    a = torch.softmax(logits, dim=-1)
    if landmark_mask is not None:
        a = a * landmark_mask[:, None, :, None].to(a.dtype)
    return iterative_pinv(a, iterations) @ bv


@contextlib.contextmanager
def _one_thread():
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


class _OneThread(torch.autograd.Function):
    """Run ``fn(*inputs)`` and its backward on one CPU thread.

    The m × m work is some thirty tiny kernels (about 1 ms in all on one core); with several
    threads each one pays a thread wake-up, which on a loaded machine costs a scheduler slice
    (milliseconds) per kernel and came to ~100 ms at m = 64 in our measurements. The backward
    recomputes ``fn`` (cheap) and differentiates it, also on one thread.
    """

    @staticmethod
    def forward(ctx, fn, *inputs):
        ctx.fn = fn
        ctx.save_for_backward(*inputs)
        with _one_thread(), torch.no_grad():
            return fn(*inputs)

    @staticmethod
    def backward(ctx, grad):
        inputs = [x.detach().requires_grad_(need) for x, need in zip(ctx.saved_tensors, ctx.needs_input_grad[1:])]
        wanted = [x for x in inputs if x.requires_grad]
        with _one_thread(), torch.enable_grad():
            grads = iter(torch.autograd.grad(ctx.fn(*inputs), wanted, grad) if wanted else ())
        return (None, *(next(grads) if x.requires_grad else None for x in inputs))


def nystrom_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    num_landmarks: int = 64,
    pinv_iterations: int = 6,
    key_padding_mask: torch.Tensor | None = None,
    causal: bool = False,
) -> torch.Tensor:
    """Nyström approximation of ``softmax(QKᵀ/√d)·V`` in O(nmd + m³) time and O(nd + m²) memory.

    Args:
        q, k, v: ``(B, H, n, d)`` self-attention queries, keys and values (not pre-scaled).
        num_landmarks: m, segments per sample (64 in the paper).
        pinv_iterations: iterations of :func:`iterative_pinv` (6 in the paper).
        key_padding_mask: ``(B, n)`` bool, True at real tokens; None means no padding.
        causal: must be False; Nyström attention cannot be causal (see the module docstring).
    Returns:
        ``(B, H, n, d)``; rows at padded positions are zero.
    Example: ``nystrom_attention(q, k, v, num_landmarks=64)`` with q, k, v of shape (1, 8, 8192, 64).
    """
    if causal:
        raise KexueError(
            "Nyström attention cannot be causal: every landmark averages keys that lie "
            "after some queries, and the n × n matrix a causal mask needs is never formed"
        )
    if q.dim() != 4 or q.shape != k.shape or k.shape[:3] != v.shape[:3]:
        raise KexueError(
            f"q, k, v must be (B, H, n, d) with equal B, H, n (and q, k equal d); got "
            f"{tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    if num_landmarks < 1 or pinv_iterations < 0:
        raise KexueError(f"need num_landmarks >= 1 and pinv_iterations >= 0, got {num_landmarks}, {pinv_iterations}")
    b, h, n, d = q.shape
    m = num_landmarks
    if key_padding_mask is not None:
        if key_padding_mask.shape != (b, n) or key_padding_mask.dtype != torch.bool:
            raise KexueError(
                f"key_padding_mask must be bool of shape {(b, n)}, got "
                f"{key_padding_mask.dtype} {tuple(key_padding_mask.shape)}"
            )
        if bool(key_padding_mask.all()):
            key_padding_mask = None
    if n <= m:
        return exact_attention(q, k, v, key_padding_mask)

    q_land, counts = segment_means(q, m, key_padding_mask)  # (B, H, m, d), (B, m)
    k_land, _ = segment_means(k, m, key_padding_mask)  # (B, H, m, d)

    # BV = softmax(Q̃Kᵀ/√d)·V with padded keys masked, (B, H, m, dv)
    key_mask = None if key_padding_mask is None else _keep_mask(key_padding_mask)[:, None, None, :]
    bv = F.scaled_dot_product_attention(q_land, k, v, attn_mask=key_mask)
    landmark_mask = None
    if key_padding_mask is not None and not bool((counts > 0).all()):
        landmark_mask = _keep_mask(counts > 0)  # (B, m)
    solve = functools.partial(_landmark_solve, landmark_mask=landmark_mask, iterations=pinv_iterations)
    # the pseudo-inverse iteration is kept in float32 (or float64) even under mixed precision
    work = torch.promote_types(q.dtype, torch.float32)
    small = b * h * m**3 * (4 * pinv_iterations + 2) <= SINGLE_THREAD_FLOPS
    with torch.autocast(q.device.type, enabled=False):
        args = (q_land.to(work), k_land.to(work), bv.to(work))
        w = _OneThread.apply(solve, *args) if q.device.type == "cpu" and small else solve(*args)
    w = w.to(v.dtype)  # (B, H, m, dv)

    if key_padding_mask is not None:
        lengths = key_padding_mask.sum(dim=1)  # (B,)
        short = lengths <= m
        if bool(short.any()):
            # L <= m: every landmark is one token, so softmax(QK̃ᵀ/√d)·Ṽ is exact attention
            v_land, _ = segment_means(v, m, key_padding_mask)
            w = torch.where(short[:, None, None, None], v_land, w)

    # out = softmax(QK̃ᵀ/√d)·W, (B, H, n, dv)
    attn_mask = None if landmark_mask is None else landmark_mask[:, None, None, :]
    out = F.scaled_dot_product_attention(q, k_land, w, attn_mask=attn_mask)
    if key_padding_mask is not None:
        out = out * key_padding_mask[:, None, :, None].to(out.dtype)
    return out


class DepthwiseSkip(nn.Conv2d):
    """The Nyströmformer's depthwise-convolution skip on V, with padding kept out.

    One (kernel, 1) filter per head runs along the sequence and is shared across the head's
    dimensions (a grouped ``nn.Conv2d``, so its weight is ``conv.weight``). Padded positions are
    zeroed before the convolution (they add nothing to their neighbours) and after (they stay zero).

    Args:
        heads: number of heads (one filter each).
        kernel: odd kernel size (35 on LRA).
    """

    def __init__(self, heads: int, kernel: int):
        if kernel < 1 or kernel % 2 == 0:
            raise KexueError(f"conv_kernel must be a positive odd number, got {kernel}")
        super().__init__(heads, heads, (kernel, 1), padding=(kernel // 2, 0), groups=heads, bias=False)

    def forward(self, v: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """v ``(B, H, n, d)`` -> skip ``(B, H, n, d)``."""
        if key_padding_mask is None:
            return super().forward(v)
        keep = key_padding_mask[:, None, :, None].to(v.dtype)
        return super().forward(v * keep) * keep


class NystromAttention(nn.Module):
    """Multi-head self-attention with the Nyström core and an optional depthwise-conv skip on V.

    Args:
        dim: model width (split into ``heads`` heads of ``dim // heads``).
        heads: number of heads.
        num_landmarks: m (64 in the paper).
        pinv_iterations: pseudo-inverse iterations (6 in the paper).
        conv_kernel: odd kernel size of the per-head depthwise convolution of V along the
            sequence added to the output (35 on LRA), or None for none.
        bias: biases in the projections.
    Example: ``NystromAttention(512, 8)(x, key_padding_mask)`` with x ``(B, n, 512)`` -> ``(B, n, 512)``.
    """

    def __init__(
        self,
        dim: int,
        heads: int,
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel: int | None = None,
        bias: bool = True,
    ):
        super().__init__()
        if dim % heads:
            raise KexueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads, self.num_landmarks, self.pinv_iterations = heads, num_landmarks, pinv_iterations
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.to_out = nn.Linear(dim, dim, bias=bias)
        self.conv = None if conv_kernel is None else DepthwiseSkip(heads, conv_kernel)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``(B, n, dim)``, key_padding_mask ``(B, n)`` bool True at real tokens -> ``(B, n, dim)``."""
        # b n (three h d) -> three b h n d
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = nystrom_attention(q, k, v, self.num_landmarks, self.pinv_iterations, key_padding_mask)
        if self.conv is not None:
            out = out + self.conv(v, key_padding_mask)
        return self.to_out(out.transpose(1, 2).flatten(2))  # b h n d -> b n (h d)


class ExactAttention(nn.Module):
    """Multi-head softmax self-attention with the same projections as :class:`NystromAttention`.

    The O(n²) reference the Nyström layer replaces (PyTorch SDPA core). ``conv_kernel`` adds the same
    depthwise-conv skip on V as :class:`NystromAttention`, for like-for-like comparisons.
    Example: ``ExactAttention(512, 8)(x, key_padding_mask)`` with x ``(B, n, 512)`` -> ``(B, n, 512)``.
    """

    def __init__(self, dim: int, heads: int, bias: bool = True, conv_kernel: int | None = None):
        super().__init__()
        if dim % heads:
            raise KexueError(f"dim {dim} is not divisible by heads {heads}")
        self.heads = heads
        self.to_qkv = nn.Linear(dim, 3 * dim, bias=bias)
        self.to_out = nn.Linear(dim, dim, bias=bias)
        self.conv = None if conv_kernel is None else DepthwiseSkip(heads, conv_kernel)

    def forward(self, x: torch.Tensor, key_padding_mask: torch.Tensor | None = None) -> torch.Tensor:
        """x ``(B, n, dim)``, key_padding_mask ``(B, n)`` bool True at real tokens -> ``(B, n, dim)``."""
        q, k, v = self.to_qkv(x).unflatten(-1, (3, self.heads, -1)).permute(2, 0, 3, 1, 4)
        out = exact_attention(q, k, v, key_padding_mask)  # (B, H, n, d)
        if self.conv is not None:
            out = out + self.conv(v, key_padding_mask)
        return self.to_out(out.transpose(1, 2).flatten(2))
