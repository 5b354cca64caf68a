"""The termination study's decoders on LMs whose eos probability is known (issue 16, part 1).

A hand-made step function gives the same next-token distribution at every step, with eos the third
(or the second) most likely token: what each of the paper's decoders does with it follows from its
definition (with eos third, greedy, beam, top-2 and nucleus never end; top-4, ancestral and the
consistent samplers, which always keep eos, stop). A tiny self-terminating LSTM stops under greedy within the
bound its eps sets. Then the table of the report: every decoder, the paper's figures as the anchors give them.
"""

import math

import pytest
import torch

from kexue.models.lm import LMConfig, build_lm
from kexue.recipes.lm import (
    DECODER_LABELS,
    DECODERS,
    PREFIX_WORDS,
    decode_in_chunks,
    prefix_prompts,
    prefix_sentences,
    termination_rows,
)
from kexue.reproduce import decoding as section

EOS, VOCAB, CAP, ROWS = 3, 6, 60, 12
# p(next token), the same at every step. EOS_THIRD: token 1, token 2, then eos, then tokens 4, 5, 0.
EOS_THIRD = torch.tensor([0.01, 0.5, 0.3, 0.15, 0.03, 0.01])
EOS_SECOND = torch.tensor([0.01, 0.5, 0.05, 0.4, 0.03, 0.01])


class FixedLM:
    """``step`` of an LM whose next-token distribution is ``probs`` whatever it has read."""

    def __init__(self, probs=EOS_THIRD):
        self.log_probs = probs.log()

    def step(self, tokens, state=None):
        n = tokens.shape[0]
        state = torch.zeros(n, 1) if state is None else state  # batch first: beam search reorders it
        return self.log_probs.expand(n, VOCAB).clone(), state


# What each decoder does: the share of continuations that never emit eos within CAP, (eos third, eos second).
EXPECTED = {
    "greedy": (1.0, 1.0),  # argmax is token 1, always
    # eos third: an eos-ended candidate never ranks within the best 2 of a step
    "beam2": (1.0, 0.0),
    # eos third: [eos] enters the pool at step 0 (3rd of 4), no later eos candidate ranks in the best 4
    # (the 2nd beam's words beat it), and at the cap the all-1 hypothesis (log 0.5 per token, length
    # penalty 1) outscores [eos] (log 0.15): beam-4 ends without eos. eos second: [1, 1, eos] wins.
    "beam4": (1.0, 0.0),
    "topk": (1.0, 0.0),  # top-2 = {1, 2} cuts eos when third, keeps it when second
    "topk4": (0.0, 0.0),  # top-4 keeps eos: p = 0.15 / 0.98 per step
    "topp": (1.0, 1.0),  # nucleus-0.2 = {1} (0.5 >= 0.2)
    "topp04": (1.0, 1.0),  # nucleus-0.4 = {1} too
    "consistent_topk": (0.0, 0.0),  # {1, 2} + eos: p(eos) = 0.15 / 0.95
    "consistent_topp": (0.0, 0.0),  # {1} + eos: p(eos) = 0.15 / 0.65
    "ancestral": (0.0, 0.0),  # p(eos) = 0.15 at every step: (0.85)^60 ~ 6e-5 of never stopping
}


def _prompts(rows=ROWS):
    return torch.randint(4, VOCAB, (rows, 1 + PREFIX_WORDS), generator=torch.Generator().manual_seed(0))


def test_every_decoder_of_the_study_is_in_the_expected_table():
    assert set(EXPECTED) == set(DECODERS) == set(DECODER_LABELS)
    assert len(DECODERS) == 10  # the paper's ten: greedy, beam-2/4, top-2/4, nucleus-0.2/0.4, ancestral, consistent x2


@pytest.mark.parametrize("probs", [EOS_THIRD, EOS_SECOND], ids=["eos-third", "eos-second"])
@pytest.mark.parametrize("decoder", list(DECODERS))
def test_each_decoder_stops_or_not_as_its_definition_says(decoder, probs):
    expected = EXPECTED[decoder][0 if probs is EOS_THIRD else 1]
    out = decode_in_chunks(FixedLM(probs), _prompts(), decoder, EOS, CAP, seed=0, chunk=8)
    row = termination_rows(out, EOS)
    assert row["nonterminating"] == expected
    if expected == 1.0:
        assert row["mean_length"] == CAP
        assert not any(EOS in seq for seq in out.sequences())
    else:
        assert row["mean_length"] < CAP and row["unique_nonterminated"] == 0.0
        assert all(seq[-1] == EOS for seq in out.sequences())


def test_deterministic_decoders_give_one_continuation_per_prefix_and_samplers_many():
    # the fixed LM ignores the prefix: greedy writes one continuation for all 12, top-2 samples 12 different ones
    greedy = termination_rows(decode_in_chunks(FixedLM(), _prompts(), "greedy", EOS, CAP, 0, 100), EOS)
    assert greedy["unique_nonterminated"] == pytest.approx(1 / ROWS)
    assert greedy["loop_fraction"] == 1.0 and greedy["distinct_2"] < 0.01
    top2 = termination_rows(decode_in_chunks(FixedLM(), _prompts(), "topk", EOS, CAP, 0, 100), EOS)
    assert top2["unique_nonterminated"] == 1.0


def test_beam_chunks_count_model_rows_and_do_not_change_the_result():
    """chunk = model rows: beam-4 with chunk 4 decodes one prefix at a time, and gives what one batch gives."""
    prompts = _prompts()
    one_by_one = decode_in_chunks(FixedLM(EOS_SECOND), prompts, "beam4", EOS, CAP, 0, chunk=4)
    together = decode_in_chunks(FixedLM(EOS_SECOND), prompts, "beam4", EOS, CAP, 0, chunk=400)
    assert torch.equal(one_by_one.tokens, together.tokens) and torch.equal(one_by_one.lengths, together.lengths)
    assert torch.allclose(one_by_one.scores, together.scores)


def test_st_greedy_stops_within_the_bound_of_its_eps():
    """The ST row of the paper's table: greedy on a self-terminating LSTM, p(eos) >= 1 - (1 - eps)^(t + 1)."""
    torch.manual_seed(0)
    eps = 0.1
    model = build_lm(LMConfig(arch="lstm", vocab=20, eos_id=EOS, dim=8, layers=1, dropout=0.0, head="st", eps=eps))
    prompts = torch.randint(4, 20, (ROWS, 1 + PREFIX_WORDS), generator=torch.Generator().manual_seed(1))
    out = decode_in_chunks(model.eval(), prompts, "greedy", EOS, CAP, seed=0, chunk=100)
    row = termination_rows(out, EOS)
    bound = math.ceil(-math.log(2) / math.log(1 - eps))  # 7
    assert row["nonterminating"] == 0.0 and int(out.lengths.max()) <= bound


def test_prefixes_are_eos_and_the_first_ten_words_of_test_sentences_longer_than_ten():
    from kexue.data.text import Vocab

    sentences = [[f"w{i}" for i in range(n)] for n in (12, 10, 11, 3, 30)]
    assert [len(s) for s in prefix_sentences(sentences)] == [12, 11, 30]
    vocab = Vocab.build([[f"w{i}" for i in range(30)]])
    prompts = prefix_prompts(vocab, "unused", 2, sentences=sentences)
    assert prompts.shape == (2, 11) and (prompts[:, 0] == vocab.eos).all()
    assert vocab.decode(prompts[1, 1:].tolist()) == [f"w{i}" for i in range(10)]


# ---- the report's table ------------------------------------------------------------------------------

# The LSTM column of Welleck et al. 2020 as ANCHORS.md §5 gives it, in percent (top-2 and top-4 "≈").
ANCHORS_LSTM = {
    "greedy": 1.53,
    "beam2": 0.07,
    "beam4": 0.00,
    "topk": 0.01,
    "topk4": 0.00,
    "topp": 0.13,
    "topp04": 0.02,
    "consistent_topk": 0.00,
    "consistent_topp": 0.00,
    "ancestral": 0.00,
}


def test_published_ratios_are_the_anchors_lstm_column_and_only_st_greedy_for_the_st_model():
    assert set(section.PUBLISHED["vanilla"]) == set(DECODERS)
    for dec, percent in ANCHORS_LSTM.items():
        assert section.PUBLISHED["vanilla"][dec] == pytest.approx(percent / 100, abs=1e-12), dec
    assert section.PUBLISHED["st"] == {"greedy": 0.0}  # the anchors give no other ST figure
    assert "not re-checked" not in section.SOURCE


def _values(model_ratio):
    values = {}
    for model in section.MODELS:
        for dec in DECODERS:
            key = f"termination.{model}.{dec}"
            values.update(
                {
                    f"{key}.nonterminating": model_ratio[model],
                    f"{key}.mean_length": 1500.0 * model_ratio[model] + 20.0,
                    f"{key}.unique_nonterminated": 0.5,
                    f"{key}.rep_w": 0.1,
                    f"{key}.seq_rep_4": 0.2,
                    f"{key}.loop_fraction": 0.3,
                }
            )
    return values


def test_the_report_table_has_every_decoder_beside_the_papers():
    values = _values({"vanilla": 1.0, "st": 0.0})
    table = section.termination_table(values, list(DECODERS)).splitlines()
    assert len(table) == 2 + 2 * len(DECODERS)
    body = [line.split(" | ") for line in table[2:]]
    assert [r[1] for r in body[: len(DECODERS)]] == [DECODER_LABELS[d] for d in DECODERS]
    assert "| st | ST greedy | 0.00 % | 0.00 % | +0.00 points |" in table[2 + len(DECODERS)]
    greedy = table[2]
    assert "1.53 ± 1.41 %" in greedy and "100.00 %" in greedy and "+98.47 points" in greedy
    assert "≈ 0.01 %" in table[2 + list(DECODERS).index("topk")]
    assert all(r[2] == "–" for r in body[len(DECODERS) + 1 :])  # no published ST figure but greedy


def test_the_distance_sentence_names_every_vanilla_decoder():
    sentence = section.distance_sentence(_values({"vanilla": 0.02, "st": 0.0}), list(DECODERS))
    for dec in DECODERS:
        assert DECODER_LABELS[dec] + " " in sentence
    assert "greedy 2.00 % vs 1.53 % (+0.47 points, 0.3 of the paper's sd)" in sentence


def test_the_speed_table_has_one_row_per_cell_and_says_when_tokens_differ():
    def fig(v):
        return {"value": v, "published": None, "source": None, "command": "kexue bench decoding"}

    measured = {}
    for tag, ratio in (("", 1.25), ("b1_n128.", 1.5)):
        for mode in section.SPEED_MODES:
            measured[f"decoding.speedup_vs_hf.{tag}{mode}"] = fig(ratio)
            measured[f"decoding.parity.{tag}{mode}"] = fig(1.0 if mode != "top_p" or tag else 0.75)
    table = section.speed_table(measured, [("", "batch 8"), ("b1_n128.", "batch 1"), ("b8_n512.", "batch 8, 512")])
    lines = table.splitlines()
    assert lines[0] == "| cell | greedy | beam4 | top_p |" and len(lines) == 5
    assert lines[2] == "| batch 8 | 1.25× (tokens identical) | 1.25× (tokens identical) | 1.25× (tokens 75 % equal) |"
    assert lines[3].count("1.50×") == 3
    assert lines[4] == "| batch 8, 512 | – | – | – |"  # a cell not measured
