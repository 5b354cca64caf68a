"""Perplexity of a token stream under any left-to-right language model.

One function for every LM of the package (the LSTM / Transformer LMs of :mod:`kexue.models.lm`,
the ON-LSTM of :mod:`kexue.models.onlstm_lm`) and for a user's own: like
:func:`kexue.generation.decode`, it knows no model class, only a call protocol:

    model(x (B, T), state) -> (scores (B, T, V), state, ...)

``scores`` are next-token logits or log-probabilities (both give the same cross entropy), ``state``
is what the model carries to the next window (None at the start). A model whose attribute
``carries_state`` is False (the Transformer LM: positions are bounded by ``max_len``) reads every
window afresh.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from kexue.errors import KexueError


def min_tokens(batch_size: int) -> int:
    """The shortest stream :func:`perplexity` can score with ``batch_size`` rows (2 tokens per row)."""
    return 2 * batch_size


@torch.no_grad()
def perplexity(model, stream: torch.Tensor, batch_size: int = 10, window: int = 70) -> float:
    """exp(mean next-token NLL) of ``stream`` (N,), read as ``batch_size`` parallel rows in windows.

    The stream is cut into ``batch_size`` rows of ``N // batch_size`` tokens (the tail that does not
    fill a row is dropped, as in training); each row is read in windows of ``window`` tokens, the
    state carried from one window to the next. A module is put in evaluation mode for the pass (and
    restored after it) and the stream moved to its device.

    Args:
        model: a callable of the protocol above (usually a ``torch.nn.Module``).
        stream: (N,) token ids.
        batch_size: parallel rows.
        window: tokens per forward call.
    Returns:
        The perplexity; ``math.inf`` when the mean NLL overflows a float (a diverged model).
    Raises:
        KexueError: the stream is shorter than ``2 * batch_size`` tokens.

    Example: ``perplexity(model, token_stream(test_sentences, vocab), batch_size=16, window=64)``.
    """
    rows = len(stream) // batch_size
    if rows < 2:
        raise KexueError(
            f"a stream of {len(stream)} tokens is too short for a perplexity over {batch_size} rows "
            f"(it needs at least {min_tokens(batch_size)})"
        )
    module = model if isinstance(model, torch.nn.Module) else None
    was_training = module is not None and module.training
    device = stream.device
    if module is not None:
        module.eval()
        device = next(module.parameters()).device
    carry = getattr(model, "carries_state", True)
    data = stream[: rows * batch_size].view(batch_size, rows).to(device)  # (B, rows)
    state, total, count = None, 0.0, 0
    try:
        for start in range(0, rows - 1, window):
            x = data[:, start : min(start + window, rows - 1)]  # (B, T)
            y = data[:, start + 1 : start + 1 + x.shape[1]]  # (B, T): the next tokens
            scores, new_state = model(x, state if carry else None)[:2]  # (B, T, V)
            state = new_state if carry else None
            total += F.cross_entropy(
                scores.reshape(-1, scores.shape[-1]).float(), y.reshape(-1), reduction="sum"
            ).item()
            count += y.numel()
    finally:
        if module is not None:
            module.train(was_training)
    mean = total / count
    return math.exp(mean) if mean < 709.0 else math.inf  # exp overflows a float beyond ~709
