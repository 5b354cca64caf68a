"""Synchronous bidirectional Transformer (Zhou, Zhang & Zong, TACL 2019; kexue.fm/archives/6877).

An encoder–decoder whose decoder runs two streams in one pass: L2R reads ``<l2r> y1 .. yn`` and
R2L reads ``<r2l> yn .. y1``, both predict their next token and end with eos. In every decoder
self-attention layer each stream also attends to the other: the synchronous bidirectional attention
of Zhou, Zhang & Zong, "Synchronous Bidirectional Neural Machine Translation" (TACL 2019), as the
official code computes it (wszlong/sb-nmt,
``sb_dot_product_attention``: per head, before the output projection):

    H→ = Attn(Q→, K→, V→)                H← = Attn(Q→, K←, V←)        (same causal mask)
    H  = H→ + λ · tanh(dropout(H←))      λ = 0.1, dropout 0.3 on the cross term

and symmetrically for R2L. Position t of one stream sees positions 0..t of the other: at L2R step t
that is ``<r2l> yn .. y(n-t+1)``, so with gold histories the cross term reads the target's last t
tokens (the paper's training "leakage"); ``seq2seq_loss(..., cross_history="pseudo")`` feeds the
other stream with a one-direction model's decodes instead (the paper's fix for that leakage).

Parameters are shared by the two streams (official code: one decoder applied to the stacked
``[2, batch, ...]`` streams; the start tokens ``<l2r>``/``<r2l>`` tell the directions apart).
``bidirectional=False`` (or ``cross_weight=0``) removes the cross term: the same network is then
the L2R-only / R2L-only baseline of equal size (train it with ``directions="l2r"`` or ``"r2l"``), or,
trained on both directions, the capacity control: one decoder shared by two streams that never read
each other.
Pre-LayerNorm blocks (the official code is post-norm; pre-norm trains without warm-up), sinusoidal
positions, one embedding for source, target and output (tied).

Decoding keeps a KV cache per stream and the encoder keys/values once per source:
``start``/``step`` drive one stream through :func:`kexue.generation.decode`;
``start_pairs``/``pair_step`` drive both streams for :mod:`kexue.generation.bidirectional`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from kexue.errors import KexueError
from kexue.generation.kvcache import KVBuffer, moved_rows

DIRECTIONS = ("l2r", "r2l")


def sinusoid(positions: torch.Tensor, dim: int) -> torch.Tensor:
    """(T,) positions -> (T, dim) sin/cos timing signal (Vaswani et al. 2017, as sb-nmt)."""
    half = dim // 2
    freq = torch.exp(-math.log(1e4) * torch.arange(half, device=positions.device) / max(half - 1, 1))
    angle = positions.float()[:, None] * freq[None]
    return F.pad(torch.cat([angle.sin(), angle.cos()], 1), (0, dim % 2))


def causal_mask(t: int, T: int, device) -> torch.Tensor:
    """(t, T) bool: the t newest queries at positions T-t .. T-1 see keys 0 .. their own position."""
    return torch.ones(t, T, dtype=torch.bool, device=device).tril(T - t)


class SyncSelfAttention(nn.Module):
    """Decoder self-attention over S stacked streams, with the cross-stream term when S = 2."""

    def __init__(self, dim: int, heads: int, dropout: float, cross_weight: float, cross_dropout: float):
        super().__init__()
        self.heads, self.p, self.cross_weight = heads, dropout, cross_weight
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.cross_drop = nn.Dropout(cross_dropout)

    def forward(self, x, cache, key_mask, cross: bool):
        """x (S, N, t, D); cache: a :class:`KVBuffer` of S*N rows (decoding: written in place) or None
        (a teacher-forced pass over whole sequences); key_mask (S, N, T) real keys, T = cached + t.
        Returns (S, N, t, D)."""
        S, N, t, D = x.shape
        H = self.heads
        q, k, v = self.qkv(x).view(S, N, t, 3, H, D // H).permute(3, 0, 1, 4, 2, 5)  # each (S, N, H, t, d)
        if cache is not None:  # (S*N, H, T, d) views of the buffer -> (S, N, H, T, d)
            k, v = cache.append(k.reshape(S * N, H, t, D // H), v.reshape(S * N, H, t, D // H))
            k, v = k.view(S, N, H, -1, D // H), v.view(S, N, H, -1, D // H)
        causal = causal_mask(t, k.shape[3], x.device)  # (t, T)
        p = self.p if self.training else 0.0
        own = F.scaled_dot_product_attention(q, k, v, causal & key_mask[:, :, None, None, :], dropout_p=p)  # H→
        if cross:  # H← = Attn(Q→, K←, V←) under the same causal mask; stream order flipped
            other = F.scaled_dot_product_attention(
                q, k.flip(0), v.flip(0), causal & key_mask.flip(0)[:, :, None, None, :], dropout_p=p
            )
            own = own + self.cross_weight * torch.tanh(self.cross_drop(other))  # H = H→ + λ·tanh(H←), sb-nmt
        return self.out(own.transpose(2, 3).reshape(S, N, t, D))


class MemoryAttention(nn.Module):
    """Attention from the decoder streams to the encoder output, whose keys/values are computed once."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.q, self.kv, self.out = nn.Linear(dim, dim), nn.Linear(dim, 2 * dim), nn.Linear(dim, dim)

    def memory(self, enc: torch.Tensor):
        """enc (M, L, D) -> keys, values (M, H, L, d)."""
        M, L, D = enc.shape
        k, v = self.kv(enc).view(M, L, 2, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        return k, v

    def forward(self, x, k, v, mask):
        """x (S, N, t, D) with N = M * r rows, r consecutive rows per memory row; k, v (M, H, L, d);
        mask (M, L). The S*r*t queries of one source share its keys: no copy per beam or pair."""
        S, N, t, D = x.shape
        M, H = k.shape[0], self.heads
        r = N // M
        q = self.q(x).view(S, M, r, t, H, D // H).permute(1, 4, 0, 2, 3, 5).reshape(M, H, S * r * t, D // H)
        a = F.scaled_dot_product_attention(q, k, v, mask[:, None, None, :], dropout_p=self.p if self.training else 0.0)
        a = a.view(M, H, S, r, t, D // H).permute(2, 0, 3, 4, 1, 5)  # (S, M, r, t, H, d)
        return self.out(a.reshape(S, N, t, D))


def mlp(dim: int, ff_mult: int, dropout: float) -> nn.Sequential:
    return nn.Sequential(nn.Linear(dim, ff_mult * dim), nn.GELU(), nn.Dropout(dropout), nn.Linear(ff_mult * dim, dim))


class EncoderBlock(nn.Module):
    def __init__(self, dim, heads, ff_mult, dropout):
        super().__init__()
        self.heads, self.p = heads, dropout
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.qkv, self.out, self.mlp = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim), mlp(dim, ff_mult, dropout)
        self.drop = nn.Dropout(dropout)

    def forward(self, x, mask):
        """x (B, L, D), mask (B, L) real tokens."""
        B, L, D = x.shape
        q, k, v = self.qkv(self.ln1(x)).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)
        a = F.scaled_dot_product_attention(q, k, v, mask[:, None, None, :], dropout_p=self.p if self.training else 0.0)
        x = x + self.drop(self.out(a.transpose(1, 2).reshape(B, L, D)))
        return x + self.drop(self.mlp(self.ln2(x)))


class DecoderBlock(nn.Module):
    def __init__(self, dim, heads, ff_mult, dropout, cross_weight, cross_dropout):
        super().__init__()
        self.ln1, self.ln2, self.ln3 = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.self_attn = SyncSelfAttention(dim, heads, dropout, cross_weight, cross_dropout)
        self.mem_attn = MemoryAttention(dim, heads, dropout)
        self.mlp, self.drop = mlp(dim, ff_mult, dropout), nn.Dropout(dropout)

    def forward(self, x, cache, key_mask, cross, mem_k, mem_v, mem_mask):
        a = self.self_attn(self.ln1(x), cache, key_mask, cross)
        x = x + self.drop(a)
        x = x + self.drop(self.mem_attn(self.ln2(x), mem_k, mem_v, mem_mask))
        return x + self.drop(self.mlp(self.ln3(x)))


@dataclass
class DecoderState:
    """Incremental decoding state; rows of the S stacked streams come first (stream-major).

    Attributes:
        streams: the directions of the stacked streams, ``("l2r",)``, ``("r2l",)`` or both.
        cache: per decoder layer, the self-attention keys and values of the S*N rows, a
            :class:`~kexue.generation.kvcache.KVBuffer` written in place (the library's one cache
            machinery; a state is used once: ``step`` and ``reorder`` advance its buffers), or None
            in a teacher-forced pass.
        key_mask: (S*N, T) real (non-pad) target positions so far.
        memory: per decoder layer, encoder keys and values (M, H, L, d), computed once.
        memory_mask: (M, L) real source tokens.
        row_source: (N,) the source row of each decoder row.
    """

    streams: tuple[str, ...]
    cache: list[KVBuffer | None]
    key_mask: torch.Tensor
    memory: list[tuple[torch.Tensor, torch.Tensor]]
    memory_mask: torch.Tensor
    row_source: torch.Tensor

    def reorder(self, index: torch.Tensor) -> DecoderState:
        """Keep stacked rows ``index`` (S*N',): row i of stream s becomes ``index[s*N' + i]``.
        Each stream may be reordered differently (the paper's beam); pairs stay within a source."""
        n = len(index) // len(self.streams)
        moved = moved_rows(index)  # the same rows move in every layer
        for buf in self.cache:
            if buf is not None:
                buf.move_rows(index, moved)
        return DecoderState(
            self.streams,
            self.cache,
            self.key_mask.index_select(0, index),
            self.memory,
            self.memory_mask,
            self.row_source.index_select(0, index[:n]),
        )


class SyncBidirectionalTransformer(nn.Module):
    """Transformer encoder–decoder with synchronous L2R and R2L decoding streams.

    Args:
        vocab_size: shared source/target vocabulary.
        dim, heads, encoder_layers, decoder_layers, ff_mult, dropout: Transformer size.
        cross_weight: λ of H = H→ + λ tanh(H←) (paper 0.1). cross_dropout: dropout on H← (0.3).
        bidirectional: False (or ``cross_weight`` 0) drops the cross term: a one-direction baseline
            (or, trained on both directions, two streams that share the decoder without reading each other).
        pad_id, eos_id, l2r_id, r2l_id: padding, end, and the two start tokens (sb-nmt: 0, 1, 2, 3).
    Example: ``SyncBidirectionalTransformer(100, dim=64)(src, l2r_in, r2l_in)`` -> two (B, T, V) logits.
    """

    def __init__(
        self,
        vocab_size: int,
        dim: int = 256,
        heads: int = 4,
        encoder_layers: int = 3,
        decoder_layers: int = 3,
        ff_mult: int = 4,
        dropout: float = 0.1,
        cross_weight: float = 0.1,
        cross_dropout: float = 0.3,
        bidirectional: bool = True,
        pad_id: int = 0,
        eos_id: int = 1,
        l2r_id: int = 2,
        r2l_id: int = 3,
    ):
        super().__init__()
        ids = {"pad_id": pad_id, "eos_id": eos_id, "l2r_id": l2r_id, "r2l_id": r2l_id}
        if len(set(ids.values())) != 4 or not all(0 <= i < vocab_size for i in ids.values()):
            raise KexueError(f"special ids must be 4 distinct ids below vocab_size {vocab_size}, got {ids}")
        if dim % heads or dim < 2:
            raise KexueError(f"dim {dim} is not divisible by heads {heads}")
        self.vocab_size, self.dim = vocab_size, dim
        self.pad_id, self.eos_id, self.l2r_id, self.r2l_id = pad_id, eos_id, l2r_id, r2l_id
        self.cross = bool(bidirectional) and cross_weight != 0  # does each stream read the other?
        self.embed = nn.Embedding(vocab_size, dim)
        nn.init.normal_(self.embed.weight, std=dim**-0.5)
        self.encoder = nn.ModuleList(EncoderBlock(dim, heads, ff_mult, dropout) for _ in range(encoder_layers))
        self.decoder = nn.ModuleList(
            DecoderBlock(dim, heads, ff_mult, dropout, cross_weight, cross_dropout) for _ in range(decoder_layers)
        )
        self.enc_ln, self.dec_ln, self.drop = nn.LayerNorm(dim), nn.LayerNorm(dim), nn.Dropout(dropout)

    def bos(self, direction: str) -> int:
        if direction not in DIRECTIONS:
            raise KexueError(f"direction must be l2r or r2l, got {direction!r}")
        return self.l2r_id if direction == "l2r" else self.r2l_id

    def _embed(self, tokens: torch.Tensor, start: int) -> torch.Tensor:
        """(..., t) ids at positions start.. -> (..., t, D)."""
        pos = sinusoid(torch.arange(start, start + tokens.shape[-1], device=tokens.device), self.dim)
        return self.drop(self.embed(tokens) * self.dim**0.5 + pos)

    def encode(self, src: torch.Tensor):
        """src (B, L) ids, ``pad_id`` = padding -> (output (B, L, D), mask (B, L) real tokens)."""
        mask = src != self.pad_id
        if not bool(mask[:, 0].all()):
            raise KexueError("every source needs at least one token, left-aligned (padding after it)")
        x = self._embed(src, 0)
        for block in self.encoder:
            x = block(x, mask)
        return self.enc_ln(x), mask

    def _state(self, src: torch.Tensor, streams: tuple[str, ...], rows: int, cache: bool = True) -> DecoderState:
        """A fresh state: ``rows`` decoder rows per source (source-major) in each of ``streams``;
        ``cache=False`` for one teacher-forced pass (no buffers)."""
        enc, mask = self.encode(src)
        B = src.shape[0]
        row_source = torch.arange(B, device=src.device).repeat_interleave(rows)  # (N,)
        N, S = B * rows, len(streams)
        return DecoderState(
            streams,
            [KVBuffer() if cache else None for _ in self.decoder],
            torch.ones(S * N, 0, dtype=torch.bool, device=src.device),
            [block.mem_attn.memory(enc) for block in self.decoder],
            mask,
            row_source,
        )

    def _decode(self, tokens: torch.Tensor, state: DecoderState):
        """tokens (S, N, t) new ids of the stacked streams -> (logits (S, N, t, V), state)."""
        S, N, t = tokens.shape
        cross = S == 2 and self.cross
        past = state.key_mask.shape[1]
        if state.cache[0] is not None and state.cache[0].length != past:
            raise KexueError(
                "this decoding state has been stepped already: its KV buffers are advanced in place, "
                "so a state is used once (step with the state the last step returned)"
            )
        key_mask = torch.cat([state.key_mask, (tokens != self.pad_id).view(S * N, t)], 1)  # (S*N, T)
        M = state.memory_mask.shape[0]
        grouped = torch.arange(M, device=tokens.device).repeat_interleave(N // M) if N % M == 0 else None
        if grouped is not None and torch.equal(state.row_source, grouped):
            memory, memory_mask = state.memory, state.memory_mask  # rows grouped by source: shared keys
        else:  # the engine dropped rows (greedy, sampling): one memory row per decoder row
            memory = [(k[state.row_source], v[state.row_source]) for k, v in state.memory]
            memory_mask = state.memory_mask[state.row_source]
        x = self._embed(tokens, past)  # (S, N, t, D)
        for block, buf, (mk, mv) in zip(self.decoder, state.cache, memory):
            x = block(x, buf, key_mask.view(S, N, -1), cross, mk, mv, memory_mask)
        logits = self.dec_ln(x) @ self.embed.weight.T  # tied output projection
        return logits, DecoderState(
            state.streams, state.cache, key_mask, state.memory, state.memory_mask, state.row_source
        )

    def forward(self, src: torch.Tensor, l2r: torch.Tensor | None = None, r2l: torch.Tensor | None = None):
        """Teacher-forced pass. src (B, L); l2r, r2l (B, T) stream inputs (``<l2r> y..``, ``<r2l> ..y``),
        padded with ``pad_id``; either may be None when the cross term is off.
        Returns (l2r logits (B, T, V) or None, r2l logits (B, T', V) or None)."""
        given = {d: x for d, x in zip(DIRECTIONS, (l2r, r2l)) if x is not None}
        if not given:
            raise KexueError("pass the l2r stream, the r2l stream or both")
        if self.cross and len(given) == 1:
            raise KexueError("the bidirectional model reads both streams: pass the other direction's history too")
        T = max(x.shape[1] for x in given.values())
        tokens = torch.stack([F.pad(x, (0, T - x.shape[1]), value=self.pad_id) for x in given.values()])  # (S, B, T)
        logits, _ = self._decode(tokens, self._state(src, tuple(given), 1, cache=False))
        out = {d: logits[i, :, : x.shape[1]] for i, (d, x) in enumerate(given.items())}
        return out.get("l2r"), out.get("r2l")

    # -- one stream on the shared engine: decode(model.step, model.prompt(B, d), ..., state=model.start(src, d, k))

    def prompt(self, batch: int, direction: str, device=None) -> torch.Tensor:
        """(batch, 1) start tokens of ``direction``."""
        return torch.full((batch, 1), self.bos(direction), dtype=torch.long, device=device)

    @torch.no_grad()
    def start(self, src: torch.Tensor, direction: str = "l2r", num_beams: int = 1) -> DecoderState:
        """Decoding state of one stream for ``src`` (B, L): rows repeated ``num_beams`` times, as decode does."""
        if self.cross:
            raise KexueError("the bidirectional model decodes with kexue.generation.bidirectional (both streams)")
        self.bos(direction)
        return self._state(src, (direction,), num_beams)

    def step(self, tokens: torch.Tensor, state: DecoderState):
        """``decode`` step: tokens (N, t) new ids of the state's stream -> (logits of the next (N, V), state)."""
        logits, state = self._decode(tokens[None], state)
        return logits[0, :, -1], state

    # -- both streams, for kexue.generation.bidirectional

    @torch.no_grad()
    def start_pairs(self, src: torch.Tensor, pairs: int) -> DecoderState:
        """State of ``pairs`` (L2R row, R2L row) pairs per source, source-major."""
        return self._state(src, DIRECTIONS, pairs)

    def pair_step(self, l2r: torch.Tensor, r2l: torch.Tensor, state: DecoderState):
        """l2r, r2l (N, t) new ids of each pair's two rows (``pad_id``: a stream that has stopped, masked)
        -> (L2R logits (N, V), R2L logits (N, V), state)."""
        logits, state = self._decode(torch.stack([l2r, r2l]), state)
        return logits[0, :, -1], logits[1, :, -1], state

    # -- training

    def streams(self, target: torch.Tensor):
        """target (B, n) ids padded with ``pad_id`` -> L2R input, L2R labels, R2L input, R2L labels, each
        (B, n + 1): ``<l2r> y1..yn`` -> ``y1..yn eos`` and ``<r2l> yn..y1`` -> ``yn..y1 eos``; labels
        ``pad_id`` after eos."""
        B, n = target.shape
        length = (target != self.pad_id).sum(1, keepdim=True)  # (B, 1)
        j = torch.arange(n, device=target.device)[None]
        reverse = target.gather(1, (length - 1 - j).clamp(min=0)).masked_fill(j >= length, self.pad_id)
        out = []
        for bos, body in ((self.l2r_id, target), (self.r2l_id, reverse)):
            x = torch.cat([torch.full((B, 1), bos, dtype=torch.long, device=target.device), body], 1)
            y = F.pad(body, (0, 1), value=self.pad_id).scatter(1, length, self.eos_id)
            out += [x, y]
        return tuple(out)


def seq2seq_loss(
    model: SyncBidirectionalTransformer, batch, generator=None, *, directions: str = "both", cross_history: str = "gold"
):
    """``fit()`` loss: mean over ``directions`` of each direction's token cross-entropy.

    Args:
        batch: ``(src, target)`` for gold histories, ``(src, target, pseudo_l2r, pseudo_r2l)`` for pseudo
            ones; all (B, ·) ids padded with ``pad_id``, targets and pseudo targets in reading order
            (``pseudo_l2r`` decoded by an L2R-only model, ``pseudo_r2l`` by an R2L-only one, reversed back).
        directions: ``both``, ``l2r`` or ``r2l`` (a one-direction baseline trains its own only).
        cross_history: ``gold``: each stream reads the other's gold tokens (one pass). ``pseudo``: our
            reading of the paper's triples, stacked in one pass of 2B rows: (gold L2R, pseudo R2L)
            trains L2R and (pseudo L2R, gold R2L) trains R2L; a pseudo stream is history, never a target.
    Returns: (loss, metrics ``ce_<dir>``, ``acc_<dir>`` (teacher-forced token accuracy)).
    """
    wanted = DIRECTIONS if directions == "both" else (directions,)
    if directions not in ("both",) + DIRECTIONS:
        raise KexueError(f"directions must be both, l2r or r2l, got {directions!r}")
    if cross_history not in ("gold", "pseudo"):
        raise KexueError(f"cross_history must be gold or pseudo, got {cross_history!r}")
    core = getattr(model, "module", model)  # attributes through a DDP wrapper; calls stay wrapped
    src, target = batch[0], batch[1]
    l2r_x, l2r_y, r2l_x, r2l_y = core.streams(target)
    labels = {"l2r": l2r_y, "r2l": r2l_y}
    if cross_history == "pseudo" and core.cross:
        if len(batch) != 4:
            raise KexueError("cross_history='pseudo' needs batches (src, target, pseudo_l2r, pseudo_r2l)")
        p_l2r_x, _, _, _ = core.streams(batch[2])
        _, _, p_r2l_x, _ = core.streams(batch[3])
        T = max(x.shape[1] for x in (l2r_x, r2l_x, p_l2r_x, p_r2l_x))
        pad = lambda x: F.pad(x, (0, T - x.shape[1]), value=core.pad_id)
        l2r_logits, r2l_logits = model(
            torch.cat([src, src]), torch.cat([pad(l2r_x), pad(p_l2r_x)]), torch.cat([pad(p_r2l_x), pad(r2l_x)])
        )
        B = src.shape[0]
        logits = {"l2r": l2r_logits[:B, : l2r_y.shape[1]], "r2l": r2l_logits[B:, : r2l_y.shape[1]]}
    else:
        feed = DIRECTIONS if core.cross else wanted
        l2r_logits, r2l_logits = model(src, l2r_x if "l2r" in feed else None, r2l_x if "r2l" in feed else None)
        logits = {"l2r": l2r_logits, "r2l": r2l_logits}
    losses, metrics = [], {}
    for d in wanted:
        y, z = labels[d], logits[d]
        real = y != core.pad_id
        ce = F.cross_entropy(z[real].float(), y[real])
        losses.append(ce)
        metrics[f"ce_{d}"] = ce.item()
        metrics[f"acc_{d}"] = (z[real].argmax(-1) == y[real]).float().mean().item()
    return torch.stack(losses).mean(), metrics
