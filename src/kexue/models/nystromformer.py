"""Nyströmformer encoder for sequence classification (Xiong et al., AAAI 2021; kexue.fm/archives/8180).

A pre-norm Transformer encoder whose blocks use Nyström attention (:mod:`kexue.nn.nystrom`)
or exact softmax attention of the same size, so that the two can be trained side by side
(e.g. on ListOps, :mod:`kexue.data.listops`). Tokens id 0 are padding; the classifier reads the
mean of the final states over real tokens.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from kexue.errors import KexueError
from kexue.nn.nystrom import ExactAttention, NystromAttention


class Block(nn.Module):
    """Pre-norm block: x + attn(LN x), then x + MLP(LN x)."""

    def __init__(
        self,
        dim: int,
        heads: int,
        attention: str,
        num_landmarks: int,
        pinv_iterations: int,
        conv_kernel: int | None,
        ff_mult: int,
        dropout: float,
        exact_conv: bool = False,
    ):
        super().__init__()
        self.norm1, self.norm2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        if attention == "nystrom":
            self.attn = NystromAttention(dim, heads, num_landmarks, pinv_iterations, conv_kernel)
        elif attention == "exact":
            self.attn = ExactAttention(dim, heads, conv_kernel=conv_kernel if exact_conv else None)
        else:
            raise KexueError(f"attention must be 'nystrom' or 'exact', got {attention!r}")
        self.mlp = nn.Sequential(
            nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim)
        )
        self.drop = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        x = x + self.drop(self.attn(self.norm1(x), mask))
        return x + self.drop(self.mlp(self.norm2(x)))


class NystromformerClassifier(nn.Module):
    """Token classifier over whole sequences.

    Args:
        vocab_size: number of token ids (0 is padding).
        num_classes: output classes.
        max_len: longest sequence (learned positions).
        dim, depth, heads: width, blocks, attention heads.
        attention: ``"nystrom"`` or ``"exact"`` for every block, or a list with one per block.
        num_landmarks, pinv_iterations, conv_kernel: Nyström settings (see :class:`NystromAttention`).
        ff_mult: MLP width as a multiple of ``dim``.
        dropout: dropout rate.
        exact_conv: give the exact-attention blocks the same depthwise-conv skip (``conv_kernel``) as the
            Nyström blocks, so that the two differ only in the attention core.
    Example: ``NystromformerClassifier(16, 10, 2000)(tokens)`` with tokens ``(B, n)`` -> logits ``(B, 10)``.
    """

    def __init__(
        self,
        vocab_size: int,
        num_classes: int,
        max_len: int,
        dim: int = 64,
        depth: int = 2,
        heads: int = 2,
        attention: str | list[str] = "nystrom",
        num_landmarks: int = 64,
        pinv_iterations: int = 6,
        conv_kernel: int | None = 35,
        ff_mult: int = 2,
        dropout: float = 0.1,
        exact_conv: bool = False,
    ):
        super().__init__()
        kinds = [attention] * depth if isinstance(attention, str) else list(attention)
        if len(kinds) != depth:
            raise KexueError(f"got {len(kinds)} attention kinds for {depth} blocks")
        self.max_len = max_len
        self.embed = nn.Embedding(vocab_size, dim, padding_idx=0)
        self.pos = nn.Embedding(max_len, dim)
        self.blocks = nn.ModuleList(
            Block(dim, heads, kind, num_landmarks, pinv_iterations, conv_kernel, ff_mult, dropout, exact_conv)
            for kind in kinds
        )
        self.norm = nn.LayerNorm(dim)
        self.head = nn.Linear(dim, num_classes)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        """tokens ``(B, n)`` int64, 0 = padding -> logits ``(B, num_classes)``."""
        n = tokens.shape[1]
        if n > self.max_len:
            raise KexueError(f"sequence of {n} tokens is longer than max_len {self.max_len}")
        mask = tokens != 0  # (B, n)
        x = self.embed(tokens) + self.pos.weight[:n]  # (B, n, dim)
        for block in self.blocks:
            x = block(x, mask)
        x = self.norm(x) * mask[..., None]
        pooled = x.sum(1) / mask.sum(1, keepdim=True).clamp(min=1)  # (B, dim) mean over real tokens
        return self.head(pooled)

    @torch.no_grad()
    def attention_inputs(self, tokens: torch.Tensor, block: int = 0) -> tuple[torch.Tensor, ...]:
        """The q, k, v that block ``block``'s attention sees for ``tokens`` (B, n): three (B, H, n, d).

        Example: ``q, k, v = model.attention_inputs(tokens)`` to compare attention approximations on a
        trained model's own queries and keys.
        """
        if not 0 <= block < len(self.blocks):
            raise KexueError(f"block {block}: the model has blocks 0 to {len(self.blocks) - 1}")
        n = tokens.shape[1]
        mask = tokens != 0  # (B, n)
        x = self.embed(tokens) + self.pos.weight[:n]  # (B, n, dim)
        for earlier in self.blocks[:block]:
            x = earlier(x, mask)
        attn = self.blocks[block].attn
        qkv = attn.to_qkv(self.blocks[block].norm1(x))  # (B, n, 3·dim)
        return tuple(qkv.unflatten(-1, (3, attn.heads, -1)).permute(2, 0, 3, 1, 4))  # 3 × (B, H, n, d)


def classification_loss(
    model: nn.Module, batch: tuple[torch.Tensor, torch.Tensor], generator: torch.Generator | None = None
) -> tuple[torch.Tensor, dict[str, float]]:
    """Cross-entropy and accuracy of a ``(tokens, labels)`` batch; the ``fit()`` loss signature."""
    tokens, labels = batch
    logits = model(tokens)
    loss = F.cross_entropy(logits, labels)
    return loss, {"acc": float((logits.argmax(-1) == labels).float().mean())}


@torch.no_grad()
def accuracy(model: nn.Module, tokens: torch.Tensor, labels: torch.Tensor, batch_size: int = 128) -> float:
    """Classification accuracy over a labelled set."""
    model.eval()
    correct = 0
    for i in range(0, len(tokens), batch_size):
        chunk = tokens[i : i + batch_size]
        chunk = chunk[:, : int((chunk != 0).sum(1).max())]  # drop all-padding columns
        correct += int((model(chunk).argmax(-1) == labels[i : i + batch_size]).sum())
    return correct / len(tokens)
