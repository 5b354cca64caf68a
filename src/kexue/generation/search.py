"""Search strategies and the decoding loop that knows neither the model nor the strategy.

``decode(step, prompt, processors, search, stopping, generator)`` drives any
``step(tokens, state) -> (logits, state)`` callable: ``tokens`` (N, t) are the *new* tokens
(the whole prompt on the first call, then one token per row), ``logits`` (N, V) score the next
token, ``state`` is the model's KV cache or recurrent state (None on the first call). Beam
search reorders that state with ``reorder(state, index)``; the default indexes every tensor in
it along dim 0 (so keep the batch first in your state, or pass your own ``reorder``).

A search sees the processed scores and picks tokens, returning them with the parent row of each
new row (beam reordering; greedy and sampling drop finished rows so the model stops computing
them):
:class:`Greedy` (argmax of the processed raw scores), :class:`Sample` (softmax of them, one draw
from an explicit ``torch.Generator``) and :class:`Beam` (batched beam search on processed
log-probabilities, with HF ``generate`` semantics for ``length_penalty`` and ``early_stopping``).

Prompts of different lengths: :func:`left_pad` them and pass the ``attention_mask`` to
:func:`decode`. The step is then called as ``step(tokens, state, attention_mask=mask)`` with
``mask`` (N, S) covering every position so far (prompt, padding and the new tokens: one column more
per step), reordered and dropped with the rows; a step that supports padding (``HFStep``, our LMs'
``step``) masks the padded keys and counts positions from each row's first real token. Without a
mask, or with an all-ones mask, the step is called exactly as before (``step(tokens, state)``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from kexue.errors import KexueError
from kexue.generation.processors import LogitsProcessor, Processors, validate_lengths
from kexue.generation.stopping import EOS, MAX_LENGTH, Stopping

StepFn = Callable[[torch.Tensor, Any], "tuple[torch.Tensor, Any]"]
NEG = -1.0e9  # HF's "never choose" score: finite so that sums stay ordered


@dataclass
class DecodeOutput:
    """What :func:`decode` returns; one row per prompt.

    Attributes:
        tokens: (B, L) generated tokens (prompt excluded), ``pad`` after a sequence ends.
        log_probs: (B, L) log-probability of each generated token under the distribution the
            search drew it from (processed scores, renormalised); 0 on padding.
        lengths: (B,) generated tokens per row, eos included.
        finished: (B,) True where the row ended with eos.
        stop_reasons: per row ``"eos"`` or ``"max_length"``.
        scores: (B,) beam score (length-penalised) for beam search, else the summed log-probs.
    """

    tokens: torch.Tensor
    log_probs: torch.Tensor
    lengths: torch.Tensor
    finished: torch.Tensor
    stop_reasons: list[str] = field(default_factory=list)
    scores: torch.Tensor | None = None

    def sequences(self) -> list[list[int]]:
        """Generated ids per row without padding (eos kept if emitted)."""
        return [row[: int(n)].tolist() for row, n in zip(self.tokens, self.lengths)]


def reorder_batch(state: Any, index: torch.Tensor) -> Any:
    """Select rows ``index`` of every tensor in a nested tuple/list/dict state (dim 0)."""
    if state is None:
        return None
    if isinstance(state, torch.Tensor):
        return state.index_select(0, index)
    if isinstance(state, (tuple, list)):
        return type(state)(reorder_batch(s, index) for s in state)
    if isinstance(state, dict):
        return {k: reorder_batch(v, index) for k, v in state.items()}
    if hasattr(state, "reorder"):
        return state.reorder(index)
    raise KexueError(f"cannot reorder a decoding state of type {type(state).__name__}; pass reorder=")


class Search:
    """A strategy: ``start`` its bookkeeping, ``step`` picks tokens, ``finish`` builds the output."""

    num_beams: int = 1
    log_probs: bool = False  # processors see log-softmax scores (beam) or raw logits

    def start(self, batch: int, prompt_len: int, stopping: Stopping, device) -> Any: ...

    def step(
        self, run: Any, tokens: torch.Tensor, scores: torch.Tensor, generator
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Pick tokens from ``scores`` (n, V); return them for the next rows and the parent row of
        each next row (None: rows unchanged)."""

    def done(self, run: Any) -> bool: ...

    def finish(self, run: Any) -> DecodeOutput: ...


@dataclass
class _Rows:
    """Bookkeeping of greedy and sampling: one hypothesis per row; finished rows leave the batch."""

    tokens: torch.Tensor  # (B, L)
    log_probs: torch.Tensor  # (B, L)
    finished: torch.Tensor  # (B,)
    lengths: torch.Tensor  # (B,)
    active: torch.Tensor  # (n,) rows of the batch still being decoded, in the order the model sees them
    stopping: Stopping
    t: int = 0


class _PerRow(Search):
    def start(self, batch, prompt_len, stopping, device):
        L = stopping.max_new_tokens
        return _Rows(
            torch.full((batch, L), stopping.pad, dtype=torch.long, device=device),
            torch.zeros(batch, L, device=device),
            torch.zeros(batch, dtype=torch.bool, device=device),
            torch.zeros(batch, dtype=torch.long, device=device),
            torch.arange(batch, device=device),
            stopping,
        )

    def choose(self, scores: torch.Tensor, generator) -> tuple[torch.Tensor, torch.Tensor]:  # pragma: no cover
        """(n,) chosen ids and their log-probabilities under softmax(scores)."""
        raise NotImplementedError

    def step(self, run, tokens, scores, generator):
        choice, logq = self.choose(scores, generator)  # (n,) for the active rows
        rows = run.active
        run.tokens[rows, run.t] = choice
        run.log_probs[rows, run.t] = logq
        run.lengths[rows] += 1
        run.t += 1
        if run.stopping.eos_token_id is None:
            return choice, None
        ended = choice == run.stopping.eos_token_id
        if not bool(ended.any()):
            return choice, None
        run.finished[rows[ended]] = True
        keep = (~ended).nonzero()[:, 0]  # finished rows leave the batch: no more model calls for them
        run.active = rows[keep]
        return choice[keep], keep

    def done(self, run):
        return len(run.active) == 0 or run.t >= run.stopping.max_new_tokens

    def finish(self, run):
        reasons = [EOS if f else MAX_LENGTH for f in run.finished.tolist()]
        lp = run.log_probs[:, : run.t]
        return DecodeOutput(run.tokens[:, : run.t], lp, run.lengths, run.finished.clone(), reasons, lp.sum(-1))


class Greedy(_PerRow):
    """Argmax of the processed scores at every step."""

    def choose(self, scores, generator):
        choice = scores.argmax(-1)  # first maximum on ties, as HF
        # log p(choice) = max - logsumexp = -log Σ exp(s - max): one pass fewer than logsumexp,
        # which is slow on CPU (about 1 ms a step for 8 x 50,257 scores on one thread)
        top = scores.amax(-1, keepdim=True)
        return choice, -(scores - top).exp_().sum(-1).log()


class Sample(_PerRow):
    """Ancestral sampling from softmax(processed scores) with an explicit generator."""

    def choose(self, scores, generator):
        probs = scores.float().softmax(-1)
        try:
            choice = torch.multinomial(probs, 1, generator=generator)[:, 0]
        except RuntimeError:
            raise KexueError(
                "a row has no token left to sample (all scores -inf or NaN); check the processors"
            ) from None
        return choice, probs.gather(1, choice[:, None])[:, 0].log()


@dataclass
class _Beams:
    """Batched beam bookkeeping: running beams and the pool of the best finished hypotheses."""

    running: torch.Tensor  # (B, K) summed log-probs of the running beams
    run_lp: torch.Tensor  # (B*K, L) per-token log-probs of the running beams
    pool_tokens: torch.Tensor  # (B, K, L)
    pool_lp: torch.Tensor  # (B, K, L)
    pool_scores: torch.Tensor  # (B, K) length-penalised
    pool_len: torch.Tensor  # (B, K)
    pool_eos: torch.Tensor  # (B, K) the hypothesis ended with eos
    pool_done: torch.Tensor  # (B, K) HF's is_sent_finished
    improvable: torch.Tensor  # (B, 1) HF's early-stop heuristic still unsatisfied
    prompt_len: int
    stopping: Stopping
    active: torch.Tensor  # (b,) rows of the batch still decoded, K model rows each, in the model's order
    t: int = 0
    stop: bool = False


class Beam(Search):
    """Batched beam search with HF ``generate`` semantics.

    Each step takes the top ``2K`` continuations over all ``K`` beams; those that end (eos, or
    the length cap) and rank within the first ``K`` enter a pool of finished hypotheses scored
    ``sum log p / generated_length ** length_penalty``; the best ``K`` that do not end keep running.
    ``early_stopping``: True stops a row once K hypotheses are finished; False stops when the best
    running beam, at its current length, cannot beat the worst finished one; ``"never"`` uses
    the best length it could still reach (the canonical rule with ``length_penalty`` 0).

    A row of the batch whose result can no longer change (no running beam can beat its pool, or
    with ``early_stopping=True`` its pool is full) leaves the batch with its K beams
    (``drop_finished``, the default): the model stops computing them, where ``generate`` keeps
    stepping every row until the last one is done. The search itself is the same either way; the
    numbers can differ in the last bits when the model's matrix products round differently for a
    smaller batch (as they do between any two batch sizes).

    Example: ``decode(step, prompt, search=Beam(4, length_penalty=1.0), stopping=Stopping(50, eos))``.
    """

    log_probs = True

    def __init__(
        self,
        num_beams: int,
        length_penalty: float = 1.0,
        early_stopping: bool | str = False,
        drop_finished: bool = True,
    ):
        if isinstance(num_beams, bool) or not isinstance(num_beams, int) or num_beams < 1:
            raise KexueError(f"num_beams must be an integer >= 1, got {num_beams!r}")
        if early_stopping not in (True, False, "never"):
            raise KexueError(f"early_stopping must be true, false or 'never', got {early_stopping!r}")
        self.num_beams, self.length_penalty, self.early_stopping = num_beams, float(length_penalty), early_stopping
        self.drop_finished = bool(drop_finished)

    def start(self, batch, prompt_len, stopping, device):
        K, L = self.num_beams, stopping.max_new_tokens
        running = torch.zeros(batch, K, device=device)
        running[:, 1:] = NEG  # all beams start equal: only the first may expand
        return _Beams(
            running,
            torch.zeros(batch * K, L, device=device),
            torch.full((batch, K, L), stopping.pad, dtype=torch.long, device=device),
            torch.zeros(batch, K, L, device=device),
            torch.full((batch, K), NEG, device=device),
            torch.zeros(batch, K, dtype=torch.long, device=device),
            torch.zeros(batch, K, dtype=torch.bool, device=device),
            torch.zeros(batch, K, dtype=torch.bool, device=device),
            torch.ones(batch, 1, dtype=torch.bool, device=device),
            prompt_len,
            stopping,
            torch.arange(batch, device=device),
        )

    def step(self, run, tokens, scores, generator):
        K = self.num_beams
        act = run.active  # the rows of the batch in the model's rows, K each
        b = len(act)
        V, t, L = scores.shape[-1], run.t, run.stopping.max_new_tokens
        eos = run.stopping.eos_token_id
        running = run.running.index_select(0, act)
        offset = (torch.arange(b, device=scores.device) * K)[:, None]
        picked = _top_candidates(scores, running, K) if V > 2 * K else None
        if picked is None:  # HF's selection: the top 2K of all K x V sums of a row
            total = (scores.view(b, K, V) + running[:, :, None]).view(b, K * V)
            top, flat = torch.topk(total, 2 * K, dim=1)  # (b, 2K), sorted
            parent, token = flat // V, flat % V  # beam within the row, token id
            token_lp = scores.view(b * K, V)[(parent + offset).view(-1), token.view(-1)].view(b, 2 * K)
        else:
            top, parent, token, token_lp = picked
        ends = torch.zeros_like(token, dtype=torch.bool) if eos is None else token == eos
        if t + 1 >= L:
            ends = torch.ones_like(ends)

        # finished candidates among the top K enter the pool (HF _update_finished_beams)
        enter = ends.clone()
        enter[:, K:] = False
        full = run.pool_done.index_select(0, act).all(1, keepdim=True) & (self.early_stopping is True)
        improvable = run.improvable.index_select(0, act)
        enter = enter & ~full & improvable
        if bool(enter.any()):  # most steps nothing ends: skip building candidate sequences
            self._update_pool(run, act, tokens, parent, token, token_lp, top, enter)
        # the best K candidates that did not end keep running (HF _get_running_beams_for_next_iteration)
        alive = top + ends.float() * NEG
        nxt = torch.topk(alive, K, dim=1).indices  # (b, K)
        running = alive.gather(1, nxt)
        run.running[act] = running
        src = (parent.gather(1, nxt) + offset).view(-1)  # (b*K,) flat parent rows
        run.run_lp = run.run_lp.index_select(0, src)
        run.run_lp[:, t] = token_lp.gather(1, nxt).view(-1)
        run.t = t + 1

        # can a running beam still beat the worst finished one? (HF _check_early_stop_heuristic)
        if self.early_stopping == "never" and self.length_penalty > 0:
            best_len = L
        else:
            best_len = run.t
        best_running = running[:, :1] / float(best_len) ** self.length_penalty
        pool_done, pool_scores = run.pool_done.index_select(0, act), run.pool_scores.index_select(0, act)
        worst = torch.where(pool_done, pool_scores.min(1, keepdim=True).values, torch.full_like(pool_scores, NEG))
        improvable = improvable & (best_running > worst).any(1, keepdim=True)
        chosen = token.gather(1, nxt).view(-1)
        # a row is decided when its pool can no longer change: no running beam can improve it, or
        # (early_stopping=True) it is full; generate keeps stepping it, its result stays the same.
        # A decided row is marked not improvable (the bidirectional early exit reads the flag).
        decided = ~improvable[:, 0]
        if self.early_stopping is True:
            decided = decided | pool_done.all(1)
        run.improvable[act] = improvable & ~decided[:, None]
        if bool(decided.all()) or bool(ends.all()):
            run.stop = True
        elif self.drop_finished and bool(decided.any()):
            keep = (~decided).nonzero()[:, 0]
            run.active = act[keep]
            rows = (keep[:, None] * K + torch.arange(K, device=keep.device)).view(-1)
            run.run_lp = run.run_lp.index_select(0, rows)
            return chosen.index_select(0, rows), src.index_select(0, rows)
        return chosen, src

    def _update_pool(self, run, act, tokens, parent, token, token_lp, top, enter):
        K, b = self.num_beams, len(act)
        t, L = run.t, run.stopping.max_new_tokens
        eos = run.stopping.eos_token_id
        gen = tokens[:, run.prompt_len :].view(b, K, t)  # (b, K, t) generated so far
        cand_tokens = torch.full((b, 2 * K, L), run.stopping.pad, dtype=torch.long, device=top.device)
        cand_tokens[:, :, :t] = gen.gather(1, parent[:, :, None].expand(b, 2 * K, t))
        cand_tokens[:, :, t] = token
        cand_lp = torch.zeros(b, 2 * K, L, device=top.device)
        cand_lp[:, :, :t] = run.run_lp.view(b, K, L)[:, :, :t].gather(1, parent[:, :, None].expand(b, 2 * K, t))
        cand_lp[:, :, t] = token_lp
        # score sum log p / length ** penalty; candidates that may not enter get HF's -1e9
        cand_scores = top / float(t + 1) ** self.length_penalty + (~enter).float() * NEG
        merged = torch.cat([run.pool_scores.index_select(0, act), cand_scores], 1)  # (b, 3K)
        keep = torch.topk(merged, K, dim=1).indices  # (b, K)
        k3 = keep[:, :, None].expand(b, K, L)
        run.pool_tokens[act] = torch.cat([run.pool_tokens.index_select(0, act), cand_tokens], 1).gather(1, k3)
        run.pool_lp[act] = torch.cat([run.pool_lp.index_select(0, act), cand_lp], 1).gather(1, k3)
        run.pool_scores[act] = merged.gather(1, keep)
        lengths = torch.full_like(token, t + 1)
        run.pool_len[act] = torch.cat([run.pool_len.index_select(0, act), lengths], 1).gather(1, keep)
        ended_eos = token == eos if eos is not None else torch.zeros_like(enter)
        run.pool_eos[act] = torch.cat([run.pool_eos.index_select(0, act), ended_eos], 1).gather(1, keep)
        run.pool_done[act] = torch.cat([run.pool_done.index_select(0, act), enter], 1).gather(1, keep)

    def done(self, run):
        return run.stop or run.t >= run.stopping.max_new_tokens

    def finish(self, run):
        n = int(run.pool_len[:, 0].max())
        eos_end = run.pool_eos[:, 0]
        reasons = [EOS if f else MAX_LENGTH for f in eos_end.tolist()]
        return DecodeOutput(
            run.pool_tokens[:, 0, :n],
            run.pool_lp[:, 0, :n],
            run.pool_len[:, 0].clone(),
            eos_end.clone(),
            reasons,
            run.pool_scores[:, 0].clone(),
        )


def _top_candidates(scores: torch.Tensor, running: torch.Tensor, K: int):
    """Beam search's top ``2K`` continuations per batch row without building the (b, K x V) sums.

    Each beam's best ``2K + 1`` tokens by log-probability (one top-k per beam), their sums with the
    beam's score, then the best ``2K + 1`` of those ``K (2K + 1)`` sums. Rounding is monotone, so a
    token outside its beam's best ``2K + 1`` sums to at most that beam's last candidate. When every
    beam's last candidate is below the ``2K``-th sum, the ``2K`` kept sums are finite and the best
    ``2K + 1`` are strictly decreasing, the result is exactly what the top-k over all ``K x V`` sums
    returns (the same values in the same order: no tie for the order or the cut to depend on).
    Otherwise (ties, NaN, -inf) None: the caller takes that top-k. It saves writing and reading the
    (b, K x V) sums, about a millisecond a step for beam-4 over 8 prompts and GPT-2's vocabulary on
    one CPU thread. Returns (sums, parent beam, token, log-prob), each (b, 2K).
    """
    n, V = scores.shape
    b, k = n // K, 2 * K
    lp, tok = torch.topk(scores, k + 1, dim=1)  # (b*K, 2K+1), sorted
    sums = (lp.view(b, K, k + 1) + running[:, :, None]).view(b, K * (k + 1))
    top, j = torch.topk(sums, k + 1, dim=1)  # one more than kept: is the boundary a tie?
    last = sums.view(b, K, k + 1)[:, :, k]  # each beam's (2K+1)-th sum
    distinct = (top[:, :-1] > top[:, 1:]).all()  # the kept sums and the next one: strictly decreasing
    if not bool(torch.isfinite(top[:, :k]).all() & distinct & (last < top[:, k - 1 : k]).all()):
        return None
    top, j = top[:, :k], j[:, :k]
    return top, j // (k + 1), tok.view(b, -1).gather(1, j), lp.view(b, -1).gather(1, j)


def left_pad(prompts: Sequence[Sequence[int]], pad_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Batch prompts of different lengths for :func:`decode`: padding on the left, as ``generate`` wants.

    Args:
        prompts: token ids per prompt (lists or 1-D tensors), each at least one token long.
        pad_id: the id written in the padding (the model never attends to it).
    Returns:
        ``ids`` (B, T0) long and ``attention_mask`` (B, T0) long (0 on padding, 1 on tokens),
        T0 the longest prompt.
    Example:
        ``ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)`` -> ids ``[[5, 6, 7], [0, 0, 8]]``,
        mask ``[[1, 1, 1], [0, 0, 1]]``; then ``decode(step, ids, ..., attention_mask=mask)``.
    """
    if isinstance(pad_id, bool) or not isinstance(pad_id, int) or pad_id < 0:
        raise KexueError(f"pad_id must be an integer >= 0, got {pad_id!r}")
    rows = []
    for i, p in enumerate(prompts):
        try:
            r = torch.as_tensor(p)
        except (TypeError, ValueError, RuntimeError):
            raise KexueError(f"prompt {i} is not a sequence of token ids: {p!r}") from None
        if r.dim() == 1 and len(r) == 0:
            raise KexueError(f"prompt {i} is empty: every prompt needs at least one token")
        if r.dim() != 1 or r.is_floating_point() or r.is_complex() or r.dtype == torch.bool:
            raise KexueError(f"prompt {i} must be a flat sequence of integer token ids, got {p!r}")
        if bool((r < 0).any()):
            raise KexueError(f"prompt {i} holds a negative token id")
        rows.append(r.long())
    if not rows:
        raise KexueError("left_pad needs at least one prompt")
    T0 = max(len(r) for r in rows)
    ids = torch.full((len(rows), T0), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T0, dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, T0 - len(r) :] = r
        mask[i, T0 - len(r) :] = 1
    return ids, mask


def _check_mask(attention_mask: torch.Tensor | None, prompt: torch.Tensor) -> torch.Tensor | None:
    """The (B, T0) long mask of a left-padded prompt, or None when there is no padding."""
    if attention_mask is None:
        return None
    if not isinstance(attention_mask, torch.Tensor) or attention_mask.shape != prompt.shape:
        got = tuple(attention_mask.shape) if isinstance(attention_mask, torch.Tensor) else type(attention_mask).__name__
        raise KexueError(f"attention_mask must be a tensor of the prompt's shape {tuple(prompt.shape)}, got {got}")
    mask = attention_mask.to(device=prompt.device, dtype=torch.long)
    if not bool(((mask == 0) | (mask == 1)).all()):
        raise KexueError("attention_mask must hold only 0 (padding) and 1 (token)")
    if bool((mask[:, 1:] < mask[:, :-1]).any()) or not bool(mask[:, -1].all()):
        raise KexueError(
            "attention_mask must be left padding (zeros, then ones, the last column all ones); "
            "build the batch with kexue.generation.left_pad"
        )
    return None if bool(mask.all()) else mask


@torch.no_grad()
def decode(
    step: StepFn,
    prompt: torch.Tensor,
    processors: Iterable[LogitsProcessor] | Processors = (),
    search: Search | None = None,
    stopping: Stopping | None = None,
    generator: torch.Generator | None = None,
    state: Any = None,
    reorder: Callable[[Any, torch.Tensor], Any] = reorder_batch,
    attention_mask: torch.Tensor | None = None,
) -> DecodeOutput:
    """Decode continuations of ``prompt`` with ``step``.

    Args:
        step: ``(new_tokens (N, t), state) -> (logits (N, V), state)``; with padding also
            ``attention_mask=`` (N, S), see the module docstring.
        prompt: (B, T0) token ids; prompts of different lengths left-padded (:func:`left_pad`).
        processors: logits rules, applied in the fixed order of :class:`Processors`.
        search: :class:`Greedy` (default), :class:`Sample` or :class:`Beam`.
        stopping: length cap and eos (default ``Stopping()``: 100 tokens, no eos).
        generator: the one source of randomness for sampling.
        state: initial model state (None: the step builds it from the prompt).
        reorder: ``(state, index) -> state`` for beam search.
        attention_mask: (B, T0) 1 on prompt tokens, 0 on left padding (None: no padding).
            Processors see the padded rows, as in HF ``generate`` (e.g. :class:`MinLength`
            counts the padded width).
    The scores a processor or a search receives are valid during that step only (beam search's
    log-probs live in one buffer that every step overwrites): clone them to keep them.
    Returns:
        :class:`DecodeOutput` with tokens, per-token log-probs, finished flags and stop reasons.
    Example:
        ``out = decode(model.step, prompt, [TopP(0.9)], Sample(), Stopping(50, eos), torch.Generator().manual_seed(0))``
    """
    search = Greedy() if search is None else search
    stopping = Stopping() if stopping is None else stopping
    procs = processors if isinstance(processors, Processors) else Processors(processors)
    if prompt.dim() != 2 or prompt.shape[1] < 1:
        raise KexueError(f"prompt must be (batch, length >= 1) token ids, got shape {tuple(prompt.shape)}")
    B, T0 = prompt.shape
    mask = _check_mask(attention_mask, prompt)
    if mask is not None and state is not None:
        raise KexueError("attention_mask with an initial state is not supported: the mask must cover the whole past")
    validate_lengths(procs.processors, T0 + stopping.max_new_tokens)
    K = search.num_beams
    buf = torch.full((B * K, T0 + stopping.max_new_tokens), stopping.pad, dtype=torch.long, device=prompt.device)
    buf[:, :T0] = prompt.repeat_interleave(K, 0) if K > 1 else prompt
    if mask is not None:  # (B*K, T0 + L): the prompt's mask, then ones for every generated token
        mbuf = torch.ones_like(buf)
        mbuf[:, :T0] = mask.repeat_interleave(K, 0) if K > 1 else mask
    run = search.start(B, T0, stopping, prompt.device)
    new = buf[:, :T0]
    work = None  # the log-probs' buffer, reused every step (a fresh (N, V) tensor each step costs page faults)
    for t in range(stopping.max_new_tokens):
        if mask is None:
            logits, state = step(new, state)
        else:
            logits, state = step(new, state, attention_mask=mbuf[:, : T0 + t])
        scores = logits.float()
        if search.log_probs:
            if work is None or work.shape[1:] != scores.shape[1:] or len(work) < len(scores):
                work = torch.empty_like(scores)
            scores = torch.log_softmax(scores, -1, out=work[: len(scores)])
        seen = buf[:, : T0 + t]
        scores = procs(seen, scores)
        chosen, parent = search.step(run, seen, scores, generator)
        if search.done(run):
            break
        if parent is not None:  # beams were reordered, or finished rows left the batch
            buf = buf.index_select(0, parent)
            state = reorder(state, parent)
            if mask is not None:
                mbuf = mbuf.index_select(0, parent)
        buf[:, T0 + t] = chosen
        new = buf[:, T0 + t : T0 + t + 1]
    return search.finish(run)
