"""Theory of repetition (kexue.fm/archives/8128): closed form, bounds, decoding chains, simulation."""

import itertools
import math

import numpy as np
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from kexue.analysis.repetition import (
    ChainSampler,
    analyze,
    as_transition,
    cauchy_schwarz_lower_bound,
    count_repeats,
    cycle_length_for,
    decoding_chain,
    density,
    greedy_cycles,
    hadamard_square,
    importance_weights,
    largest_eigenvalue,
    named_chain,
    paper_bound,
    perron_bounds,
    repetition_by_token,
    repetition_probability,
    repetition_spectral,
    row_concentration,
    simulate_repetition,
    spectral_upper_bound,
    tail_bound,
    trace_powers,
)
from kexue.errors import KexueError


def random_chain(rng, n, concentration=0.5, eos=True):
    """Rows drawn from a Dirichlet over n tokens (+ eos); the eos column is dropped."""
    rows = rng.dirichlet(np.full(n + int(eos), concentration), size=n)
    return rows[:, :n]


# ----------------------------------------------------------------------------- closed form


@pytest.mark.parametrize("n", [2, 3, 5, 10])
def test_uniform_chain_has_lambda_one_over_n_and_R_one_over_n_minus_one(n):
    U = np.full((n, n), 1.0 / n)
    assert largest_eigenvalue(U) == pytest.approx(1 / n, rel=1e-12)
    assert repetition_probability(U) == pytest.approx(1 / (n - 1), rel=1e-12)
    assert repetition_spectral(U) == pytest.approx(1 / (n - 1), rel=1e-12)
    assert perron_bounds(U) == pytest.approx((1 / n, 1 / n))


@pytest.mark.parametrize("a", [0.3, 0.9, 0.999])
def test_known_three_cycle(a):
    # 0 -> 1 -> 2 -> 0 each with probability a (else eos): only multiples of 3 close a walk,
    # Tr(Q^{3m}) = 3 a^{6m}, so R = 3 a^6 / (1 - a^6).
    P = np.zeros((3, 3))
    P[0, 1] = P[1, 2] = P[2, 0] = a
    expected = 3 * a**6 / (1 - a**6)
    assert repetition_probability(P) == pytest.approx(expected, rel=1e-10)
    assert repetition_by_token(P) == pytest.approx(np.full(3, expected / 3), rel=1e-10)
    assert largest_eigenvalue(P) == pytest.approx(a**2, rel=1e-10)


def test_deterministic_cycle_diverges_with_a_clear_error():
    P = np.zeros((4, 4))
    P[0, 1] = P[1, 2] = P[2, 1] = 1.0  # 1 <-> 2 forever
    P[3, 0] = 0.5
    with pytest.raises(KexueError, match=r"diverges: tokens (1 -> 2|2 -> 1)"):
        repetition_probability(P)
    a = analyze(P)
    assert math.inf == a.R and sorted(a.deterministic_cycle) == [1, 2] and a.lambda_1 == 1.0


def test_chain_without_cycles_has_zero_repetition():
    P = np.triu(np.full((4, 4), 0.2), k=1)  # only forward moves
    assert repetition_probability(P) == 0.0
    assert largest_eigenvalue(P) == 0.0


@pytest.mark.parametrize("seed", range(5))
def test_closed_form_equals_explicit_partial_sum(seed):
    rng = np.random.default_rng(seed)
    P = random_chain(rng, 7, concentration=0.3)
    K = 80
    partial = trace_powers(P, K).sum()
    R = repetition_probability(P)
    tail = tail_bound(P, K)
    assert partial <= R + 1e-12
    assert R - partial <= tail + 1e-12
    assert pytest.approx(partial, abs=tail + 1e-12) == R
    assert pytest.approx(repetition_spectral(P), rel=1e-9) == R


def test_hadamard_trace_identity_by_enumerating_closed_walks():
    # Σ over closed walks i1 -> ... -> ik -> i1 of (Π P)² equals Tr((P∘P)^k).
    rng = np.random.default_rng(3)
    P = random_chain(rng, 3)
    for k in range(1, 5):
        brute = 0.0
        for walk in itertools.product(range(3), repeat=k):
            prod = np.prod([P[walk[j], walk[(j + 1) % k]] for j in range(k)])
            brute += prod**2
        assert trace_powers(P, k)[-1] == pytest.approx(brute, rel=1e-12)


def test_paper_trace_of_even_power_is_not_the_repeat_term():
    # Su's correction: ((P^k)_ii)² ≠ (P^{2k})_ii, so Tr(P^{2k}) ≠ Tr(P^k ∘ P^k).
    P = np.array([[0.1, 0.6], [0.5, 0.2]])
    P2 = P @ P  # [[0.31, 0.18], [0.15, 0.34]] by hand
    assert pytest.approx(np.array([[0.31, 0.18], [0.15, 0.34]])) == P2
    # Tr P^4 = (0.31² + 0.18·0.15) + (0.15·0.18 + 0.34²): walks through the other state count too
    assert np.trace(P2 @ P2) == pytest.approx(0.1231 + 0.1426, rel=1e-12)
    assert np.trace(P2 * P2) == pytest.approx(0.31**2 + 0.34**2, rel=1e-12)
    assert np.trace(P2 @ P2) - np.trace(P2 * P2) == pytest.approx(2 * 0.18 * 0.15, rel=1e-12)


def test_sparse_and_dense_agree():
    rng = np.random.default_rng(1)
    P = random_chain(rng, 30, concentration=0.2)
    P[P < 0.02] = 0.0
    S = sp.csr_matrix(P)
    assert repetition_probability(S) == pytest.approx(repetition_probability(P), rel=1e-12)
    assert largest_eigenvalue(S) == pytest.approx(largest_eigenvalue(P), rel=1e-9)
    assert sp.issparse(hadamard_square(S)) and not sp.issparse(hadamard_square(P))


def test_bad_matrices_are_user_errors():
    with pytest.raises(KexueError, match="square"):
        as_transition(np.ones((2, 3)) / 3)
    with pytest.raises(KexueError, match="negative"):
        as_transition(np.array([[0.5, -0.1], [0.2, 0.2]]))
    with pytest.raises(KexueError, match="sums to"):
        as_transition(np.array([[0.7, 0.7], [0.2, 0.2]]))


# ----------------------------------------------------------------------------- bounds (property tests)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 12), conc=st.floats(0.05, 5.0), seed=st.integers(0, 10_000), eos=st.booleans())
def test_bounds_hold_on_random_chains(n, conc, seed, eos):
    rng = np.random.default_rng(seed)
    P = random_chain(rng, n, conc, eos=eos)
    P = np.where(P < 1e-3, 0.0, P)  # some zeros, so ζ < 1
    if np.any(row_concentration(P) >= 1 - 1e-9):
        P = 0.999 * P  # keep clear of deterministic rows
    lo, hi = perron_bounds(P)
    lam = largest_eigenvalue(P)
    assert lo - 1e-12 <= lam <= hi + 1e-12
    # Σ_j P_ij² ≥ (Σ_j P_ij)² / n, equality for uniform rows
    assert np.all(row_concentration(P) >= P.sum(1) ** 2 / n - 1e-12)
    R = repetition_probability(P)
    assert pytest.approx(repetition_spectral(P), rel=1e-7, abs=1e-12) == R
    assert spectral_upper_bound(P, lam) * (1 + 1e-9) + 1e-12 >= R
    assert R >= 0
    assert cauchy_schwarz_lower_bound(P, k_max=30) <= R * (1 + 1e-9) + 1e-12
    assert 0 < density(P) <= 1


def test_su_heuristic_bound_equals_cauchy_schwarz_for_full_matrices():
    rng = np.random.default_rng(0)
    P = random_chain(rng, 6)  # all entries > 0: N_k = n^k exactly
    from kexue.analysis.repetition import su_lower_bound

    assert su_lower_bound(P, 15) == pytest.approx(cauchy_schwarz_lower_bound(P, 15), rel=1e-10)
    assert paper_bound(P, 15) > 0


# ----------------------------------------------------------------------------- decoding chains


ROW = np.array([[0.5, 0.2, 0.1, 0.1], [0.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.25, 0.25], [0.0, 0.0, 0.6, 0.4]])
# row 0 leaves 0.1 to eos; row 1 is all eos


def test_top_k_keeps_the_k_largest_including_eos_and_renormalises():
    C = decoding_chain(ROW, top_k=2)
    assert C[0] == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0, 0])
    assert C[1] == pytest.approx([0, 0, 0, 0])  # still all eos
    assert C[2] == pytest.approx([0.5, 0.5, 0, 0])  # ties go to the lower index
    assert C[3] == pytest.approx([0, 0, 0.6, 0.4])
    K3 = decoding_chain(ROW, top_k=3)
    assert K3[0] == pytest.approx([0.5 / 0.8, 0.2 / 0.8, 0.1 / 0.8, 0])  # 3rd place tie: token 2 beats token 3 and eos


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    C = decoding_chain(ROW, top_p=0.6)
    assert C[0] == pytest.approx([0.5 / 0.7, 0.2 / 0.7, 0, 0])  # 0.5 < 0.6 so the next one is needed
    assert C[3] == pytest.approx([0, 0, 1.0, 0])  # 0.6 reaches 0.6
    assert decoding_chain(ROW, top_p=0.01)[0] == pytest.approx([1, 0, 0, 0])  # the first always stays
    assert decoding_chain(ROW, top_p=1.0) == pytest.approx(ROW)


def test_temperature_and_greedy():
    T = decoding_chain(ROW, temperature=0.5)  # p² renormalised, eos included
    z = 0.25 + 0.04 + 0.01 + 0.01 + 0.01
    assert T[0] == pytest.approx(np.array([0.25, 0.04, 0.01, 0.01]) / z)
    assert decoding_chain(ROW, temperature=1.0) == pytest.approx(ROW)
    G = named_chain(ROW, "greedy")
    assert pytest.approx(np.array([[1, 0, 0, 0], [0, 0, 0, 0], [1, 0, 0, 0], [0, 0, 1, 0]])) == G
    assert density(G) == pytest.approx(3 / 16)  # ζ = 1/n for rows that do not end


def test_truncated_rows_stay_distributions_and_sparse_matches_dense():
    rng = np.random.default_rng(5)
    P = random_chain(rng, 20, 0.3)
    for kw in ({"top_k": 3}, {"top_p": 0.9}, {"temperature": 0.7, "top_p": 0.8}, {"top_k": 5, "top_p": 0.5}):
        C = decoding_chain(P, **kw)
        assert np.all(C.sum(1) <= 1 + 1e-12)
        assert np.all((C > 0) <= (P > 0))  # truncation never adds a transition
        S = decoding_chain(sp.csr_matrix(P), **kw)
        assert sp.issparse(S) and S.toarray() == pytest.approx(C)
    raw = decoding_chain(P, top_k=3, renormalize=False)
    assert np.all((raw == 0) | np.isclose(raw, P))


def test_named_chain_rejects_unknown_names():
    with pytest.raises(KexueError, match="unknown decoder"):
        named_chain(ROW, "beam:4")
    with pytest.raises(KexueError, match="top_p"):
        named_chain(ROW, "top_p:1.5")


def test_greedy_cycles_on_a_hand_made_map():
    # greedy successors: 0->1, 1->2, 2->1 (cycle), 3->eos, 4->3
    P = np.zeros((5, 5))
    P[0, 1], P[1, 2], P[2, 1], P[4, 3] = 0.9, 0.6, 0.7, 0.8
    P[3, 0] = 0.2  # eos (0.8) wins
    g = greedy_cycles(P)
    assert [sorted(c) for c in g.cycles] == [[1, 2]]
    assert g.start_cycles.tolist() == [True, True, True, False, False]
    assert g.steps_to_cycle.tolist() == [1, 0, 0, -1, -1]
    assert g.cycle_fraction == pytest.approx(0.6)


# ----------------------------------------------------------------------------- simulation


def test_chain_sampler_draws_rows_and_eos():
    P = np.array([[0.2, 0.5], [0.0, 0.0]])  # row 0: eos 0.3; row 1: always eos
    rng = np.random.default_rng(0)
    nxt = ChainSampler(P).step(np.zeros(200_000, dtype=np.int64), rng)
    freq = [np.mean(nxt == 0), np.mean(nxt == 1), np.mean(nxt == -1)]
    assert freq == pytest.approx([0.2, 0.5, 0.3], abs=0.005)  # 5 standard errors
    assert (ChainSampler(P).step(np.array([1, -1]), rng) == -1).all()


def test_count_repeats_on_hand_made_paths():
    paths = np.array(
        [
            [0, 1, 0, 1, 0],  # k=2 repeat of [0 1]; k=1 no (x1 != x0)
            [3, 3, 3, 5, 5],  # k=1: x1 = x0, x2 = x1 -> yes; k=2: x2 = x0 but x3,x4 != x1,x2
            [2, 4, 2, 4, -1],  # k=2: eos before the repeat closes
        ]
    )
    assert count_repeats(paths, 2).tolist() == [1, 1, 0]


@pytest.mark.parametrize("seed", [0, 1])
def test_simulation_agrees_with_closed_form(seed):
    rng = np.random.default_rng(100 + seed)
    P = random_chain(rng, 8, concentration=0.4)
    R = repetition_probability(P)
    K = cycle_length_for(P)
    mc = simulate_repetition(P, 60_000, K, seed=seed, start_weights=importance_weights(P))
    assert mc.bias_bound < 1e-3 * R
    assert abs(mc.z_score(R)) < 4  # a 4-sigma band: fails by chance with probability < 1e-4
    assert abs(mc.value / R - 1) < 0.05


@pytest.mark.parametrize("conc", [0.05, 0.5])
def test_series_and_solve_routes_agree(conc):
    rng = np.random.default_rng(7)
    P = random_chain(rng, 40, conc)
    P[P < 0.01] = 0.0
    solve = repetition_by_token(P, method="solve")
    series = repetition_by_token(sp.csr_matrix(P), method="series")
    assert series == pytest.approx(solve, rel=1e-10, abs=1e-14)
    with pytest.raises(KexueError, match="method"):
        repetition_by_token(P, method="power")
