"""Theory of repetition in decoding (kexue.fm/archives/8128; Fu et al., AAAI 2021).

A decoder that conditions only on the previous token is a transition matrix ``P`` (n × n over the
vocabulary without eos; row i may sum to less than one, the rest being the probability of eos).
Its repetition probability is R = Σ_{k≥1} Tr((P∘P)^k) = Σ_i λ_i / (1 − λ_i). The package, one
concern per module:

- ``matrix``: checks (:func:`as_transition`) and row facts of P (ζ, Σ_j P_ij², eos);
- ``spectrum``: λ_1(P∘P) per strongly connected block; the exact divergence test;
- ``closed_form``: R exactly (:func:`repetition_probability`, :func:`analyze`);
- ``bounds``: Perron, spectral and Cauchy–Schwarz bounds;
- ``decoding``: the chain greedy / top-k / top-p / temperature decoding follows; greedy cycles;
- ``simulation``: the Monte-Carlo check of R, and sampling sentences from a chain;
- ``bigram``: a bigram chain estimated from tokenised text.

The text metrics (rep-w, rep-r, seq-rep-n, distinct-n, loops) live in :mod:`kexue.analysis.text`
and are re-exported here. Everything works on numpy arrays or ``scipy.sparse`` matrices; results
are float64.
"""

from kexue.analysis.repetition.bigram import BigramChain, estimate_bigram
from kexue.analysis.repetition.bounds import (
    cauchy_schwarz_lower_bound,
    paper_bound,
    perron_bounds,
    spectral_upper_bound,
    su_lower_bound,
    tail_bound,
)
from kexue.analysis.repetition.closed_form import (
    Analysis,
    analyze,
    repetition_by_token,
    repetition_probability,
    repetition_spectral,
    trace_powers,
)
from kexue.analysis.repetition.decoding import (
    GreedyCycles,
    decoding_chain,
    greedy_cycles,
    greedy_successors,
    named_chain,
)
from kexue.analysis.repetition.matrix import (
    as_transition,
    density,
    eos_probabilities,
    hadamard_square,
    row_concentration,
)
from kexue.analysis.repetition.simulation import (
    ChainSampler,
    MonteCarlo,
    count_repeats,
    cycle_length_for,
    importance_weights,
    sample_sequences,
    simulate_repetition,
)
from kexue.analysis.repetition.spectrum import deterministic_cycle, largest_eigenvalue
from kexue.analysis.text import (
    Loop,
    distinct_n,
    find_loop,
    rep_r,
    rep_w,
    repetition_metrics,
    seq_rep_n,
    seq_rep_pooled,
)

__all__ = [
    "Analysis",
    "BigramChain",
    "ChainSampler",
    "GreedyCycles",
    "Loop",
    "MonteCarlo",
    "analyze",
    "as_transition",
    "cauchy_schwarz_lower_bound",
    "count_repeats",
    "cycle_length_for",
    "decoding_chain",
    "density",
    "deterministic_cycle",
    "distinct_n",
    "eos_probabilities",
    "estimate_bigram",
    "find_loop",
    "greedy_cycles",
    "greedy_successors",
    "hadamard_square",
    "importance_weights",
    "largest_eigenvalue",
    "named_chain",
    "paper_bound",
    "perron_bounds",
    "rep_r",
    "rep_w",
    "repetition_by_token",
    "repetition_metrics",
    "repetition_probability",
    "repetition_spectral",
    "row_concentration",
    "sample_sequences",
    "seq_rep_n",
    "seq_rep_pooled",
    "simulate_repetition",
    "spectral_upper_bound",
    "su_lower_bound",
    "tail_bound",
    "trace_powers",
]
