"""Bidirectional beam search: hand-made probability tables worked out by hand, and the cross term off
is exactly the engine's one-direction beam."""

import copy
import math

import pytest
import torch

from kexue.errors import KexueError
from kexue.generation import Beam, Greedy, Stopping, decode
from kexue.generation.bidirectional import bidirectional_decode
from kexue.generation.search import NEG
from kexue.models.seq2seq import SyncBidirectionalTransformer, seq2seq_loss
from kexue.training import TensorBatches, TrainConfig, fit

E, A, B = 0, 1, 2  # eos and two words; the start tokens and padding lie outside the 3-word vocabulary
L2R_START, R2L_START, PAD = 3, 4, 5
END = [0.9, 0.06, 0.04]  # every prefix pair not listed
# p(next | own prefix, other direction's prefix), own prefix in the direction's order
L2R = {
    ((), ()): [0.1, 0.6, 0.3],
    ((A,), (B,)): [0.15, 0.05, 0.8],
    ((A,), (A,)): [0.45, 0.15, 0.4],
    ((B,), (B,)): [0.65, 0.25, 0.1],
    ((B,), (A,)): [0.35, 0.55, 0.1],
}
R2L = {
    ((), ()): [0.1, 0.2, 0.7],
    ((B,), (A,)): [0.1, 0.82, 0.08],
    ((B,), (B,)): [0.3, 0.58, 0.12],
    ((A,), (A,)): [0.7, 0.1, 0.2],
    ((A,), (B,)): [0.3, 0.25, 0.45],
    ((B, A), (A, B)): [0.95, 0.03, 0.02],
    ((B, A), (B, A)): [0.85, 0.09, 0.06],
}


class TablePairModel:
    """A SyncDecoder reading tables: input i (its one token) uses ``tables[i]`` = (L2R table, R2L table).

    The state is the stacked prefixes of both streams (2N, t), reordered like any cache."""

    cross, pad_id = True, PAD

    def __init__(self, tables):
        self.tables, self.calls = tables, 0

    def bos(self, direction):
        return L2R_START if direction == "l2r" else R2L_START

    def start_pairs(self, inputs, pairs):
        self.table_of_row = inputs[:, 0].repeat_interleave(pairs)
        return torch.zeros(2 * len(inputs) * pairs, 0, dtype=torch.long)

    def pair_step(self, l2r, r2l, state):
        self.calls += 1
        state = torch.cat([state, torch.cat([l2r, r2l])], 1)
        n = len(l2r)
        out = []
        for i in range(n):
            a, b = (tuple(t for t in row[1:].tolist() if t != PAD) for row in (state[i], state[n + i]))
            first, second = self.tables[int(self.table_of_row[i])]
            out.append((first.get((a, b), END), second.get((b, a), END)))
        return torch.tensor([o[0] for o in out]).log(), torch.tensor([o[1] for o in out]).log(), state


def run_tables(scoring, num_beams):
    inputs = torch.tensor([[0], [1]])  # input 1 mirrors input 0: there L2R plays R2L's part
    return bidirectional_decode(
        TablePairModel([(L2R, R2L), (R2L, L2R)]),
        inputs,
        search=Beam(num_beams, length_penalty=0.0),
        stopping=Stopping(4, E),
        scoring=scoring,
    )


def test_su_beam_on_a_hand_made_table():
    # k = 2 per direction; every L2R prefix a is scored with p(. | a) = mean over both R2L prefixes b
    # of p(. | a, b) (and vice versa); HF beam: the top 2k candidates, eos among the top k -> pool.
    # step 0: L2R from () -> A .6, B .3 ; R2L from () -> B .7, A .2 (no eos in the top 2)
    # step 1, L2R, partners {B, A}:  p(.|A) = mean([.15 .05 .8], [.45 .15 .4]) = [.3 .1 .6]
    #                                 p(.|B) = mean([.65 .25 .1], [.35 .55 .1]) = [.5 .4 .1]
    #   candidates .6*.6 = .36 AB, .6*.3 = .18 AE, .3*.5 = .15 BE, .3*.4 = .12 BA
    #   -> pool {AE .18}; running AB .36, BA .12 (BE ranks 3rd: not among the top 2)
    # step 1, R2L, partners {A, B}:  p(.|B) = mean([.1 .82 .08], [.3 .58 .12]) = [.2 .7 .1]
    #                                 p(.|A) = mean([.7 .1 .2], [.3 .25 .45]) = [.5 .175 .325]
    #   candidates .7*.7 = .49 BA, .7*.2 = .14 BE, .2*.5 = .10 AE, .7*.1 = .07 BB
    #   -> pool {BE .14}; running BA .49, BB .07
    #   best finished .18 < best running .49: go on
    # step 2, L2R, partners {BA, BB}: all END -> ABE .36*.9 = .324, BAE .12*.9 = .108, ABA .0216, ABB .0144
    #   -> pool {ABE .324, AE .18}; running ABA .0216, ABB .0144
    # step 2, R2L, partners {AB, BA}: p(.|BA) = mean([.95 .03 .02], [.85 .09 .06]) = [.9 .06 .04]
    #   BAE .49*.9 = .441, BBE .07*.9 = .063, BAA .0294, BAB .0196
    #   -> pool {BAE .441, BE .14}; running BAA .0294, BAB .0196
    #   best finished .441 (R2L) >= every running score (.0294): stop at step 2 of 4 (each beam's
    #   own rule would stop here too; see the next-but-one test for Su's rule stopping sooner)
    # Winner R2L "B A eos", read back as "A B eos".
    out = run_tables("su", 2)
    assert out.direction == ["r2l", "l2r"]
    assert out.sequences() == [[A, B, E], [B, A, E]]  # input 1: the mirror, won by L2R
    assert out.scores.tolist() == pytest.approx([math.log(0.441)] * 2, abs=1e-6)
    assert out.log_probs[0].tolist() == pytest.approx([math.log(0.7), math.log(0.7), math.log(0.9)], abs=1e-6)
    assert out.l2r.sequences() == [[A, B, E], [B, A, E]] and out.r2l.sequences() == [[B, A, E], [A, B, E]]
    assert out.l2r.scores.tolist() == pytest.approx([math.log(0.324), math.log(0.441)], abs=1e-6)
    assert out.r2l.scores.tolist() == pytest.approx([math.log(0.441), math.log(0.324)], abs=1e-6)
    assert out.stop_reasons == ["eos", "eos"] and out.lengths.tolist() == [3, 3]


def test_paper_half_beam_on_a_hand_made_table():
    # Beam(4) split into 2 L2R + 2 R2L hypotheses; L2R hypothesis i reads R2L hypothesis i only, and
    # each keeps its own history (here both L2R survivors descend from A, the R2L ones from B and A).
    half_l2r = {
        ((), ()): [0.1, 0.6, 0.3],
        ((A,), (B,)): [0.1, 0.5, 0.4],
        ((B,), (A,)): [0.5, 0.3, 0.2],
        ((A, A), (B, A)): [0.7, 0.2, 0.1],
        ((A, B), (A, B)): [0.95, 0.03, 0.02],
    }
    half_r2l = {
        ((), ()): [0.1, 0.2, 0.7],
        ((B,), (A,)): [0.1, 0.82, 0.08],
        ((A,), (B,)): [0.3, 0.25, 0.45],
        ((A, B), (A, B)): [0.6, 0.3, 0.1],
    }
    # step 0: L2R A .6, B .3 ; R2L B .7, A .2 -> pairs (A, B), (B, A)
    # step 1 L2R: A with B [.1 .5 .4]: AA .30, AB .24 ; B with A [.5 .3 .2]: BE .15, BA .09
    #   top 2 = AA .30, AB .24, no eos -> running AA, AB (parents 0, 0)
    # step 1 R2L: B with A [.1 .82 .08]: BA .574, BE .07 ; A with B [.3 .25 .45]: AB .09, AE .06
    #   top 2 = BA .574, AB .09 -> running BA, AB (parents 0, 1) -> pairs (AA, BA), (AB, AB)
    # step 2 L2R: AA with BA [.7 .2 .1]: AAE .21, AAA .06 ; AB with AB [.95 .03 .02]: ABE .228
    #   -> pool {ABE .228, AAE .21}; running AAA .06, AAB .03
    # step 2 R2L: BA with AA END: BAE .5166 ; AB with AB [.6 .3 .1]: ABE .054 -> pool {BAE .5166, ABE .054}
    #   best finished .5166 >= every running score (at most .06): decided.
    # Winner R2L "B A eos" -> "A B eos", p = .7 * .82 * .9
    model = TablePairModel([(half_l2r, half_r2l)])
    out = bidirectional_decode(
        model, torch.tensor([[0]]), search=Beam(4, length_penalty=0.0), stopping=Stopping(4, E), scoring="half"
    )
    assert out.direction == ["r2l"] and out.sequences() == [[A, B, E]]
    assert out.scores.item() == pytest.approx(math.log(0.5166), abs=1e-6)
    assert out.l2r.sequences() == [[A, B, E]] and out.l2r.scores.item() == pytest.approx(math.log(0.228), abs=1e-6)
    assert out.r2l.sequences() == [[B, A, E]] and model.calls == 3


def test_su_early_exit_stops_once_the_winner_is_decided():
    # step 0: L2R A .8, E .12 (eos in the top 2 -> pool), B .08 ; R2L A .5, B .45
    # step 1: L2R "A eos" .8 * .9 = .72 -> pool {AE .72, E .12}, full; running AA .048 ; L2R done.
    #         R2L, every prefix pair [.02 .6 .38] or [.02 .58 .4]: AA .29, BA .27, AB .2, BB .171, no eos;
    #         its own pool is empty, so the R2L beam alone would go on (to AAE .261 at step 2).
    #         Su: best finished .72 >= best running .29 -> decided after 2 steps, not 3.
    quick_l2r = {((), ()): [0.12, 0.8, 0.08]}
    quick_r2l = {((), ()): [0.05, 0.5, 0.45]}
    quick_r2l.update({((A,), (a,)): [0.02, 0.58, 0.4] for a in (A, B)})
    quick_r2l.update({((B,), (a,)): [0.02, 0.6, 0.38] for a in (A, B)})
    for early_exit, steps in ((True, 2), (False, 3)):
        model = TablePairModel([(quick_l2r, quick_r2l)])
        out = bidirectional_decode(
            model,
            torch.tensor([[0]]),
            search=Beam(2, length_penalty=0.0),
            stopping=Stopping(4, E),
            early_exit=early_exit,
        )
        assert model.calls == steps
        assert out.direction == ["l2r"] and out.sequences() == [[A, E]]
        assert out.scores.item() == pytest.approx(math.log(0.72), abs=1e-6)


# --- the cross term off: two independent engine beams ------------------------------------------


def reverse_pairs(n, generator):
    """Source: 3..6 random digits (ids 4..13, padding 0); target: the same digits reversed."""
    length = torch.randint(3, 7, (n,), generator=generator)
    j = torch.arange(6)[None]
    src = torch.randint(4, 14, (n, 6), generator=generator).masked_fill(j >= length[:, None], 0)
    tgt = src.gather(1, (length[:, None] - 1 - j).clamp(min=0)).masked_fill(j >= length[:, None], 0)
    return src, tgt


@pytest.fixture(scope="module")
def half_trained_one_direction_model():
    """A model without the cross term, trained a little (so that beams differ and end at various lengths)."""
    torch.manual_seed(0)
    model = SyncBidirectionalTransformer(
        14, dim=32, heads=2, encoder_layers=1, decoder_layers=1, ff_mult=2, dropout=0.0, bidirectional=False
    )
    src, tgt = reverse_pairs(640, torch.Generator().manual_seed(0))
    fit(
        model,
        seq2seq_loss,
        TensorBatches(src, tgt, batch_size=32, seed=0),
        TrainConfig(steps=40, lr=5e-3, progress=False, amp=False, log_every=1000),
    )
    return model.eval()


def one_direction(model, src, direction, k, length_penalty):
    return decode(
        model.step,
        model.prompt(len(src), direction),
        search=Beam(k, length_penalty),
        stopping=Stopping(8, model.eos_id),
        state=model.start(src, direction, k),
    )


def same(a, b):
    return (
        all(torch.equal(getattr(a, f), getattr(b, f)) for f in ("tokens", "scores", "log_probs", "lengths"))
        and a.stop_reasons == b.stop_reasons
    )


@pytest.mark.parametrize("k,length_penalty", [(1, 1.0), (3, 1.0), (3, 0.0)])
def test_cross_term_off_is_exactly_the_one_direction_beam(half_trained_one_direction_model, k, length_penalty):
    model = half_trained_one_direction_model
    src, _ = reverse_pairs(6, torch.Generator().manual_seed(1))
    search, stopping = Beam(k, length_penalty), Stopping(8, model.eos_id)
    ref = {d: one_direction(model, src, d, k, length_penalty) for d in ("l2r", "r2l")}
    assert len({len(s) for s in ref["l2r"].sequences()}) > 1  # the beams end at various lengths
    for d in ("l2r", "r2l"):  # one direction alone
        alone = bidirectional_decode(model, src, search=search, stopping=stopping, directions=d)
        assert same(getattr(alone, d), ref[d])
    both = bidirectional_decode(model, src, search=search, stopping=stopping, early_exit=False)
    assert same(both.l2r, ref["l2r"]) and same(both.r2l, ref["r2l"])
    # the winner: the better of the two beams (ties to L2R), R2L read back; early exit stops sooner, same winner
    for out in (both, bidirectional_decode(model, src, search=search, stopping=stopping)):
        for row in range(len(src)):
            l2r_wins = bool(ref["l2r"].scores[row] >= ref["r2l"].scores[row])
            assert out.direction[row] == ("l2r" if l2r_wins else "r2l")
            seq = ref["l2r"].sequences()[row] if l2r_wins else ref["r2l"].sequences()[row]
            if not l2r_wins and seq[-1] == model.eos_id:
                seq = seq[:-1][::-1] + seq[-1:]
            assert out.sequences()[row] == seq
            assert out.scores[row].item() == max(ref["l2r"].scores[row].item(), ref["r2l"].scores[row].item())


@pytest.mark.parametrize(
    "scoring,k,length_penalty", [("su", 2, 0.0), ("su", 3, 1.0), ("half", 4, 0.0), ("half", 4, 1.0)]
)
def test_the_lockstep_path_with_a_zero_cross_term_is_the_one_direction_beam(
    half_trained_one_direction_model, scoring, k, length_penalty
):
    """The paired path itself (both streams in one pass, Su's k x k pairs or the paper's half beam), with λ = 0
    forced into it: each direction must then be the one-direction beam (k each for Su's scoring, k/2 each for
    the half beam), up to float rounding of the batched pass."""
    model = copy.deepcopy(half_trained_one_direction_model)
    model.cross = True  # what a λ > 0 model does; λ = 0 makes H = H→ exactly
    for block in model.decoder:
        block.self_attn.cross_weight = 0.0
    calls = []
    pair_step = model.pair_step
    model.pair_step = lambda *args: calls.append(1) or pair_step(*args)  # the paired path must run
    model.step = None  # and never the one-direction one
    src, _ = reverse_pairs(8, torch.Generator().manual_seed(1))
    width = k if scoring == "su" else k // 2
    ref = {d: one_direction(half_trained_one_direction_model, src, d, width, length_penalty) for d in ("l2r", "r2l")}
    assert len({len(s) for d in ref for s in ref[d].sequences()}) > 1  # the beams end at various lengths
    out = bidirectional_decode(
        model,
        src,
        search=Beam(k, length_penalty),
        stopping=Stopping(8, model.eos_id),
        early_exit=False,
        scoring=scoring,
    )
    assert calls
    for d in ("l2r", "r2l"):
        got = getattr(out, d)
        assert got.sequences() == ref[d].sequences() and got.stop_reasons == ref[d].stop_reasons
        torch.testing.assert_close(got.scores, ref[d].scores, atol=1e-5, rtol=0)


def test_lambda_zero_skips_the_cross_term(half_trained_one_direction_model):
    model = SyncBidirectionalTransformer(
        14, dim=32, heads=2, encoder_layers=1, decoder_layers=1, ff_mult=2, dropout=0.0, cross_weight=0.0
    )
    model.load_state_dict(half_trained_one_direction_model.state_dict())
    model.eval()
    assert model.cross is False
    src, _ = reverse_pairs(4, torch.Generator().manual_seed(2))
    out = bidirectional_decode(model, src, search=Beam(2), stopping=Stopping(8, model.eos_id), early_exit=False)
    assert same(out.l2r, one_direction(half_trained_one_direction_model, src, "l2r", 2, 1.0))


def test_bad_arguments_are_one_line_errors(half_trained_one_direction_model):
    src = torch.tensor([[4, 5]])
    bidir = SyncBidirectionalTransformer(14, dim=8, heads=2, encoder_layers=1, decoder_layers=1)
    with pytest.raises(KexueError, match="beam search"):
        bidirectional_decode(bidir, src, search=Greedy())
    with pytest.raises(KexueError, match="even"):
        bidirectional_decode(bidir, src, search=Beam(3), scoring="half")
    with pytest.raises(KexueError, match="both directions together"):
        bidirectional_decode(bidir, src, directions="l2r")
    with pytest.raises(KexueError, match="scoring"):
        bidirectional_decode(bidir, src, scoring="best")
    with pytest.raises(KexueError, match="kexue.generation.bidirectional"):
        bidir.start(src, "l2r")


class PrefixSeq2Seq:
    """A decoder without the cross term whose logits depend only on a row's source token and its own
    prefix (seeded by them and a salt): rows finish at different steps, each row computed alone."""

    cross, pad_id, V = False, 9, 6

    def __init__(self, salt: int):
        self.salt = salt

    def bos(self, d):
        return 7 if d == "l2r" else 8

    def start(self, inputs, d, K):
        return inputs[:, 0].repeat_interleave(K), torch.zeros(len(inputs) * K, 0, dtype=torch.long)

    def step(self, tokens, state):
        src, prefix = state
        prefix = torch.cat([prefix, tokens], 1)
        out = []
        for s, row in zip(src.tolist(), prefix.tolist()):
            g = torch.Generator().manual_seed(hash((self.salt, s, *row)) % 2**31)
            logits = 2 * torch.randn(self.V, generator=g)
            logits[0] += 0.7 * (len(row) - 1) * (1 + s) / 4  # eos (id 0) comes sooner for later sources
            out.append(logits)
        return torch.stack(out), (src, prefix)


@pytest.mark.parametrize("early_stopping", [True, False, "never"])
@pytest.mark.parametrize("length_penalty", [1.0, 0.0, -1.0])
def test_rows_leaving_each_direction_give_the_same_winners_with_the_early_exit(length_penalty, early_stopping):
    """Directions decoded apart drop decided rows; the early exit must read those rows as decided
    (a reviewer's case: a row that left with a full pool was never settled, so the other direction
    kept decoding it). Winners, and every direction's real hypotheses, agree with keeping all rows;
    a row settled before a direction finished any hypothesis holds a placeholder there (score NEG)."""
    inputs = torch.arange(5)[:, None]
    for salt in range(4):
        out = {
            drop: bidirectional_decode(
                PrefixSeq2Seq(salt),
                inputs,
                search=Beam(2, length_penalty, early_stopping, drop_finished=drop),
                stopping=Stopping(12, 0),
                early_exit=True,
            )
            for drop in (False, True)
        }
        a, b = out[False], out[True]
        assert a.sequences() == b.sequences() and torch.equal(a.scores, b.scores) and a.direction == b.direction
        for d in ("l2r", "r2l"):
            real = getattr(a, d).scores > NEG / 2
            assert torch.equal(real, getattr(b, d).scores > NEG / 2), (salt, d)
            for row in real.nonzero()[:, 0].tolist():
                assert getattr(a, d).sequences()[row] == getattr(b, d).sequences()[row], (salt, d, row)
