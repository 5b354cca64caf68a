"""Pseudo-Gibbs sampling of text from a masked LM (article 6, kexue.fm/archives/8119; Wang & Cho 2019).

The state of a chain is a sentence ``[CLS] x_1 .. x_l [SEP]`` (then padding). One step picks
positions of each chain, sets them to [MASK], asks the MLM for its conditionals there and draws
new tokens from them (after the shared logits processors). The MLM's conditionals need not be
those of any joint distribution (Wang & Cho withdrew their MRF claim), so this is *pseudo*-Gibbs:
it is exact Gibbs sampling only when the conditionals come from a joint (tests/test_gibbs.py
builds such an "MLM" and checks convergence to its joint).

Scan orders (``order``):

- ``random``: one free position per chain, uniform, per step (Su's script; Wang & Cho's
  "parallel-sequential" draws one position per step too);
- ``sequential``: left to right over the free positions, cycling; a sweep is ``l`` steps;
- ``parallel``: a share ``fraction`` of the free positions (at least one) masked and redrawn at
  once. This is *not* Gibbs even for a true joint: label its results as such.

The model is any callable ``mlm(tokens (B, T), positions (B, K)) -> logits (B, K, V)``: the
logits at the given positions only, so that a model can compute its vocabulary head only where a
token is redrawn (:class:`kexue.models.mlm.MaskedLM` does). :func:`full_logits_mlm` adapts a
callable that returns logits at every position. One explicit ``torch.Generator`` makes every draw.

Processor order per step (documented, tested): the processors of :class:`Processors` in their
fixed stage order — :class:`BanTokens` (stage 0: special tokens) -> temperature (stage 2) ->
top-k / top-p (stage 3) — then softmax and one multinomial draw per redrawn position.

Example::

    tokens = init_tokens(lengths=[12] * 16, cls_id=101, sep_id=102, mask_id=103, pad_id=0)
    out = gibbs_sample(mlm, tokens, steps=500, mask_id=103, pad_id=0, burn_in=250,
                       processors=[BanTokens([0, 100, 101, 102, 103]), TopK(100)],
                       generator=torch.Generator().manual_seed(0))
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Literal

import torch

from kexue.errors import KexueError
from kexue.generation.processors import NEG_INF, LogitsProcessor, Processors

MLM = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]  # (tokens (B, T), positions (B, K)) -> (B, K, V)
Order = Literal["random", "sequential", "parallel"]
ORDERS = ("random", "sequential", "parallel")


class BanTokens(LogitsProcessor):
    """Stage 0: never draw these ids ([PAD], [CLS], [SEP], [MASK], [UNK], unused slots ...).

    Su's script samples the whole vocabulary, so special tokens can appear inside a sentence;
    this rule masks them. Example: ``BanTokens([0, 3])(tokens, scores)`` -> columns 0 and 3 at -inf.
    """

    stage = 0

    def __init__(self, token_ids: Iterable[int]):
        ids = sorted({int(i) for i in token_ids})
        if any(i < 0 for i in ids):
            raise KexueError(f"banned token ids must be >= 0, got {ids}")
        self.token_ids = ids

    def __call__(self, tokens, scores):
        if not self.token_ids:
            return scores
        ids = torch.tensor(self.token_ids, device=scores.device)
        ids = ids[ids < scores.shape[-1]]
        return scores.index_fill(-1, ids, NEG_INF)


@dataclass
class GibbsOutput:
    """What :func:`gibbs_sample` returns.

    Attributes:
        tokens: (B, T) the final state of every chain.
        samples: (S, B, T) the kept states (after burn-in, every ``thin`` steps), or None when
            ``keep_samples`` is False.
        redrawn: positions redrawn in all (summed over chains and steps).
        changed: of those, how many got a token different from the one before (change rate =
            changed / redrawn, a chain diagnostic).
    """

    tokens: torch.Tensor
    samples: torch.Tensor | None
    redrawn: int
    changed: int

    @property
    def change_rate(self) -> float:
        return self.changed / self.redrawn if self.redrawn else 0.0


def init_tokens(
    lengths: Sequence[int], cls_id: int, sep_id: int, mask_id: int, pad_id: int, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(B, 2 + max(lengths)) chains ``[CLS] [MASK]*l [SEP] [PAD]*``, one per length.

    Example: ``init_tokens([2, 1], 1, 2, 3, 0)`` -> ``[[1, 3, 3, 2], [1, 3, 2, 0]]``.
    """
    if not lengths or any(int(n) < 1 for n in lengths):
        raise KexueError(f"every chain needs a length >= 1, got {list(lengths)}")
    width = 2 + max(lengths)
    tokens = torch.full((len(lengths), width), pad_id, dtype=torch.long, device=device)
    for b, n in enumerate(lengths):
        tokens[b, 0], tokens[b, 1 : n + 1], tokens[b, n + 1] = cls_id, mask_id, sep_id
    return tokens


def sample_lengths(n: int, low: int, high: int, generator: torch.Generator) -> list[int]:
    """``n`` lengths uniform on {low, ..., high} inclusive (Su: 8..32), drawn with ``generator``."""
    if not 1 <= low <= high:
        raise KexueError(f"lengths need 1 <= low <= high, got low {low}, high {high}")
    return torch.randint(low, high + 1, (n,), generator=generator).tolist()


def full_logits_mlm(fn: Callable[[torch.Tensor], torch.Tensor]) -> MLM:
    """Adapt ``fn(tokens (B, T)) -> logits (B, T, V)`` to the sampler's ``(tokens, positions)`` callable.

    This is the straightforward path: the vocabulary head runs over every position, then the
    redrawn ones are picked.
    """

    def mlm(tokens: torch.Tensor, positions: torch.Tensor) -> torch.Tensor:
        logits = fn(tokens)  # (B, T, V)
        return logits.gather(1, positions[..., None].expand(-1, -1, logits.shape[-1]))  # (B, K, V)

    return mlm


def _choose(
    free: torch.Tensor, order: str, fraction: float, step: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Positions (B, K) to redraw this step and which of them really are redrawn (B, K) bool."""
    counts = free.sum(1)  # (B,)
    if order == "sequential":
        rank = free.long().cumsum(1) - 1  # (B, T): index of each free position among the free ones
        target = step % counts.clamp(min=1)  # (B,)
        hit = free & (rank == target[:, None])
        return hit.float().argmax(1, keepdim=True), counts[:, None] > 0
    keys = torch.rand(free.shape, generator=generator, device=free.device)  # (B, T)
    keys = keys.masked_fill(~free, -1.0)  # non-free positions rank last
    if order == "random":
        return keys.argmax(1, keepdim=True), counts[:, None] > 0
    k = (fraction * counts).round().long().clamp(min=1)  # (B,) at least one per chain
    k = torch.minimum(k, counts)
    width = max(int(k.max()), 1)
    positions = keys.topk(width, dim=1).indices  # (B, K)
    use = torch.arange(width, device=free.device)[None, :] < k[:, None]
    return positions, use


def conditionals(
    mlm: MLM,
    tokens: torch.Tensor,
    positions: torch.Tensor,
    mask_id: int,
    processors: Processors | Iterable[LogitsProcessor] = (),
    use: torch.Tensor | None = None,
) -> torch.Tensor:
    """(B, K, V) the probabilities a step draws from: the ``positions`` where ``use`` (default all)
    set to [MASK], the MLM, the processors in their fixed order, softmax."""
    processors = processors if isinstance(processors, Processors) else Processors(processors)
    fill = torch.full_like(positions, mask_id)
    if use is not None:
        fill = torch.where(use, fill, tokens.gather(1, positions))
    masked = tokens.scatter(1, positions, fill)
    logits = mlm(masked, positions)  # (B, K, V)
    b, k, v = logits.shape
    if (b, k) != tuple(positions.shape):
        raise KexueError(
            f"the MLM returned logits of shape {tuple(logits.shape)} for positions {tuple(positions.shape)}"
        )
    flat_tokens = masked.repeat_interleave(k, dim=0)  # (B*K, T): each row sees its chain
    scores = processors(flat_tokens, logits.reshape(b * k, v).float())
    probs = scores.softmax(-1)
    if not torch.isfinite(probs).all():
        raise KexueError("every token is excluded at a redrawn position (the processors left nothing to draw)")
    return probs.view(b, k, v)


@torch.no_grad()
def gibbs_sample(
    mlm: MLM,
    tokens: torch.Tensor,
    *,
    steps: int,
    mask_id: int,
    pad_id: int | None = None,
    order: Order = "random",
    fraction: float = 0.15,
    burn_in: int = 0,
    thin: int = 1,
    pinned: torch.Tensor | None = None,
    processors: Iterable[LogitsProcessor] | Processors = (),
    burn_in_processors: Iterable[LogitsProcessor] | Processors | None = None,
    generator: torch.Generator | None = None,
    keep_samples: bool = False,
    callback: Callable[[int], None] | None = None,
) -> GibbsOutput:
    """Run B pseudo-Gibbs chains in one batch for ``steps`` steps.

    Args:
        mlm: ``(tokens (B, T), positions (B, K)) -> logits (B, K, V)``.
        tokens: (B, T) start states ``[CLS] x_1..x_l [SEP] [PAD]*`` (see :func:`init_tokens`); the
            first token, the last non-pad token and padding are never redrawn.
        steps: updates per chain (``random`` / ``sequential``: one position each; ``parallel``:
            a share ``fraction`` of the free positions).
        mask_id: the [MASK] id.
        pad_id: the padding id (None: no padding).
        order: ``random``, ``sequential`` (left to right, cycling) or ``parallel``.
        fraction: share of free positions redrawn per ``parallel`` step, in (0, 1].
        burn_in: steps whose states are not kept.
        thin: keep every ``thin``-th state after burn-in.
        pinned: (B, T) bool, True where a token must never change (infilling).
        processors: rules applied to the MLM logits, in :class:`Processors` order.
        burn_in_processors: rules during burn-in (default: ``processors``; Wang & Cho burn in with
            the full distribution, then top-k 100).
        generator: the one source of randomness (default: a fresh one seeded 0).
        keep_samples: return the kept states as (S, B, T).
        callback: called with the step number after each step (a progress bar).
    Returns:
        A :class:`GibbsOutput`.
    """
    if order not in ORDERS:
        raise KexueError(f"order must be one of {', '.join(ORDERS)}, got {order!r}")
    for name, value, low in (("steps", steps, 1), ("burn_in", burn_in, 0), ("thin", thin, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise KexueError(f"{name} must be an integer >= {low}, got {value!r}")
    if not (isinstance(fraction, (int, float)) and math.isfinite(fraction) and 0 < fraction <= 1):
        raise KexueError(f"fraction must be in (0, 1], got {fraction!r}")
    if tokens.dim() != 2 or tokens.dtype != torch.long:
        raise KexueError(f"tokens must be a (B, T) long tensor, got {tuple(tokens.shape)} {tokens.dtype}")
    if tokens.shape[1] < 3:
        raise KexueError("each chain needs [CLS], at least one token and [SEP]")
    if pinned is not None and pinned.shape != tokens.shape:
        raise KexueError(f"pinned has shape {tuple(pinned.shape)}, tokens {tuple(tokens.shape)}")
    main = Processors(processors)
    early = main if burn_in_processors is None else Processors(burn_in_processors)
    generator = generator if generator is not None else torch.Generator(tokens.device).manual_seed(0)

    real = tokens != pad_id if pad_id is not None else torch.ones_like(tokens, dtype=torch.bool)
    last = real.long().cumsum(1).argmax(1)  # (B,) index of [SEP], the last real token
    free = real.clone()
    free[:, 0] = False
    free.scatter_(1, last[:, None], False)
    if pinned is not None:
        free &= ~pinned.to(free.device)

    state = tokens.clone()
    kept, redrawn, changed = [], 0, 0
    for step in range(steps):
        positions, use = _choose(free, order, fraction, step, generator)  # (B, K), (B, K)
        probs = conditionals(mlm, state, positions, mask_id, early if step < burn_in else main, use)
        b, k, v = probs.shape
        drawn = torch.multinomial(probs.view(b * k, v), 1, generator=generator).view(b, k)
        old = state.gather(1, positions)
        new = torch.where(use, drawn, old)
        state = state.scatter(1, positions, new)
        redrawn += int(use.sum())
        changed += int((use & (new != old)).sum())
        done = step + 1
        if keep_samples and done > burn_in and (done - burn_in) % thin == 0:
            kept.append(state.clone())
        if callback is not None:
            callback(done)
    samples = None
    if keep_samples:
        samples = torch.stack(kept) if kept else state.new_zeros((0, *state.shape))
    return GibbsOutput(state, samples, redrawn, changed)


@torch.no_grad()
def naive_gibbs(
    full_mlm: Callable[[torch.Tensor], torch.Tensor],
    tokens: torch.Tensor,
    steps: int,
    mask_id: int,
    banned: Sequence[int] = (),
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The straightforward sampler, the reference for ``kexue bench gibbs``: one chain (1, T) without
    padding, the vocabulary head over every position at every step, one random position per step
    (Su's script). Returns the final (1, T) state.
    """
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    state = tokens.clone()
    length = state.shape[1] - 2
    for _ in range(steps):
        i = 1 + int(torch.randint(length, (1,), generator=generator))
        state[0, i] = mask_id
        logits = full_mlm(state)[0, i].float()  # (V,) out of (1, T, V)
        if banned:
            logits[list(banned)] = NEG_INF
        state[0, i] = int(torch.multinomial(logits.softmax(-1), 1, generator=generator))
    return state
