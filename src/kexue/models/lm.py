"""Word-level language models for decoding studies: an LSTM LM and a small Transformer LM.

Both expose ``forward(x, state, reset) -> (log_probs, state)`` for training and evaluation and
``step(tokens, state) -> (log_probs_of_next, state)`` for :func:`kexue.generation.decode`, and
take an optional self-terminating output head (``head="st"``, Welleck et al. 2020).

The ST product restarts (``reset``) after every eos in the input (a new sentence starts), and
in ``step`` at the last prompt position, so that p(eos) >= 1 - (1 - eps)^(t + 1) holds at the
t-th *generated* token (t = 0, 1, ...), as the official code does by setting beta = 1 on the prompt.

States keep the batch first, so beam search reorders them with a plain ``index_select``.

Prompts of different lengths (``decode(model.step, ids, ..., attention_mask=mask)``, left padding):
``forward``/``step`` take ``attention_mask`` (N, past + T), 0 on padding. The Transformer masks the
padded keys and counts positions from each row's first real token; the LSTM packs the rows so that
padding never touches its state; in both the ST product starts at the first real token. Padding is
allowed on the first call only (no state yet): later calls bring real tokens.
Perplexity: :func:`kexue.analysis.perplexity.perplexity` (the LSTM carries its state across
windows, ``carries_state = True``; the Transformer reads each window afresh).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

from kexue.errors import KexueError
from kexue.nn.heads import SelfTerminatingHead, SoftmaxHead


@dataclass(kw_only=True)
class LMConfig:
    """Architecture of :func:`build_lm` (saved beside the weights as ``model.json``); keywords only.

    Attributes:
        arch: ``lstm`` or ``transformer``.
        vocab: vocabulary size. eos_id: end-of-sequence id.
        dim: embedding / hidden width. layers: LSTM or Transformer layers.
        heads: attention heads (transformer). max_len: longest sequence (transformer positions).
        dropout: dropout rate. head: ``softmax`` (vanilla) or ``st`` (self-terminating). eps: ST rate.
    """

    arch: str = "lstm"
    vocab: int = 10000
    eos_id: int = 3
    dim: int = 256
    layers: int = 2
    heads: int = 4
    max_len: int = 2048
    dropout: float = 0.2
    head: str = "softmax"
    eps: float = 1e-3

    def __post_init__(self) -> None:
        if self.arch not in ("lstm", "transformer"):
            raise KexueError(f"arch must be lstm or transformer, got {self.arch!r}")
        if self.head not in ("softmax", "st"):
            raise KexueError(f"head must be softmax or st, got {self.head!r}")
        for name in ("vocab", "dim", "layers", "heads", "max_len"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise KexueError(f"{name} must be a positive integer, got {value!r}")
        if isinstance(self.eos_id, bool) or not isinstance(self.eos_id, int) or not 0 <= self.eos_id < self.vocab:
            raise KexueError(f"eos_id must be an id below vocab {self.vocab}, got {self.eos_id!r}")
        if not _is_number(self.dropout) or not 0 <= self.dropout < 1:
            raise KexueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if not _is_number(self.eps) or not 0 < self.eps < 1:
            raise KexueError(f"eps must be in (0, 1), got {self.eps!r}")
        if self.arch == "transformer" and self.dim % self.heads:
            raise KexueError(f"dim {self.dim} is not divisible by heads {self.heads}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def make_head(cfg: LMConfig) -> nn.Module:
    if cfg.head == "st":
        return SelfTerminatingHead(cfg.dim, cfg.vocab, cfg.eos_id, cfg.eps)
    return SoftmaxHead(cfg.dim, cfg.vocab)


class _StepMixin:
    """``step`` for decoding on top of ``forward``: last-position log-probs, ST reset at the prompt."""

    cfg: LMConfig

    def step(self, tokens: torch.Tensor, state=None, attention_mask: torch.Tensor | None = None):
        """``tokens`` (N, t) new ids -> (log-probs of the next token (N, V), state).

        ``attention_mask`` (N, past + t): 0 on the left padding of a ragged prompt (None: none)."""
        reset = torch.zeros_like(tokens, dtype=torch.bool)
        if state is None:
            reset[:, -1] = True  # the ST product starts at the first generated token
        log_p, state = self.forward(tokens, state, reset, attention_mask)
        return log_p[:, -1], state

    def reset_after_eos(self, x: torch.Tensor) -> torch.Tensor:
        """(N, T) bool: positions whose input is eos (a new sentence is predicted from there)."""
        return x == self.cfg.eos_id


def _padding(x: torch.Tensor, state, reset: torch.Tensor, attention_mask: torch.Tensor | None, past: int):
    """``(real, reset)``: the (N, T) bool mask of real new tokens (None when none is padding) and the
    resets, with padding restarting the ST product at each row's first real token too (as for the row
    alone). Checks ``attention_mask`` (N, past + T).
    """
    if attention_mask is None:
        return None, reset
    N, T = x.shape
    if attention_mask.shape != (N, past + T):
        raise KexueError(
            f"attention_mask must be (rows, past + new) = {(N, past + T)}, got {tuple(attention_mask.shape)}"
        )
    real = attention_mask[:, -T:].bool()  # (N, T)
    if bool(real.all()):
        return None, reset
    if bool((real[:, 1:] < real[:, :-1]).any()):
        raise KexueError("attention_mask must be left padding: zeros, then ones")
    if state is not None:
        raise KexueError("padding is allowed in the first call only (the prompt); later tokens must all be real")
    first = T - real.sum(1)  # (N,) index of each row's first real token (left padding)
    if bool((first >= T).any()):
        raise KexueError("a row of the prompt is all padding")
    reset = reset.clone()
    reset[torch.arange(N, device=x.device), first] = True
    return real, reset


class LSTMLM(nn.Module, _StepMixin):
    """Embedding -> LSTM (layers) -> dropout -> output head. State: (h (N, L, H), c (N, L, H), log_alpha (N,))."""

    carries_state = True  # perplexity carries the state from one window to the next

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.lstm = nn.LSTM(
            cfg.dim, cfg.dim, cfg.layers, batch_first=True, dropout=cfg.dropout if cfg.layers > 1 else 0.0
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.head = make_head(cfg)

    def forward(
        self, x: torch.Tensor, state=None, reset: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ):
        """x (N, T) -> (log-probs (N, T, V), state); ``attention_mask`` (N, past + T): 0 on left padding
        (the LSTM reads its last T columns).

        Log-probs at padded positions are meaningless; the state is that of the real tokens alone."""
        reset = self.reset_after_eos(x) if reset is None else reset
        if state is None:
            hc, log_alpha = None, torch.zeros(x.shape[0], device=x.device)
        else:
            h, c, log_alpha = state
            hc = (h.transpose(0, 1).contiguous(), c.transpose(0, 1).contiguous())  # (L, N, H)
        past = 0 if attention_mask is None else attention_mask.shape[1] - x.shape[1]  # the LSTM needs no past mask
        real, reset = _padding(x, state, reset, attention_mask, past)
        emb = self.drop(self.embed(x))  # (N, T, D)
        if real is None:
            out, (h, c) = self.lstm(emb, hc)  # out (N, T, H)
        else:
            out, (h, c) = self._packed(emb, real)
        log_p, log_alpha = self.head(self.drop(out), log_alpha, reset)
        return log_p, (h.transpose(0, 1), c.transpose(0, 1), log_alpha)

    def _packed(self, emb: torch.Tensor, real: torch.Tensor):
        """Run the LSTM over the real tokens only: left padding moved to the right, then packed."""
        N, T, D = emb.shape
        lengths = real.sum(1)  # (N,)
        steps = torch.arange(T, device=emb.device)[None, :]
        to_right = (steps + (T - lengths)[:, None]) % T  # (N, T): right-padded j <- left-padded j + pads
        emb = emb.gather(1, to_right[..., None].expand(N, T, D))
        packed = pack_padded_sequence(emb, lengths.cpu(), batch_first=True, enforce_sorted=False)
        out, hc = self.lstm(packed)
        out = pad_packed_sequence(out, batch_first=True, total_length=T)[0]  # (N, T, H), zeros after each row
        to_left = (steps - (T - lengths)[:, None]) % T  # (N, T): padding reads the zeros at the end
        return out.gather(1, to_left[..., None].expand(N, T, out.shape[-1])), hc


class Block(nn.Module):
    """Pre-LayerNorm Transformer block with a causal self-attention that can use a KV cache."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.mlp = nn.Sequential(nn.Linear(dim, 4 * dim), nn.GELU(), nn.Linear(4 * dim, dim))
        self.drop = nn.Dropout(dropout)
        self.p = dropout

    def forward(self, x: torch.Tensor, cache: tuple[torch.Tensor, torch.Tensor] | None, mask: torch.Tensor):
        """x (N, T, D); ``mask`` (T, S) or (N, 1, T, S) bool, True where a query may see a key."""
        N, T, D = x.shape
        q, k, v = (
            self.qkv(self.ln1(x)).view(N, T, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        )  # (N, H, T, d)
        if cache is not None:
            k, v = torch.cat([cache[0], k], 2), torch.cat([cache[1], v], 2)  # (N, H, S, d)
        a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(N, T, D)))
        x = x + self.drop(self.mlp(self.ln2(x)))
        return x, (k, v)


class TransformerLM(nn.Module, _StepMixin):
    """GPT-style LM: token + learned position embeddings, pre-LN blocks, output head.

    State: (keys/values per layer, each (N, H, S, d); log_alpha (N,)); the number of cached
    positions S gives the next position.
    """

    carries_state = False  # positions are bounded by max_len: perplexity reads each window afresh

    def __init__(self, cfg: LMConfig):
        super().__init__()
        self.cfg = cfg
        self.embed = nn.Embedding(cfg.vocab, cfg.dim)
        self.pos = nn.Embedding(cfg.max_len, cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg.dim, cfg.heads, cfg.dropout) for _ in range(cfg.layers))
        self.ln = nn.LayerNorm(cfg.dim)
        self.drop = nn.Dropout(cfg.dropout)
        self.head = make_head(cfg)

    def forward(
        self, x: torch.Tensor, state=None, reset: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None
    ):
        """x (N, T) -> (log-probs (N, T, V), state); ``attention_mask`` (N, past + T): 0 on left padding."""
        reset = self.reset_after_eos(x) if reset is None else reset
        N, T = x.shape
        caches, log_alpha = (None, torch.zeros(N, device=x.device)) if state is None else state
        past = 0 if caches is None else caches[0][0].shape[2]
        S = past + T
        # query i sits at absolute position S - T + i and sees keys 0 .. S - T + i
        mask = torch.ones(T, S, dtype=torch.bool, device=x.device).tril(S - T)  # (T, S)
        _, reset = _padding(x, state, reset, attention_mask, past)
        if attention_mask is None:
            if past + T > self.cfg.max_len:
                raise KexueError(f"sequence of {past + T} tokens exceeds max_len {self.cfg.max_len}")
            positions = torch.arange(past, S, device=x.device)  # (T,)
        else:
            # positions from each row's first real token (padding at 0); padded keys are never seen,
            # but each query sees its own key, so that a padded query's softmax is not empty
            positions = (attention_mask.long().cumsum(-1)[:, -T:] - 1).clamp(min=0)  # (N, T)
            own = torch.arange(S, device=x.device)[None, :] == torch.arange(past, S, device=x.device)[:, None]
            mask = (mask & (attention_mask.bool()[:, None, :] | own))[:, None]  # (N, 1, T, S)
            if int(positions.max()) >= self.cfg.max_len:
                raise KexueError(f"sequence of {int(positions.max()) + 1} tokens exceeds max_len {self.cfg.max_len}")
        h = self.drop(self.embed(x) + self.pos(positions))
        new = []
        for i, block in enumerate(self.blocks):
            h, kv = block(h, None if caches is None else caches[i], mask)
            new.append(kv)
        log_p, log_alpha = self.head(self.ln(h), log_alpha, reset)
        return log_p, (new, log_alpha)


def build_lm(cfg: LMConfig) -> nn.Module:
    """The model of ``cfg.arch``. Example: ``build_lm(LMConfig(arch="lstm", vocab=100, dim=32))``."""
    return LSTMLM(cfg) if cfg.arch == "lstm" else TransformerLM(cfg)


def lm_loss(model: nn.Module, batch, generator=None):
    """``fit()`` loss: mean NLL of targets (N, T) under ``model(inputs)``; metric ``ppl``."""
    x, y = batch
    log_p, _ = model(x)
    nll = F.nll_loss(log_p.reshape(-1, log_p.shape[-1]), y.reshape(-1))
    return nll, {"ppl": math.exp(min(nll.item(), 50.0))}
