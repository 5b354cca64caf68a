"""Output heads of language models: the plain softmax and the self-terminating layer.

Both map hidden states (N, T, H) to next-token log-probabilities (N, T, V) and carry one number
per row, ``log_alpha`` = log P(no eos so far), so that decoding can continue step by step.

Self-terminating layer (Welleck et al. 2020, sec. 4; kexue.fm/archives/7500)::

    beta_t  = (1 - eps) * sigmoid(w_eos . h_t + b_eos)       in (0, 1 - eps)
    alpha_t = prod_{t' <= t} beta_t'                          (product restarts at a reset)
    p(eos | y_<t) = 1 - alpha_t ;  p(v | y_<t) = alpha_t * softmax_{v != eos}(w_v . h_t + b_v)

so p(eos) at the t-th position after a reset is at least 1 - (1 - eps)^(t + 1): greedy decoding
must stop once that exceeds 1/2, i.e. within -ln 2 / ln(1 - eps) steps.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from kexue.errors import KexueError


def segmented_cumsum(x: torch.Tensor, reset: torch.Tensor, start: torch.Tensor) -> torch.Tensor:
    """Running sum along dim 1 that restarts at every ``reset`` position.

    Args:
        x: (N, T) terms.
        reset: (N, T) bool; where True the sum restarts with ``x[:, t]``.
        start: (N,) value carried in from before position 0 (ignored after a reset).
    Returns:
        (N, T) sums. Example: x=[1,1,1], reset=[F,T,F], start=5 -> [6, 1, 2].
    """
    total = start[:, None] + x.cumsum(1)  # (N, T)
    before = torch.cat([start[:, None], total[:, :-1]], 1)  # total just before t
    positions = torch.arange(x.shape[1], device=x.device).expand_as(x)
    last_reset = torch.where(reset, positions, torch.full_like(positions, -1)).cummax(1).values
    offset = torch.where(last_reset >= 0, before.gather(1, last_reset.clamp(min=0)), torch.zeros_like(total))
    return total - offset


class SoftmaxHead(nn.Module):
    """Plain linear + log-softmax; ``log_alpha`` passes through untouched (a do-nothing stand-in)."""

    def __init__(self, hidden: int, vocab: int):
        super().__init__()
        self.proj = nn.Linear(hidden, vocab)

    def forward(self, h: torch.Tensor, log_alpha: torch.Tensor, reset: torch.Tensor):
        return self.proj(h).log_softmax(-1), log_alpha


class SelfTerminatingHead(nn.Module):
    """Self-terminating softmax: p(eos) grows to 1 at a guaranteed rate (see module docstring).

    Args:
        hidden: size of h_t. vocab: output size (eos included). eos_id: index of eos.
        eps: the rate; p(eos) after t + 1 steps is at least 1 - (1 - eps)^(t + 1).
    forward(h (N, T, H), log_alpha (N,), reset (N, T)) -> (log-probs (N, T, V), log_alpha (N,)).
    """

    def __init__(self, hidden: int, vocab: int, eos_id: int, eps: float = 1e-3):
        super().__init__()
        if not 0.0 < eps < 1.0:
            raise KexueError(f"self-terminating eps must be in (0, 1), got {eps}")
        self.proj = nn.Linear(hidden, vocab)
        self.eos_id, self.eps = eos_id, eps

    def forward(self, h: torch.Tensor, log_alpha: torch.Tensor, reset: torch.Tensor):
        z = self.proj(h).float()  # (N, T, V)
        eos = self.eos_id
        # log beta = log(1 - eps) + log sigmoid(z_eos), clamped at log 1e-10 as in the official code
        log_beta = (math.log1p(-self.eps) + F.logsigmoid(z[..., eos])).clamp(min=math.log(1e-10))  # (N, T)
        log_a = segmented_cumsum(log_beta, reset, log_alpha.float())  # (N, T), log alpha_t
        others = z.clone()
        others[..., eos] = -math.inf
        log_p = log_a[..., None] + others.log_softmax(-1)  # alpha_t * softmax over v != eos
        log_p[..., eos] = torch.log1p(-log_a.exp().clamp(max=1 - 1e-7))  # 1 - alpha_t
        return log_p, log_a[:, -1]
