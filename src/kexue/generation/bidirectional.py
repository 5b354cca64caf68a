"""Synchronous bidirectional beam search (kexue.fm/archives/6877; Zhou, Zhang & Zong, TACL 2019).

Two beams decode in lockstep, one left to right and one right to left, each reading the other's
current prefixes; the best finished hypothesis of either wins (an R2L one is reversed). Each
direction is an ordinary :class:`~kexue.generation.Beam` of the shared engine (same candidates,
pool of finished hypotheses, length penalty and stopping), fed the processed log-probabilities
of :class:`~kexue.generation.Processors`; only where those log-probabilities come from differs:

- ``scoring="su"`` (default; Su's algorithm, kexue.fm/archives/6877): k hypotheses per direction. Every
  L2R prefix a is run against every R2L prefix b (k² pairs, each with its own exact KV cache), and
  a's next-token distribution is the average over the live b of p(· | a, b) (Su's code averages
  probabilities, then takes the log); symmetrically for R2L. After a step the new pair (a', b')
  continues the cache of the pair of their parents, so every score is the model's exact output.
- ``scoring="half"`` (the paper's beam, wszlong/sb-nmt): ``num_beams`` is split into k/2 L2R and
  k/2 R2L hypotheses; L2R hypothesis i reads R2L hypothesis i, and each hypothesis keeps its own
  cache (computed with the partners it had), as the official code does: k rows, not 2k², per step.

Stopping: each direction stops under its own beam rule; with ``early_exit`` (Su's rule: "stop when
the best hypothesis has ended and scores at least the other direction's best") a row also stops as
soon as its best finished hypothesis, in either direction, scores at least the most any running
hypothesis of both directions can still reach. That bound is exact for log-probabilities (with
``length_penalty`` 0, Su's setting, it is the running score itself; with a positive penalty, the
running score normalised at the length cap), so early exit changes when a row stops, never which
hypothesis wins; the losing direction's own best may then be unfinished business. Ties go to L2R.
Scores are ``sum log p / length ** length_penalty`` in both directions, compared as they are.

When the model has no cross term (``model.cross`` False) the directions do not interact, so each
runs alone through ``model.step``: the result per direction is then exactly
``decode(model.step, ..., Beam(k))``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from kexue.errors import KexueError
from kexue.generation.processors import LogitsProcessor, Processors, validate_lengths
from kexue.generation.search import NEG, Beam, DecodeOutput, reorder_batch
from kexue.generation.stopping import Stopping

DIRECTIONS = ("l2r", "r2l")


class SyncDecoder(Protocol):
    """What the search needs from a model (:class:`kexue.models.seq2seq.SyncBidirectionalTransformer`)."""

    cross: bool  # does each direction read the other's prefix?
    pad_id: int  # fed to a stream that has stopped; the model masks it

    def bos(self, direction: str) -> int: ...

    def start(self, inputs: torch.Tensor, direction: str, num_beams: int) -> Any:
        """State of one stream, ``num_beams`` rows per input (the engine's layout)."""

    def step(self, tokens: torch.Tensor, state: Any) -> tuple[torch.Tensor, Any]:
        """The engine's step: (N, t) new ids -> (N, V) next-token logits."""

    def start_pairs(self, inputs: torch.Tensor, pairs: int) -> Any:
        """State of ``pairs`` (L2R, R2L) row pairs per input; rows stream-major for ``reorder``."""

    def pair_step(self, l2r: torch.Tensor, r2l: torch.Tensor, state: Any) -> tuple[torch.Tensor, torch.Tensor, Any]:
        """(N, t) new ids of both streams -> (N, V) logits of each."""


@dataclass
class BidirectionalOutput(DecodeOutput):
    """The winner per row in reading order (eos last), plus what each direction found.

    Attributes (besides :class:`DecodeOutput`'s):
        direction: per row ``"l2r"`` or ``"r2l"``, the direction that won.
        l2r, r2l: each direction's best finished hypothesis (R2L in R2L order), None if not decoded;
            with ``early_exit`` the losing direction's is what it had when the row stopped.
    """

    direction: list[str] = field(default_factory=list)
    l2r: DecodeOutput | None = None
    r2l: DecodeOutput | None = None


@torch.no_grad()
def bidirectional_decode(
    model: SyncDecoder,
    inputs: torch.Tensor,
    processors: Iterable[LogitsProcessor] | Processors = (),
    search: Beam | None = None,
    stopping: Stopping | None = None,
    *,
    scoring: str = "su",
    directions: str = "both",
    early_exit: bool = True,
    reorder: Callable[[Any, torch.Tensor], Any] = reorder_batch,
) -> BidirectionalOutput:
    """Decode ``inputs`` with L2R and R2L beams in lockstep.

    Args:
        model: a :class:`SyncDecoder`.
        inputs: (B, L) source ids.
        processors: applied to each direction's log-probabilities, in the engine's order.
        search: a :class:`Beam` (default ``Beam(4)``): k per direction (``su``), k in all (``half``).
        stopping: length cap and eos of both directions.
        scoring: ``su`` (k² pairs, averaged) or ``half`` (the paper's split beam).
        directions: ``both``, or ``l2r`` / ``r2l`` alone (needs a model without the cross term).
        early_exit: Su's rule: stop a row once its winner is decided (see the module docstring).
        reorder: ``(state, index) -> state``; pair states are reordered with stream-major indices.
    Returns:
        :class:`BidirectionalOutput`.
    Example:
        ``bidirectional_decode(model, src, search=Beam(4, 0.0), stopping=Stopping(32, model.eos_id))``
    """
    search = Beam(4) if search is None else search
    stopping = Stopping() if stopping is None else stopping
    procs = processors if isinstance(processors, Processors) else Processors(processors)
    if not isinstance(search, Beam):
        raise KexueError(f"bidirectional decoding is a beam search: pass Beam(k), got {type(search).__name__}")
    if scoring not in ("su", "half"):
        raise KexueError(f"scoring must be su or half, got {scoring!r}")
    if directions not in ("both",) + DIRECTIONS:
        raise KexueError(f"directions must be both, l2r or r2l, got {directions!r}")
    if inputs.dim() != 2 or inputs.shape[0] < 1:
        raise KexueError(f"inputs must be (batch, length) token ids, got shape {tuple(inputs.shape)}")
    dirs = DIRECTIONS if directions == "both" else (directions,)
    paired = len(dirs) == 2 and model.cross
    if len(dirs) == 1 and model.cross:
        raise KexueError("a model with the cross term decodes both directions together: use directions='both'")
    K = search.num_beams
    if scoring == "half" and len(dirs) == 2:
        if K % 2:
            raise KexueError(f"the paper's beam splits num_beams between the directions: it must be even, got {K}")
        K //= 2
    # paired streams keep their B*K rows each (the pair state is indexed by them): no row leaves;
    # directions decoded apart drop decided rows as decode() does, and give exactly its results
    drop = search.drop_finished and not paired
    search = Beam(K, search.length_penalty, search.early_stopping, drop_finished=drop)
    B, L = inputs.shape[0], stopping.max_new_tokens
    validate_lengths(procs.processors, 1 + L)
    dev = inputs.device
    runs = {d: search.start(B, 1, stopping, dev) for d in dirs}
    bufs = {d: torch.full((B * K, 1 + L), stopping.pad, dtype=torch.long, device=dev) for d in dirs}
    for d in dirs:
        bufs[d][:, 0] = model.bos(d)
    new = {d: bufs[d][:, :1] for d in dirs}
    active = {d: True for d in dirs}  # the direction's beam still decodes
    pairs = K * K if scoring == "su" else K
    if paired:
        state = model.start_pairs(inputs, pairs)
    else:
        states = {d: model.start(inputs, d, K) for d in dirs}
    for t in range(L):
        # 1. next-token log-probabilities of each running direction, (B*K, V)
        if paired:
            log_p, state = _paired_log_probs(model, new, state, runs, scoring, B, K)
        else:
            log_p = {}
            for d in dirs:
                if active[d]:
                    logits, states[d] = model.step(new[d], states[d])
                    log_p[d] = logits.float().log_softmax(-1)
        # 2. one beam step per direction, exactly as decode() takes it
        chosen, parent = {}, {}
        for d in dirs:
            if active[d]:
                seen = bufs[d][:, : 1 + t]
                chosen[d], parent[d] = search.step(runs[d], seen, procs(seen, log_p[d]), None)
        if early_exit and len(dirs) == 2:
            _settle_decided_rows(runs, search, active, L)
        for d in dirs:
            active[d] = active[d] and not search.done(runs[d])
        if not any(active.values()):
            break
        # 3. extend the running directions; a stopped one keeps its prefixes (fed padding)
        for d in dirs:
            if active[d]:
                bufs[d] = bufs[d].index_select(0, parent[d])
                bufs[d][:, 1 + t] = chosen[d]
                new[d] = bufs[d][:, 1 + t : 2 + t]
            else:
                new[d] = torch.full_like(new[d], model.pad_id)
        if paired:
            state = reorder(state, _pair_index(parent, active, scoring, B, K, dev))
        else:
            for d in dirs:
                if active[d]:
                    states[d] = reorder(states[d], parent[d])
    return _merge({d: search.finish(runs[d]) for d in dirs}, stopping)


def _paired_log_probs(model, new, state, runs, scoring, B, K):
    """Run the pairs one step; each direction's (B*K, V) log-probabilities (Su: averaged over partners)."""
    t = new["l2r"].shape[1]
    if scoring == "half":  # L2R hypothesis i with R2L hypothesis i
        l2r, r2l, state = model.pair_step(new["l2r"], new["r2l"], state)
        return {"l2r": l2r.float().log_softmax(-1), "r2l": r2l.float().log_softmax(-1)}, state
    # Su: pair (b, i, j) = L2R hypothesis i with R2L hypothesis j of input b
    l2r_in = new["l2r"].view(B, K, 1, t).expand(B, K, K, t).reshape(B * K * K, t)
    r2l_in = new["r2l"].view(B, 1, K, t).expand(B, K, K, t).reshape(B * K * K, t)
    l2r, r2l, state = model.pair_step(l2r_in, r2l_in, state)
    V = l2r.shape[-1]
    l2r = l2r.float().log_softmax(-1).view(B, K, K, V)
    r2l = r2l.float().log_softmax(-1).view(B, K, K, V)
    # log mean_b p(. | a, b) over the live partners b (a beam at NEG is a placeholder, not a prefix)
    w_r = _log_uniform(runs["r2l"].running)  # (B, K)
    w_l = _log_uniform(runs["l2r"].running)
    return {
        "l2r": (l2r + w_r[:, None, :, None]).logsumexp(2).view(B * K, V),
        "r2l": (r2l + w_l[:, :, None, None]).logsumexp(1).view(B * K, V),
    }, state


def _log_uniform(running: torch.Tensor) -> torch.Tensor:
    """(B, K) log-weights: uniform over the live beams (the first beam always counts)."""
    live = running > NEG / 2
    live[:, 0] = True
    return torch.where(live, -live.sum(1, keepdim=True).float().log(), torch.full_like(running, -torch.inf))


def _pair_index(parent, active, scoring, B, K, dev) -> torch.Tensor:
    """Stream-major rows of the next pair state: each new pair continues the pair of its parents."""
    keep = torch.arange(B * K, device=dev)
    pa = parent["l2r"] if active["l2r"] else keep  # (B*K,) flat parent rows
    pb = parent["r2l"] if active["r2l"] else keep
    if scoring == "half":  # each stream keeps its own hypotheses' caches (the paper's approximation)
        return torch.cat([pa, pb + B * K])
    local = torch.arange(B, device=dev)[:, None] * K
    pa, pb = pa.view(B, K) - local, pb.view(B, K) - local  # (B, K) parent beam within the input
    g = (torch.arange(B, device=dev)[:, None, None] * K * K + pa[:, :, None] * K + pb[:, None, :]).view(-1)
    return torch.cat([g, g + B * K * K])


def _settle_decided_rows(runs, search: Beam, active, max_len: int) -> None:
    """Su's rule: a row whose best finished hypothesis (either direction) scores at least the most any
    running hypothesis can still reach is decided; its pools freeze (``improvable``), as Beam freezes
    a finished row. The bound is exact for log-probabilities (a running sum s <= 0 only falls):
    s / max_len ** length_penalty when length_penalty > 0, else s / t ** length_penalty."""
    best = torch.maximum(runs["l2r"].pool_scores[:, 0], runs["r2l"].pool_scores[:, 0])  # (B,)
    bound = torch.full_like(best, -torch.inf)
    for d, run in runs.items():
        if not active[d]:
            continue
        length = max_len if search.length_penalty > 0 else run.t
        reach = run.running[:, 0] / float(length) ** search.length_penalty
        bound = torch.maximum(bound, torch.where(run.improvable[:, 0], reach, torch.full_like(reach, -torch.inf)))
    decided = best >= bound
    for run in runs.values():
        run.improvable = run.improvable & ~decided[:, None]
        run.stop = run.stop or not bool(run.improvable.any())


def _merge(outs: dict[str, DecodeOutput], stopping: Stopping) -> BidirectionalOutput:
    """Pick the better direction per row (ties: L2R); reverse R2L winners into reading order."""
    l2r, r2l = outs.get("l2r"), outs.get("r2l")
    B, device = next(iter(outs.values())).tokens.shape[0], next(iter(outs.values())).tokens.device
    rows = []
    for b in range(B):
        if l2r is not None and (r2l is None or l2r.scores[b] >= r2l.scores[b]):
            o, d = l2r, "l2r"
            n = int(o.lengths[b])
            tok, lp = o.tokens[b, :n], o.log_probs[b, :n]
        else:
            o, d = r2l, "r2l"
            n = int(o.lengths[b])
            body = n - int(o.finished[b])  # eos stays last
            tok = torch.cat([o.tokens[b, :body].flip(0), o.tokens[b, body:n]])
            lp = torch.cat([o.log_probs[b, :body].flip(0), o.log_probs[b, body:n]])
        rows.append((d, o, b, tok, lp))
    width = max(len(r[3]) for r in rows)
    tokens = torch.full((B, width), stopping.pad, dtype=torch.long, device=device)
    log_probs = torch.zeros(B, width, device=device)
    for i, (_, _, _, tok, lp) in enumerate(rows):
        tokens[i, : len(tok)], log_probs[i, : len(lp)] = tok, lp
    pick = lambda name: torch.stack([getattr(o, name)[b] for _, o, b, _, _ in rows])
    return BidirectionalOutput(
        tokens,
        log_probs,
        pick("lengths"),
        pick("finished"),
        [o.stop_reasons[b] for _, o, b, _, _ in rows],
        pick("scores"),
        [r[0] for r in rows],
        l2r,
        r2l,
    )
