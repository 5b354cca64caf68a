"""How close Nyström attention comes to exact attention: ours and two public implementations on the same q, k, v.

The peers are ``nystrom_attention.NystromAttention`` (PyPI ``nystrom-attention``, lucidrains) and
``transformers``' ``NystromformerSelfAttention`` (hf). They have no separate core routine, so
their own ``forward`` runs with the projections replaced by zero-cost slicing views: the input is
``[q | k | v]`` of shape (B, n, 3·dim) and ``to_qkv`` / ``query``, ``key``, ``value`` just take
their slice (``to_out`` is the identity). No conv skip anywhere. Both peers are optional
dependencies (``pip install 'kexue[peers]' 'kexue[hf]'``), imported when used.

Example::

    q, k, v = (torch.randn(1, 8, 1024, 64) for _ in range(3))     # (B, H, n, d)
    relative_errors(1024, [32, 64], q, k, v)   # {32: {'lucidrains': ..., 'hf': ..., 'ours': ...}, 64: {...}}
"""

from __future__ import annotations

import importlib.util
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from kexue.errors import KexueError
from kexue.nn.nystrom import exact_attention, nystrom_attention

DIM, HEADS = 512, 8  # the paper's Table 1 module: width 512, 8 heads
PEERS = (("nystrom_attention", "pip install 'kexue[peers]'"), ("transformers", "pip install 'kexue[hf]'"))


def require_peers(what: str = "this comparison") -> None:
    """Refuse up front, in one line, when a peer implementation is not installed."""
    for module, hint in PEERS:
        if importlib.util.find_spec(module) is None:
            raise KexueError(f"{what} needs {module} ({hint})")


class _Slice(nn.Module):
    """Stand-in projection: the [a, b) slice of the last dimension (a view, no work)."""

    def __init__(self, a: int, b: int):
        super().__init__()
        self.a, self.b = a, b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[..., self.a : self.b]


class _FirstOutput(nn.Module):
    """hf's self-attention returns a tuple: keep its first element, then ``out``."""

    def __init__(self, attn: nn.Module, out: nn.Module):
        super().__init__()
        self.attn, self.out = attn, out

    def forward(self, x):
        return self.out(self.attn(x)[0])


def lucidrains_nystrom(m: int, core: bool, dim: int = DIM, heads: int = HEADS) -> nn.Module:
    """lucidrains' layer with m landmarks and 6 pinv iterations, (B, n, dim) -> (B, n, dim).

    With ``core``, its input is ``[q | k | v]`` (B, n, 3·dim) and it has no projections.
    """
    try:
        from nystrom_attention import NystromAttention as Lucid
    except ImportError:
        raise KexueError("the lucidrains peer needs nystrom-attention (pip install 'kexue[peers]')") from None
    layer = Lucid(dim=dim, dim_head=dim // heads, heads=heads, num_landmarks=m, pinv_iterations=6, residual=False)
    if core:
        layer.to_qkv, layer.to_out = nn.Identity(), nn.Identity()  # input is [q | k | v]; chunk(3) splits it
    return layer


def hf_nystrom(n: int, m: int, core: bool, dim: int = DIM, heads: int = HEADS) -> nn.Module:
    """transformers' ``NystromformerSelfAttention`` for length n (it needs n = m · segment), no conv skip.

    With ``core``, its input is ``[q | k | v]`` (B, n, 3·dim); otherwise it has its own q/k/v
    projections plus an ``nn.Linear`` output projection (hf's self-attention has none).
    """
    try:
        from transformers import NystromformerConfig
        from transformers.models.nystromformer.modeling_nystromformer import (
            NystromformerSelfAttention,
        )
    except ImportError:
        raise KexueError("the hf peer needs transformers (pip install 'kexue[hf]')") from None
    config = NystromformerConfig(
        hidden_size=dim,
        num_attention_heads=heads,
        num_landmarks=m,
        segment_means_seq_len=n,
        inv_coeff_init_option=False,
        attention_probs_dropout_prob=0.0,
    )
    attn = NystromformerSelfAttention(config)
    attn.conv_kernel_size, attn.conv = None, None  # no conv skip (the config refuses None)
    if core:
        attn.query, attn.key, attn.value = _Slice(0, dim), _Slice(dim, 2 * dim), _Slice(2 * dim, 3 * dim)
        return _FirstOutput(attn, nn.Identity())
    return _FirstOutput(attn, nn.Linear(dim, dim))


def core_functions(n: int, m: int, dim: int = DIM, heads: int = HEADS) -> dict[str, tuple[Callable, str]]:
    """Each method's attention core and the input layout it takes: ``heads`` = three (B, H, n, d)
    tensors, ``packed`` = one (B, n, 3·dim) tensor ``[q | k | v]``. All return (B, n, dim)."""
    merge = lambda o: o.transpose(1, 2).flatten(2)  # b h n d -> b n (h d)
    lucid, hf = lucidrains_nystrom(m, True, dim, heads), hf_nystrom(n, m, True, dim, heads)
    return {
        "exact": (lambda q, k, v: merge(F.scaled_dot_product_attention(q, k, v)), "heads"),
        "lucidrains": (lucid, "packed"),
        "hf": (hf, "packed"),
        "ours": (lambda q, k, v: merge(nystrom_attention(q, k, v, m, 6)), "heads"),
    }


def pack_qkv(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Three (B, H, n, d) tensors -> ``[q | k | v]`` (B, n, 3·H·d), the peers' core input."""
    return torch.cat([t.transpose(1, 2).flatten(2) for t in (q, k, v)], dim=-1)


def call_core(fn: Callable, layout: str, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Run one of :func:`core_functions` on (B, H, n, d) q, k, v; returns (B, n, H·d)."""
    return fn(q, k, v) if layout == "heads" else fn(pack_qkv(q, k, v))


def relative_errors(
    n: int, landmarks: list[int], q: torch.Tensor, k: torch.Tensor, v: torch.Tensor
) -> dict[int, dict[str, float]]:
    """‖Ŷ − Y‖/‖Y‖ against exact attention of each Nyström method at each m, on the same q, k, v.

    Args:
        n: sequence length of q, k, v (a multiple of every m: hf splits n into m equal segments).
        landmarks: the m values.
        q, k, v: (B, H, n, d).
    Returns:
        ``{m: {"lucidrains": e, "hf": e, "ours": e}}``.
    """
    with torch.no_grad():
        exact = exact_attention(q, k, v).transpose(1, 2).flatten(2)  # (B, n, H·d)
        errors: dict[int, dict[str, float]] = {}
        for m in landmarks:
            fns = core_functions(n, m, q.shape[1] * q.shape[3], q.shape[1])
            errors[m] = {
                name: float((call_core(fn, layout, q, k, v) - exact).norm() / exact.norm())
                for name, (fn, layout) in fns.items()
                if name != "exact"
            }
    return errors
