"""Logits processors: tiny pure rules ``(tokens (N, T), scores (N, V)) -> scores (N, V)``.

Each rule is validated in ``__init__`` and never edits its input. :class:`Processors` applies a
list of them in one fixed, documented order (docs/decoding.md, "Processors and their fixed order"):

1. hard constraints (stage 0): :class:`MinLength`, :class:`ForceEosAtMaxLength`, :class:`NoRepeatNGram`
2. penalties (stage 1): :class:`RepetitionPenalty`, :class:`EosLengthBoost`
3. temperature (stage 2): :class:`Temperature`
4. truncation (stage 3): :class:`TopK`, :class:`TopP`, :class:`MinP`, :class:`Typical` and the
   consistent variants :class:`ConsistentTopK`, :class:`ConsistentTopP`
5. renormalisation happens in the search (softmax / log-softmax of the processed scores).

Rules of the same stage keep the order they were given in. When any consistent rule is present,
the end-of-sequence token leaves the truncation stage with the score it entered it with, so eos
survives every truncation (Welleck et al. 2020, V' = V ∪ {eos}); a hard constraint such as
:class:`MinLength` still masks eos before that stage, on purpose: a minimum length overrides
"eos always kept" for its finite prefix.

Tokens are the whole sequence so far, prompt included (as in HF ``input_ids``).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
import torch

from kexue.errors import KexueError

NEG_INF = -math.inf


class LogitsProcessor:
    """Base class: ``stage`` places the rule in the fixed order; ``__call__`` is pure."""

    stage: int = 1

    def __call__(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:  # pragma: no cover
        raise NotImplementedError

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in vars(self).items())
        return f"{type(self).__name__}({args})"


def _check_int(name: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise KexueError(f"{name} must be an integer >= {low}, got {value!r}")
    return value


def _check_float(name: str, value, low: float, high: float, low_open: bool = False, high_open: bool = False) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise KexueError(f"{name} must be a number, got {value!r}") from None
    bad_low = v <= low if low_open else v < low
    bad_high = v >= high if high_open else v > high
    if math.isnan(v) or bad_low or bad_high:
        lo, hi = ("(" if low_open else "["), (")" if high_open else "]")
        raise KexueError(f"{name} must be in {lo}{low}, {high}{hi}, got {value!r}")
    return v


# --- stage 0: hard constraints ---------------------------------------------------------------


class MinLength(LogitsProcessor):
    """Mask eos while the sequence (prompt included) is shorter than ``min_length``.

    ``max_length``, when given, must exceed ``min_length``: otherwise eos would be masked at every
    step and decoding could never stop (a config error, not a silent all-masked row).
    Example: ``MinLength(5, eos_token_id=3)(tokens[:, :4], scores)`` -> eos column at -inf.
    """

    stage = 0

    def __init__(self, min_length: int, eos_token_id: int, max_length: int | None = None):
        self.min_length = _check_int("min_length", min_length, 0)
        self.eos_token_id = _check_int("eos_token_id", eos_token_id, 0)
        self.max_length = max_length
        if max_length is not None:
            self.check_max_length(max_length)

    def check_max_length(self, max_length: int) -> None:
        if self.min_length >= max_length:
            raise KexueError(
                f"min_length {self.min_length} must be < max_length {max_length}: "
                "eos would be masked at every step and decoding could never stop"
            )

    def __call__(self, tokens, scores):
        if tokens.shape[-1] >= self.min_length:
            return scores
        out = scores.clone()
        out[:, self.eos_token_id] = NEG_INF
        return out


class ForceEosAtMaxLength(LogitsProcessor):
    """At the last allowed position (length ``max_length - 1``), only eos remains (score 0)."""

    stage = 0

    def __init__(self, max_length: int, eos_token_id: int):
        self.max_length = _check_int("max_length", max_length, 1)
        self.eos_token_id = _check_int("eos_token_id", eos_token_id, 0)

    def __call__(self, tokens, scores):
        if tokens.shape[-1] != self.max_length - 1:
            return scores
        out = torch.full_like(scores, NEG_INF)
        out[:, self.eos_token_id] = 0.0
        return out


class NoRepeatNGram(LogitsProcessor):
    """Ban every token that would complete an n-gram already present in the sequence.

    Vectorised: the last ``n - 1`` tokens are compared with every window of the sequence at once
    (one ``unfold``), and the token that followed each matching window is banned.
    Example: n=2, tokens ``[5, 6, 5]`` -> token 6 banned.
    """

    stage = 0

    def __init__(self, ngram_size: int):
        self.ngram_size = _check_int("ngram_size", ngram_size, 1)

    def __call__(self, tokens, scores):
        n, t = self.ngram_size, tokens.shape[-1]
        if t < n:
            return scores
        vocab = scores.shape[-1]
        windows = tokens.unfold(1, n, 1)  # (N, t - n + 1, n)
        prefix = tokens[:, t - n + 1 :]  # (N, n - 1): the n-gram the next token would complete
        match = (windows[..., :-1] == prefix[:, None, :]).all(-1)  # (N, t - n + 1)
        # non-matching windows point at a spare column past the vocabulary
        banned_ids = torch.where(match, windows[..., -1].clamp(max=vocab), vocab)
        banned = torch.zeros(scores.shape[0], vocab + 1, dtype=torch.bool, device=scores.device)
        banned.scatter_(1, banned_ids, True)
        return scores.masked_fill(banned[:, :vocab], NEG_INF)


# --- stage 1: penalties ----------------------------------------------------------------------


class RepetitionPenalty(LogitsProcessor):
    """Make every token already in the sequence less likely by a factor ``penalty`` (CTRL).

    Correct for negative scores: a positive score is divided by ``penalty``, a negative one
    multiplied, so ``penalty > 1`` always lowers the token (dividing a negative logit would
    raise it). Example: penalty 2, scores ``[2, -2]`` of seen tokens -> ``[1, -4]``.
    """

    stage = 1

    def __init__(self, penalty: float):
        self.penalty = _check_float("repetition penalty", penalty, 0.0, math.inf, low_open=True, high_open=True)

    def __call__(self, tokens, scores):
        seen = torch.gather(scores, 1, tokens)  # (N, T)
        seen = torch.where(seen < 0, seen * self.penalty, seen / self.penalty)
        return scores.scatter(1, tokens, seen)


class EosLengthBoost(LogitsProcessor):
    """Exponential length-decay boost of eos once ``start`` tokens have been generated.

    At generated length ``g > start`` the eos score ``s`` becomes ``s + |s| (factor^(g - start) - 1)``
    (HF's ``exponential_decay_length_penalty``; ``|s|`` makes it raise negative scores too).
    ``prompt_length`` says how many leading tokens are the prompt.
    """

    stage = 1

    def __init__(self, start: int, factor: float, eos_token_id: int, prompt_length: int = 0):
        self.start = _check_int("start", start, 0)
        self.factor = _check_float("factor", factor, 1.0, math.inf, high_open=True)
        self.eos_token_id = _check_int("eos_token_id", eos_token_id, 0)
        self.prompt_length = _check_int("prompt_length", prompt_length, 0)

    def __call__(self, tokens, scores):
        over = tokens.shape[-1] - self.prompt_length - self.start
        if over <= 0:
            return scores
        eos = scores[:, self.eos_token_id]
        boost = (eos.abs() * (self.factor**over - 1)).nan_to_num(0.0, 0.0, 0.0)
        boost = torch.where(torch.isfinite(eos), boost, torch.zeros_like(boost))
        out = scores.clone()
        out[:, self.eos_token_id] = eos + boost
        return out


# --- stage 2: temperature --------------------------------------------------------------------


class Temperature(LogitsProcessor):
    """Divide scores by ``temperature`` > 0 (< 1 sharpens, > 1 flattens)."""

    stage = 2

    def __init__(self, temperature: float):
        self.temperature = _check_float("temperature", temperature, 0.0, math.inf, low_open=True, high_open=True)

    def __call__(self, tokens, scores):
        return scores / self.temperature


# --- stage 3: truncation ---------------------------------------------------------------------


class TopK(LogitsProcessor):
    """Keep the ``k`` highest scores (ties with the k-th kept too); the rest go to -inf."""

    stage = 3

    def __init__(self, k: int):
        self.k = _check_int("top_k", k, 1)

    def __call__(self, tokens, scores):
        k = min(self.k, scores.shape[-1])
        kth = torch.topk(scores, k, dim=-1).values[:, -1:]
        return scores.masked_fill(scores < kth, NEG_INF)


class TopP(LogitsProcessor):
    """Nucleus: keep the smallest set of most probable tokens whose mass reaches ``p``.

    The token that crosses ``p`` is kept, and at least ``min_keep`` tokens always remain, so
    ``p = 0`` keeps the single most probable token instead of failing.
    """

    stage = 3

    def __init__(self, p: float, min_keep: int = 1):
        self.p = _check_float("top_p", p, 0.0, 1.0)
        self.min_keep = _check_int("min_keep", min_keep, 1)

    def __call__(self, tokens, scores):
        if scores.device.type == "cpu" and scores.dtype == torch.float32 and scores.dim() == 2:
            out = self._by_threshold(scores)
            if out is not None:
                return out
        return self._by_sort(scores)

    def _by_sort(self, scores):
        """HF's rule (``TopPLogitsWarper``): sort, tail mass, scatter the mask back."""
        sorted_scores, order = torch.sort(scores, dim=-1)  # ascending
        tail_mass = sorted_scores.softmax(-1).cumsum(-1)  # (N, V)
        drop = tail_mass <= 1 - self.p  # the least probable tokens whose mass stays within 1 - p
        drop[:, -self.min_keep :] = False
        return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)

    def _by_threshold(self, scores):
        """The same mask as :meth:`_by_sort`, bit for bit, without sorting indices (CPU, float32).

        The ascending values are one array whatever algorithm sorts them, so numpy's SIMD sort of
        the values alone (about 25x faster than ``torch.sort`` with indices on a 50k vocabulary)
        gives the very tail masses HF computes. They never decrease, so the dropped tokens are the
        ``n`` smallest, and when the largest dropped value is below the smallest kept one a
        threshold on the scores drops exactly them. A tie straddling that boundary is decided by the
        sort's index order: then None, and the caller sorts.
        """
        ascending = torch.from_numpy(np.sort(scores.detach().contiguous().numpy(), axis=-1))
        tail_mass = ascending.softmax(-1).cumsum(-1)  # the same ops on the same values as _by_sort
        vocab = scores.shape[-1]
        n_drop = (tail_mass <= 1 - self.p).sum(-1).clamp(max=max(vocab - self.min_keep, 0))  # (N,)
        if not bool((n_drop > 0).any()):
            return scores.clone()
        rows = torch.arange(len(scores))
        first_kept = ascending[rows, n_drop]  # n_drop <= vocab - min_keep < vocab
        last_dropped = ascending[rows, (n_drop - 1).clamp(min=0)]
        has_drop = n_drop > 0
        if bool((has_drop & ~(last_dropped < first_kept)).any()):
            return None
        return scores.masked_fill(has_drop[:, None] & (scores < first_kept[:, None]), NEG_INF)


class MinP(LogitsProcessor):
    """Keep tokens whose probability is at least ``min_p`` times that of the most probable one."""

    stage = 3

    def __init__(self, min_p: float, min_keep: int = 1):
        self.min_p = _check_float("min_p", min_p, 0.0, 1.0)
        self.min_keep = _check_int("min_keep", min_keep, 1)

    def __call__(self, tokens, scores):
        probs = scores.softmax(-1)
        drop = probs < self.min_p * probs.amax(-1, keepdim=True)
        top = torch.topk(probs, min(self.min_keep, probs.shape[-1]), dim=-1).indices
        drop = drop.scatter(1, top, False)
        return scores.masked_fill(drop, NEG_INF)


class Typical(LogitsProcessor):
    """Locally typical sampling (Meister et al. 2022): keep the tokens whose surprisal is closest
    to the entropy, in that order, until their mass reaches ``mass``."""

    stage = 3

    def __init__(self, mass: float, min_keep: int = 1):
        self.mass = _check_float("typical mass", mass, 0.0, 1.0, low_open=True, high_open=True)
        self.min_keep = _check_int("min_keep", min_keep, 1)

    def __call__(self, tokens, scores):
        logp = scores.log_softmax(-1)
        entropy = -(logp.exp() * logp).nansum(-1, keepdim=True)  # (N, 1)
        distance = (-logp - entropy).abs()
        sorted_distance, order = torch.sort(distance, dim=-1)  # most typical first
        mass = scores.gather(1, order).softmax(-1).cumsum(-1)
        last = (mass < self.mass).sum(-1, keepdim=True).clamp(max=scores.shape[-1] - 1)
        drop = sorted_distance > sorted_distance.gather(1, last)
        drop[:, : self.min_keep] = False
        return scores.masked_fill(drop.scatter(1, order, drop), NEG_INF)


class _KeepEos(LogitsProcessor):
    """Mixin: after truncating, give eos back the score it came in with (V' = V ∪ {eos})."""

    stage = 3
    eos_token_id: int

    def _restore_eos(self, before, after):
        out = after.clone()
        out[:, self.eos_token_id] = before[:, self.eos_token_id]
        return out


class ConsistentTopK(TopK, _KeepEos):
    """Top-k that always keeps eos (Welleck et al. 2020): V'_k = V_k ∪ {eos}, then renormalised."""

    def __init__(self, k: int, eos_token_id: int):
        super().__init__(k)
        self.eos_token_id = _check_int("eos_token_id", eos_token_id, 0)

    def __call__(self, tokens, scores):
        return self._restore_eos(scores, TopK.__call__(self, tokens, scores))


class ConsistentTopP(TopP, _KeepEos):
    """Nucleus that always keeps eos (Welleck et al. 2020): V'_p = V_p ∪ {eos}, then renormalised."""

    def __init__(self, p: float, eos_token_id: int, min_keep: int = 1):
        super().__init__(p, min_keep)
        self.eos_token_id = _check_int("eos_token_id", eos_token_id, 0)

    def __call__(self, tokens, scores):
        return self._restore_eos(scores, TopP.__call__(self, tokens, scores))


# --- the fixed order -------------------------------------------------------------------------


class Processors:
    """Apply rules in the documented fixed order (stable within a stage).

    If any consistent rule is present, eos leaves the truncation stage with the score it entered
    it with, whatever other truncations ran.
    Example: ``Processors([TopP(0.9), Temperature(0.7)])`` runs temperature first.
    """

    def __init__(self, processors: Iterable[LogitsProcessor] = ()):
        procs = list(processors.processors if isinstance(processors, Processors) else processors)
        for p in procs:
            if not callable(p):
                raise KexueError(f"not a logits processor: {p!r}")
        self.processors: list[LogitsProcessor] = sorted(procs, key=lambda p: getattr(p, "stage", 1))
        consistent = [p for p in procs if isinstance(p, _KeepEos)]
        self.keep_eos: int | None = consistent[0].eos_token_id if consistent else None

    def __len__(self) -> int:
        return len(self.processors)

    def __iter__(self):
        return iter(self.processors)

    def __call__(self, tokens: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        eos_in = None
        for p in self.processors:
            if self.keep_eos is not None and eos_in is None and getattr(p, "stage", 1) == 3:
                eos_in = scores[:, self.keep_eos].clone()
            scores = p(tokens, scores)
        if eos_in is not None:
            scores = scores.clone()
            scores[:, self.keep_eos] = eos_in
        return scores


def validate_lengths(processors: Sequence[LogitsProcessor], max_length: int) -> None:
    """Raise :class:`KexueError` if a :class:`MinLength` would mask eos up to ``max_length``."""
    for p in processors:
        if isinstance(p, MinLength):
            p.check_max_length(max_length)
