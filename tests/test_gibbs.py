"""The pseudo-Gibbs sampler (article 6) on hand-made "MLMs" whose conditionals are known exactly."""

from __future__ import annotations

import math

import pytest
import torch

from kexue.errors import KexueError
from kexue.generation import Temperature, TopK, TopP
from kexue.generation.gibbs import (
    BanTokens,
    conditionals,
    full_logits_mlm,
    gibbs_sample,
    init_tokens,
    naive_gibbs,
    sample_lengths,
)

PAD, CLS, SEP, MASK = 0, 1, 2, 3
WORDS = 3  # word ids 4, 5, 6
V = 4 + WORDS
L = 3  # sentence length: T = 5
SPECIAL = BanTokens([PAD, CLS, SEP, MASK])


def joint_table(seed: int = 0) -> torch.Tensor:
    """A random joint distribution over WORDS^L sentences, (WORDS,) * L, all entries > 0."""
    g = torch.Generator().manual_seed(seed)
    p = torch.rand((WORDS,) * L, generator=g, dtype=torch.float64) + 0.05
    return p / p.sum()


STATES = torch.cartesian_prod(*[torch.arange(WORDS)] * L)  # (27, L) word indices


def joint_mlm(joint: torch.Tensor):
    """An "MLM" whose conditionals come from ``joint``: at position p, P(x_p | unmasked others),
    the masked others summed out. Logits (B, K, V), specials at -inf."""
    flat = joint.reshape(-1)  # (27,)

    def mlm(tokens, positions):
        words = tokens[:, 1 : L + 1] - 4  # (B, L); a [MASK] becomes -1
        out = torch.full((*positions.shape, V), -math.inf, dtype=torch.float64)
        for k in range(positions.shape[1]):
            p = positions[:, k] - 1  # (B,) sentence index
            agree = (words[:, None, :] < 0) | (STATES[None] == words[:, None, :])  # (B, 27, L)
            others = torch.arange(L)[None, :] != p[:, None]  # (B, L)
            consistent = (agree | ~others[:, None, :]).all(-1)  # (B, 27)
            weight = flat[None] * consistent  # (B, 27)
            value = STATES[None].expand(len(p), -1, -1).gather(2, p.clamp(0, L - 1)[:, None, None].expand(-1, 27, 1))
            cond = torch.zeros(len(p), WORDS, dtype=torch.float64).scatter_add(1, value[..., 0], weight)
            out[:, k, 4:] = cond.log()
        return out

    return mlm


def start(batch: int) -> torch.Tensor:
    return init_tokens([L] * batch, CLS, SEP, MASK, PAD)


def test_init_tokens_and_lengths():
    assert init_tokens([2, 1], CLS, SEP, MASK, PAD).tolist() == [[1, 3, 3, 2], [1, 3, 2, 0]]
    lengths = sample_lengths(200, 8, 32, torch.Generator().manual_seed(0))
    assert min(lengths) == 8 and max(lengths) == 32
    with pytest.raises(KexueError):
        sample_lengths(3, 5, 4, torch.Generator())
    with pytest.raises(KexueError):
        init_tokens([0], CLS, SEP, MASK, PAD)


def test_conditionals_exact_on_a_table():
    """The step's distribution = P(x_p | others) of the joint, exactly."""
    joint = joint_table()
    tokens = torch.tensor([[CLS, 5, MASK, 6, SEP]])
    probs = conditionals(joint_mlm(joint), tokens, torch.tensor([[2]]), MASK, [SPECIAL])
    expected = joint[1, :, 2] / joint[1, :, 2].sum()
    assert torch.allclose(probs[0, 0, 4:].double(), expected, atol=1e-6)
    assert probs[0, 0, :4].sum() == 0
    # a masked neighbour is summed out
    tokens = torch.tensor([[CLS, MASK, 4, MASK, SEP]])
    probs = conditionals(joint_mlm(joint), tokens, torch.tensor([[1]]), MASK, [SPECIAL])
    expected = joint[:, 0, :].sum(-1) / joint[:, 0, :].sum()
    assert torch.allclose(probs[0, 0, 4:].double(), expected, atol=1e-6)


def fixed_mlm(logits: list[float]):
    row = torch.tensor(logits)

    def mlm(tokens, positions):
        return row.expand(*positions.shape, -1).clone()

    return mlm


def test_processors_run_in_the_documented_order():
    """Temperature (stage 2) runs before top-p (stage 3) whatever the list order; bans first."""
    mlm = fixed_mlm([5.0, 0.0, math.log(0.5), math.log(0.3), math.log(0.2), 0.0, 0.0])
    tokens = torch.tensor([[CLS, MASK, SEP]])
    pos = torch.tensor([[1]])
    ban = BanTokens([0, 1, 5, 6])
    # temperature 2 first: p ∝ sqrt(.5, .3, .2) = (.4335, .3358, .2742)·; top-p 0.6 keeps 2 tokens
    probs = conditionals(mlm, tokens, pos, MASK, [TopP(0.6), Temperature(2.0), ban])[0, 0]
    s = torch.tensor([0.5, 0.3, 0.2]).sqrt()[:2]
    assert torch.allclose(probs[2:4], s / s.sum(), atol=1e-6)
    assert probs[[0, 1, 4, 5, 6]].sum() == 0
    # top-p 0.6 on the raw distribution would also keep 2 (.5 + .3); with top-k 1 only the best stays
    probs = conditionals(mlm, tokens, pos, MASK, [TopK(1), Temperature(0.1), ban])[0, 0]
    assert probs[2] == 1.0
    # without the ban the [PAD] logit 5.0 wins: the ban is what keeps specials out
    probs = conditionals(mlm, tokens, pos, MASK, [])[0, 0]
    assert probs.argmax() == 0


def test_processors_are_pure():
    scores = torch.tensor([[1.0, 2.0, 3.0]])
    before = scores.clone()
    BanTokens([1])(torch.zeros(1, 1, dtype=torch.long), scores)
    assert torch.equal(scores, before)


@pytest.mark.parametrize("order", ["random", "sequential", "parallel"])
def test_each_step_changes_only_what_it_redraws_and_never_pinned(order):
    """A recording MLM sees [MASK] only at the positions it is asked about; pinned / [CLS] /
    [SEP] / padding never change; unasked positions keep their tokens."""
    seen = []
    base = joint_mlm(joint_table())

    def mlm(tokens, positions):
        seen.append((tokens.clone(), positions.clone()))
        return base(tokens, positions)

    tokens = torch.tensor([[CLS, 4, 5, 6, SEP], [CLS, 6, 6, SEP, PAD], [CLS, 5, 4, 4, SEP]])
    pinned = torch.zeros_like(tokens, dtype=torch.bool)
    pinned[0, 2] = True
    pinned[2, 1] = pinned[2, 3] = True
    out = gibbs_sample(
        mlm, tokens, steps=30, mask_id=MASK, pad_id=PAD, order=order, fraction=0.7, pinned=pinned,
        processors=[SPECIAL], generator=torch.Generator().manual_seed(1), keep_samples=True,
    )  # fmt: skip
    states = torch.cat([tokens[None], out.samples])  # (31, B, T)
    fixed = pinned | (tokens == CLS) | (tokens == SEP) | (tokens == PAD)
    assert (states == tokens[None]).where(fixed[None], torch.tensor(True)).all()
    for (masked, _positions), before, after in zip(seen, states[:-1], states[1:]):
        is_mask = masked == MASK
        assert not (is_mask & fixed).any()
        # positions not masked this step keep their token
        assert torch.equal(after.where(~is_mask, 0), before.where(~is_mask, 0))
        if order != "parallel":
            assert int(is_mask.sum(1).max()) <= 1
    # row 1 has 2 free positions: sequential alternates 1, 2, 1, 2 ...
    if order == "sequential":
        firsts = [int(p[1, 0]) for _, p in seen[:4]]
        assert firsts == [1, 2, 1, 2]


def test_seeded_chains_are_reproducible():
    mlm = joint_mlm(joint_table())

    def run(seed):
        return gibbs_sample(
            mlm, start(8), steps=20, mask_id=MASK, pad_id=PAD, processors=[SPECIAL],
            generator=torch.Generator().manual_seed(seed), keep_samples=True,
        ).samples  # fmt: skip

    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


@pytest.mark.parametrize("order", ["random", "sequential"])
def test_chain_converges_to_the_joint(order):
    """Conditionals of a true joint: kept states (2000 chains x 20 states after burn-in) match it
    within total variation 0.02 (seeded; the Monte Carlo error here is ~0.01)."""
    joint = joint_table()
    out = gibbs_sample(
        joint_mlm(joint), start(2000), steps=60, mask_id=MASK, pad_id=PAD, order=order, burn_in=20, thin=2,
        processors=[SPECIAL], generator=torch.Generator().manual_seed(0), keep_samples=True,
    )  # fmt: skip
    words = out.samples[:, :, 1 : L + 1].reshape(-1, L) - 4
    index = (words * torch.tensor([WORDS**2, WORDS, 1])).sum(1)
    freq = torch.bincount(index, minlength=WORDS**L).double() / len(index)
    tv = 0.5 * (freq - joint.reshape(-1)).abs().sum()
    assert tv < 0.02, tv
    assert 0 < out.change_rate < 1


def test_chains_in_one_batch_are_independent():
    """Pairs of chains in one batch agree as often as independent draws from the joint would:
    P(same final state) = sum p^2, within 4 standard errors."""
    joint = joint_table(1)
    n = 4000
    out = gibbs_sample(
        joint_mlm(joint), start(n), steps=40, mask_id=MASK, pad_id=PAD, processors=[SPECIAL],
        generator=torch.Generator().manual_seed(2),
    )  # fmt: skip
    a, b = out.tokens[0::2], out.tokens[1::2]
    same = (a == b).all(1).double().mean()
    p = float((joint.reshape(-1) ** 2).sum())
    assert abs(float(same) - p) < 4 * math.sqrt(p * (1 - p) / (n // 2))


def test_parallel_redraws_the_fraction():
    out = gibbs_sample(
        joint_mlm(joint_table()), init_tokens([3, 1], CLS, SEP, MASK, PAD), steps=5, mask_id=MASK, pad_id=PAD,
        order="parallel", fraction=0.6, processors=[SPECIAL], generator=torch.Generator().manual_seed(0),
    )  # fmt: skip
    assert out.redrawn == 5 * (2 + 1)  # round(0.6 * 3) = 2 and max(1, round(0.6)) = 1


def test_full_logits_adapter_matches_positions_path():
    g = torch.Generator().manual_seed(0)
    table = torch.randn(6, V, generator=g)

    def full(tokens):  # logits depend on the position and the token there
        return table[None, : tokens.shape[1]] + tokens[..., None].float()

    def heads_only(tokens, positions):
        return table[positions] + tokens.gather(1, positions)[..., None].float()

    tokens = torch.tensor([[CLS, 4, 5, SEP], [CLS, 6, MASK, SEP]])
    pos = torch.tensor([[1, 2], [2, 1]])
    assert torch.allclose(full_logits_mlm(full)(tokens, pos), heads_only(tokens, pos))


def test_naive_sampler_draws_from_the_same_conditionals():
    """One chain of the straightforward sampler converges to the same joint (a loose bound)."""
    joint = joint_table()
    mlm = joint_mlm(joint)

    def full(tokens):
        t = tokens.shape[1]
        positions = torch.arange(t)[None].clamp(1, L)
        return mlm(tokens, positions)

    g = torch.Generator().manual_seed(0)
    state, counts = start(1), torch.zeros(WORDS**L)
    for _ in range(3000):
        state = naive_gibbs(full, state, 1, MASK, banned=[PAD, CLS, SEP, MASK], generator=g)
        w = state[0, 1 : L + 1] - 4
        counts[int((w * torch.tensor([WORDS**2, WORDS, 1])).sum())] += 1
    tv = 0.5 * (counts / counts.sum() - joint.reshape(-1)).abs().sum()
    assert tv < 0.08, tv


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"steps": 0}, "steps"),
        ({"steps": 2, "order": "zigzag"}, "order"),
        ({"steps": 2, "fraction": 0.0}, "fraction"),
        ({"steps": 2, "fraction": 1.5}, "fraction"),
        ({"steps": 2, "thin": 0}, "thin"),
        ({"steps": 2, "burn_in": -1}, "burn_in"),
        ({"steps": 2, "pinned": torch.zeros(1, 2, dtype=torch.bool)}, "pinned"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(KexueError, match=match):
        gibbs_sample(joint_mlm(joint_table()), start(1), mask_id=MASK, pad_id=PAD, **kwargs)


def test_everything_banned_is_an_error():
    with pytest.raises(KexueError, match="nothing to draw"):
        gibbs_sample(
            joint_mlm(joint_table()), start(1), steps=1, mask_id=MASK, pad_id=PAD, processors=[BanTokens(range(V))]
        )
