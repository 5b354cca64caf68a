"""Attention masks as boolean ``(B, T, T)`` tensors: ``mask[b, i, j]`` is True where query ``i`` may see key ``j``.

- :func:`causal_mask`: position ``i`` sees ``j <= i`` (a left-to-right LM);
- :func:`unilm_mask`: the UniLM seq2seq mask (Dong et al., NeurIPS 2019; SimBERT, kexue.fm/archives/7427).
  With ``c`` the inclusive cumulative sum of the segment ids, ``i`` sees ``j`` iff ``c_j <= c_i``:
  segment 0 (``[CLS] a [SEP]``) is bidirectional within itself and never sees segment 1; segment 1
  (``b [SEP]``) sees all of segment 0 and its own earlier tokens.

Padding keys (``attention_mask == 0``) are hidden from every query in both segments.
:func:`additive_mask` turns a boolean mask into the ``(B, 1, T, T)`` float mask (0 or the dtype's
minimum) that transformers' BERT adds to its attention scores.

Example::

    unilm_mask(torch.tensor([[0, 0, 0, 1, 1]]))[0].int()
    # tensor([[1, 1, 1, 0, 0],
    #         [1, 1, 1, 0, 0],
    #         [1, 1, 1, 0, 0],
    #         [1, 1, 1, 1, 0],
    #         [1, 1, 1, 1, 1]])
"""

from __future__ import annotations

import torch


def causal_mask(length: int, attention_mask: torch.Tensor | None = None, device=None) -> torch.Tensor:
    """``(1, T, T)`` lower-triangular mask; ``(B, T, T)`` with the padding keys of ``attention_mask`` (B, T) hidden."""
    mask = torch.ones(length, length, dtype=torch.bool, device=device).tril()[None]  # (1, T, T)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]  # (B, T, T): hide padding keys
    return mask


def unilm_mask(segment_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """The UniLM seq2seq mask ``(B, T, T)`` of segment ids ``(B, T)`` (0 = source, 1 = target).

    ``i`` sees ``j`` iff ``c_j <= c_i`` with ``c = cumsum(segment_ids)`` (the seq2seq LM mask of
    Dong et al. 2019), and ``j`` is not padding (``attention_mask[b, j] == 0``; default: no padding).
    """
    c = segment_ids.long().cumsum(dim=1)  # (B, T)
    mask = c[:, None, :] <= c[:, :, None]  # (B, T_query, T_key)
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, :]
    return mask


def additive_mask(mask: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``(B, T, T)`` boolean -> ``(B, 1, T, T)`` float: 0 where allowed, the dtype's minimum where hidden."""
    out = torch.zeros(mask.shape, dtype=dtype, device=mask.device)
    return out.masked_fill(~mask, torch.finfo(dtype).min)[:, None]  # (B, 1, T, T): broadcast over heads
